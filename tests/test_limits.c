/*
 * test_limits.c - the edges of the stack machinery: a million parked
 * greenlets, guard-page overflow reports (and faults that are not
 * overflows), running out of address space, the mprotect fallback hitting
 * vm.max_map_count, and stack size validation and accounting.
 *
 * Tests that must watch a process die (or that change process-wide settings
 * such as the guard mode) fork a child of their own; the child reports a
 * failed check as a "CHILD-FAIL:" line on stderr and a non-zero exit.
 * Children die by alarm() after 120 s, so only the million-greenlet test
 * carries a Criterion .timeout (Criterion 2.4.1's runner leaks a 48-byte
 * block, which LeakSanitizer reports, when two tests with a .timeout run
 * side by side under --jobs 2).
 */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "procfs.h"

#if defined(__SANITIZE_ADDRESS__)
#define LIMITS_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define LIMITS_TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(LIMITS_ASAN)
#define LIMITS_ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(LIMITS_TSAN)
#define LIMITS_TSAN 1
#endif
#endif


/* ---- forked children --------------------------------------------------- */

typedef struct {
  int status;      /* from waitpid */
  char out[65536]; /* the child's stderr (and stdout), truncated */
  size_t len;
} child_result;

/* Static, not malloc'ed: a forked child inherits no heap block that a leak
 * checker (valgrind --leak-check=full) would report at its _exit. */
static child_result child_out;

/* In a child: report a failed check and exit. */
__attribute__((format(printf, 1, 2), noreturn)) static void
child_fail(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  dprintf(STDERR_FILENO, "CHILD-FAIL: %s\n", buf);
  _exit(3);
}

__attribute__((format(printf, 3, 4), noreturn)) static void
child_fail_at(int line, const char *what, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  child_fail("line %d: %s: %s", line, what, buf);
}

