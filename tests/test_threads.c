/*
 * test_threads.c - greenlets and OS threads: one main greenlet per thread,
 * refusals across threads (GREENLET_ETHREAD, with nothing changed), what
 * thread exit does to the greenlets a thread leaves behind, and a bounded
 * concurrent churn.
 *
 * Criterion asserts may only run on the test's own thread, so the worker
 * threads record failures with TCHECK / TCHECK_RC and the test thread
 * asserts that none were recorded (ASSERT_NO_TFAIL) after joining them.
 *
 * Criterion's runner cannot start under ThreadSanitizer (BoxFort maps its
 * arena at random fixed addresses, which TSan refuses), so this file also
 * builds as a plain program with -DCGREENLET_TEST_STANDALONE: a few
 * stand-ins for the Criterion macros below, each test in a forked child.
 *
 *   make threads-standalone SAN=tsan
 *   build/native-tsan/tests/threads-standalone [substring of a test name]
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef CGREENLET_TEST_STANDALONE
#include "helpers.h"
#else
#include "standalone.h"
#endif
#include "procfs.h"

/* ---- failure recording from any thread --------------------------------- */

static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static int fail_count;
static char fail_msg[512];

__attribute__((format(printf, 3, 4))) static void
tfail(int line, const char *what, const char *fmt, ...) {
  pthread_mutex_lock(&fail_lock);
  if (fail_count++ == 0) {
    int n = snprintf(fail_msg, sizeof fail_msg, "line %d: %s: ", line, what);
    if (n > 0 && (size_t)n < sizeof fail_msg) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(fail_msg + n, sizeof fail_msg - (size_t)n, fmt, ap);
      va_end(ap);
    }
  }
  pthread_mutex_unlock(&fail_lock);
}

