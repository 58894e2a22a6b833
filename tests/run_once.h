/*
 * run_once.h - run_once(), shared by the Criterion tests that start a
 * greenlet only to read what it returns (test_core.c, test_unwind.c).
 */
#ifndef CGREENLET_TEST_RUN_ONCE_H
#define CGREENLET_TEST_RUN_ONCE_H

#include "helpers.h"

/*
 * Many tests look at a value a greenlet computes on its own stack (its
 * backtrace, an unwinder's answer, a call refused from inside it) and at
 * nothing else about the greenlet: this starts run with no argument,
 * expects it to finish at once (destroy without discard refuses a
 * greenlet still suspended) and returns its result.
 */
static inline void *run_once(greenlet_run_fn run) {
  greenlet_t *g;
  void *v;
  EXPECT_RC(greenlet_create(&g, run, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, NULL, &v), GREENLET_OK);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
  return v;
}

#endif