#define CCHECK(cond, ...)                                                      \
  do {                                                                         \
    if (!(cond))                                                               \
      child_fail_at(__LINE__, #cond, __VA_ARGS__);                             \
  } while (0)

#define CCHECK_RC(call, want)                                                  \
  do {                                                                         \
    int rc_ = (call);                                                          \
    if (rc_ != (want))                                                         \
      child_fail("line %d: %s returned %d (%s), expected %d", __LINE__, #call, \
                 rc_, greenlet_strerror(rc_), (int)(want));                    \
  } while (0)

/*
 * Runs fn(arg) in a forked child with stderr and stdout going to a pipe,
 * no core dumps and a 120 s alarm; fn's return value is the exit status.
 * The test process itself must not have made any greenlet call if fn
 * depends on a fresh library state (e.g. the guard mode).
 */
static void run_child(int (*fn)(void *), void *arg, child_result *res) {
  int p[2];
  cr_assert_eq(pipe(p), 0, "pipe: %s", strerror(errno));
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    close(p[0]);
    dup2(p[1], STDERR_FILENO);
    dup2(p[1], STDOUT_FILENO);
    close(p[1]);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    alarm(120);
    _exit(fn(arg));
  }
  close(p[1]);
  res->len = 0;
  char buf[4096];
  for (;;) {
    ssize_t n = read(p[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    size_t room = sizeof res->out - 1 - res->len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    memcpy(res->out + res->len, buf, take);
    res->len += take;
  }
  res->out[res->len] = '\0';
  close(p[0]);
  pid_t w;
  do
    w = waitpid(pid, &res->status, 0);
  while (w < 0 && errno == EINTR);
  cr_assert_eq(w, pid, "waitpid: %s", strerror(errno));
#ifdef LIMITS_DEBUG
  fprintf(stderr, "---- child status %#x output:\n%s----\n", res->status,
          res->out);
#endif
}

static const char *describe_status(int status, char *buf, size_t cap) {
  if (WIFEXITED(status))
    snprintf(buf, cap, "exited with %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else
    snprintf(buf, cap, "status %#x", status);
  return buf;
}

/* The child ran to the end and every check passed. */
static void assert_child_ok(const child_result *r) {
  char st[64];
  cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0,
            "child %s; output:\n%s", describe_status(r->status, st, sizeof st),
            r->out);
}

/* ======================================================================= */
/* A million parked greenlets                                              */
/* ======================================================================= */

#define MILLION 1000000

/* Parks at once; when killed returns its first argument. */
static int park_run(greenlet_t *self, void *arg, void **result) {
  void *v;
  int rc;
  do
    rc = greenlet_switch(greenlet_parent(self), NULL, &v);
  while (rc == GREENLET_OK);
  *result = arg;
  return rc == GREENLET_EXIT ? GREENLET_OK : GREENLET_ERROR;
}

Test(limits, million_parked_greenlets, .timeout = 300) {
  if (test_light())
    cr_skip_test("CGREENLET_TEST_LIGHT: a million stacks is too slow here");
#if defined(LIMITS_ASAN) || defined(LIMITS_TSAN)
  cr_skip_test("sanitizer build: a million stacks takes minutes (about "
               "210 s under ASan)");
#endif
  if (strcmp(greenlet_guard_mode(), "madvise") != 0)
    cr_skip_test("guard mode is %s: without MADV_GUARD_INSTALL every stack "
                 "costs two mappings, so a million cannot fit under "
                 "vm.max_map_count",
                 greenlet_guard_mode());
  greenlet_t **g = malloc(sizeof *g * MILLION);
  cr_assert_neq(g, NULL);
  greenlet_t *main = greenlet_current();
  long maps_before = map_count();
  greenlet_attr_t attr = {GREENLET_MIN_STACK_SIZE, NULL, 0, 0};
  double t0 = now_s();
  for (intptr_t i = 0; i < MILLION; i++) {
    int rc = greenlet_create(&g[i], park_run, NULL, &attr);
    cr_assert_eq(rc, 0, "create #%ld: %s", (long)i, greenlet_strerror(rc));
    rc = greenlet_switch(g[i], P(i), NULL);
    cr_assert_eq(rc, GREENLET_OK, "switch #%ld: %d (%s); %ld mappings", (long)i,
                 rc, greenlet_strerror(rc), map_count());
  }
  double t1 = now_s();
  long maps = map_count(), max = max_map_count();
  cr_log_info("1M greenlets parked in %.1f s; %ld mappings (%ld before, "
              "vm.max_map_count %ld)",
              t1 - t0, maps, maps_before, max);
  cr_assert_eq(greenlet_current(), main);
  for (long i = 0; i < MILLION; i++) {
    cr_assert(greenlet_active(g[i]), "#%ld not parked", i);
    if (i % 9973 == 0) {
      size_t used = greenlet_stack_in_use(g[i]);
      cr_assert(used > 0 && used < GREENLET_MIN_STACK_SIZE, "#%ld uses %zu", i,
                used);
    }
  }
  /* Guard regions add no mappings: a million stacks stay in a few. */
  cr_assert_lt(maps, maps_before + 1000,
               "%ld mappings with 1M stacks (%ld before)", maps, maps_before);
  if (max > 0)
    cr_assert_lt(maps, max / 4, "%ld mappings, vm.max_map_count %ld", maps,
                 max);

  for (intptr_t i = 0; i < MILLION; i++) {
    void *out = NULL;
    int rc = greenlet_kill(g[i], &out);
    cr_assert_eq(rc, GREENLET_OK, "kill #%ld: %d (%s)", (long)i, rc,
                 greenlet_strerror(rc));
    cr_assert_eq(I(out), i, "kill #%ld returned %ld", (long)i, (long)I(out));
  }
  for (long i = 0; i < MILLION; i++) {
    cr_assert(greenlet_dead(g[i]), "#%ld survived its kill", i);
    cr_assert_eq(greenlet_stack_in_use(g[i]), 0);
    int rc = greenlet_destroy(g[i], 0);
    cr_assert_eq(rc, 0, "destroy #%ld: %d (%s)", i, rc, greenlet_strerror(rc));
  }
  double t2 = now_s();
  long maps_end = map_count();
  cr_log_info("killed and destroyed in %.1f s; %ld mappings left", t2 - t1,
              maps_end);
  cr_assert_lt(maps_end, maps_before + 100, "%ld mappings after (%ld before)",
               maps_end, maps_before);
  free(g);
}

/* ======================================================================= */
/* Guard pages                                                             */
/* ======================================================================= */

static volatile int recursion_limit = INT_MAX;

__attribute__((noinline)) static int recurse(int depth) {
  volatile char frame[256];
  frame[0] = (char)depth;
  frame[255] = (char)depth;
  if (depth >= recursion_limit)
    return frame[0];
  int r = recurse(depth + 1);
  /* frame stays live across the call: no tail call, no loop. */
  __asm__ volatile("" : : "r"(frame) : "memory");
  return r + frame[depth & 255];
}

static int overflow_run(greenlet_t *self, void *arg, void **result) {
  (void)arg, (void)result;
  dprintf(STDERR_FILENO, "greenlet-id=%llu\n",
          (unsigned long long)greenlet_id(self));
  recurse(0);
  child_fail("recursed without bound and came back");
}

#define OVERFLOW_STACK ((size_t)64 * 1024)

static int park_once(greenlet_t *self, void *arg, void **result) {
  (void)arg, (void)result;
  greenlet_switch(greenlet_parent(self), NULL, NULL);
  return GREENLET_OK;
}

/* arg non-NULL: a shared stack, one slot, taken first by a parked greenlet
 * (so the overflowing one starts on a slot whose bytes were copied out). */
static void *overflow_thread(void *arg) {
  greenlet_t *g = NULL;
  greenlet_attr_t attr = {OVERFLOW_STACK, "deep-recursion", 0, 0};
  if (arg) {
    attr.flags = GREENLET_ATTR_SHARED_STACK;
    CCHECK_RC(greenlet_set_shared_stacks(1), 0);
    greenlet_t *parked;
    CCHECK_RC(greenlet_create(&parked, park_once, NULL, &attr), 0);
    CCHECK_RC(greenlet_switch(parked, NULL, NULL), GREENLET_OK);
  }
  CCHECK_RC(greenlet_create(&g, overflow_run, NULL, &attr), 0);
  int rc = greenlet_switch(g, NULL, NULL);
  child_fail("switch into the overflowing greenlet returned %d", rc);
}

/* arg: NULL = overflow on the main thread, P(2) the same on a shared
 * stack, else on a second thread (which has a signal stack of its own). */
static int overflow_child(void *arg) {
  if (!arg || arg == P(2))
    overflow_thread(arg);
  (void)greenlet_current(); /* this thread uses the library too */
  pthread_t t;
  CCHECK(pthread_create(&t, NULL, overflow_thread, NULL) == 0,
         "pthread_create");
  pthread_join(t, NULL);
  child_fail("the overflowing thread came back");
}

static void check_overflow_report(const child_result *r) {
  char st[64];
  unsigned long long id = 0;
  const char *at = strstr(r->out, "greenlet-id=");
  cr_assert(at && sscanf(at, "greenlet-id=%llu", &id) == 1,
            "child %s before it printed its greenlet's id; output:\n%s",
            describe_status(r->status, st, sizeof st), r->out);
  cr_assert(WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGABRT,
            "child %s, expected SIGABRT; output:\n%s",
            describe_status(r->status, st, sizeof st), r->out);
  char want[128];
  snprintf(want, sizeof want,
           "cgreenlet: stack overflow in greenlet #%llu 'deep-recursion'", id);
  cr_assert_neq(strstr(r->out, want), NULL, "no \"%s\" in:\n%s", want, r->out);
  snprintf(want, sizeof want, "%zu bytes; fault at ", OVERFLOW_STACK);
  cr_assert_neq(strstr(r->out, want), NULL, "no \"%s\" in:\n%s", want, r->out);
  cr_assert_neq(strstr(r->out, "in the guard page)"), NULL, "%s", r->out);
}

Test(limits, stack_overflow_is_reported_and_aborts) {
  if (test_light())
    cr_skip_test("CGREENLET_TEST_LIGHT: guard faults are not for tools");
  child_result *r = &child_out;
  run_child(overflow_child, NULL, r);
  check_overflow_report(r);
  run_child(overflow_child, P(1), r);
  check_overflow_report(r);
  run_child(overflow_child, P(2), r);
  check_overflow_report(r);
}

/*
 * The purger gives pages back with one madvise per run of neighbouring free
 * stacks, across the guard markers between them (MADV_DONTNEED keeps
 * those).  A stack reused from there must still stop an overflow at its
 * guard.  Round 1 parks PURGED_N greenlets, noting where each stack's
 * frames sit, finishes them (past the pool's 64 they go to the purger) and
 * waits until the purger has given those pages back; round 2 takes the
 * pool's stacks, then one of the purger's, and overflows on it.
 */
enum { PURGED_N = 200, POOL_STACKS = 64 };
static char *purged_at[PURGED_N];

static int note_stack_run(greenlet_t *self, void *arg, void **result) {
  volatile char here = 0;
  (void)arg, (void)result;
  purged_at[(intptr_t)greenlet_userdata(self)] = (char *)&here;
  greenlet_switch(greenlet_parent(self), NULL, NULL);
  return GREENLET_OK;
}

static int page_resident(const char *p) {
  unsigned char v = 0;
  uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
  return mincore((void *)((uintptr_t)p & ~(pg - 1)), pg, &v) == 0 && (v & 1);
}

static int purged_overflow_run(greenlet_t *self, void *arg, void **result) {
  volatile char here = 0;
  /* Addresses as integers: they lie in different objects. */
  uintptr_t at = (uintptr_t)&here;
  uintptr_t map = OVERFLOW_STACK + 16 * 1024; /* usable + guard: neighbours' distance */
  int j = -1, neighbour = 0;
  for (int k = POOL_STACKS; k < PURGED_N; k++) {
    uintptr_t was = (uintptr_t)purged_at[k];
    if (at > was - 4096 && at < was + 4096)
      j = k;
  }
  if (j < 0)
    child_fail("the stack did not come from the purger");
  for (int k = POOL_STACKS; k < PURGED_N; k++) {
    uintptr_t d = (uintptr_t)purged_at[k] - (uintptr_t)purged_at[j];
    if (d == map || d == (uintptr_t)0 - map)
      neighbour = 1;
  }
  if (!neighbour)
    child_fail("no neighbouring stack went through the purger with this one");
  return overflow_run(self, arg, result);
}

static int purged_overflow_child(void *arg) {
  (void)arg;
  if (strcmp(greenlet_guard_mode(), "madvise") != 0) {
    dprintf(STDOUT_FILENO, "skip: %s guards, no purger\n", greenlet_guard_mode());
    return 0;
  }
  static greenlet_t *g[PURGED_N];
  greenlet_attr_t attr = {OVERFLOW_STACK, "parked", 0, 0};
  for (intptr_t i = 0; i < PURGED_N; i++) {
    CCHECK_RC(greenlet_create(&g[i], note_stack_run, NULL, &attr), 0);
    greenlet_set_userdata(g[i], (void *)i);
    CCHECK_RC(greenlet_switch(g[i], NULL, NULL), GREENLET_OK);
  }
  for (int i = 0; i < PURGED_N; i++) {
    CCHECK_RC(greenlet_switch(g[i], NULL, NULL), GREENLET_OK);
    CCHECK_RC(greenlet_destroy(g[i], 0), 0);
  }
  for (int tries = 0;; tries++) { /* the purger works in the background */
    int left = 0;
    for (int k = POOL_STACKS; k < PURGED_N; k++)
      left += page_resident(purged_at[k]);
    if (left == 0)
      break;
    if (tries == 10000)
      child_fail("%d stacks still hold their pages after 10 s", left);
    usleep(1000);
  }
  for (int i = 0; i < POOL_STACKS; i++) {
    CCHECK_RC(greenlet_create(&g[i], note_stack_run, NULL, &attr), 0);
    greenlet_set_userdata(g[i], (void *)(intptr_t)i);
    CCHECK_RC(greenlet_switch(g[i], NULL, NULL), GREENLET_OK);
  }
  greenlet_t *o = NULL;
  greenlet_attr_t oattr = {OVERFLOW_STACK, "deep-recursion", 0, 0};
  CCHECK_RC(greenlet_create(&o, purged_overflow_run, NULL, &oattr), 0);
  int rc = greenlet_switch(o, NULL, NULL);
  child_fail("switch into the overflowing greenlet returned %d", rc);
}

Test(limits, overflow_caught_on_a_stack_the_purger_gave_back) {
  if (test_light())
    cr_skip_test("CGREENLET_TEST_LIGHT: guard faults are not for tools");
  child_result *r = &child_out;
  run_child(purged_overflow_child, NULL, r);
  if (strncmp(r->out, "skip: ", 6) == 0)
    cr_skip_test("%s", r->out + 6);
  check_overflow_report(r);
}

/* Faults that are not the current greenlet hitting its own guard. */
static int *volatile null_target;
static volatile char *guard_target; /* inside a parked greenlet's guard */

static int *volatile prot_none_target;

enum { BAD_NULL, BAD_PROT_NONE, BAD_RAISE, BAD_RAISE_THEN_NULL };

/* UBSan would stop the NULL store before it faults. */
__attribute__((no_sanitize("undefined"))) static int
bad_write_run(greenlet_t *self, void *arg, void **result) {
  (void)self, (void)result;
  switch ((int)I(arg)) {
  case BAD_PROT_NONE:
    *prot_none_target = 42;
    break;
  case BAD_RAISE_THEN_NULL:
    raise(SIGSEGV);
    dprintf(STDERR_FILENO, "survived raise\n");
    *null_target = 42;
    break;
  case BAD_RAISE:
    raise(SIGSEGV);
    break;
  default:
    *null_target = 42;
    break;
  }
  child_fail("the bad access did not kill the process");
}

/* arg: one of BAD_*. */
static int bad_write_child(void *arg) {
  void *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CCHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
  prot_none_target = p;
  greenlet_t *g = NULL;
  greenlet_attr_t attr = {0, "bad-writer", 0, 0};
  CCHECK_RC(greenlet_create(&g, bad_write_run, NULL, &attr), 0);
  int rc = greenlet_switch(g, arg, NULL);
  child_fail("switch returned %d", rc);
}

/* Parks after publishing an address in the middle of its own guard region:
 * its stack ends at the page boundary just above this frame. */
static int guard_owner_run(greenlet_t *self, void *arg, void **result) {
  (void)arg, (void)result;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  uintptr_t top = (frame + page - 1) & ~(uintptr_t)(page - 1);
  uintptr_t lo = top - greenlet_stack_size(self);
  guard_target = (volatile char *)(lo - 8 * 1024);
  (void)greenlet_switch(greenlet_parent(self), NULL, NULL);
  child_fail("guard owner resumed");
}

static int guard_poker_run(greenlet_t *self, void *arg, void **result) {
  (void)self, (void)arg, (void)result;
  *guard_target = 1;
  child_fail("wrote into another greenlet's guard");
}

/* arg: 0 = poke from the main greenlet, 1 = from another greenlet. */
static int other_guard_child(void *arg) {
  greenlet_t *owner = NULL, *poker = NULL;
  greenlet_attr_t attr = {64 * 1024, "guard-owner", 0, 0};
  CCHECK_RC(greenlet_create(&owner, guard_owner_run, NULL, &attr), 0);
  CCHECK_RC(greenlet_switch(owner, NULL, NULL), GREENLET_OK);
  CCHECK(guard_target != NULL, "no guard address");
  if (arg == NULL) {
    *guard_target = 1;
    child_fail("wrote into a greenlet's guard from main");
  }
  attr.name = "guard-poker";
  CCHECK_RC(greenlet_create(&poker, guard_poker_run, NULL, &attr), 0);
  int rc = greenlet_switch(poker, NULL, NULL);
  child_fail("switch returned %d", rc);
}

/* The child died of the fault itself, not of an overflow report. */
static void assert_plain_segv(const child_result *r, const char *what) {
  char st[64];
  cr_assert_eq(strstr(r->out, "cgreenlet: stack overflow"), NULL,
               "%s: reported as an overflow:\n%s", what, r->out);
  cr_assert_eq(strstr(r->out, "CHILD-FAIL"), NULL, "%s:\n%s", what, r->out);
#ifdef LIMITS_ASAN
  /* Our handler passes the fault on to ASan's, which reports it (as SEGV,
   * or as its own "stack-overflow" when the address is near the stack
   * pointer) and exits. */
  if (WIFEXITED(r->status)) {
    cr_assert_neq(WEXITSTATUS(r->status), 0, "%s: exited 0", what);
    cr_assert(strstr(r->out, "ERROR: AddressSanitizer: SEGV") ||
                  strstr(r->out, "ERROR: AddressSanitizer: stack-overflow"),
              "%s: child %s:\n%s", what,
              describe_status(r->status, st, sizeof st), r->out);
    return;
  }
#endif
  cr_assert(WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGSEGV,
            "%s: child %s, expected SIGSEGV; output:\n%s", what,
            describe_status(r->status, st, sizeof st), r->out);
}

Test(limits, other_faults_are_not_reported_as_overflows) {
  if (test_light())
    cr_skip_test("CGREENLET_TEST_LIGHT: guard faults are not for tools");
  child_result *r = &child_out;
  run_child(bad_write_child, P(BAD_NULL), r);
  assert_plain_segv(r, "NULL write in a greenlet");
  run_child(bad_write_child, P(BAD_PROT_NONE), r);
  assert_plain_segv(r, "write into a PROT_NONE page in a greenlet");
  /* Sent, not a fault: it does not repeat when the handler returns. */
  run_child(bad_write_child, P(BAD_RAISE), r);
  assert_plain_segv(r, "raise(SIGSEGV) in a greenlet");
  run_child(other_guard_child, NULL, r);
  assert_plain_segv(r, "main greenlet writing into a parked greenlet's guard");
  run_child(other_guard_child, P(1), r);
  assert_plain_segv(r, "greenlet writing into another greenlet's guard");
}

/* A SIGSEGV handler installed before the library's first call is chained
 * for faults that are not guard hits, and only for those. */
static void user_segv_handler(int sig, siginfo_t *info, void *uctx) {
  (void)sig, (void)uctx;
  char msg[64];
  int n = snprintf(msg, sizeof msg, "user-handler addr=%p\n",
                   info ? info->si_addr : NULL);
  if (n > 0)
    (void)write(STDERR_FILENO, msg, (size_t)n);
  _exit(42);
}

enum { PRIOR_HANDLER_NULL, PRIOR_HANDLER_OVERFLOW, PRIOR_IGNORE };

static int prior_disposition_child(void *arg) {
  int mode = (int)I(arg);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  if (mode == PRIOR_IGNORE) {
    sa.sa_handler = SIG_IGN;
  } else {
    sa.sa_sigaction = user_segv_handler;
    sa.sa_flags = SA_SIGINFO;
  }
  CCHECK(sigaction(SIGSEGV, &sa, NULL) == 0, "sigaction");
  switch (mode) {
  case PRIOR_HANDLER_NULL:
    return bad_write_child(P(BAD_NULL));
  case PRIOR_HANDLER_OVERFLOW:
    return overflow_child(NULL);
  default:
    return bad_write_child(P(BAD_RAISE_THEN_NULL));
  }
}

Test(limits, earlier_sigsegv_disposition_is_respected) {
  if (test_light())
    cr_skip_test("CGREENLET_TEST_LIGHT: guard faults are not for tools");
  child_result *r = &child_out;
  char st[64];

  /* A fault that is not ours goes to the earlier handler. */
  run_child(prior_disposition_child, P(PRIOR_HANDLER_NULL), r);
  cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 42,
            "NULL write with a user handler: child %s:\n%s",
            describe_status(r->status, st, sizeof st), r->out);
  cr_assert_neq(strstr(r->out, "user-handler addr="), NULL, "%s", r->out);
  cr_assert_eq(strstr(r->out, "cgreenlet: stack overflow"), NULL, "%s", r->out);

  /* A guard hit is reported by the library even so. */
  run_child(prior_disposition_child, P(PRIOR_HANDLER_OVERFLOW), r);
  cr_assert(WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGABRT,
            "overflow with a user handler: child %s:\n%s",
            describe_status(r->status, st, sizeof st), r->out);
  cr_assert_neq(strstr(r->out, "cgreenlet: stack overflow in greenlet #"), NULL,
                "%s", r->out);
  cr_assert_eq(strstr(r->out, "user-handler"), NULL, "%s", r->out);

  /* SIG_IGN: a sent SIGSEGV stays ignored, a real fault still kills. */
  run_child(prior_disposition_child, P(PRIOR_IGNORE), r);
  cr_assert_neq(strstr(r->out, "survived raise"), NULL,
                "raise(SIGSEGV) under SIG_IGN killed the child (%s):\n%s",
                describe_status(r->status, st, sizeof st), r->out);
  cr_assert(WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGSEGV,
            "NULL write under SIG_IGN: child %s:\n%s",
            describe_status(r->status, st, sizeof st), r->out);
}

/* ======================================================================= */
/* Out of address space                                                    */
/* ======================================================================= */

#define NOMEM_STACK ((size_t)16 * 1024 * 1024)
#define NOMEM_MAX 64

static int nomem_child(void *arg) {
  (void)arg;
  greenlet_t *main = greenlet_current(); /* thread state, signal stack */
  CCHECK(main != NULL, "no main greenlet");
  greenlet_t *g[NOMEM_MAX];
  int n = 0, failed_rc = 0, failed_in_create = 0;
  /* Room for about four stacks. */
  struct rlimit old, low;
  CCHECK(getrlimit(RLIMIT_AS, &old) == 0, "getrlimit");
  long long vm = vm_size_bytes();
  CCHECK(vm > 0, "VmSize");
  low.rlim_cur = (rlim_t)vm + 4 * NOMEM_STACK + NOMEM_STACK / 2;
  low.rlim_max = old.rlim_max;
  CCHECK(setrlimit(RLIMIT_AS, &low) == 0, "setrlimit: %s", strerror(errno));
  greenlet_attr_t attr = {NOMEM_STACK, "big", 0, 0};
  for (n = 0; n < NOMEM_MAX; n++) {
    int rc = greenlet_create(&g[n], park_run, NULL, &attr);
    if (rc != 0) {
      failed_rc = rc;
      failed_in_create = 1;
      break;
    }
    rc = greenlet_switch(g[n], P(n), NULL);
    if (rc != GREENLET_OK) {
      failed_rc = rc;
      break;
    }
  }
  long long vm_at_failure = vm_size_bytes();
  CCHECK(n < NOMEM_MAX, "%d stacks of %zu MiB fit under RLIMIT_AS", n,
         NOMEM_STACK >> 20);
  CCHECK(failed_rc == GREENLET_ENOMEM, "failed with %d (%s) after %d",
         failed_rc, greenlet_strerror(failed_rc), n);
  CCHECK(n >= 1, "not even one stack fit (VmSize %lld, limit %llu)",
         vm_at_failure, (unsigned long long)low.rlim_cur);
  CCHECK(greenlet_current() == main, "current moved");
  for (int i = 0; i < n; i++)
    CCHECK(greenlet_active(g[i]), "#%d", i);
  if (failed_in_create) {
    dprintf(STDERR_FILENO, "note: greenlet_create failed first\n");
  } else {
    /* The refused switch changed nothing. */
    CCHECK(!greenlet_started(g[n]) && !greenlet_active(g[n]) &&
               !greenlet_dead(g[n]),
           "target state after ENOMEM");
    CCHECK(greenlet_stack_in_use(g[n]) == 0, "in use");
    CCHECK(greenlet_parent(g[n]) == main, "parent");
    /* Still refused while the limit holds ... */
    CCHECK_RC(greenlet_switch(g[n], P(n), NULL), GREENLET_ENOMEM);
    CCHECK(!greenlet_started(g[n]), "started after a second ENOMEM");
    /* The greenlets that have their stacks still run. */
    if (n > 0) {
      void *out = P(1);
      CCHECK_RC(greenlet_switch(g[0], P(5), &out), GREENLET_OK);
      CCHECK(out == NULL, "parked value %p", out);
    }
    /* ... and fine once there is room again. */
    CCHECK(setrlimit(RLIMIT_AS, &old) == 0, "setrlimit back");
    void *out = NULL;
    CCHECK_RC(greenlet_switch(g[n], P(n), &out), GREENLET_OK);
    CCHECK(out == NULL, "parked value");
    CCHECK(greenlet_active(g[n]), "started after the limit was raised");
    n++;
  }
  CCHECK(setrlimit(RLIMIT_AS, &old) == 0, "setrlimit back");
  for (int i = 0; i < n; i++) {
    void *out = NULL;
    CCHECK_RC(greenlet_kill(g[i], &out), GREENLET_OK);
    CCHECK(I(out) == i, "kill result");
    CCHECK_RC(greenlet_destroy(g[i], 0), 0);
  }
  return 0;
}

Test(limits, out_of_address_space_is_enomem_and_recoverable) {
  if (test_qemu())
    cr_skip_test("qemu-user ignores RLIMIT_AS");
  child_result *r = &child_out;
  run_child(nomem_child, NULL, r);
  assert_child_ok(r);
}

/* ======================================================================= */
/* The mprotect fallback and vm.max_map_count                              */
/* ======================================================================= */

#define MAPLIMIT_TRIES 200000

static int maplimit_child(void *arg) {
  long max = (long)(intptr_t)arg;
  /* Before any greenlet call: the mode is chosen once per process. */
  CCHECK(setenv("CGREENLET_GUARD", "mprotect", 1) == 0, "setenv");
  CCHECK(strcmp(greenlet_guard_mode(), "mprotect") == 0, "guard mode %s",
         greenlet_guard_mode());
  greenlet_t **g = malloc(sizeof *g * MAPLIMIT_TRIES);
  CCHECK(g != NULL, "malloc");
  greenlet_attr_t attr = {GREENLET_MIN_STACK_SIZE, NULL, 0, 0};
  long n;
  int rc = 0;
  for (n = 0; n < MAPLIMIT_TRIES; n++) {
    rc = greenlet_create(&g[n], park_run, NULL, &attr);
    CCHECK(rc == 0, "create #%ld: %s", n, greenlet_strerror(rc));
    rc = greenlet_switch(g[n], P(n), NULL);
    if (rc != GREENLET_OK)
      break;
  }
  long maps = map_count();
  dprintf(STDERR_FILENO, "started=%ld maps=%ld max=%ld rc=%d\n", n, maps, max,
          rc);
  CCHECK(rc == GREENLET_EMAPLIMIT, "stopped after %ld with %d (%s)", n, rc,
         greenlet_strerror(rc));
  /* Two mappings per stack. */
  CCHECK(n <= max / 2 && n > max / 2 - 2000, "%ld stacks, max %ld", n, max);
  CCHECK(!greenlet_started(g[n]), "refused target started");
  CCHECK(greenlet_stack_in_use(g[n]) == 0, "in use");
  /* Once more: refused again, reported only once. */
  CCHECK_RC(greenlet_switch(g[n], P(n), NULL), GREENLET_EMAPLIMIT);
  /* A finished greenlet's stack is pooled and reused without a mapping. */
  void *out = NULL;
  CCHECK_RC(greenlet_kill(g[0], &out), GREENLET_OK);
  CCHECK(I(out) == 0, "kill result");
  CCHECK_RC(greenlet_switch(g[n], P(n), NULL), GREENLET_OK);
  CCHECK(greenlet_active(g[n]), "started on a pooled stack");
  return 0;
}

Test(limits, mprotect_guards_hit_the_map_count_limit) {
  if (test_light())
    cr_skip_test("CGREENLET_TEST_LIGHT: tens of thousands of mappings");
  if (test_qemu())
    cr_skip_test("qemu-user: tens of thousands of mprotect calls take over "
                 "10 minutes to emulate");
  long max = max_map_count();
  if (max <= 0 || max > MAPLIMIT_TRIES)
    cr_skip_test("vm.max_map_count is %ld: too high to reach in a test", max);
  child_result *r = &child_out;
  run_child(maplimit_child, P(max), r);
  assert_child_ok(r);
  const char *msg = strstr(r->out, "cgreenlet: cannot map another guarded "
                                   "stack");
  cr_assert_neq(msg, NULL, "no map-count report in:\n%s", r->out);
  char want[64];
  snprintf(want, sizeof want, "vm.max_map_count is %ld", max);
  cr_assert_neq(strstr(msg, want), NULL, "no \"%s\" in:\n%s", want, r->out);
  cr_assert_eq(strstr(msg + 1, "cgreenlet: cannot map"), NULL,
               "reported more than once:\n%s", r->out);
}

/* ======================================================================= */
/* Stack sizes                                                             */
/* ======================================================================= */

static int finish_run(greenlet_t *self, void *arg, void **result) {
  (void)self;
  *result = arg;
  return GREENLET_OK;
}

static size_t round_page(size_t n) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return (n + page - 1) / page * page;
}