#define TCHECK(cond, ...)                                                      \
  do {                                                                         \
    if (!(cond))                                                               \
      tfail(__LINE__, #cond, __VA_ARGS__);                                     \
  } while (0)

#define TCHECK_RC(call, want)                                                  \
  do {                                                                         \
    int rc_ = (call);                                                          \
    if (rc_ != (want))                                                         \
      tfail(__LINE__, #call, "returned %d (%s), expected %d", rc_,             \
            greenlet_strerror(rc_), (int)(want));                              \
  } while (0)

static int failures(void) {
  pthread_mutex_lock(&fail_lock);
  int n = fail_count;
  pthread_mutex_unlock(&fail_lock);
  return n;
}

#define ASSERT_NO_TFAIL()                                                      \
  cr_assert_eq(failures(), 0,                                                  \
               "%d failed check(s) off the test thread; "                      \
               "first: %s",                                                    \
               failures(), fail_msg)

static void start_thread(pthread_t *t, void *(*fn)(void *), void *arg) {
  int rc = pthread_create(t, NULL, fn, arg);
  cr_assert_eq(rc, 0, "pthread_create: %s", strerror(rc));
}

/* A thread with a small stack: glibc's cache of exited threads' stacks
 * (up to 40 MiB) then cannot blur VmSize comparisons. */
static void start_small_thread(pthread_t *t, void *(*fn)(void *), void *arg) {
  pthread_attr_t attr;
  cr_assert_eq(pthread_attr_init(&attr), 0);
  cr_assert_eq(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
  int rc = pthread_create(t, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  cr_assert_eq(rc, 0, "pthread_create: %s", strerror(rc));
}

/* One malloc arena for every thread: glibc reserves 64 MiB of address
 * space per extra arena, which would blur VmSize comparisons.  (Sanitizer
 * allocators have no arenas and ignore it.) */
static void single_malloc_arena(void) { (void)mallopt(M_ARENA_MAX, 1); }

static void join_thread(pthread_t t) {
  int rc = pthread_join(t, NULL);
  cr_assert_eq(rc, 0, "pthread_join: %s", strerror(rc));
}

/* ---- /proc/self readings ----------------------------------------------- */



/* A body that parks: echoes every value back to its parent until it is
 * asked to exit (result: its first argument) or thrown into (result: the
 * error, as an error), counting the resumes in *userdata (an int). */
static int park_run(greenlet_t *self, void *arg, void **result) {
  int *resumes = greenlet_userdata(self);
  void *v = arg;
  for (;;) {
    int rc = greenlet_switch(greenlet_parent(self), v, &v);
    if (resumes)
      ++*resumes;
    if (rc == GREENLET_EXIT) {
      *result = arg;
      return GREENLET_OK;
    }
    if (rc == GREENLET_ERROR) {
      *result = v;
      return GREENLET_ERROR;
    }
    TCHECK_RC(rc, GREENLET_OK);
    if (rc != GREENLET_OK) { /* refused: do not spin */
      *result = NULL;
      return GREENLET_OK;
    }
  }
}

/* A body that returns its argument at once. */
static int return_arg_run(greenlet_t *self, void *arg, void **result) {
  (void)self;
  *result = arg;
  return GREENLET_OK;
}

/* ======================================================================= */
/* Many threads, each with its own main greenlet and a chain of greenlets  */
/* passing values down and back up.                                        */
/* ======================================================================= */

#define MT_THREADS 12
#define MT_DEPTH 4
#define MT_ROUNDS 60

typedef struct mt_node {
  struct mt_thread *t;
  int level;
} mt_node;

typedef struct mt_thread {
  int index;
  pthread_barrier_t *barrier;
  greenlet_t *main;
  uint64_t main_id;
  uint64_t ids[MT_DEPTH];
  greenlet_t *g[MT_DEPTH];
  mt_node nodes[MT_DEPTH];
  int rounds_done;
} mt_thread;

/* What level `level` answers for x: the leaf computes 3x+1, every other
 * level sends 2x+level down and adds its level to the answer. */
static intptr_t mt_expect(intptr_t x, int level) {
  if (level + 1 < MT_DEPTH)
    return mt_expect(2 * x + level, level + 1) + level;
  return 3 * x + 1;
}

static int mt_run(greenlet_t *self, void *arg, void **result) {
  mt_node *n = greenlet_userdata(self);
  mt_thread *t = n->t;
  int level = n->level;
  TCHECK(greenlet_current() == self, "level %d", level);
  TCHECK(greenlet_owned_by_current_thread(self), "level %d", level);
  TCHECK(!greenlet_is_main(self), "level %d", level);
  TCHECK(greenlet_main() == t->main, "level %d", level);
  greenlet_t *want_parent = level == 0 ? t->main : t->g[level - 1];
  TCHECK(greenlet_parent(self) == want_parent, "level %d", level);
  greenlet_t *child = level + 1 < MT_DEPTH ? t->g[level + 1] : NULL;
  intptr_t x = I(arg);
  for (;;) {
    void *out = NULL;
    int rc;
    if (x < 0) {
      /* Stop: finish the child first; its result comes back here. */
      if (child) {
        TCHECK_RC(greenlet_switch(child, P(-1), &out), GREENLET_OK);
        TCHECK(I(out) == 1000 + level + 1, "child result %ld", (long)I(out));
        TCHECK(greenlet_dead(child), "level %d", level);
        TCHECK(greenlet_current() == self, "level %d", level);
      }
      *result = P(1000 + level);
      return GREENLET_OK;
    }
    intptr_t y;
    if (child) {
      TCHECK_RC(rc = greenlet_switch(child, P(2 * x + level), &out),
                GREENLET_OK);
      if (rc != GREENLET_OK)
        return GREENLET_OK; /* refused: do not spin */
      TCHECK(greenlet_current() == self, "level %d", level);
      y = I(out) + level;
    } else {
      y = 3 * x + 1;
    }
    TCHECK_RC(rc = greenlet_switch(greenlet_parent(self), P(y), &out),
              GREENLET_OK);
    if (rc != GREENLET_OK)
      return GREENLET_OK;
    TCHECK(greenlet_current() == self, "level %d", level);
    x = I(out);
  }
}

static void *mt_thread_main(void *arg) {
  mt_thread *t = arg;
  /* A new thread's current greenlet is its own main greenlet. */
  greenlet_t *cur = greenlet_current();
  TCHECK(cur != NULL, "thread %d", t->index);
  TCHECK(greenlet_is_main(cur), "thread %d", t->index);
  TCHECK(greenlet_main() == cur, "thread %d", t->index);
  TCHECK(greenlet_parent(cur) == NULL, "thread %d", t->index);
  TCHECK(greenlet_active(cur) && greenlet_started(cur) && !greenlet_dead(cur),
         "thread %d", t->index);
  TCHECK(greenlet_owned_by_current_thread(cur), "thread %d", t->index);
  TCHECK(greenlet_stack_size(cur) == 0, "thread %d", t->index);
  t->main = cur;
  t->main_id = greenlet_id(cur);

  for (int i = 0; i < MT_DEPTH; i++) {
    t->nodes[i] = (mt_node){t, i};
    greenlet_attr_t attr = {64 * 1024, "mt", 0, 0};
    TCHECK_RC(greenlet_create(&t->g[i], mt_run, i ? t->g[i - 1] : NULL, &attr),
              0);
    greenlet_set_userdata(t->g[i], &t->nodes[i]);
    t->ids[i] = greenlet_id(t->g[i]);
  }
  TCHECK(greenlet_parent(t->g[0]) == cur, "thread %d", t->index);

  /* Every thread switches at the same time. */
  pthread_barrier_wait(t->barrier);
  for (int r = 0; r < MT_ROUNDS; r++) {
    intptr_t v = (intptr_t)t->index * 1000 + r;
    void *out = NULL;
    TCHECK_RC(greenlet_switch(t->g[0], P(v), &out), GREENLET_OK);
    TCHECK(I(out) == mt_expect(v, 0), "thread %d round %d: got %ld want %ld",
           t->index, r, (long)I(out), (long)mt_expect(v, 0));
    TCHECK(greenlet_current() == cur, "thread %d", t->index);
    for (int i = 0; i < MT_DEPTH; i++)
      TCHECK(greenlet_active(t->g[i]) && greenlet_stack_in_use(t->g[i]) > 0,
             "thread %d level %d", t->index, i);
    t->rounds_done++;
  }
  void *out = NULL;
  TCHECK_RC(greenlet_switch(t->g[0], P(-1), &out), GREENLET_OK);
  TCHECK(I(out) == 1000, "thread %d: %ld", t->index, (long)I(out));
  for (int i = 0; i < MT_DEPTH; i++) {
    TCHECK(greenlet_dead(t->g[i]), "thread %d level %d", t->index, i);
    TCHECK(greenlet_stack_in_use(t->g[i]) == 0, "thread %d", t->index);
  }
  /* Hold every main greenlet alive at once so the pointers can be
   * compared after the join. */
  pthread_barrier_wait(t->barrier);
  for (int i = 0; i < MT_DEPTH; i++)
    TCHECK_RC(greenlet_destroy(t->g[i], 0), 0);
  return NULL;
}

Test(threads, many_threads_have_own_main_and_nested_switches) {
  greenlet_t *mine = greenlet_current();
  cr_assert(mine && greenlet_is_main(mine));
  pthread_barrier_t barrier;
  cr_assert_eq(pthread_barrier_init(&barrier, NULL, MT_THREADS), 0);
  static mt_thread th[MT_THREADS];
  pthread_t tid[MT_THREADS];
  for (int i = 0; i < MT_THREADS; i++) {
    th[i] = (mt_thread){.index = i, .barrier = &barrier};
    start_thread(&tid[i], mt_thread_main, &th[i]);
  }
  for (int i = 0; i < MT_THREADS; i++)
    join_thread(tid[i]);
  pthread_barrier_destroy(&barrier);
  ASSERT_NO_TFAIL();

  /* The test thread's main greenlet is untouched and still current. */
  cr_assert_eq(greenlet_current(), mine);
  cr_assert_eq(greenlet_main(), mine);

  uint64_t ids[MT_THREADS * (MT_DEPTH + 1) + 1];
  size_t nids = 0;
  ids[nids++] = greenlet_id(mine);
  for (int i = 0; i < MT_THREADS; i++) {
    cr_assert_eq(th[i].rounds_done, MT_ROUNDS, "thread %d", i);
    cr_assert_neq(th[i].main, NULL);
    cr_assert_neq(th[i].main, mine, "thread %d shares the test's main", i);
    for (int j = 0; j < i; j++)
      cr_assert_neq(th[i].main, th[j].main, "threads %d and %d", i, j);
    ids[nids++] = th[i].main_id;
    for (int k = 0; k < MT_DEPTH; k++)
      ids[nids++] = th[i].ids[k];
  }
  for (size_t i = 0; i < nids; i++) {
    cr_assert_neq(ids[i], 0);
    for (size_t j = 0; j < i; j++)
      cr_assert_neq(ids[i], ids[j], "greenlet id %llu given twice",
                    (unsigned long long)ids[i]);
  }
}

/* ======================================================================= */
/* Refusals across threads                                                 */
/* ======================================================================= */

typedef struct {
  pthread_barrier_t barrier; /* 2 parties: owner thread and test thread */
  greenlet_t *main;          /* owner's main greenlet */
  greenlet_t *parked;        /* started, suspended in park_run */
  greenlet_t *unstarted;
  greenlet_t *child; /* unstarted, parent = parked */
  int parked_resumes;
  int unstarted_resumes;
  size_t parked_in_use;
} xt_state;

typedef struct {
  int started, active, dead, is_main, owned;
  greenlet_t *parent;
  size_t stack_size, in_use;
  void *userdata;
  char name[32];
} snapshot;

static snapshot snap(const greenlet_t *g) {
  snapshot s;
  memset(&s, 0, sizeof s);
  s.started = greenlet_started(g);
  s.active = greenlet_active(g);
  s.dead = greenlet_dead(g);
  s.is_main = greenlet_is_main(g);
  s.owned = greenlet_owned_by_current_thread(g);
  s.parent = greenlet_parent(g);
  s.stack_size = greenlet_stack_size(g);
  s.in_use = greenlet_stack_in_use(g);
  s.userdata = greenlet_userdata(g);
  snprintf(s.name, sizeof s.name, "%s", greenlet_name(g));
  return s;
}

static void assert_same(const snapshot *a, const snapshot *b,
                        const char *what) {
  cr_assert_eq(a->started, b->started, "%s: started changed", what);
  cr_assert_eq(a->active, b->active, "%s: active changed", what);
  cr_assert_eq(a->dead, b->dead, "%s: dead changed", what);
  cr_assert_eq(a->is_main, b->is_main, "%s: is_main changed", what);
  cr_assert_eq(a->owned, b->owned, "%s: owner changed", what);
  cr_assert_eq(a->parent, b->parent, "%s: parent changed", what);
  cr_assert_eq(a->stack_size, b->stack_size, "%s: stack size changed", what);
  cr_assert_eq(a->in_use, b->in_use, "%s: stack in use changed", what);
  cr_assert_eq(a->userdata, b->userdata, "%s: userdata changed", what);
  cr_assert_str_eq(a->name, b->name, "%s: name changed", what);
}

static int never_run(greenlet_t *self, void *arg, void **result) {
  (void)self, (void)arg, (void)result;
  tfail(__LINE__, "never_run", "a refused greenlet ran");
  return GREENLET_OK;
}

static void *xt_owner(void *arg) {
  xt_state *s = arg;
  s->main = greenlet_current();
  greenlet_attr_t attr = {0, "parked", 0, 0};
  TCHECK_RC(greenlet_create(&s->parked, park_run, NULL, &attr), 0);
  greenlet_set_userdata(s->parked, &s->parked_resumes);
  attr.name = "unstarted";
  TCHECK_RC(greenlet_create(&s->unstarted, park_run, NULL, &attr), 0);
  greenlet_set_userdata(s->unstarted, &s->unstarted_resumes);
  TCHECK_RC(greenlet_create(&s->child, park_run, s->parked, NULL), 0);
  void *out = NULL;
  TCHECK_RC(greenlet_switch(s->parked, P(1), &out), GREENLET_OK);
  TCHECK(I(out) == 1, "got %ld", (long)I(out));
  s->parked_in_use = greenlet_stack_in_use(s->parked);
  TCHECK(s->parked_in_use > 0, "in use %zu", s->parked_in_use);
  TCHECK(greenlet_owned_by_current_thread(s->parked), "owner");
  TCHECK(greenlet_owned_by_current_thread(s->main), "owner");

  pthread_barrier_wait(&s->barrier); /* 1: published */
  pthread_barrier_wait(&s->barrier); /* 2: the other thread is done */

  /* Nothing ran or moved while the other thread was refused. */
  TCHECK(s->parked_resumes == 0, "resumes %d", s->parked_resumes);
  TCHECK(!greenlet_started(s->unstarted), "unstarted started");
  TCHECK(greenlet_stack_in_use(s->parked) == s->parked_in_use, "in use");
  TCHECK(greenlet_parent(s->parked) == s->main, "parent");
  TCHECK(greenlet_parent(s->unstarted) == s->main, "parent");
  TCHECK(greenlet_parent(s->child) == s->parked, "parent");
  TCHECK(greenlet_current() == s->main, "current");
  /* The owner can still use all of them normally. */
  TCHECK_RC(greenlet_switch(s->parked, P(5), &out), GREENLET_OK);
  TCHECK(I(out) == 5 && s->parked_resumes == 1, "echo %ld, resumes %d",
         (long)I(out), s->parked_resumes);
  TCHECK_RC(greenlet_switch(s->unstarted, P(9), &out), GREENLET_OK);
  TCHECK(I(out) == 9 && s->unstarted_resumes == 0, "echo %ld", (long)I(out));
  TCHECK_RC(greenlet_kill(s->parked, &out), GREENLET_OK);
  TCHECK(I(out) == 1, "kill result %ld", (long)I(out));
  TCHECK_RC(greenlet_kill(s->unstarted, &out), GREENLET_OK);
  TCHECK(greenlet_dead(s->parked) && greenlet_dead(s->unstarted), "dead");
  /* Leave the handles to the test thread, which destroys them after the
   * join (allowed once the owner has exited). */
  pthread_barrier_wait(&s->barrier); /* 3: owner finished its checks */
  pthread_barrier_wait(&s->barrier); /* 4: the other thread tried destroy */
  return NULL;
}

/* Every refused call from the calling (non-owner) thread. */
static void xt_refuse_all(xt_state *s, greenlet_t *mine) {
  greenlet_t *targets[] = {s->parked, s->unstarted, s->child, s->main};
  for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
    greenlet_t *t = targets[i];
    void *out = P(0x5a5a);
    EXPECT_RC(greenlet_switch(t, P(7), &out), GREENLET_ETHREAD);
    cr_assert_eq(out, P(0x5a5a), "refused switch wrote *out");
    EXPECT_RC(greenlet_throw(t, P(7), &out), GREENLET_ETHREAD);
    cr_assert_eq(out, P(0x5a5a), "refused throw wrote *out");
    EXPECT_RC(greenlet_kill(t, &out), GREENLET_ETHREAD);
    cr_assert_eq(out, P(0x5a5a), "refused kill wrote *out");
    EXPECT_RC(greenlet_destroy(t, 0), GREENLET_ETHREAD);
    EXPECT_RC(greenlet_destroy(t, GREENLET_DESTROY_DISCARD), GREENLET_ETHREAD);
    cr_assert(!greenlet_owned_by_current_thread(t));
    /* Both greenlets of the other thread. */
    if (t != s->main)
      EXPECT_RC(greenlet_set_parent(t, s->main), GREENLET_ETHREAD);
    greenlet_t *made = P(0x77);
    EXPECT_RC(greenlet_create(&made, never_run, t, NULL), GREENLET_ETHREAD);
    cr_assert_eq(made, P(0x77), "refused create wrote *out");
    if (mine) {
      /* One side of each pair belongs to this thread. */
      if (t != s->main)
        EXPECT_RC(greenlet_set_parent(t, mine), GREENLET_ETHREAD);
      EXPECT_RC(greenlet_set_parent(mine, t), GREENLET_ETHREAD);
    }
  }
  EXPECT_RC(greenlet_set_parent(s->unstarted, s->parked), GREENLET_ETHREAD);
  EXPECT_RC(greenlet_set_parent(s->child, s->unstarted), GREENLET_ETHREAD);
}

Test(threads, cross_thread_calls_are_refused_and_change_nothing) {
  static xt_state s;
  memset(&s, 0, sizeof s);
  cr_assert_eq(pthread_barrier_init(&s.barrier, NULL, 2), 0);
  pthread_t t;
  start_thread(&t, xt_owner, &s);
  pthread_barrier_wait(&s.barrier); /* 1 */
  cr_assert_eq(failures(), 0, "owner setup: %s", fail_msg);

  snapshot before[4] = {snap(s.parked), snap(s.unstarted), snap(s.child),
                        snap(s.main)};
  cr_assert(before[0].started && before[0].active && !before[0].dead);
  cr_assert(!before[1].started && !before[1].dead);
  cr_assert(before[3].is_main);

  /* First from a thread that has never touched the library ... */
  xt_refuse_all(&s, NULL);
  /* ... then with a main greenlet and a greenlet of its own. */
  greenlet_t *mine_main = greenlet_current();
  cr_assert(mine_main && mine_main != s.main);
  greenlet_t *mine = NULL;
  EXPECT_RC(greenlet_create(&mine, park_run, NULL, NULL), 0);
  cr_assert(greenlet_owned_by_current_thread(mine));
  cr_assert(greenlet_owned_by_current_thread(mine_main));
  cr_assert(!greenlet_owned_by_current_thread(NULL));
  xt_refuse_all(&s, mine);
  cr_assert_eq(greenlet_parent(mine), mine_main);
  cr_assert_eq(greenlet_current(), mine_main);

  snapshot after[4] = {snap(s.parked), snap(s.unstarted), snap(s.child),
                       snap(s.main)};
  const char *names[4] = {"parked", "unstarted", "child", "main"};
  for (int i = 0; i < 4; i++)
    assert_same(&before[i], &after[i], names[i]);

  pthread_barrier_wait(&s.barrier); /* 2 */
  pthread_barrier_wait(&s.barrier); /* 3 */
  /* The owner is still alive (waiting at 4), its greenlets now dead:
   * destroy is still refused. */
  cr_assert(greenlet_dead(s.parked));
  EXPECT_RC(greenlet_destroy(s.parked, 0), GREENLET_ETHREAD);
  EXPECT_RC(greenlet_destroy(s.unstarted, 0), GREENLET_ETHREAD);
  pthread_barrier_wait(&s.barrier); /* 4 */
  join_thread(t);
  ASSERT_NO_TFAIL();

  /* After the owner exited: still not ours, but destroyable from here. */
  void *out = P(0x5a5a);
  EXPECT_RC(greenlet_switch(s.child, P(1), &out), GREENLET_ETHREAD);
  EXPECT_RC(greenlet_set_parent(mine, s.parked), GREENLET_ETHREAD);
  cr_assert_eq(out, P(0x5a5a));
  cr_assert(greenlet_dead(s.child), "an exited thread's unstarted greenlet");
  EXPECT_RC(greenlet_destroy(s.parked, 0), 0);
  EXPECT_RC(greenlet_destroy(s.unstarted, 0), 0);
  EXPECT_RC(greenlet_destroy(s.child, 0), 0);
  EXPECT_RC(greenlet_destroy(mine, 0), 0);
  pthread_barrier_destroy(&s.barrier);
}

/* ======================================================================= */
/* Thread exit releases what its greenlets hold                            */
/* ======================================================================= */

/* Recurses `depth` frames, then parks (for a deeper stack in use). */
static void park_deep(greenlet_t *self, int depth) {
  volatile char pad[200];
  pad[0] = (char)depth;
  if (depth > 0)
    park_deep(self, depth - 1);
  else
    (void)greenlet_switch(greenlet_parent(self), NULL, NULL);
  __asm__ volatile("" : : "r"(pad) : "memory");
}

static int deep_run(greenlet_t *self, void *arg, void **result) {
  park_deep(self, (int)I(arg));
  tfail(__LINE__, "deep_run", "resumed after its thread parked it");
  *result = NULL;
  return GREENLET_OK;
}

/* Creates a child (parent = self), starts it (it parks back here), then
 * parks itself; publishes the child through *userdata. */
static int nest_run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  greenlet_t **child_out = greenlet_userdata(self);
  greenlet_attr_t attr = {0, "nested-child", 0, 0};
  TCHECK_RC(greenlet_create(child_out, park_run, NULL, &attr), 0);
  TCHECK(greenlet_parent(*child_out) == self, "parent");
  TCHECK_RC(greenlet_switch(*child_out, P(3), NULL), GREENLET_OK);
  TCHECK(greenlet_current() == self, "current");
  (void)greenlet_switch(greenlet_parent(self), NULL, NULL);
  tfail(__LINE__, "nest_run", "resumed after its thread parked it");
  *result = NULL;
  return GREENLET_OK;
}

enum {
  EX_P1,
  EX_DEEP,
  EX_NEST,
  EX_NESTED_CHILD,
  EX_U1,
  EX_U2,
  EX_FINISHED,
  EX_N
};

typedef struct {
  greenlet_t *g[EX_N];
  size_t in_use[EX_N];
} ex_state;

static void *ex_owner(void *arg) {
  ex_state *s = arg;
  greenlet_attr_t attr = {128 * 1024, NULL, 0, 0};
  TCHECK_RC(greenlet_create(&s->g[EX_P1], park_run, NULL, &attr), 0);
  TCHECK_RC(greenlet_switch(s->g[EX_P1], P(1), NULL), GREENLET_OK);
  TCHECK_RC(greenlet_create(&s->g[EX_DEEP], deep_run, NULL, &attr), 0);
  TCHECK_RC(greenlet_switch(s->g[EX_DEEP], P(50), NULL), GREENLET_OK);
  TCHECK_RC(greenlet_create(&s->g[EX_NEST], nest_run, NULL, &attr), 0);
  greenlet_set_userdata(s->g[EX_NEST], &s->g[EX_NESTED_CHILD]);
  TCHECK_RC(greenlet_switch(s->g[EX_NEST], NULL, NULL), GREENLET_OK);
  TCHECK_RC(greenlet_create(&s->g[EX_U1], park_run, NULL, &attr), 0);
  /* An unstarted child of a parked greenlet. */
  TCHECK_RC(greenlet_create(&s->g[EX_U2], park_run, s->g[EX_P1], &attr), 0);
  TCHECK_RC(greenlet_create(&s->g[EX_FINISHED], return_arg_run, NULL, &attr),
            0);
  void *out = NULL;
  TCHECK_RC(greenlet_switch(s->g[EX_FINISHED], P(42), &out), GREENLET_OK);
  TCHECK(I(out) == 42, "result %ld", (long)I(out));
  for (int i = 0; i < EX_N; i++)
    s->in_use[i] = greenlet_stack_in_use(s->g[i]);
  TCHECK(s->in_use[EX_P1] > 0 && s->in_use[EX_NEST] > 0 &&
             s->in_use[EX_NESTED_CHILD] > 0,
         "parked greenlets use stack");
  TCHECK(s->in_use[EX_DEEP] > s->in_use[EX_P1] + 50 * 200, "deep %zu vs %zu",
         s->in_use[EX_DEEP], s->in_use[EX_P1]);
  TCHECK(greenlet_active(s->g[EX_NESTED_CHILD]), "nested child parked");
  TCHECK(!greenlet_started(s->g[EX_U1]) && !greenlet_started(s->g[EX_U2]),
         "unstarted");
  TCHECK(greenlet_dead(s->g[EX_FINISHED]), "finished");
  return NULL; /* exits with everything still held */
}

typedef struct {
  greenlet_t *g;
  int rc;
  int rc_again;
  int with_tstate;
} destroy_job;

static void *destroy_from_thread(void *arg) {
  destroy_job *j = arg;
  if (j->with_tstate)
    (void)greenlet_current();
  j->rc = greenlet_destroy(j->g, 0);
  return NULL;
}

Test(threads, thread_exit_kills_its_greenlets_and_frees_their_stacks) {
  ex_state s;
  memset(&s, 0, sizeof s);
  pthread_t t;
  start_thread(&t, ex_owner, &s);
  join_thread(t);
  ASSERT_NO_TFAIL();

  const char *names[EX_N] = {"parked",       "deep",      "nest",
                             "nested-child", "unstarted", "unstarted-child",
                             "finished"};
  for (int i = 0; i < EX_N; i++) {
    greenlet_t *g = s.g[i];
    cr_assert_neq(g, NULL, "%s", names[i]);
    cr_assert(greenlet_dead(g), "%s is not dead after its thread exited",
              names[i]);
    cr_assert(!greenlet_active(g), "%s", names[i]);
    cr_assert_eq(greenlet_stack_in_use(g), 0, "%s", names[i]);
    cr_assert(!greenlet_owned_by_current_thread(g), "%s", names[i]);
    cr_assert(!greenlet_is_main(g), "%s", names[i]);
  }
  /* Parent links survive. */
  cr_assert_eq(greenlet_parent(s.g[EX_NESTED_CHILD]), s.g[EX_NEST]);
  cr_assert_eq(greenlet_parent(s.g[EX_U2]), s.g[EX_P1]);
  cr_assert_eq(greenlet_parent(s.g[EX_P1]), greenlet_parent(s.g[EX_U1]));
  cr_assert(greenlet_is_main(greenlet_parent(s.g[EX_P1])));
  cr_assert(greenlet_dead(greenlet_parent(s.g[EX_P1])));
  cr_assert_eq(greenlet_stack_size(s.g[EX_DEEP]), 128 * 1024);

  /* The dead greenlets of another thread still refuse to be resumed. */
  void *out = NULL;
  EXPECT_RC(greenlet_switch(s.g[EX_P1], NULL, &out), GREENLET_ETHREAD);
  EXPECT_RC(greenlet_kill(s.g[EX_U1], &out), GREENLET_ETHREAD);

  /* Destroy: a parent held by a child survives its destroy, so destroying it
   * twice is detected. */
  EXPECT_RC(greenlet_destroy(s.g[EX_NEST], 0), 0);
  EXPECT_RC(greenlet_destroy(s.g[EX_NEST], 0), GREENLET_EINVAL);
  EXPECT_RC(greenlet_destroy(s.g[EX_NEST], GREENLET_DESTROY_DISCARD),
            GREENLET_EINVAL);
  EXPECT_RC(greenlet_destroy(s.g[EX_P1], 0), 0);
  EXPECT_RC(greenlet_destroy(s.g[EX_P1], 0), GREENLET_EINVAL);
  cr_assert_eq(greenlet_parent(s.g[EX_U2]), s.g[EX_P1]);
  EXPECT_RC(greenlet_destroy(s.g[EX_U2], 0), 0); /* frees p1 too */
  EXPECT_RC(greenlet_destroy(s.g[EX_NESTED_CHILD], 0), 0);
  EXPECT_RC(greenlet_destroy(s.g[EX_FINISHED], 0), 0);

  /* From threads with and without a greenlet state of their own. */
  destroy_job jobs[2] = {{s.g[EX_DEEP], -99, 0, 0}, {s.g[EX_U1], -99, 0, 1}};
  for (int i = 0; i < 2; i++) {
    pthread_t d;
    start_thread(&d, destroy_from_thread, &jobs[i]);
    join_thread(d);
    EXPECT_RC(jobs[i].rc, 0);
  }
}

/* ---- address space ----------------------------------------------------- */

#define AS_GREENLETS 200
#define AS_STACK ((size_t)8 * 1024 * 1024)

typedef struct {
  greenlet_t *g[AS_GREENLETS];
  long vm_parked_kib;
  long maps_parked;
  int n_parked;
} as_state;

static void *as_owner(void *arg) {
  as_state *s = arg;
  greenlet_attr_t attr = {AS_STACK, "big", 0, 0};
  for (int i = 0; i < AS_GREENLETS; i++) {
    TCHECK_RC(greenlet_create(&s->g[i], park_run, NULL, &attr), 0);
    TCHECK_RC(greenlet_switch(s->g[i], P(i), NULL), GREENLET_OK);
    s->n_parked += greenlet_active(s->g[i]);
  }
  s->vm_parked_kib = (vm_size_bytes() / 1024);
  s->maps_parked = map_count();
  return NULL;
}

static void *warm_up(void *arg) {
  (void)arg;
  greenlet_t *g = NULL;
  TCHECK_RC(greenlet_create(&g, park_run, NULL, NULL), 0);
  TCHECK_RC(greenlet_switch(g, NULL, NULL), GREENLET_OK);
  TCHECK_RC(greenlet_kill(g, NULL), GREENLET_OK);
  TCHECK_RC(greenlet_destroy(g, 0), 0);
  return NULL;
}

/* Under qemu-user (scripts/test-aarch64.sh sets CGREENLET_TEST_QEMU=1),
 * VmSize is the emulator's (as helpers.h's test_qemu(), which the standalone
 * build of this file has not). */
static int under_qemu(void) {
  const char *e = getenv("CGREENLET_TEST_QEMU");
  return e && *e && *e != '0';
}

Test(threads, thread_exit_releases_stack_address_space) {
  single_malloc_arena();
  /* A first thread settles glibc's thread stack cache. */
  pthread_t t;
  start_small_thread(&t, warm_up, NULL);
  join_thread(t);
  long vm_before = (vm_size_bytes() / 1024), maps_before = map_count();
  cr_assert(vm_before > 0 && maps_before > 0, "cannot read /proc/self");

  static as_state s;
  memset(&s, 0, sizeof s);
  start_small_thread(&t, as_owner, &s);
  join_thread(t);
  ASSERT_NO_TFAIL();
  cr_assert_eq(s.n_parked, AS_GREENLETS);
  long vm_after = (vm_size_bytes() / 1024), maps_after = map_count();
  long grown = s.vm_parked_kib - vm_before;
  long want = (long)(AS_GREENLETS * (AS_STACK / 1024)) * 9 / 10;
  /* qemu-user reserves a 32-bit guest's whole 4 GiB up front: its VmSize
   * does not grow (the mapping count below still checks the unmapping). */
  if (!(under_qemu() && sizeof(void *) < 8))
    cr_assert_geq(grown, want,
                  "VmSize grew only %ld KiB with %d parked %zu MiB stacks",
                  grown, AS_GREENLETS, AS_STACK >> 20);
  /* Tolerance: a few MiB (a cached thread stack, heap growth).  Under
   * qemu-user VmSize is the emulator's, and its own per-thread memory may
   * stay after the thread (66 MiB once, the size of a malloc arena): there
   * the mapping count (qemu shows the guest's maps) checks the unmapping. */
  if (!under_qemu())
    cr_assert_leq(vm_after, vm_before + 8 * 1024,
                  "VmSize %ld KiB before, %ld with the stacks, %ld KiB after "
                  "the thread exited",
                  vm_before, s.vm_parked_kib, vm_after);
  if (MAPS_MEANINGFUL)
    cr_assert_leq(maps_after, maps_before + 8,
                  "%ld mappings before, %ld parked, %ld after", maps_before,
                  s.maps_parked, maps_after);
  for (int i = 0; i < AS_GREENLETS; i++) {
    cr_assert(greenlet_dead(s.g[i]));
    cr_assert_eq(greenlet_stack_in_use(s.g[i]), 0);
    EXPECT_RC(greenlet_destroy(s.g[i], 0), 0);
  }
}

/* ======================================================================= */
/* Threads that barely use the library                                     */
/* ======================================================================= */

typedef struct {
  greenlet_t *main;
  uint64_t id;
  int ok;
} cur_only;

static void *current_only(void *arg) {
  cur_only *c = arg;
  c->main = greenlet_current();
  c->id = greenlet_id(c->main);
  c->ok = c->main && greenlet_is_main(c->main) &&
          greenlet_current() == c->main && greenlet_main() == c->main &&
          greenlet_owned_by_current_thread(c->main);
  return NULL;
}

static void current_only_batch(cur_only *cs, int n) {
  pthread_t ts[16];
  cr_assert_leq(n, 16);
  for (int i = 0; i < n; i++)
    start_small_thread(&ts[i], current_only, &cs[i]);
  for (int i = 0; i < n; i++)
    join_thread(ts[i]);
  for (int i = 0; i < n; i++) {
    cr_assert(cs[i].ok, "thread %d", i);
    for (int j = 0; j < i; j++)
      cr_assert_neq(cs[i].id, cs[j].id);
  }
}

#define CO_SEQUENTIAL 500

Test(threads, thread_calling_only_current_exits_cleanly) {
#ifndef CGREENLET_TEST_STANDALONE
  if (under_qemu())
    cr_skip_test("qemu-user's own per-thread memory shows in VmSize");
#endif
  single_malloc_arena();
  cur_only cs[16];
  /* Warm up glibc (thread stack cache), then measure. */
  current_only_batch(cs, 16);
  current_only_batch(cs, 1);
  long vm_before = (vm_size_bytes() / 1024), maps_before = map_count();
  cr_assert(vm_before > 0 && maps_before > 0, "cannot read /proc/self");
  /* Every main greenlet gets an id never given before, even though the
   * earlier threads (and their records) are gone. */
  static uint64_t ids[CO_SEQUENTIAL + 16];
  for (int i = 0; i < CO_SEQUENTIAL; i++) {
    current_only_batch(cs, 1);
    ids[i] = cs[0].id;
  }
  current_only_batch(cs, 16);
  for (int i = 0; i < 16; i++)
    ids[CO_SEQUENTIAL + i] = cs[i].id;
  for (int i = 0; i < CO_SEQUENTIAL + 16; i++) {
    cr_assert_neq(ids[i], 0);
    for (int j = 0; j < i; j++)
      cr_assert_neq(ids[i], ids[j], "id %llu given twice",
                    (unsigned long long)ids[i]);
  }
  long vm_after = (vm_size_bytes() / 1024), maps_after = map_count();
  /* Per-thread state is released at exit: 500 leaked 64 KiB alternate
   * signal stacks would add 32 MiB here (even if their mappings merged). */
  if (MAPS_MEANINGFUL)
    cr_assert_leq(maps_after, maps_before + 16,
                  "%ld mappings before, %ld after %d threads", maps_before,
                  maps_after, CO_SEQUENTIAL + 16);
  cr_assert_leq(vm_after, vm_before + 8 * 1024,
                "VmSize %ld KiB before, %ld after %d threads", vm_before,
                vm_after, CO_SEQUENTIAL + 16);
}

/* A thread exits while its main greenlet is the parent of greenlets the
 * user still holds: the main record must stay valid (dead) until they go. */
typedef struct {
  greenlet_t *main;
  greenlet_t *unstarted, *parked, *grandchild, *finished;
} kids_state;

static void *kids_owner(void *arg) {
  kids_state *s = arg;
  s->main = greenlet_current();
  TCHECK_RC(greenlet_create(&s->unstarted, park_run, NULL, NULL), 0);
  TCHECK_RC(greenlet_create(&s->parked, park_run, NULL, NULL), 0);
  TCHECK_RC(greenlet_switch(s->parked, NULL, NULL), GREENLET_OK);
  TCHECK_RC(greenlet_create(&s->grandchild, park_run, s->parked, NULL), 0);
  TCHECK_RC(greenlet_create(&s->finished, return_arg_run, NULL, NULL), 0);
  TCHECK_RC(greenlet_switch(s->finished, P(8), NULL), GREENLET_OK);
  return NULL;
}

Test(threads, thread_exit_with_children_of_main_still_held) {
  kids_state s;
  memset(&s, 0, sizeof s);
  pthread_t t;
  start_thread(&t, kids_owner, &s);
  join_thread(t);
  ASSERT_NO_TFAIL();

  greenlet_t *m = s.main;
  cr_assert(greenlet_is_main(m));
  cr_assert(greenlet_dead(m), "an exited thread's main greenlet is dead");
  cr_assert_eq(greenlet_parent(m), NULL);
  cr_assert_eq(greenlet_parent(s.unstarted), m);
  cr_assert_eq(greenlet_parent(s.parked), m);
  cr_assert_eq(greenlet_parent(s.finished), m);
  cr_assert_eq(greenlet_parent(s.grandchild), s.parked);
  cr_assert(greenlet_dead(s.unstarted) && greenlet_dead(s.parked) &&
            greenlet_dead(s.grandchild) && greenlet_dead(s.finished));
  /* The main greenlet's handle was the thread's: not ours to destroy. */
  EXPECT_RC(greenlet_destroy(m, 0), GREENLET_EINVAL);
  EXPECT_RC(greenlet_switch(m, NULL, NULL), GREENLET_ETHREAD);
  cr_assert(!greenlet_owned_by_current_thread(m));

  EXPECT_RC(greenlet_destroy(s.unstarted, 0), 0);
  EXPECT_RC(greenlet_destroy(s.finished, 0), 0);
  EXPECT_RC(greenlet_destroy(s.parked, 0), 0);
  /* parked's record lives on for its child; main lives on for parked. */
  cr_assert(greenlet_is_main(greenlet_parent(s.parked)));
  cr_assert_eq(greenlet_parent(s.grandchild), s.parked);
  EXPECT_RC(greenlet_destroy(s.parked, 0), GREENLET_EINVAL);
  EXPECT_RC(greenlet_destroy(s.grandchild, 0), 0); /* frees all the rest */
}

/* ======================================================================= */
/* Concurrent churn                                                        */
/* ======================================================================= */

#define CH_THREADS 4
#define CH_SECONDS 0.4
#define CH_MAX_ITERS 50000

typedef struct churn_state {
  int index;
  pthread_barrier_t *barrier;
  struct churn_state *all; /* every thread's state */
  greenlet_t *main;        /* published before the first barrier */
  long iters;
  long kinds[5];
  long refusals;
} churn_state;

/* Calls on another live, busy thread's main greenlet are refused without
 * touching it (TSan checks that they race with nothing). */
static void churn_refusals(churn_state *s, greenlet_t *mine) {
  greenlet_t *other = s->all[(s->index + 1) % CH_THREADS].main;
  void *out = P(3);
  greenlet_t *made = P(4);
  TCHECK_RC(greenlet_switch(other, NULL, &out), GREENLET_ETHREAD);
  TCHECK_RC(greenlet_throw(other, NULL, &out), GREENLET_ETHREAD);
  TCHECK_RC(greenlet_kill(other, &out), GREENLET_ETHREAD);
  TCHECK_RC(greenlet_destroy(other, 0), GREENLET_ETHREAD);
  TCHECK_RC(greenlet_create(&made, park_run, other, NULL), GREENLET_ETHREAD);
  TCHECK_RC(greenlet_set_parent(mine, other), GREENLET_ETHREAD);
  TCHECK(!greenlet_owned_by_current_thread(other), "owned");
  TCHECK(out == P(3) && made == P(4), "refused calls wrote results");
  s->refusals++;
}

static int thrower_target_run(greenlet_t *self, void *arg, void **result) {
  /* Parks once; an error thrown in is passed straight back. */
  void *v = arg;
  int rc = greenlet_switch(greenlet_parent(self), v, &v);
  *result = v;
  return rc == GREENLET_ERROR ? GREENLET_ERROR : GREENLET_OK;
}

static void *churn(void *arg) {
  churn_state *s = arg;
  greenlet_t *m = greenlet_current();
  s->main = m;
  /* A greenlet of this thread, for set_parent refusals. */
  greenlet_t *mine = NULL;
  TCHECK_RC(greenlet_create(&mine, park_run, NULL, NULL), 0);
  pthread_barrier_wait(s->barrier);
  double end = now_s() + CH_SECONDS;
  for (long i = 0; i < CH_MAX_ITERS && (i & 63 || now_s() < end); i++) {
    greenlet_t *g = NULL;
    void *out = NULL;
    int resumes = 0;
    int kind = (int)((i + s->index) % 5);
    greenlet_attr_t attr = {(kind & 1) ? 32 * 1024 : 0, "churn", 0, 0};
    int rc = greenlet_create(&g,
                             kind == 3   ? thrower_target_run
                             : kind == 2 ? return_arg_run
                                         : park_run,
                             NULL, &attr);
    TCHECK_RC(rc, 0);
    if (rc != 0)
      break;
    switch (kind) {
    case 0: /* switch in a few times, then kill */
      greenlet_set_userdata(g, &resumes);
      for (int k = 0; k < 3; k++) {
        TCHECK_RC(greenlet_switch(g, P(i + k), &out), GREENLET_OK);
        TCHECK(I(out) == i + k, "echo");
      }
      TCHECK_RC(greenlet_kill(g, &out), GREENLET_OK);
      TCHECK(resumes == 3, "resumes %d", resumes);
      TCHECK(I(out) == i, "kill result %ld", (long)I(out));
      break;
    case 1: /* never started */
      break;
    case 2: /* runs to completion */
      TCHECK_RC(greenlet_switch(g, P(i), &out), GREENLET_OK);
      TCHECK(I(out) == i, "result");
      break;
    case 3: /* thrown into: the error comes back */
      TCHECK_RC(greenlet_switch(g, P(1), &out), GREENLET_OK);
      TCHECK_RC(greenlet_throw(g, P(i), &out), GREENLET_ERROR);
      TCHECK(I(out) == i, "error");
      break;
    case 4: /* parked, then discarded without running again */
      TCHECK_RC(greenlet_switch(g, P(i), &out), GREENLET_OK);
      TCHECK_RC(greenlet_destroy(g, 0), GREENLET_EBUSY);
      TCHECK_RC(greenlet_destroy(g, GREENLET_DESTROY_DISCARD), 0);
      g = NULL;
      break;
    }
    if (g) {
      TCHECK(greenlet_dead(g) || kind == 1, "kind %d not dead", kind);
      TCHECK_RC(greenlet_destroy(g, 0), 0);
    }
    TCHECK(greenlet_current() == m, "current");
    if ((i & 7) == 0 && mine)
      churn_refusals(s, mine);
    s->kinds[kind]++;
    s->iters++;
  }
  /* The other threads may still be poking this thread's main greenlet,
   * which goes away at thread exit. */
  pthread_barrier_wait(s->barrier);
  TCHECK(greenlet_parent(mine) == m, "refused set_parent changed parent");
  TCHECK_RC(greenlet_destroy(mine, 0), 0);
  return NULL;
}

Test(threads, concurrent_churn) {
  pthread_barrier_t barrier;
  cr_assert_eq(pthread_barrier_init(&barrier, NULL, CH_THREADS), 0);
  churn_state s[CH_THREADS];
  pthread_t t[CH_THREADS];
  for (int i = 0; i < CH_THREADS; i++) {
    s[i] = (churn_state){.index = i, .barrier = &barrier, .all = s};
    start_thread(&t[i], churn, &s[i]);
  }
  for (int i = 0; i < CH_THREADS; i++)
    join_thread(t[i]);
  pthread_barrier_destroy(&barrier);
  ASSERT_NO_TFAIL();
  for (int i = 0; i < CH_THREADS; i++) {
    cr_assert_geq(s[i].iters, 64, "thread %d did only %ld iterations", i,
                  s[i].iters);
    long sum = 0;
    for (int k = 0; k < 5; k++) {
      cr_assert_gt(s[i].kinds[k], 0, "thread %d kind %d", i, k);
      sum += s[i].kinds[k];
    }
    cr_assert_eq(sum, s[i].iters);
    cr_assert_gt(s[i].refusals, 0, "thread %d", i);
  }
}

/* ======================================================================= */
/* Thread exit after a mass free                                           */
/* ======================================================================= */

/* Stacks released past a full pool go to the process-wide purger (madvise
 * guards); a thread's exit unmaps those it released, not other threads'. */

static int mf_light(void) {
  const char *e = getenv("CGREENLET_TEST_LIGHT");
  return e && *e && *e != '0';
}

#ifdef CGREENLET_TEST_STANDALONE
#define MF_SKIP(why)                                                           \
  do {                                                                         \
    printf("  skipped: %s\n", why);                                            \
    return;                                                                    \
  } while (0)
#else
#define MF_SKIP(why) cr_skip_test(why)
#endif

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f)
    return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      break;
  fclose(f);
  return kib;
}

