/*
 * bench_c.c - cgreenlet micro-benchmarks.  One measurement per process run;
 * scripts/bench.sh repeats and interleaves runs and reports medians.
 *
 *   bench_c info              guard mode
 *   bench_c switch [ROUNDS]   ns per switch, main <-> one greenlet
 *   bench_c create [N]        ns per create + run to completion + destroy
 *   bench_c park [N]          ns per create + park + kill + destroy
 *   bench_c rss N [exit]      memory per parked greenlet (N of them)
 *
 * Timed modes print one number (ns) on stdout.  rss prints "key value" lines:
 * rss_kib (resident KiB per parked greenlet, from /proc/self/statm),
 * pte_kib (page-table KiB per greenlet, VmPTE), park_us and teardown_us (per
 * greenlet).  The teardown kills and destroys every greenlet; with "exit" it
 * is skipped and process exit releases everything (the teardown costs two
 * TLB-flushing system calls per stack, which is slow on some VMs).
 *
 * The clock is CLOCK_MONOTONIC (wall time); CGREENLET_BENCH_CLOCK=thread
 * takes CLOCK_THREAD_CPUTIME_ID instead, the CPU time of the measuring
 * thread, which leaves out the time the thread waits for a CPU: on a loaded
 * machine, and under qemu-user (scripts/bench-cross.sh), it varies far less
 * from run to run.  bench_boost.cpp reads the same variable.
 */
