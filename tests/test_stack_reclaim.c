/*
 * test_stack_reclaim.c - freed stacks give their page tables back, and the
 * allocation sites of src/stack.c fail cleanly.
 *
 * A free stack kept for reuse keeps about one page-table page (4 KiB for an
 * 8 MiB stack: the one mapping its top page also maps its neighbour's guard
 * markers, so MADV_DONTNEED cannot free it); only munmap does.  stack.c
 * keeps at most KEEP_MAX (2 MiB) of them and unmaps the rest.  These tests
 * park many 8 MiB stacks, free them all, and watch VmPTE come back down.
 * Each Criterion test is a process of its own, so /proc/self is the test's.
 */
#include "helpers.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "procfs.h"

#define BIG_STACK ((size_t)8 << 20)
#define FULL_N 20000
#define LIGHT_N 2000 /* Valgrind, qemu: 16 GiB of address space, not 160 */

/* ASan's allocator adds a few dozen mappings as the test goes. */
#if defined(__SANITIZE_ADDRESS__)
#define MAPS_SLACK 160
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MAPS_SLACK 160
#endif
#endif
#ifndef MAPS_SLACK
#define MAPS_SLACK 64
#endif

#define SMALL_AS_N 300 /* 32-bit ISAs: 2.4 GiB of a 4 GiB address space */

static int reclaim_n(void) {
  int n = test_light() || test_qemu() ? LIGHT_N : FULL_N;
  return sizeof(void *) < 8 && n > SMALL_AS_N ? SMALL_AS_N : n;
}

/* A /proc/self/status field in kB (-1 if absent). */
static long status_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f)
    return -1;
  char line[256];
  size_t k = strlen(key);
  long v = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, k) == 0 && line[k] == ':') {
      v = atol(line + k + 1);
      break;
    }
  fclose(f);
  return v;
}

static int park(greenlet_t *self, void *arg, void **result) {
  int rc = greenlet_switch(greenlet_parent(self), NULL, NULL);
  *result = arg;
  return rc == GREENLET_EXIT ? GREENLET_OK : GREENLET_ERROR;
}

static void make(greenlet_t **g, int n, size_t stack) {
  greenlet_attr_t attr = {stack, "reclaim", 0, 0};
  for (int i = 0; i < n; i++) {
    EXPECT_RC(greenlet_create(&g[i], park, NULL, &attr), 0);
    EXPECT_RC(greenlet_switch(g[i], P(i), NULL), GREENLET_OK);
  }
}

static void release(greenlet_t **g, int from, int step, int n) {
  for (int i = from; i < n; i += step) {
    void *out = NULL;
    EXPECT_RC(greenlet_kill(g[i], &out), GREENLET_OK);
    cr_assert_eq(out, P(i));
    EXPECT_RC(greenlet_destroy(g[i], 0), 0);
    g[i] = NULL;
  }
}

/* Waits (the purger trims in the background) for VmPTE to drop to `limit`
 * kB, 60 s at most; returns the last reading. */
static long wait_pte_below(long limit) {
  double t0 = now_s();
  long pte = status_kb("VmPTE");
  while (pte > limit && now_s() - t0 < 60) {
    usleep(20 * 1000);
    pte = status_kb("VmPTE");
  }
  return pte;
}

/* Parks n 8 MiB greenlets, frees them (`scatter`: the odd ones first, then
 * the even ones), and checks that VmPTE grew with them and came back. */
static void park_free_and_check(int scatter) {
  int n = reclaim_n();
  greenlet_t **g = calloc((size_t)n, sizeof *g);
  cr_assert_not_null(g);
  /* Thread state, signal stack, the purger: not what is measured. */
  make(g, 1, BIG_STACK);
  release(g, 0, 1, 1);
  long pte0 = status_kb("VmPTE"), maps0 = map_count();
  cr_assert_geq(pte0, 0, "no VmPTE in /proc/self/status");

  make(g, n, BIG_STACK);
  long pte1 = status_kb("VmPTE");
  long grown = pte1 - pte0;
  /* About 4 KiB a stack (its top page, its guard's page-table page). */
  cr_assert_geq(grown, (long)n * 2, "VmPTE grew %ld kB for %d parked stacks",
                grown, n);

  if (scatter) {
    release(g, 1, 2, n);
    /* Lone free stacks between live ones: nothing to gain, and unmapping
     * them would cut the merged VMA into one per stack. */
    if (strcmp(greenlet_guard_mode(), "madvise") == 0 && MAPS_MEANINGFUL)
      cr_assert_leq(map_count(), maps0 + MAPS_SLACK, "%ld mappings, %ld before",
                    map_count(), maps0);
    release(g, 0, 2, n);
  } else {
    release(g, 0, 1, n);
  }
  /* Within a tenth of the growth (light runs: a few thousand stacks, so
   * the 2 MiB kept for reuse is more than a tenth). */
  long allowed = grown / 10;
  if (allowed < 4096)
    allowed = 4096;
  long pte2 = wait_pte_below(pte0 + allowed);
  cr_log_info("reclaim: VmPTE %ld kB, %ld kB with %d parked, %ld kB after "
              "freeing them",
              pte0, pte1, n, pte2);
  cr_assert_leq(pte2, pte0 + allowed,
                "VmPTE %ld kB before, %ld kB parked, %ld kB after freeing %d",
                pte0, pte1, pte2, n);
  /* With mprotect guards, each stack in the thread's pool (64) is two VMAs
   * of its own. */
  long pooled = strcmp(greenlet_guard_mode(), "madvise") == 0 ? 0 : 2 * 64;
  if (MAPS_MEANINGFUL)
    cr_assert_leq(map_count(), maps0 + pooled + MAPS_SLACK,
                  "%ld mappings, %ld before", map_count(), maps0);

  /* And the library goes on: reuse what was kept, map the rest anew. */
  make(g, n / 4, BIG_STACK);
  release(g, 0, 1, n / 4);
  free(g);
}