/* A create refused for its size writes nothing and allocates nothing. */
static void expect_bad_size(size_t size) {
  greenlet_attr_t attr = {size, "bad", 0, 0};
  greenlet_t *g = P(0x1234);
  struct mallinfo2 before = mallinfo2();
  EXPECT_RC(greenlet_create(&g, finish_run, NULL, &attr), GREENLET_EINVAL);
  struct mallinfo2 after = mallinfo2();
  cr_assert_eq(g, P(0x1234), "size %zu: *out written", size);
  cr_assert_eq(after.uordblks, before.uordblks,
               "size %zu: refused create allocated %zu bytes", size,
               after.uordblks - before.uordblks);
}

static void expect_size(size_t asked, size_t reported) {
  greenlet_attr_t attr = {asked, NULL, 0, 0};
  greenlet_t *g = NULL;
  EXPECT_RC(greenlet_create(&g, finish_run, NULL, &attr), 0);
  cr_assert_eq(greenlet_stack_size(g), reported, "asked %zu, reports %zu",
               asked, greenlet_stack_size(g));
  /* Runs on a stack of that size. */
  void *out = NULL;
  EXPECT_RC(greenlet_switch(g, P(asked), &out), GREENLET_OK);
  cr_assert_eq(out, P(asked));
  cr_assert_eq(greenlet_stack_size(g), reported);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

Test(limits, stack_size_validation_and_rounding) {
  greenlet_t *main = greenlet_current();
  cr_assert_eq(greenlet_stack_size(main), 0, "main has no greenlet stack");
  cr_assert_eq(greenlet_stack_size(NULL), 0);
  cr_assert_eq(greenlet_stack_in_use(NULL), 0);

  expect_bad_size(1);
  expect_bad_size(4096);
  expect_bad_size(GREENLET_MIN_STACK_SIZE - 1);
  expect_bad_size(GREENLET_MAX_STACK_SIZE + 1);
  expect_bad_size(GREENLET_MAX_STACK_SIZE * 2);
  expect_bad_size(SIZE_MAX);

  expect_size(0, GREENLET_DEFAULT_STACK_SIZE);
  expect_size(GREENLET_MIN_STACK_SIZE, GREENLET_MIN_STACK_SIZE);
  expect_size(GREENLET_MIN_STACK_SIZE + 1,
              round_page(GREENLET_MIN_STACK_SIZE + 1));
  expect_size(100000, round_page(100000));
  expect_size(GREENLET_DEFAULT_STACK_SIZE, GREENLET_DEFAULT_STACK_SIZE);
  expect_size(GREENLET_MAX_STACK_SIZE, GREENLET_MAX_STACK_SIZE);

  /* No attr, and attr with only a name: the default. */
  greenlet_t *g = NULL;
  EXPECT_RC(greenlet_create(&g, finish_run, NULL, NULL), 0);
  cr_assert_eq(greenlet_stack_size(g), GREENLET_DEFAULT_STACK_SIZE);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
  greenlet_attr_t named = GREENLET_ATTR_INIT;
  named.name = "named";
  EXPECT_RC(greenlet_create(&g, finish_run, NULL, &named), 0);
  cr_assert_eq(greenlet_stack_size(g), GREENLET_DEFAULT_STACK_SIZE);
  cr_assert_str_eq(greenlet_name(g), "named");
  EXPECT_RC(greenlet_destroy(g, 0), 0);
  cr_assert_eq(greenlet_current(), main);
}

/* ---- stack in use ------------------------------------------------------- */

#define PAD 256

static int depth_cmd;
static size_t in_use_while_running = 1;

/* Recurses `depth` frames of at least PAD bytes, then parks; the value it is
 * resumed with is the next depth (negative: finish). */
__attribute__((noinline)) static void park_at(greenlet_t *self, int depth) {
  volatile char pad[PAD];
  pad[0] = (char)depth;
  if (depth > 0) {
    park_at(self, depth - 1);
  } else {
    void *out = NULL;
    int rc = greenlet_switch(greenlet_parent(self), NULL, &out);
    depth_cmd = rc == GREENLET_OK ? (int)I(out) : -1;
  }
  __asm__ volatile("" : : "r"(pad) : "memory");
}

static int depth_run(greenlet_t *self, void *arg, void **result) {
  in_use_while_running = greenlet_stack_in_use(self);
  depth_cmd = (int)I(arg);
  while (depth_cmd >= 0)
    park_at(self, depth_cmd);
  *result = P(7);
  return GREENLET_OK;
}

static void stack_in_use_case(size_t stack_size, int deep) {
  greenlet_attr_t attr = {stack_size, "depth", 0, 0};
  greenlet_t *g = NULL;
  EXPECT_RC(greenlet_create(&g, depth_run, NULL, &attr), 0);
  size_t size = greenlet_stack_size(g);
  cr_assert_eq(greenlet_stack_in_use(g), 0, "unstarted");

  EXPECT_RC(greenlet_switch(g, P(0), NULL), GREENLET_OK);
  cr_assert_eq(in_use_while_running, 0, "running greenlet reports %zu",
               in_use_while_running);
  size_t shallow = greenlet_stack_in_use(g);
  cr_assert(shallow > 0 && shallow < size, "parked: %zu of %zu", shallow, size);

  EXPECT_RC(greenlet_switch(g, P(deep), NULL), GREENLET_OK);
  size_t deeper = greenlet_stack_in_use(g);
  cr_assert_geq(deeper, shallow + (size_t)deep * PAD,
                "%d frames deeper: %zu, at the top: %zu", deep, deeper,
                shallow);
  cr_assert_lt(deeper, size);

  EXPECT_RC(greenlet_switch(g, P(0), NULL), GREENLET_OK);
  cr_assert_eq(greenlet_stack_in_use(g), shallow, "back at the same place");

  void *out = NULL;
  EXPECT_RC(greenlet_switch(g, P(-1), &out), GREENLET_OK);
  cr_assert_eq(out, P(7));
  cr_assert(greenlet_dead(g));
  cr_assert_eq(greenlet_stack_in_use(g), 0, "dead");
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

Test(limits, stack_in_use_grows_with_depth) {
  cr_assert_eq(greenlet_stack_in_use(greenlet_current()), 0, "main");
  stack_in_use_case(0, 100);
  stack_in_use_case(GREENLET_MIN_STACK_SIZE, 20);
}

/* ---- freeing in a scattered order ---------------------------------------- */

/* With MADV_GUARD_INSTALL, neighbouring stacks merge into one VMA; freeing
 * every other one must not split it into tens of thousands of mappings
 * (vm.max_map_count would run out).  The address space comes back when the
 * thread exits. */
enum { SCATTER_N = 100000 };

static int park_until_exit(greenlet_t *self, void *arg, void **result) {
  while (greenlet_switch(greenlet_parent(self), NULL, NULL) == GREENLET_OK)
    ;
  *result = arg;
  return GREENLET_OK;
}

static void *scatter_thread(void *arg) {
  long *maps = arg;
  static greenlet_t *g[SCATTER_N];
  greenlet_attr_t attr = {.stack_size = GREENLET_MIN_STACK_SIZE};
  for (int i = 0; i < SCATTER_N; i++)
    if (greenlet_create(&g[i], park_until_exit, NULL, &attr) != 0 ||
        greenlet_switch(g[i], NULL, NULL) != GREENLET_OK)
      return P(1);
  maps[0] = map_count();
  for (int i = 0; i < SCATTER_N; i += 2)
    if (greenlet_kill(g[i], NULL) != GREENLET_OK || greenlet_destroy(g[i], 0))
      return P(2);
  maps[1] = map_count();
  /* Reuse the freed address space, then free the rest. */
  for (int i = 0; i < SCATTER_N; i += 2)
    if (greenlet_create(&g[i], park_until_exit, NULL, &attr) != 0 ||
        greenlet_switch(g[i], NULL, NULL) != GREENLET_OK)
      return P(3);
  for (int i = 0; i < SCATTER_N; i++)
    if (greenlet_kill(g[i], NULL) != GREENLET_OK || greenlet_destroy(g[i], 0))
      return P(4);
  maps[2] = map_count();
  return NULL;
}

Test(limits, scattered_free_keeps_mappings_flat, .timeout = 300) {
  if (test_light())
    cr_skip_test("CGREENLET_TEST_LIGHT");
  if (strcmp(greenlet_guard_mode(), "madvise") != 0)
    cr_skip_test("mprotect guards: one VMA pair per stack anyway");
  mallopt(M_ARENA_MAX, 1); /* no per-thread malloc arena in the VmSize */
  long maps[3] = {0, 0, 0};
  long before = map_count();
  long long vm_before = vm_size_bytes();
  pthread_t t;
  void *ret;
  cr_assert_eq(pthread_create(&t, NULL, scatter_thread, maps), 0);
  cr_assert_eq(pthread_join(t, &ret), 0);
  cr_assert_null(ret, "step %d failed", (int)I(ret));
  for (int i = 0; i < 3; i++)
    cr_assert_lt(maps[i], before + 64, "mappings at step %d: %ld (from %ld)",
                 i, maps[i], before);
  /* Thread exit unmapped every stack it kept (3.2 GB of them). */
  malloc_trim(0);
  cr_assert_lt(vm_size_bytes() - vm_before, 64ll << 20,
               "VmSize grew by %lld bytes", vm_size_bytes() - vm_before);
}

/* ======================================================================= */
/* The purger: stacks released past a full pool                           */
/* ======================================================================= */

enum { CHURN_MAX = 3000 };

/* Parks, and when resumed writes a pattern over a few KiB of its stack: a
 * stack handed out while still in the purger's hands would show it. */
static int scribble_run(greenlet_t *self, void *arg, void **result) {
  volatile char buf[2048];
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (char)(i * 7 + 1);
  (void)arg;
  void *v = NULL;
  if (greenlet_switch(greenlet_parent(self), NULL, &v) != GREENLET_OK)
    return GREENLET_OK;
  for (size_t i = 0; i < sizeof buf; i++)
    if (buf[i] != (char)(i * 7 + 1))
      return GREENLET_ERROR;
  *result = v;
  return GREENLET_OK;
}

/* Creates, parks, then finishes n greenlets, twice (the second round
 * reuses stacks the purger holds); forks in between (the child must be able
 * to release and reuse stacks too). */
static int churn_child(void *arg) {
  int do_fork = arg != NULL;
  /* Past the pool either way; fewer under Valgrind and qemu. */
  int n = test_light() ? 300 : CHURN_MAX;
  static greenlet_t *g[CHURN_MAX];
  greenlet_attr_t attr = {GREENLET_MIN_STACK_SIZE, NULL, 0, 0};
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < n; i++)
      if (greenlet_create(&g[i], scribble_run, NULL, &attr) != 0 ||
          greenlet_switch(g[i], NULL, NULL) != GREENLET_OK)
        return 10 + round;
    for (int i = 0; i < n; i++) {
      void *out = NULL;
      if (greenlet_switch(g[i], &g[i], &out) != GREENLET_OK || out != &g[i] ||
          !greenlet_dead(g[i]) || greenlet_destroy(g[i], 0) != 0)
        return 20 + round;
    }
    if (do_fork && round == 0) {
      pid_t pid = fork();
      if (pid < 0)
        return 30;
      if (pid == 0)
        _exit(churn_child(NULL)); /* a fresh round in the child */
      int st;
      if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
          WEXITSTATUS(st) != 0)
        return 31;
    }
  }
  return 0;
}

Test(limits, released_stacks_reused_through_the_purger) {
  child_result r;
  run_child(churn_child, (void *)1, &r);
  assert_child_ok(&r);
}

static int churn_sync_child(void *arg) {
  (void)arg;
  setenv("CGREENLET_PURGE", "sync", 1);
  return churn_child(NULL);
}

Test(limits, released_stacks_reused_with_inline_purge) {
  child_result r;
  run_child(churn_sync_child, NULL, &r);
  assert_child_ok(&r);
}
