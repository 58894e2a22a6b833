/*
 * gdb_shared_target.c - greenlets on one shared stack for tests/gdb_shared.sh:
 * three parked in nested calls (parked_a -> parked_b) on a single shared
 * stack, so two of them are copied out when stop_here runs.
 */
#include "cgreenlet.h"

#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                            \
  do {                                                                         \
    if ((call) != 0) {                                                         \
      fprintf(stderr, "%s failed\n", #call);                                   \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

__attribute__((noinline)) void stop_here(void) { __asm__ volatile(""); }

__attribute__((noinline)) static int parked_b(greenlet_t *self) {
  volatile int mark = 7;
  greenlet_switch(greenlet_parent(self), NULL, NULL);
  return mark;
}

__attribute__((noinline)) static int parked_a(greenlet_t *self) {
  return parked_b(self) + 1;
}

static int run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  *result = (void *)(long)parked_a(self);
  return GREENLET_OK;
}

int main(void) {
  CHECK(greenlet_set_shared_stacks(1));
  greenlet_attr_t a = {.flags = GREENLET_ATTR_SHARED_STACK, .name = "turns"};
  greenlet_t *g[3];
  for (int i = 0; i < 3; i++) {
    CHECK(greenlet_create(&g[i], run, NULL, &a));
    CHECK(greenlet_switch(g[i], NULL, NULL));
  }
  stop_here();
  for (int i = 0; i < 3; i++) {
    void *v;
    CHECK(greenlet_switch(g[i], NULL, &v) != GREENLET_OK);
    if ((long)v != 8 || !greenlet_dead(g[i]))
      return 1;
  }
  return 0;
}
