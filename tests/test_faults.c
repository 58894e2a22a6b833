/*
 * test_faults.c - allocation failures injected at every allocation site of
 * the core (src/fault.h), one at a time.
 *
 * A scenario runs in a fresh thread (so the thread's state and signal stack
 * are allocated in it too): a greenlet starts, creates and runs a nested
 * one that parks, is resumed, throws its error to its parent, and another
 * parks and is killed.  For k = 0, 1, ... the k-th allocation fails; every
 * call must then either succeed or return GREENLET_ENOMEM, the scenario
 * unwinds what it made, and afterwards the process holds no more greenlets
 * than before.  The loop ends when the fault no longer fires: every site the
 * scenario reaches has failed once.
 */
#include "helpers.h"

#include <pthread.h>

#include "fault.h"

enum { ENOMEM_SEEN = 1000 };

static int check_rc(int rc) {
  if (rc == GREENLET_ENOMEM)
    return ENOMEM_SEEN;
  if (rc < 0)
    cr_assert_fail("unexpected refusal %d (%s)", rc, greenlet_strerror(rc));
  return 0;
}

static int parker(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  void *v;
  int rc = greenlet_switch(greenlet_parent(self), P(1), &v);
  if (rc == GREENLET_EXIT) {
    *result = P(-1);
    return GREENLET_OK;
  }
  *result = v;
  return rc == GREENLET_OK ? GREENLET_ERROR : GREENLET_OK; /* error upward */
}

/* Runs nested greenlets; returns 0, or ENOMEM_SEEN once a call says so. */
static int outer(greenlet_t *self, void *arg, void **result) {
  (void)self;
  (void)arg;
  greenlet_t *a = NULL, *b = NULL;
  void *v = NULL;
  int st = 0, rc;
  greenlet_attr_t attr = GREENLET_ATTR_INIT;
  attr.stack_size = 64 * 1024;
  attr.reserve = 1024;
  if ((st = check_rc(greenlet_create(&a, parker, NULL, &attr))))
    goto out;
  rc = greenlet_switch(a, NULL, &v);
  if ((st = check_rc(rc)))
    goto out;
  cr_assert_eq(rc, GREENLET_OK);
  cr_assert_eq(I(v), 1);
  /* Resumed: it finishes with GREENLET_ERROR and its value as the error. */
  rc = greenlet_switch(a, P(7), &v);
  if ((st = check_rc(rc)))
    goto out;
  cr_assert_eq(rc, GREENLET_ERROR);
  cr_assert_eq(I(v), 7);
  cr_assert(greenlet_dead(a));
  if ((st = check_rc(greenlet_create(&b, parker, NULL, NULL))))
    goto out;
  rc = greenlet_switch(b, NULL, &v);
  if ((st = check_rc(rc)))
    goto out;
  rc = greenlet_kill(b, &v);
  cr_assert_eq(rc, GREENLET_OK);
  cr_assert_eq(I(v), -1);
out:
  if (a)
    cr_assert_eq(greenlet_destroy(a, GREENLET_DESTROY_DISCARD), 0);
  if (b)
    cr_assert_eq(greenlet_destroy(b, GREENLET_DESTROY_DISCARD), 0);
  *result = P(st);
  return GREENLET_OK;
}

static void *scenario(void *unused) {
  (void)unused;
  greenlet_t *g = NULL;
  void *v = NULL;
  if (!greenlet_current()) /* the thread's state could not be made */
    return P(ENOMEM_SEEN);
  int st = check_rc(greenlet_create(&g, outer, NULL, NULL));
  if (!st) {
    int rc = greenlet_switch(g, NULL, &v);
    st = check_rc(rc);
    if (!st) {
      cr_assert_eq(rc, GREENLET_OK);
      st = (int)I(v);
    }
  }
  if (g)
    cr_assert_eq(greenlet_destroy(g, GREENLET_DESTROY_DISCARD), 0);
  return P(st);
}

static uint64_t live_greenlets(void) {
  greenlet_stats_t s;
  cr_assert_eq(greenlet_process_stats(&s), 0);
  return s.live;
}

Test(faults, every_allocation_fails_once) {
  pthread_t t;
  void *r;
  /* A clean run first: it must succeed with no fault. */
  cr_assert_eq(pthread_create(&t, NULL, scenario, NULL), 0);
  cr_assert_eq(pthread_join(t, &r), 0);
  cr_assert_eq(I(r), 0);
  uint64_t live0 = live_greenlets();
  int k, fired = 1, enomem = 0;
  for (k = 0; fired && k < 10000; k++) {
    greenlet__fault_arm(k);
    cr_assert_eq(pthread_create(&t, NULL, scenario, NULL), 0);
    cr_assert_eq(pthread_join(t, &r), 0);
    long seen = greenlet__fault_disarm(&fired);
    cr_assert(I(r) == 0 || I(r) == ENOMEM_SEEN, "k=%d: outcome %ld", k, (long)I(r));
    cr_assert(fired || seen <= k);
    /* The fault may land in a site whose failure is absorbed (the signal
     * stack is optional) and the run still succeeds. */
    enomem += I(r) == ENOMEM_SEEN;
    cr_assert_eq(live_greenlets(), live0, "k=%d: greenlets left behind", k);
  }
  cr_assert(!fired, "did not reach the end of the allocation sequence");
  cr_assert_gt(k, 3, "only %d allocations: the hook is not wired", k);
  cr_assert_gt(enomem, 0);
  /* The library still works. */
  cr_assert_eq(pthread_create(&t, NULL, scenario, NULL), 0);
  cr_assert_eq(pthread_join(t, &r), 0);
  cr_assert_eq(I(r), 0);
  cr_log_info("faults: %d allocation sites tried, %d gave ENOMEM", k - 1, enomem);
}
