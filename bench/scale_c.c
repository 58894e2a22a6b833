/*
 * scale_c.c - many parked C greenlets: memory per greenlet (RSS and page
 * tables) and create+park time.  One measurement per process; bench/scale.py
 * runs it beside bench/scale_boost.cpp (Boost.Context, the same shape) and
 * reports medians and ratios.
 *
 *   scale_c info                    version, guard mode, sizes, shared stacks
 *   scale_c park N STACK [shared]   N greenlets with STACK usable bytes each
 *
 * park: every greenlet runs four C calls deep (run and three nested calls,
 * each with a small live frame) and switches back to main there; all N stay
 * parked.  "shared" asks for a shared stack (GREENLET_ATTR_SHARED_STACK:
 * greenlets take turns on one stack and their used part is copied out while
 * they are suspended); when the header has no such flag it exits 4.
 * Prints "key value" lines: made, stack_size (what the library gave the
 * first greenlet), rss_b and pte_b (bytes per parked greenlet: VmRSS and
 * VmPTE from /proc/self/status after parking minus before), rss_total_b,
 * pte_total_b, park_us (create + first switch, per greenlet).  Process exit
 * frees everything (tearing a million stacks down is a figure of its own,
 * bench_c rss).
 */
#define _POSIX_C_SOURCE 200809L
#include "cgreenlet.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEPTH 3 /* nested calls under run; the switch is in the last */

#ifdef GREENLET_ATTR_SHARED_STACK
#define HAVE_SHARED 1
#else
#define HAVE_SHARED 0
#endif

static void die(const char *what, int rc) {
  fprintf(stderr, "scale_c: %s -> %d (%s)\n", what, rc, greenlet_strerror(rc));
  exit(1);
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static long parse_long(const char *s, const char *what) {
  char *end;
  long v = s ? strtol(s, &end, 10) : 0;
  if (!s || *end != '\0' || v <= 0) {
    fprintf(stderr, "scale_c: bad %s '%s'\n", what, s ? s : "");
    exit(2);
  }
  return v;
}

/* VmRSS and VmPTE from /proc/self/status, in bytes. */
static void vm_status(long *rss, long *pte) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib;
  *rss = *pte = 0;
  if (!f) {
    fprintf(stderr, "scale_c: cannot read /proc/self/status\n");
    exit(1);
  }
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      *rss = kib * 1024;
    else if (sscanf(line, "VmPTE: %ld kB", &kib) == 1)
      *pte = kib * 1024;
  }
  fclose(f);
}

static volatile uintptr_t sink;

/* One level of a parked call chain: a frame with some live data, and work
 * after the call, so that the compiler keeps every frame. */
static __attribute__((noinline)) int descend(greenlet_t *self, int depth) {
  volatile char pad[48];
  pad[0] = (char)depth;
  pad[47] = (char)depth;
  int rc;
  if (depth == 0)
    rc = greenlet_switch(greenlet_parent(self), (void *)pad, NULL);
  else
    rc = descend(self, depth - 1);
  sink += (uintptr_t)pad[0] + (uintptr_t)pad[47];
  return rc;
}

static int run_parked(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  int rc = descend(self, DEPTH - 1);
  *result = NULL;
  return rc == GREENLET_EXIT ? GREENLET_OK : GREENLET_ERROR;
}

static void park(long n, size_t stack, int shared) {
  greenlet_attr_t attr;
  memset(&attr, 0, sizeof attr);
  attr.stack_size = stack;
#if HAVE_SHARED
  if (shared)
    attr.flags |= GREENLET_ATTR_SHARED_STACK;
#else
  if (shared) {
    fprintf(stderr, "scale_c: this cgreenlet.h has no GREENLET_ATTR_SHARED_STACK\n");
    exit(4);
  }
#endif
  greenlet_t **gs = malloc((size_t)n * sizeof *gs);
  if (!gs) {
    fprintf(stderr, "scale_c: out of memory\n");
    exit(1);
  }
  memset(gs, 0, (size_t)n * sizeof *gs); /* resident before the baseline */
  if (!greenlet_current())
    exit(1);
  long rss0, pte0, rss1, pte1;
  vm_status(&rss0, &pte0);
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    int rc = greenlet_create(&gs[i], run_parked, NULL, &attr);
    if (rc != 0)
      die("greenlet_create", rc);
    rc = greenlet_switch(gs[i], NULL, NULL);
    if (rc != GREENLET_OK)
      die("greenlet_switch", rc);
  }
  double t1 = now_ns();
  vm_status(&rss1, &pte1);
  printf("made %ld\n", n);
  printf("stack_size %zu\n", greenlet_stack_size(gs[0]));
  printf("rss_b %.1f\n", (double)(rss1 - rss0) / (double)n);
  printf("pte_b %.1f\n", (double)(pte1 - pte0) / (double)n);
  printf("rss_total_b %ld\n", rss1 - rss0);
  printf("pte_total_b %ld\n", pte1 - pte0);
  printf("park_us %.3f\n", (t1 - t0) / 1e3 / (double)n);
  fflush(stdout);
  _exit(0);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "info") == 0) {
    printf("version %d.%d.%d\n", GREENLET_VERSION_MAJOR, GREENLET_VERSION_MINOR,
           GREENLET_VERSION_PATCH);
    printf("guard_mode %s\n", greenlet_guard_mode());
    printf("default_stack %zu\n", (size_t)GREENLET_DEFAULT_STACK_SIZE);
    printf("min_stack %zu\n", (size_t)GREENLET_MIN_STACK_SIZE);
    printf("shared_stack %d\n", HAVE_SHARED);
    printf("depth %d\n", DEPTH + 1);
    return 0;
  }
  if (strcmp(mode, "park") == 0 && (argc == 4 || argc == 5)) {
    int shared = argc == 5 && strcmp(argv[4], "shared") == 0;
    if (argc == 5 && !shared) {
      fprintf(stderr, "scale_c: unknown option '%s'\n", argv[4]);
      return 2;
    }
    park(parse_long(argv[2], "count"), (size_t)parse_long(argv[3], "stack size"),
         shared);
  }
  fprintf(stderr, "usage: %s info | park N STACK_BYTES [shared]\n", argv[0]);
  return 2;
}