#define MF_MAX 4000
#define MF_SLACK (16ll << 20) /* VmSize noise: heap growth, a thread cache */

/* Mappings that are not stacks: ASan's allocator and thread records add a
 * few dozen as the test goes, and so does Valgrind (mf_maps_slack). */
#if defined(__SANITIZE_ADDRESS__)
#define MF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MF_ASAN 1
#endif
#endif
#ifdef MF_ASAN
#define MF_MAPS_SLACK 128
#else
#define MF_MAPS_SLACK 16
#endif

/* TSan keeps per-fiber state (hundreds of KiB) and caches it, which blurs
 * VmSize at these counts (its run checks the locking, not the sizes), and
 * qemu-user's own per-thread memory shows in VmSize. */
#define MF_VM_MEANINGFUL (MAPS_MEANINGFUL && !under_qemu())

static long mf_maps_slack(void) {
  return MF_MAPS_SLACK + (mf_light() ? 48 : 0);
}

/* Greenlets per thread: fewer under Valgrind, qemu, and TSan (whose fibers
 * cost hundreds of KiB and many microseconds each). */
static int mf_count(void) {
  return mf_light() || !MAPS_MEANINGFUL ? 300 : MF_MAX;
}

#define MF_STACK_MAIN ((size_t)64 * 1024)
#define MF_STACK_X ((size_t)96 * 1024) /* another size: not a reuse of ours */

