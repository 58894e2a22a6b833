/*
 * standalone.h - stand-ins for the few Criterion macros test_threads.c uses,
 * so that it also builds as a plain program (-DCGREENLET_TEST_STANDALONE)
 * for the ThreadSanitizer run: Criterion's runner cannot start under TSan
 * (BoxFort maps its arena at random fixed addresses, which TSan refuses).
 * Each test runs in a forked child, as under Criterion.
 */
#ifndef CGREENLET_TEST_STANDALONE_H
#define CGREENLET_TEST_STANDALONE_H
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "cgreenlet.h"

#define P(i) ((void *)(intptr_t)(i))
#define I(p) ((intptr_t)(p))

typedef struct {
  const char *name;
  void (*fn)(void);
} sa_test;
static sa_test sa_tests[64];
static int sa_ntests;

#define Test(suite, name, ...)                                                 \
  static void suite##_##name(void);                                            \
  __attribute__((constructor)) static void suite##_##name##_register(void) {   \
    sa_tests[sa_ntests++] = (sa_test){#suite "/" #name, suite##_##name};       \
  }                                                                            \
  static void suite##_##name(void)

static void sa_fail(int line, const char *cond, const char *fmt, ...) {
  fprintf(stderr, "%s:%d: assertion failed: %s\n  ", __FILE__, line, cond);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

/* The first variadic argument, when present, is a format literal. */
#define cr_assert(cond, ...)                                                   \
  do {                                                                         \
    if (!(cond))                                                               \
      sa_fail(__LINE__, #cond, "" __VA_ARGS__);                                \
  } while (0)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...)                                            \
  cr_assert(strcmp((a), (b)) == 0, __VA_ARGS__)

#define EXPECT_RC(call, rc)                                                    \
  do {                                                                         \
    int rc_ = (call);                                                          \
    cr_assert_eq(rc_, (rc), "%s returned %d (%s), expected %d", #call, rc_,    \
                 greenlet_strerror(rc_), (int)(rc));                           \
  } while (0)

/* Runs every test (or those whose name contains argv[1]) in a child. */
int main(int argc, char **argv) {
  int failed = 0, ran = 0;
  for (int i = 0; i < sa_ntests; i++) {
    if (argc > 1 && !strstr(sa_tests[i].name, argv[1]))
      continue;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 2;
    }
    if (pid == 0) {
      alarm(120);
      sa_tests[i].fn();
      exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
      ;
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    printf("[%s] %s", ok ? "PASS" : "FAIL", sa_tests[i].name);
    if (WIFSIGNALED(status))
      printf(" (signal %d)", WTERMSIG(status));
    printf("\n");
    failed += !ok;
    ran++;
  }
  printf("%d test(s), %d failed\n", ran, failed);
  return failed != 0 || ran == 0;
}

#endif
