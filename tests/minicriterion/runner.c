/*
 * runner.c - main() of the suite built against minicriterion (see
 * criterion/criterion.h there).  Usage, a subset of Criterion's:
 *   cgreenlet-tests [--jobs N] [--filter GLOB] [--verbose]
 * Each test is a forked child; up to N run at once.  A child exits 0 when
 * it passed, SKIP_CODE after printing why it skipped, 1 on a failed
 * assertion; a signal or a timeout (SIGALRM) is a failure too.  Prints one
 * line per test and a Criterion-like summary; exits 1 if any test failed.
 */
#include "criterion/criterion.h"

#include <errno.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SKIP_CODE 77
#define MAX_TESTS 512
#define DEFAULT_TIMEOUT 600 /* s; generous: qemu-user is slow */

typedef struct {
  const char *suite, *name;
  void (*fn)(void);
  struct mcr_opts opts;
  pid_t pid;
} mcr_test;

static mcr_test tests[MAX_TESTS];
static int ntests;
static const char *current = "";

void mcr_register(const char *suite, const char *name, void (*fn)(void),
                  struct mcr_opts opts) {
  if (ntests == MAX_TESTS) {
    fprintf(stderr, "minicriterion: more than %d tests\n", MAX_TESTS);
    abort();
  }
  tests[ntests++] = (mcr_test){suite, name, fn, opts, 0};
}

void mcr_fail(const char *file, int line, const char *cond, const char *fmt,
              ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "[----] %s:%d: %s: assertion failed: %s%s%s\n", file, line,
          current, cond, *msg ? ": " : "", msg);
  fflush(NULL);
  _exit(1);
}

void mcr_skip(const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("[SKIP] %s: %s\n", current, msg);
  fflush(NULL);
  _exit(SKIP_CODE);
}

void mcr_log(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[----] %s: ", current);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static pid_t start(mcr_test *t, const char *full) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("minicriterion: fork");
    exit(2);
  }
  if (pid == 0) {
    current = full;
    setpgid(0, 0); /* a timeout kills the test's helpers too */
    unsigned secs = t->opts.timeout > 0 ? (unsigned)t->opts.timeout : 0;
    alarm(secs ? secs : DEFAULT_TIMEOUT);
    t->fn();
    fflush(NULL);
    _exit(0);
  }
  return pid;
}

int main(int argc, char **argv) {
  int jobs = 1, verbose = 0;
  const char *filter = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--jobs") && i + 1 < argc)
      jobs = atoi(argv[++i]);
    else if (!strncmp(argv[i], "--jobs=", 7) || !strncmp(argv[i], "-j", 2))
      jobs = atoi(strchr(argv[i], '=') ? strchr(argv[i], '=') + 1 : argv[i] + 2);
    else if (!strcmp(argv[i], "--filter") && i + 1 < argc)
      filter = argv[++i];
    else if (!strncmp(argv[i], "--filter=", 9))
      filter = argv[i] + 9;
    else if (!strcmp(argv[i], "--verbose") || !strncmp(argv[i], "--verbose=", 10))
      verbose = 1;
    else {
      fprintf(stderr, "usage: %s [--jobs N] [--filter GLOB] [--verbose]\n", argv[0]);
      return 2;
    }
  }
  if (jobs < 1)
    jobs = 1;

  static char names[MAX_TESTS][256];
  int todo[MAX_TESTS], n = 0;
  for (int i = 0; i < ntests; i++) {
    snprintf(names[i], sizeof names[i], "%s::%s", tests[i].suite, tests[i].name);
    char slash[256];
    snprintf(slash, sizeof slash, "%s/%s", tests[i].suite, tests[i].name);
    if (!filter || fnmatch(filter, slash, 0) == 0)
      todo[n++] = i;
  }

  int next = 0, running = 0, passed = 0, failed = 0, skipped = 0;
  while (next < n || running > 0) {
    while (running < jobs && next < n) {
      mcr_test *t = &tests[todo[next]];
      if (verbose)
        printf("[RUN ] %s\n", names[todo[next]]);
      t->pid = start(t, names[todo[next]]);
      next++;
      running++;
    }
    int status;
    pid_t pid = wait(&status);
    if (pid < 0) {
      if (errno == EINTR)
        continue;
      perror("minicriterion: wait");
      return 2;
    }
    for (int k = 0; k < n; k++) {
      mcr_test *t = &tests[todo[k]];
      if (t->pid != pid)
        continue;
      t->pid = 0;
      running--;
      kill(-pid, SIGKILL); /* stray helpers of that test, if any */
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        passed++;
        if (verbose)
          printf("[PASS] %s\n", names[todo[k]]);
      } else if (WIFEXITED(status) && WEXITSTATUS(status) == SKIP_CODE) {
        skipped++;
      } else {
        failed++;
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
          printf("[FAIL] %s: timed out\n", names[todo[k]]);
        else if (WIFSIGNALED(status))
          printf("[FAIL] %s: killed by signal %d (%s)\n", names[todo[k]],
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
        else
          printf("[FAIL] %s: exit status %d\n", names[todo[k]], WEXITSTATUS(status));
      }
      fflush(stdout);
    }
  }
  printf("[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Skipped: %d "
         "(minicriterion)\n",
         passed + failed, passed, failed, skipped);
  return failed != 0 || n == 0;
}