/* Writes a pattern over 2 KiB of its stack and parks; each resume answers
 * whether the pattern is intact (a stack purged, unmapped or handed to
 * another greenlet meanwhile would show), until killed. */
static int mf_run(greenlet_t *self, void *arg, void **result) {
  volatile unsigned char buf[2048];
  unsigned char seed = (unsigned char)I(arg);
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (unsigned char)(seed + i * 7);
  void *v = NULL;
  int rc = greenlet_switch(greenlet_parent(self), NULL, &v);
  while (rc == GREENLET_OK) {
    int ok = 1;
    for (size_t i = 0; i < sizeof buf; i++)
      ok &= buf[i] == (unsigned char)(seed + i * 7);
    rc = greenlet_switch(greenlet_parent(self), P(ok), &v);
  }
  *result = arg;
  return GREENLET_OK;
}

/* Creates and parks g[from], g[from + step], ... below n. */
static void mf_make(greenlet_t **g, int from, int step, int n, size_t stack) {
  greenlet_attr_t attr = {stack, "mass", 0, 0};
  for (int i = from; i < n; i += step) {
    TCHECK_RC(greenlet_create(&g[i], mf_run, NULL, &attr), 0);
    TCHECK_RC(greenlet_switch(g[i], P(i), NULL), GREENLET_OK);
  }
}

