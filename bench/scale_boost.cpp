// scale_boost.cpp - the Boost.Context anchor for bench/scale_c.c: many parked
// fibers, memory per fiber (RSS and page tables) and create+park time.  One
// measurement per process; bench/scale.py runs both and reports medians.
//
//   scale_boost info
//   scale_boost park N STACK [malloc|mmap]
//
// park: N boost::context::fiber objects, each resumed once; its body runs
// four calls deep (the body and three nested calls, each with a small live
// frame, as in scale_c.c) and resumes main there, so all N stay suspended.
// Stacks of STACK bytes from
//   malloc  Boost's fixedsize_stack (std::malloc; no guard page), default;
//   mmap    one anonymous mmap per stack (no guard page either: Boost's
//           protected_fixedsize_stack adds an mprotect'ed page, two mappings
//           per stack, which vm.max_map_count stops near 32,000).
// Prints the same "key value" lines as scale_c park (made, stack_size,
// rss_b, pte_b, rss_total_b, pte_total_b, park_us).  Process exit frees
// everything.
#include <boost/context/fiber.hpp>
#include <boost/context/fixedsize_stack.hpp>
#include <boost/context/stack_context.hpp>
#include <boost/version.hpp>

#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

namespace ctx = boost::context;

namespace {

const int kDepth = 3;  // nested calls under the body; the resume is in the last

volatile std::uintptr_t sink;

double now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
}

long parse_long(const char *s, const char *what) {
  char *end;
  long v = s ? std::strtol(s, &end, 10) : 0;
  if (!s || *end != '\0' || v <= 0) {
    std::fprintf(stderr, "scale_boost: bad %s '%s'\n", what, s ? s : "");
    std::exit(2);
  }
  return v;
}

void vm_status(long *rss, long *pte) {
  FILE *f = std::fopen("/proc/self/status", "r");
  char line[256];
  long kib;
  *rss = *pte = 0;
  if (!f) {
    std::fprintf(stderr, "scale_boost: cannot read /proc/self/status\n");
    std::exit(1);
  }
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      *rss = kib * 1024;
    else if (std::sscanf(line, "VmPTE: %ld kB", &kib) == 1)
      *pte = kib * 1024;
  }
  std::fclose(f);
}

// One anonymous mapping per stack, no guard page.
struct mmap_stack {
  std::size_t size;
  explicit mmap_stack(std::size_t s) : size(s) {}
  ctx::stack_context allocate() {
    void *p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    ctx::stack_context sc;
    sc.size = size;
    sc.sp = static_cast<char *>(p) + size;
    return sc;
  }
  void deallocate(ctx::stack_context &sc) noexcept {
    munmap(static_cast<char *>(sc.sp) - sc.size, sc.size);
  }
};

__attribute__((noinline)) void descend(ctx::fiber &caller, int depth) {
  volatile char pad[48];
  pad[0] = char(depth);
  pad[47] = char(depth);
  if (depth == 0)
    caller = std::move(caller).resume();  // park
  else
    descend(caller, depth - 1);
  sink += std::uintptr_t(pad[0]) + std::uintptr_t(pad[47]);
}

ctx::fiber body(ctx::fiber &&caller) {
  descend(caller, kDepth - 1);
  return std::move(caller);
}

template <typename StackAlloc>
void park(long n, std::size_t stack, StackAlloc salloc) {
  std::vector<ctx::fiber> fs(n);  // resident before the baseline
  long rss0, pte0, rss1, pte1;
  vm_status(&rss0, &pte0);
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    fs[i] = ctx::fiber{std::allocator_arg, salloc, body}.resume();
    if (!fs[i]) {
      std::fprintf(stderr, "scale_boost: fiber %ld finished instead of parking\n", i);
      std::exit(1);
    }
  }
  double t1 = now_ns();
  vm_status(&rss1, &pte1);
  std::printf("made %ld\n", n);
  std::printf("stack_size %zu\n", stack);
  std::printf("rss_b %.1f\n", double(rss1 - rss0) / double(n));
  std::printf("pte_b %.1f\n", double(pte1 - pte0) / double(n));
  std::printf("rss_total_b %ld\n", rss1 - rss0);
  std::printf("pte_total_b %ld\n", pte1 - pte0);
  std::printf("park_us %.3f\n", (t1 - t0) / 1e3 / double(n));
  std::fflush(stdout);
  _exit(0);
}

}  // namespace

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (!std::strcmp(mode, "info")) {
    std::printf("boost_version %d.%d.%d\n", BOOST_VERSION / 100000,
                BOOST_VERSION / 100 % 1000, BOOST_VERSION % 100);
    std::printf("depth %d\n", kDepth + 1);
    return 0;
  }
  if (!std::strcmp(mode, "park") && (argc == 4 || argc == 5)) {
    long n = parse_long(argv[2], "count");
    std::size_t stack = std::size_t(parse_long(argv[3], "stack size"));
    const char *alloc = argc == 5 ? argv[4] : "malloc";
    try {
      if (!std::strcmp(alloc, "malloc"))
        park(n, stack, ctx::fixedsize_stack(stack));
      else if (!std::strcmp(alloc, "mmap"))
        park(n, stack, mmap_stack(stack));
    } catch (const std::bad_alloc &) {
      std::fprintf(stderr, "scale_boost: out of memory or address space\n");
      return 1;
    }
    std::fprintf(stderr, "scale_boost: unknown allocator '%s'\n", alloc);
    return 2;
  }
  std::fprintf(stderr, "usage: %s info | park N STACK_BYTES [malloc|mmap]\n", argv[0]);
  return 2;
}
