/*
 * A minimal stand-in for the part of Criterion's API the C suite uses, for
 * ISAs where Debian has no Criterion to cross-link (armhf, ppc64el, s390x,
 * riscv64: see scripts/test-cross.sh).  Built with -Itests/minicriterion,
 * the suite's sources compile unchanged; runner.c is main().  Semantics kept
 * from Criterion: each test runs in its own forked process, a failed
 * assertion ends that test, a skip says why, .timeout kills a stuck test.
 * Not kept: theories, fixtures, output redirection (the suite uses none).
 */
#ifndef CGREENLET_MINICRITERION_H
#define CGREENLET_MINICRITERION_H
#include <string.h>

/* cr_assert(c) without a message passes "" as the format. */
#pragma GCC diagnostic ignored "-Wformat-zero-length"

struct mcr_opts {
  int unused_; /* lets Test(s, n) with no options still initialise */
  double timeout;
};

void mcr_register(const char *suite, const char *name, void (*fn)(void),
                  struct mcr_opts opts);
__attribute__((noreturn, format(printf, 4, 5))) void
mcr_fail(const char *file, int line, const char *cond, const char *fmt, ...);
__attribute__((noreturn, format(printf, 1, 2))) void mcr_skip(const char *fmt,
                                                              ...);
__attribute__((format(printf, 1, 2))) void mcr_log(const char *fmt, ...);

#define Test(suite, name, ...)                                                 \
  static void suite##_##name(void);                                            \
  __attribute__((constructor)) static void suite##_##name##_reg(void) {        \
    mcr_register(#suite, #name, suite##_##name,                                \
                 (struct mcr_opts){.unused_ = 0, __VA_ARGS__});                \
  }                                                                            \
  static void suite##_##name(void)

/* The first variadic argument, when present, is a format literal. */
#define cr_assert(cond, ...)                                                   \
  do {                                                                         \
    if (!(cond))                                                               \
      mcr_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__);                     \
  } while (0)
#define cr_assert_fail(...) mcr_fail(__FILE__, __LINE__, "fail", "" __VA_ARGS__)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_null(p, ...) cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) cr_assert(strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...)                                           \
  cr_assert(strcmp((a), (b)) != 0, __VA_ARGS__)
#define cr_assert_str_empty(s, ...) cr_assert((s)[0] == '\0', __VA_ARGS__)
#define cr_skip_test(...) mcr_skip("" __VA_ARGS__)
#define cr_log_info(...) mcr_log(__VA_ARGS__)

#endif