static void mf_check(greenlet_t **g, int from, int step, int n) {
  for (int i = from; i < n; i += step) {
    void *out = NULL;
    TCHECK_RC(greenlet_switch(g[i], NULL, &out), GREENLET_OK);
    TCHECK(out == P(1), "greenlet %d found its stack changed", i);
  }
}

/* Kills and destroys them: their stacks go back to the library. */
static void mf_free(greenlet_t **g, int from, int step, int n) {
  for (int i = from; i < n; i += step) {
    void *out = NULL;
    TCHECK_RC(greenlet_kill(g[i], &out), GREENLET_OK);
    TCHECK(out == P(i), "greenlet %d: kill result %ld", i, (long)I(out));
    TCHECK_RC(greenlet_destroy(g[i], 0), 0);
    g[i] = NULL;
  }
}

typedef struct {
  int n;
  long long vm_parked;
} mf_state;

static void *mf_owner(void *arg) {
  mf_state *s = arg;
  static greenlet_t *g[MF_MAX];
  mf_make(g, 0, 1, s->n, MF_STACK_X);
  s->vm_parked = vm_size_bytes();
  mf_check(g, 0, 1, s->n);
  mf_free(g, 0, 1, s->n);
  return NULL;
}

Test(threads, thread_exit_after_mass_free_unmaps_what_it_released) {
  single_malloc_arena();
  pthread_t t;
  start_small_thread(&t, warm_up, NULL);
  join_thread(t);
  int n = mf_count();
  long maps0 = map_count();

  /* This thread releases n stacks first: past its pool they go to the
   * purger, and must outlive the other thread's exit. */
  static greenlet_t *mine[MF_MAX];
  mf_make(mine, 0, 1, n, MF_STACK_MAIN);
  mf_check(mine, 0, 1, n);
  mf_free(mine, 0, 1, n);
  ASSERT_NO_TFAIL();
  long long vm_main = vm_size_bytes();

  /* Another thread parks n greenlets, frees them all and exits. */
  mf_state s = {n, 0};
  start_small_thread(&t, mf_owner, &s);
  join_thread(t);
  ASSERT_NO_TFAIL();
  long long vm_after = vm_size_bytes();
  if (MF_VM_MEANINGFUL) {
    cr_assert_geq(s.vm_parked - vm_main,
                  (long long)n * (long long)MF_STACK_X * 9 / 10,
                  "VmSize grew only %lld bytes with %d parked greenlets",
                  s.vm_parked - vm_main, n);
    cr_assert_leq(vm_after, vm_main + MF_SLACK,
                  "VmSize %lld before the thread, %lld parked, %lld after its "
                  "exit: its stacks were not unmapped",
                  vm_main, s.vm_parked, vm_after);
    cr_assert_geq(vm_after, vm_main - MF_SLACK,
                  "VmSize %lld before the thread, %lld after its exit: "
                  "stacks this thread released went with it",
                  vm_main, vm_after);
  }
  /* With mprotect guards, each stack in our pool is two VMAs of its own. */
  long pooled = strcmp(greenlet_guard_mode(), "madvise") == 0 ? 0 : 2 * 64;
  if (MAPS_MEANINGFUL)
    cr_assert_leq(map_count(), maps0 + pooled + mf_maps_slack(),
                  "%ld mappings before, %ld after", maps0, map_count());

  /* Ours are still there to reuse, and sound. */
  mf_make(mine, 0, 1, n, MF_STACK_MAIN);
  if (MF_VM_MEANINGFUL && strcmp(greenlet_guard_mode(), "madvise") == 0)
    cr_assert_leq(vm_size_bytes(), vm_main + MF_SLACK,
                  "VmSize %lld after reusing %d released stacks (%lld before)",
                  vm_size_bytes(), n, vm_main);
  mf_check(mine, 0, 1, n);
  mf_free(mine, 0, 1, n);
  ASSERT_NO_TFAIL();

  /* And a thread can do it all again. */
  start_small_thread(&t, mf_owner, &s);
  join_thread(t);
  ASSERT_NO_TFAIL();
  if (MF_VM_MEANINGFUL)
    cr_assert_leq(vm_size_bytes(), vm_main + MF_SLACK);
}

