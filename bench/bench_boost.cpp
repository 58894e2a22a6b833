// bench_boost.cpp - Boost.Context anchors for bench/bench_c.c.  Same modes,
// same output, same default counts:
//
//   bench_boost switch [ROUNDS]   ns per jump_fcontext, main <-> one context
//   bench_boost create [N]        ns per fiber (pooled_fixedsize_stack)
//                                 created and resumed to completion
//   bench_boost park [N]          ns per fiber created, resumed once (parks),
//                                 destroyed while suspended (forced_unwind)
//   bench_boost rss N [fixed|protected] [exit]
//                                 memory per parked fiber; fixedsize_stack
//                                 (malloc, no guard) by default; "exit"
//                                 skips the teardown (process exit frees)
//
// Stacks are 256 KiB, cgreenlet's default usable size.  Build with -DNDEBUG:
// then protected_fixedsize_stack does not assert when mprotect() fails at
// vm.max_map_count, it silently hands out unguarded stacks; "rss" reports
// guard_pages (how many stacks really got a guard).
//
// The clock is CLOCK_MONOTONIC; CGREENLET_BENCH_CLOCK=thread takes the
// thread's CPU time (CLOCK_THREAD_CPUTIME_ID), as bench_c.c does.
#include <boost/context/detail/fcontext.hpp>
#include <boost/context/fiber.hpp>
#include <boost/context/fixedsize_stack.hpp>
#include <boost/context/pooled_fixedsize_stack.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>
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
namespace cd = boost::context::detail;