Test(reclaim, freed_stacks_give_back_page_tables, .timeout = 300) {
  park_free_and_check(0);
}

Test(reclaim, scattered_free_gives_back_page_tables, .timeout = 300) {
  park_free_and_check(1);
}

/* Without the purger, the thread's own list of free stacks has the same
 * budget. */
Test(reclaim, inline_purge_gives_back_page_tables, .timeout = 300) {
  setenv("CGREENLET_PURGE", "sync", 1);
  park_free_and_check(0);
}

/* ---- allocation failures at stack.c's sites ------------------------------ */

enum { FAULT_N = 80 }; /* past the pool (64): the purger's list too */

/* One round: FAULT_N greenlets created and started (a stack size never
 * used before, so each start maps), then all released.  Returns how many
 * calls said GREENLET_ENOMEM (the round stops at the first). */
static int fault_round(size_t stack, int *switch_enomem) {
  greenlet_t *g[FAULT_N];
  greenlet_attr_t attr = {stack, "fault", 0, 0};
  int made = 0, enomem = 0;
  for (; made < FAULT_N; made++) {
    int rc = greenlet_create(&g[made], park, NULL, &attr);
    if (rc != 0) {
      cr_assert_eq(rc, GREENLET_ENOMEM, "create: %d (%s)", rc,
                   greenlet_strerror(rc));
      enomem = 1;
      break;
    }
    rc = greenlet_switch(g[made], P(made), NULL);
    if (rc != GREENLET_OK) {
      cr_assert_eq(rc, GREENLET_ENOMEM, "switch: %d (%s)", rc,
                   greenlet_strerror(rc));
      cr_assert(!greenlet_dead(g[made]) && !greenlet_started(g[made]),
                "a refused start leaves the greenlet unstarted");
      *switch_enomem += 1;
      enomem = 1;
      EXPECT_RC(greenlet_destroy(g[made], 0), 0);
      break;
    }
  }
  for (int i = 0; i < made; i++) {
    void *out = NULL;
    EXPECT_RC(greenlet_kill(g[i], &out), GREENLET_OK);
    cr_assert_eq(out, P(i));
    EXPECT_RC(greenlet_destroy(g[i], 0), 0);
  }
  return enomem;
}

static uint64_t live_greenlets(void) {
  greenlet_stats_t s;
  cr_assert_eq(greenlet_process_stats(&s), 0);
  return s.live;
}

static void fault_every_site(void) {
  int dummy = 0;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t stack = GREENLET_MIN_STACK_SIZE;
  cr_assert_eq(fault_round(stack, &dummy), 0, "a clean round");
  uint64_t live0 = live_greenlets();
  int k, fired = 1, enomem = 0, switch_enomem = 0;
  for (k = 0; fired && k < 5000; k++) {
    stack += page; /* fresh size: every start maps */
    greenlet__fault_arm(k);
    int e = fault_round(stack, &switch_enomem);
    long seen = greenlet__fault_disarm(&fired);
    cr_assert(fired || seen <= k, "k=%d: %ld counted, not fired", k, seen);
    enomem += e;
    cr_assert_eq(live_greenlets(), live0, "k=%d: greenlets left behind", k);
  }
  cr_assert(!fired, "did not reach the end of the allocation sequence");
  cr_assert_gt(switch_enomem, 0, "no stack mapping failed");
  cr_assert_gt(enomem, switch_enomem, "no record allocation failed");
  /* Still works, fresh sizes and reused ones. */
  cr_assert_eq(fault_round(stack + page, &dummy), 0);
  cr_assert_eq(fault_round(stack, &dummy), 0);
  cr_assert_eq(fault_round(GREENLET_MIN_STACK_SIZE, &dummy), 0);
  cr_log_info("reclaim: %d allocations failed in turn, %d gave ENOMEM "
              "(%d at a start)",
              k, enomem, switch_enomem);
}

Test(reclaim, stack_allocation_failures_give_enomem) { fault_every_site(); }

Test(reclaim, stack_allocation_failures_with_inline_purge) {
  setenv("CGREENLET_PURGE", "sync", 1);
  fault_every_site();
}