/*
 * Two threads share stacks through the purger: X parks 2n greenlets and
 * frees the odd ones, Y reuses those stacks and frees them (Y's now), then
 * X frees the even ones and exits.  X's stacks alternate with Y's free ones:
 * unmapping only X's would leave a VMA per stack of Y's.
 */
typedef struct {
  int n;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int step;
} sh_state;

static void sh_wait(sh_state *s, int step) {
  pthread_mutex_lock(&s->lock);
  while (s->step < step)
    pthread_cond_wait(&s->cond, &s->lock);
  pthread_mutex_unlock(&s->lock);
}

static void sh_set(sh_state *s, int step) {
  pthread_mutex_lock(&s->lock);
  s->step = step;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->lock);
}

#define SH_STACK ((size_t)32 * 1024)

static void *sh_x(void *arg) {
  sh_state *s = arg;
  static greenlet_t *g[2 * MF_MAX];
  mf_make(g, 0, 1, 2 * s->n, SH_STACK);
  mf_free(g, 1, 2, 2 * s->n);
  sh_set(s, 1);
  sh_wait(s, 2);
  mf_check(g, 0, 2, 2 * s->n);
  mf_free(g, 0, 2, 2 * s->n);
  return NULL;
}

static void *sh_y(void *arg) {
  sh_state *s = arg;
  static greenlet_t *g[MF_MAX];
  sh_wait(s, 1);
  mf_make(g, 0, 1, s->n, SH_STACK);
  mf_check(g, 0, 1, s->n);
  mf_free(g, 0, 1, s->n);
  sh_set(s, 2);
  sh_wait(s, 3); /* exits after X */
  return NULL;
}