namespace {

const std::size_t kStack = 256 * 1024;

volatile std::uintptr_t sink;

clockid_t bench_clock = CLOCK_MONOTONIC;

void pick_clock() {
  const char *c = std::getenv("CGREENLET_BENCH_CLOCK");
  if (!c || !*c || !std::strcmp(c, "monotonic")) {
    bench_clock = CLOCK_MONOTONIC;
  } else if (!std::strcmp(c, "thread")) {
    bench_clock = CLOCK_THREAD_CPUTIME_ID;
  } else {
    std::fprintf(stderr,
                 "bench_boost: CGREENLET_BENCH_CLOCK must be monotonic or "
                 "thread, not '%s'\n",
                 c);
    std::exit(2);
  }
}

double now_ns() {
  struct timespec ts;
  clock_gettime(bench_clock, &ts);
  return double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
}

long parse_count(const char *s, long dflt) {
  if (!s) return dflt;
  char *end;
  long v = std::strtol(s, &end, 10);
  if (*end != '\0' || v <= 0) {
    std::fprintf(stderr, "bench_boost: bad count '%s'\n", s);
    std::exit(2);
  }
  return v;
}

// ---- 1. raw fcontext ping-pong ---------------------------------------------

// Jumps back to whoever jumped here, forever, passing the value on.
void pingpong_entry(cd::transfer_t t) {
  for (;;) t = cd::jump_fcontext(t.fctx, t.data);
}

cd::fcontext_t pingpong(cd::fcontext_t other, long rounds) {
  void *v = nullptr;
  for (long i = 0; i < rounds; i++) {
    cd::transfer_t t =
        cd::jump_fcontext(other, reinterpret_cast<void *>(std::uintptr_t(i)));
    other = t.fctx;
    v = t.data;
  }
  sink = reinterpret_cast<std::uintptr_t>(v);
  return other;
}

void bench_switch(long rounds) {
  void *stack = mmap(nullptr, kStack, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  cd::fcontext_t other = cd::make_fcontext(static_cast<char *>(stack) + kStack,
                                           kStack, pingpong_entry);
  other = pingpong(other, rounds / 10 + 1000);  // warm-up
  double t0 = now_ns();
  other = pingpong(other, rounds);
  double t1 = now_ns();
  // The context holds nothing but its loop frame: just drop the stack.
  munmap(stack, kStack);
  std::printf("%.3f\n", (t1 - t0) / (2.0 * double(rounds)));
}

// ---- 2. fiber created and run to completion --------------------------------

void create_loop(ctx::pooled_fixedsize_stack &salloc, long n) {
  std::uintptr_t acc = 0;
  for (long i = 0; i < n; i++) {
    ctx::fiber f{std::allocator_arg, salloc, [&acc, i](ctx::fiber &&caller) {
                   acc += std::uintptr_t(i);
                   return std::move(caller);
                 }};
    f = std::move(f).resume();
    if (f) std::abort();  // it must have finished
  }
  sink = acc;
}

void bench_create(long n) {
  ctx::pooled_fixedsize_stack salloc(kStack);
  create_loop(salloc, n / 10 + 1000);
  double t0 = now_ns();
  create_loop(salloc, n);
  double t1 = now_ns();
  std::printf("%.3f\n", (t1 - t0) / double(n));
}

// ---- 3. fiber created, parked, destroyed while suspended -------------------

// Resumes its creator once (parks).  Destroying the suspended fiber makes
// that resume() throw forced_unwind, which unwinds this frame.
ctx::fiber park_body(ctx::fiber &&caller) {
  caller = std::move(caller).resume();
  return std::move(caller);
}

void park_loop(ctx::pooled_fixedsize_stack &salloc, long n) {
  for (long i = 0; i < n; i++) {
    ctx::fiber f{std::allocator_arg, salloc, park_body};
    f = std::move(f).resume();
    if (!f) std::abort();  // it must be parked
  }  // ~fiber: unwinds the parked fiber and frees its stack
}

void bench_park(long n) {
  ctx::pooled_fixedsize_stack salloc(kStack);
  park_loop(salloc, n / 10 + 1000);
  double t0 = now_ns();
  park_loop(salloc, n);
  double t1 = now_ns();
  std::printf("%.3f\n", (t1 - t0) / double(n));
}

// ---- 4. memory per parked fiber --------------------------------------------

long resident_pages() {
  long size = 0, resident = -1;
  FILE *f = std::fopen("/proc/self/statm", "r");
  if (!f || std::fscanf(f, "%ld %ld", &size, &resident) != 2) {
    std::fprintf(stderr, "bench_boost: cannot read /proc/self/statm\n");
    std::exit(1);
  }
  std::fclose(f);
  return resident;
}

long pte_kib() {
  FILE *f = std::fopen("/proc/self/status", "r");
  char line[256];
  long kib = 0;
  if (!f) return 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmPTE: %ld kB", &kib) == 1) break;
  std::fclose(f);
  return kib;
}

// Guard pages left by protected_fixedsize_stack: one-page PROT_NONE mappings.
long count_guard_pages(long page) {
  FILE *f = std::fopen("/proc/self/maps", "r");
  if (!f) return -1;
  char line[512];
  long n = 0;
  while (std::fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    char perms[8];
    if (std::sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 &&
        std::strcmp(perms, "---p") == 0 && hi - lo == (unsigned long)page)
      n++;
  }
  std::fclose(f);
  return n;
}

template <typename StackAlloc>
void bench_rss(long n, StackAlloc salloc, bool teardown) {
  long page = sysconf(_SC_PAGESIZE);
  std::vector<ctx::fiber> fs(n);  // resident before the baseline
  long guards0 = count_guard_pages(page);
  long rss0 = resident_pages(), pte0 = pte_kib();
  double t0 = now_ns();
  long made = 0;
  try {
    for (; made < n; made++)
      fs[made] = ctx::fiber{std::allocator_arg, salloc, park_body}.resume();
  } catch (const std::bad_alloc &) {
    // Out of memory or address space: report what was made.
  }
  double t1 = now_ns();
  long rss1 = resident_pages(), pte1 = pte_kib();
  long denom = made ? made : 1;
  std::printf("made %ld\n", made);
  std::printf("rss_kib %.3f\n",
              double(rss1 - rss0) * double(page) / 1024.0 / double(denom));
  std::printf("pte_kib %.3f\n", double(pte1 - pte0) / double(denom));
  std::printf("park_us %.2f\n", (t1 - t0) / 1e3 / double(denom));
  std::printf("guard_pages %ld\n", count_guard_pages(page) - guards0);
  std::fflush(stdout);
  if (!teardown) _exit(0);
  fs.clear();  // unwinds every parked fiber (forced_unwind) and frees stacks
  double t2 = now_ns();
  std::printf("teardown_us %.2f\n", (t2 - t1) / 1e3 / double(denom));
}

}  // namespace

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  const char *count = argc > 2 ? argv[2] : nullptr;
  pick_clock();
  if (!std::strcmp(mode, "info")) {
    std::printf("boost_version %d.%d.%d\n", BOOST_VERSION / 100000,
                BOOST_VERSION / 100 % 1000, BOOST_VERSION % 100);
  } else if (!std::strcmp(mode, "switch")) {
    bench_switch(parse_count(count, 5000000));
  } else if (!std::strcmp(mode, "create")) {
    bench_create(parse_count(count, 1000000));
  } else if (!std::strcmp(mode, "park")) {
    bench_park(parse_count(count, 200000));
  } else if (!std::strcmp(mode, "rss")) {
    long n = parse_count(count, 100000);
    bool is_protected = false, teardown = true;
    for (int i = 3; i < argc; i++) {
      if (!std::strcmp(argv[i], "protected"))
        is_protected = true;
      else if (!std::strcmp(argv[i], "exit"))
        teardown = false;
      else if (std::strcmp(argv[i], "fixed")) {
        std::fprintf(stderr, "bench_boost: unknown option '%s'\n", argv[i]);
        return 2;
      }
    }
    if (is_protected)
      bench_rss(n, ctx::protected_fixedsize_stack(kStack), teardown);
    else
      bench_rss(n, ctx::fixedsize_stack(kStack), teardown);
  } else {
    std::fprintf(stderr,
                 "usage: %s info | switch [ROUNDS] | create [N] | park [N] | "
                 "rss [N] [fixed|protected] [exit]\n",
                 argv[0]);
    return 2;
  }
  return 0;
}