#define _POSIX_C_SOURCE 200809L
#include "cgreenlet.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECK(expr)                                                            \
  do {                                                                         \
    int check_rc_ = (expr);                                                    \
    if (check_rc_ != 0) {                                                      \
      fprintf(stderr, "bench_c: %s:%d: %s -> %d (%s)\n", __FILE__, __LINE__,   \
              #expr, check_rc_, greenlet_strerror(check_rc_));                 \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

static clockid_t bench_clock = CLOCK_MONOTONIC;

static void pick_clock(void) {
  const char *c = getenv("CGREENLET_BENCH_CLOCK");
  if (!c || !*c || strcmp(c, "monotonic") == 0)
    bench_clock = CLOCK_MONOTONIC;
  else if (strcmp(c, "thread") == 0)
    bench_clock = CLOCK_THREAD_CPUTIME_ID;
  else {
    fprintf(stderr, "bench_c: CGREENLET_BENCH_CLOCK must be monotonic or "
                    "thread, not '%s'\n", c);
    exit(2);
  }
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(bench_clock, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static long parse_count(const char *s, long dflt) {
  if (!s)
    return dflt;
  char *end;
  long v = strtol(s, &end, 10);
  if (*end != '\0' || v <= 0) {
    fprintf(stderr, "bench_c: bad count '%s'\n", s);
    exit(2);
  }
  return v;
}

/* Keeps results observable so the compiler cannot drop the work. */
static volatile uintptr_t sink;

/* ---- 1. switch ping-pong ----------------------------------------------- */

/* Switches back to its parent forever, until killed. */
static int run_pingpong(greenlet_t *self, void *arg, void **result) {
  (void)result;
  greenlet_t *parent = greenlet_parent(self);
  void *v = arg;
  for (;;) {
    int rc = greenlet_switch(parent, v, &v);
    if (rc == GREENLET_EXIT)
      return GREENLET_OK;
    if (rc != GREENLET_OK)
      abort();
  }
}

static void pingpong(greenlet_t *g, long rounds) {
  void *v = NULL;
  for (long i = 0; i < rounds; i++) {
    if (greenlet_switch(g, (void *)(uintptr_t)i, &v) != GREENLET_OK)
      abort();
  }
  sink = (uintptr_t)v;
}

static void bench_switch(long rounds) {
  greenlet_t *g;
  CHECK(greenlet_create(&g, run_pingpong, NULL, NULL));
  pingpong(g, rounds / 10 + 1000); /* warm-up: caches, branch predictors */
  double t0 = now_ns();
  pingpong(g, rounds);
  double t1 = now_ns();
  CHECK(greenlet_kill(g, NULL));
  CHECK(greenlet_destroy(g, 0));
  /* A round is two switches: main -> greenlet -> main. */
  printf("%.3f\n", (t1 - t0) / (2.0 * (double)rounds));
}

/* ---- 2. create + run to completion + destroy --------------------------- */

static int run_return(greenlet_t *self, void *arg, void **result) {
  (void)self;
  *result = arg;
  return GREENLET_OK;
}

static void create_loop(long n) {
  void *v = NULL;
  for (long i = 0; i < n; i++) {
    greenlet_t *g;
    CHECK(greenlet_create(&g, run_return, NULL, NULL));
    CHECK(greenlet_switch(g, (void *)(uintptr_t)i, &v));
    CHECK(greenlet_destroy(g, 0));
  }
  sink = (uintptr_t)v;
}

static void bench_create(long n) {
  create_loop(n / 10 + 1000);
  double t0 = now_ns();
  create_loop(n);
  double t1 = now_ns();
  printf("%.3f\n", (t1 - t0) / (double)n);
}

/* ---- 3. create + park + kill + destroy --------------------------------- */

/* Parks (switches back to its parent) and returns once killed. */
static int run_park(greenlet_t *self, void *arg, void **result) {
  void *v;
  int rc = greenlet_switch(greenlet_parent(self), arg, &v);
  *result = arg;
  return rc == GREENLET_EXIT ? GREENLET_OK : GREENLET_ERROR;
}

static void park_loop(long n) {
  void *v = NULL;
  for (long i = 0; i < n; i++) {
    greenlet_t *g;
    CHECK(greenlet_create(&g, run_park, NULL, NULL));
    CHECK(greenlet_switch(g, (void *)(uintptr_t)i, &v));
    CHECK(greenlet_kill(g, &v));
    CHECK(greenlet_destroy(g, 0));
  }
  sink = (uintptr_t)v;
}

static void bench_park(long n) {
  park_loop(n / 10 + 1000);
  double t0 = now_ns();
  park_loop(n);
  double t1 = now_ns();
  printf("%.3f\n", (t1 - t0) / (double)n);
}

/* ---- 4. memory per parked greenlet ------------------------------------- */

static long resident_pages(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, resident = -1;
  if (!f || fscanf(f, "%ld %ld", &size, &resident) != 2) {
    fprintf(stderr, "bench_c: cannot read /proc/self/statm\n");
    exit(1);
  }
  fclose(f);
  return resident;
}

/* VmPTE from /proc/self/status, in KiB (0 if absent). */
static long pte_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = 0;
  if (!f)
    return 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmPTE: %ld kB", &kib) == 1)
      break;
  fclose(f);
  return kib;
}

static void bench_rss(long n, int teardown) {
  long page = sysconf(_SC_PAGESIZE);
  greenlet_t **gs = malloc((size_t)n * sizeof *gs);
  if (!gs) {
    fprintf(stderr, "bench_c: out of memory\n");
    exit(1);
  }
  memset(gs, 0, (size_t)n * sizeof *gs); /* resident before the baseline */
  if (!greenlet_current())
    exit(1);
  long rss0 = resident_pages(), pte0 = pte_kib();
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    CHECK(greenlet_create(&gs[i], run_park, NULL, NULL));
    CHECK(greenlet_switch(gs[i], NULL, NULL));
  }
  double t1 = now_ns();
  long rss1 = resident_pages(), pte1 = pte_kib();
  printf("rss_kib %.3f\n", (double)(rss1 - rss0) * (double)page / 1024.0 /
                               (double)n);
  printf("pte_kib %.3f\n", (double)(pte1 - pte0) / (double)n);
  printf("park_us %.2f\n", (t1 - t0) / 1e3 / (double)n);
  fflush(stdout);
  if (!teardown)
    _exit(0);
  for (long i = 0; i < n; i++) {
    CHECK(greenlet_kill(gs[i], NULL));
    if (!greenlet_dead(gs[i]))
      abort();
    CHECK(greenlet_destroy(gs[i], 0));
  }
  double t2 = now_ns();
  free(gs);
  printf("teardown_us %.2f\n", (t2 - t1) / 1e3 / (double)n);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  const char *count = argc > 2 ? argv[2] : NULL;
  pick_clock();
  if (strcmp(mode, "info") == 0) {
    printf("guard_mode %s\n", greenlet_guard_mode());
    printf("version %d.%d.%d\n", GREENLET_VERSION_MAJOR,
           GREENLET_VERSION_MINOR, GREENLET_VERSION_PATCH);
  } else if (strcmp(mode, "switch") == 0) {
    bench_switch(parse_count(count, 5000000));
  } else if (strcmp(mode, "create") == 0) {
    bench_create(parse_count(count, 1000000));
  } else if (strcmp(mode, "park") == 0) {
    bench_park(parse_count(count, 200000));
  } else if (strcmp(mode, "rss") == 0) {
    bench_rss(parse_count(count, 100000),
              !(argc > 3 && strcmp(argv[3], "exit") == 0));
  } else {
    fprintf(stderr,
            "usage: %s info | switch [ROUNDS] | create [N] | park [N] | "
            "rss [N [exit]]\n",
            argv[0]);
    return 2;
  }
  return 0;
}