Test(threads, thread_exit_leaves_no_fragments_among_shared_stacks) {
  if (strcmp(greenlet_guard_mode(), "madvise") != 0)
    MF_SKIP("mprotect guards: no purger, one VMA pair per stack anyway");
  single_malloc_arena();
  pthread_t x, y;
  start_small_thread(&x, warm_up, NULL);
  join_thread(x);
  long maps0 = map_count();
  long long vm0 = vm_size_bytes();
  sh_state s = {mf_count() / 2, PTHREAD_MUTEX_INITIALIZER,
                PTHREAD_COND_INITIALIZER, 0};
  start_small_thread(&x, sh_x, &s);
  start_small_thread(&y, sh_y, &s);
  join_thread(x);
  long maps_x = map_count();
  long long vm_x = vm_size_bytes();
  sh_set(&s, 3);
  join_thread(y);
  ASSERT_NO_TFAIL();
  /* Runs of free stacks are cut only by stacks X may not unmap: Y's
   * private pool (64) and the purger's batch (64); each run leaves two
   * pieces at most.  Unmapping X's alone leaves about n. */
  if (MAPS_MEANINGFUL)
    cr_assert_leq(maps_x, maps0 + 2 * (64 + 64) + mf_maps_slack(),
                  "%ld mappings before, %ld after X (%d stacks) exited", maps0,
                  maps_x, 2 * s.n);
  if (MF_VM_MEANINGFUL) {
    /* Y's n stacks may stay (it lives on); X's n + 64 went. */
    cr_assert_leq(vm_x - vm0,
                  (long long)s.n * (long long)(SH_STACK + 16384) + MF_SLACK,
                  "VmSize grew %lld bytes: X's stacks stayed", vm_x - vm0);
    cr_assert_leq(vm_size_bytes(), vm0 + MF_SLACK,
                  "VmSize %lld before, %lld after both threads exited", vm0,
                  vm_size_bytes());
  }
  if (MAPS_MEANINGFUL)
    cr_assert_leq(map_count(), maps0 + mf_maps_slack(),
                  "%ld mappings before, %ld after both threads exited", maps0,
                  map_count());
}

