// cxx_terminate.cpp - a C++ exception escaping a greenlet's run function
// must terminate the program (std::terminate), never unwind past the
// greenlet's entry into memory that is not a frame.  scripts/test.sh runs
// this and expects SIGABRT with the C++ runtime's terminate message.
#include "cgreenlet.h"

#include <cstdio>
#include <stdexcept>

static int thrower(greenlet_t *, void *, void **) {
  throw std::runtime_error("escaped from a greenlet");
}

int main() {
  greenlet_t *g;
  if (greenlet_create(&g, thrower, nullptr, nullptr) != 0)
    return 2;
  try {
    greenlet_switch(g, nullptr, nullptr);
  } catch (...) {
    std::puts("BUG: exception crossed the greenlet boundary");
    return 3;
  }
  std::puts("BUG: switch returned");
  return 4;
}
