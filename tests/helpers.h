/*
 * helpers.h - shared bits of the Criterion suite.  Every test runs in its
 * own process (Criterion forks), so a switch bug crashes one test, not the
 * suite.
 */
#ifndef CGREENLET_TEST_HELPERS_H
#define CGREENLET_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "cgreenlet.h"

#define P(i) ((void *)(intptr_t)(i))
#define I(p) ((intptr_t)(p))

/* Expect a call to return rc. */
#define EXPECT_RC(call, rc)                                                    \
  do {                                                                         \
    int rc_ = (call);                                                          \
    cr_assert_eq(rc_, (rc), "%s returned %d (%s), expected %d", #call, rc_,    \
                 greenlet_strerror(rc_), (int)(rc));                           \
  } while (0)

/* Heavy tests (a million greenlets, guard faults) skip when the suite runs
 * under a tool that makes them impractical: CGREENLET_TEST_LIGHT=1. */
static inline int test_light(void) {
  const char *e = getenv("CGREENLET_TEST_LIGHT");
  return e && *e && *e != '0';
}

/* Under qemu-user (scripts/test-aarch64.sh sets CGREENLET_TEST_QEMU=1),
 * RLIMIT_AS is ignored and the emulator's own per-thread memory shows in
 * VmSize: tests that measure those skip. */
static inline int test_qemu(void) {
  const char *e = getenv("CGREENLET_TEST_QEMU");
  return e && *e && *e != '0';
}

#endif