/* A deep frame (ASan puts redzones around the array) on each 8 MiB stack;
 * releasing the stacks must leave nothing resident behind, ASan's shadow
 * of them included (1 MiB a stack if it were cleared by memset). */
#define BIG_N 256
#define BIG_STACK ((size_t)8 * 1024 * 1024)

static int big_frame_run(greenlet_t *self, void *arg, void **result) {
  volatile char frame[48 * 1024];
  for (size_t i = 0; i < sizeof frame; i += 512)
    frame[i] = (char)i;
  int rc = greenlet_switch(greenlet_parent(self), NULL, NULL);
  *result = arg;
  return rc == GREENLET_EXIT ? GREENLET_OK : GREENLET_ERROR;
}

static void *big_owner(void *arg) {
  greenlet_t **g = arg;
  greenlet_attr_t attr = {BIG_STACK, "big", 0, 0};
  for (int i = 0; i < BIG_N; i++) {
    TCHECK_RC(greenlet_create(&g[i], big_frame_run, NULL, &attr), 0);
    TCHECK_RC(greenlet_switch(g[i], P(i), NULL), GREENLET_OK);
  }
  /* Half finish (their stacks go back to the pool and the purger), half
   * are left parked for the thread exit to unmap. */
  for (int i = 0; i < BIG_N; i += 2) {
    void *out = NULL;
    TCHECK_RC(greenlet_kill(g[i], &out), GREENLET_OK);
    TCHECK(out == P(i), "kill result");
  }
  return NULL;
}

Test(threads, released_big_stacks_leave_nothing_resident) {
  if (mf_light() || under_qemu())
    MF_SKIP("CGREENLET_TEST_LIGHT / qemu-user");
  if (!MAPS_MEANINGFUL)
    MF_SKIP("ThreadSanitizer keeps its shadow of unmapped memory");
  single_malloc_arena();
  pthread_t t;
  start_small_thread(&t, warm_up, NULL);
  join_thread(t);
  static greenlet_t *g[BIG_N];
  long rss0 = rss_kib();
  cr_assert_gt(rss0, 0, "cannot read VmRSS");
  start_small_thread(&t, big_owner, g);
  join_thread(t);
  ASSERT_NO_TFAIL();
  long grown = rss_kib() - rss0;
  cr_assert_lt(grown, 64 * 1024,
               "VmRSS grew %ld KiB after %d released %zu MiB stacks", grown,
               BIG_N, BIG_STACK >> 20);
  for (int i = 0; i < BIG_N; i++) {
    cr_assert(greenlet_dead(g[i]));
    EXPECT_RC(greenlet_destroy(g[i], 0), 0);
  }
}
