/*
 * test_introspect.c - the introspection API: greenlet_foreach() sees exactly
 * the thread's records with their states and parents, the counters of
 * greenlet_thread_stats() / greenlet_process_stats() move by the expected
 * amounts, and greenlet_stack_high_water() follows deep recursion.
 */
#include "helpers.h"

#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- run functions ------------------------------------------------------ */

/* Sends every value back to its parent until resumed otherwise; returns. */
static int echo(greenlet_t *self, void *arg, void **result) {
  void *v = arg;
  while (greenlet_switch(greenlet_parent(self), v, &v) == GREENLET_OK)
    ;
  *result = NULL;
  return GREENLET_OK;
}

static int ret_arg(greenlet_t *self, void *arg, void **result) {
  (void)self;
  *result = arg;
  return GREENLET_OK;
}

/* ---- enumeration -------------------------------------------------------- */

#define MAX_SEEN 32

typedef struct seen {
  size_t n;
  greenlet_t *g[MAX_SEEN];
  greenlet_t *parent[MAX_SEEN];
  uint64_t id[MAX_SEEN];
  int started[MAX_SEEN], active[MAX_SEEN], dead[MAX_SEEN];
} seen;

static int collect(greenlet_t *g, void *arg) {
  seen *s = arg;
  if (s->n == MAX_SEEN)
    return -100;
  s->g[s->n] = g;
  s->parent[s->n] = greenlet_parent(g);
  s->id[s->n] = greenlet_id(g);
  s->started[s->n] = greenlet_started(g);
  s->active[s->n] = greenlet_active(g);
  s->dead[s->n] = greenlet_dead(g);
  s->n++;
  return 0;
}

static int count_one(greenlet_t *g, void *arg) {
  (void)g;
  ++*(int *)arg;
  return 0;
}

Test(introspect, nothing_before_the_thread_uses_the_library) {
  int calls = 0;
  EXPECT_RC(greenlet_foreach(count_one, &calls), 0);
  cr_assert_eq(calls, 0);
  greenlet_stats_t st;
  memset(&st, 0xff, sizeof st);
  EXPECT_RC(greenlet_thread_stats(&st), 0);
  cr_assert_eq(st.threads, 0);
  cr_assert_eq(st.live, 0);
  cr_assert_eq(st.switches, 0);
  EXPECT_RC(greenlet_foreach(NULL, NULL), GREENLET_EINVAL);
  EXPECT_RC(greenlet_thread_stats(NULL), GREENLET_EINVAL);
  EXPECT_RC(greenlet_process_stats(NULL), GREENLET_EINVAL);
  /* The queries above did not set the thread up. */
  greenlet_t *m = greenlet_main();
  cr_assert_not_null(m);
  seen s = {0};
  EXPECT_RC(greenlet_foreach(collect, &s), 0);
  cr_assert_eq(s.n, 1);
  cr_assert_eq(s.g[0], m);
  EXPECT_RC(greenlet_thread_stats(&st), 0);
  cr_assert_eq(st.threads, 1);
  cr_assert_eq(st.live, 1);
  cr_assert_eq(st.created, 0);
  cr_assert_eq(st.stacks, 0);
  cr_assert_eq(st.stack_reserved, 0);
}

/* Runs inside `runner`: records what foreach sees while it runs. */
static seen inner;
static int enumerate_inside(greenlet_t *self, void *arg, void **result) {
  (void)self;
  (void)arg;
  (void)result;
  cr_assert_eq(greenlet_foreach(collect, &inner), 0);
  return GREENLET_OK;
}

static size_t find(const seen *s, const greenlet_t *g) {
  for (size_t i = 0; i < s->n; i++)
    if (s->g[i] == g)
      return i;
  return (size_t)-1;
}

Test(introspect, foreach_sees_every_record_with_state_and_parent) {
  greenlet_t *m = greenlet_main();
  greenlet_attr_t small = {.stack_size = 64 * 1024};
  greenlet_t *unstarted, *suspended, *finished, *runner, *gone, *held_parent,
      *orphan;
  EXPECT_RC(greenlet_create(&unstarted, ret_arg, NULL, NULL), 0);
  EXPECT_RC(greenlet_create(&suspended, echo, NULL, &small), 0);
  EXPECT_RC(greenlet_switch(suspended, P(1), NULL), GREENLET_OK);
  EXPECT_RC(greenlet_create(&finished, ret_arg, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(finished, P(2), NULL), GREENLET_OK);
  cr_assert(greenlet_dead(finished)); /* dead, handle still held */
  EXPECT_RC(greenlet_create(&gone, ret_arg, NULL, NULL), 0);
  uint64_t gone_id = greenlet_id(gone);
  EXPECT_RC(greenlet_destroy(gone, 0), 0); /* freed: must not show */
  /* A destroyed record kept alive by a child names: shown, dead. */
  EXPECT_RC(greenlet_create(&held_parent, ret_arg, NULL, NULL), 0);
  EXPECT_RC(greenlet_create(&orphan, ret_arg, held_parent, NULL), 0);
  EXPECT_RC(greenlet_destroy(held_parent, 0), 0);
  /* The enumerating greenlet runs; its parent is the suspended one. */
  EXPECT_RC(greenlet_create(&runner, enumerate_inside, suspended, NULL), 0);
  EXPECT_RC(greenlet_switch(runner, NULL, NULL), GREENLET_OK);
  /* runner finished into `suspended`, which echoed to main. */

  greenlet_t *want[] = {m, unstarted, suspended, finished, held_parent,
                        orphan, runner};
  size_t nwant = sizeof want / sizeof want[0];
  cr_assert_eq(inner.n, nwant, "foreach saw %zu records, want %zu", inner.n,
               nwant);
  for (size_t i = 0; i < nwant; i++) /* main first, then creation order */
    cr_assert_eq(inner.g[i], want[i], "record %zu out of order", i);
  for (size_t k = 0; k < inner.n; k++) /* its record may be reused */
    cr_assert_neq(inner.id[k], gone_id);

  size_t i;
  i = find(&inner, m);
  cr_assert(inner.active[i] && inner.parent[i] == NULL);
  i = find(&inner, unstarted);
  cr_assert(!inner.started[i] && !inner.dead[i] && inner.parent[i] == m);
  i = find(&inner, suspended);
  cr_assert(inner.active[i] && inner.parent[i] == m);
  i = find(&inner, finished);
  cr_assert(inner.dead[i] && inner.parent[i] == m);
  i = find(&inner, held_parent);
  cr_assert(inner.dead[i] && inner.parent[i] == m);
  i = find(&inner, orphan);
  cr_assert(!inner.started[i] && inner.parent[i] == held_parent);
  i = find(&inner, runner); /* running while it enumerated */
  cr_assert(inner.active[i] && inner.parent[i] == suspended);

  /* From main afterwards: runner is dead now, the rest unchanged. */
  seen after = {0};
  EXPECT_RC(greenlet_foreach(collect, &after), 0);
  cr_assert_eq(after.n, nwant);
  cr_assert(after.dead[find(&after, runner)]);
  EXPECT_RC(greenlet_destroy(runner, 0), 0);
  EXPECT_RC(greenlet_destroy(orphan, 0), 0); /* frees held_parent too */
  seen last = {0};
  EXPECT_RC(greenlet_foreach(collect, &last), 0);
  cr_assert_eq(last.n, nwant - 3);
  cr_assert_eq(find(&last, held_parent), (size_t)-1);
  EXPECT_RC(greenlet_kill(suspended, NULL), GREENLET_OK);
  EXPECT_RC(greenlet_destroy(suspended, 0), 0);
  EXPECT_RC(greenlet_destroy(finished, 0), 0);
  EXPECT_RC(greenlet_destroy(unstarted, 0), 0);
}

static int stop_at_second(greenlet_t *g, void *arg) {
  (void)g;
  return ++*(int *)arg == 2 ? 7 : 0;
}

Test(introspect, foreach_stops_at_nonzero) {
  greenlet_t *a, *b;
  EXPECT_RC(greenlet_create(&a, ret_arg, NULL, NULL), 0);
  EXPECT_RC(greenlet_create(&b, ret_arg, NULL, NULL), 0);
  int calls = 0;
  EXPECT_RC(greenlet_foreach(stop_at_second, &calls), 7);
  cr_assert_eq(calls, 2);
  greenlet_destroy(a, 0);
  greenlet_destroy(b, 0);
}

/* ---- counters ----------------------------------------------------------- */

static greenlet_stats_t stats(void) {
  greenlet_stats_t st;
  cr_assert_eq(greenlet_thread_stats(&st), 0);
  return st;
}

Test(introspect, counts_follow_creation_start_and_death) {
  enum { N = 10, STARTED = 4, KILLED = 2 };
  const size_t size = 96 * 1024;
  greenlet_attr_t attr = {.stack_size = size};
  greenlet_t *m = greenlet_main();
  greenlet_stats_t s0 = stats();
  greenlet_t *g[N];
  for (int i = 0; i < N; i++)
    EXPECT_RC(greenlet_create(&g[i], echo, m, &attr), 0);
  greenlet_stats_t s1 = stats();
  cr_assert_eq(s1.created - s0.created, N);
  cr_assert_eq(s1.live - s0.live, N);
  cr_assert_eq(s1.stacks, s0.stacks, "unstarted greenlets hold no stack");
  cr_assert_eq(s1.switches, s0.switches);

  for (int i = 0; i < STARTED; i++)
    EXPECT_RC(greenlet_switch(g[i], P(i), NULL), GREENLET_OK);
  greenlet_stats_t s2 = stats();
  cr_assert_eq(s2.stacks - s0.stacks, STARTED);
  cr_assert_eq(s2.stack_reserved - s0.stack_reserved, STARTED * size);
  cr_assert_eq(s2.live - s0.live, N);
  cr_assert_eq(s2.switches - s1.switches, 2 * STARTED);
  /* Each parked echo uses some of its stack, and no more than it has. */
  size_t used = 0;
  for (int i = 0; i < STARTED; i++)
    used += greenlet_stack_in_use(g[i]);
  cr_assert_gt(used, 0);
  cr_assert_eq(s2.stack_in_use - s0.stack_in_use, used);
  cr_assert_leq(s2.stack_in_use, s2.stack_reserved);

  for (int i = 0; i < KILLED; i++)
    EXPECT_RC(greenlet_kill(g[i], NULL), GREENLET_OK);
  greenlet_t *extra; /* a call that flushes the last finished stack */
  EXPECT_RC(greenlet_create(&extra, ret_arg, NULL, NULL), 0);
  EXPECT_RC(greenlet_destroy(extra, 0), 0);
  greenlet_stats_t s3 = stats();
  cr_assert_eq(s3.live - s0.live, N - KILLED);
  cr_assert_eq(s3.stacks - s0.stacks, STARTED - KILLED);
  cr_assert_eq(s3.created - s0.created, N + 1);
  cr_assert_eq(s3.switches - s2.switches, 2 * KILLED); /* in and back out */

  /* Unstarted ones destroyed, suspended ones discarded: all gone. */
  for (int i = 0; i < N; i++)
    EXPECT_RC(greenlet_destroy(g[i], GREENLET_DESTROY_DISCARD), 0);
  greenlet_stats_t s4 = stats();
  cr_assert_eq(s4.live, s0.live);
  cr_assert_eq(s4.stacks, s0.stacks);
  cr_assert_eq(s4.stack_reserved, s0.stack_reserved);
  cr_assert_eq(s4.switches, s3.switches);
}

/* records counts what is not freed: dead greenlets still held by a handle,
 * and a parent whose handle is gone while a child names it. */
Test(introspect, records_count_what_is_not_freed) {
  greenlet_t *m = greenlet_main();
  greenlet_stats_t s0 = stats();
  cr_assert_geq(s0.records, 1); /* the main greenlet */
  greenlet_t *parent, *child;
  EXPECT_RC(greenlet_create(&parent, ret_arg, m, NULL), 0);
  EXPECT_RC(greenlet_create(&child, ret_arg, parent, NULL), 0);
  cr_assert_eq(stats().records - s0.records, 2);
  EXPECT_RC(greenlet_switch(parent, NULL, NULL), GREENLET_OK); /* finishes */
  cr_assert_eq(stats().records - s0.records, 2, "dead, still held");
  EXPECT_RC(greenlet_destroy(parent, 0), 0);
  cr_assert_eq(stats().records - s0.records, 2, "the child names it");
  EXPECT_RC(greenlet_destroy(child, 0), 0);
  greenlet_stats_t s1 = stats();
  cr_assert_eq(s1.records, s0.records);
  greenlet_stats_t p;
  EXPECT_RC(greenlet_process_stats(&p), 0);
  cr_assert_eq(p.records, 0, "thread scope only");
}

Test(introspect, switch_counter_counts_real_switches_only) {
  greenlet_t *m = greenlet_main(), *e, *u, *d;
  EXPECT_RC(greenlet_create(&e, echo, NULL, NULL), 0);
  greenlet_stats_t a = stats();
  for (int i = 0; i < 100; i++)
    EXPECT_RC(greenlet_switch(e, P(i), NULL), GREENLET_OK);
  greenlet_stats_t b = stats();
  cr_assert_eq(b.switches - a.switches, 200);
  /* To oneself, to a dead child, a throw into an unstarted child: no
   * switch happens. */
  EXPECT_RC(greenlet_switch(m, NULL, NULL), GREENLET_OK);
  EXPECT_RC(greenlet_create(&d, ret_arg, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(d, NULL, NULL), GREENLET_OK); /* 2: in, out */
  EXPECT_RC(greenlet_switch(d, NULL, NULL), GREENLET_OK); /* dead: 0 */
  EXPECT_RC(greenlet_create(&u, ret_arg, NULL, NULL), 0);
  EXPECT_RC(greenlet_throw(u, P(5), NULL), GREENLET_ERROR);
  greenlet_stats_t c = stats();
  cr_assert_eq(c.switches - b.switches, 2);
  EXPECT_RC(greenlet_throw(e, P(1), NULL), GREENLET_OK); /* it returns */
  greenlet_stats_t f = stats();
  cr_assert_eq(f.switches - c.switches, 2);
  greenlet_destroy(e, 0);
  greenlet_destroy(d, 0);
  greenlet_destroy(u, 0);
}

/* ---- stack high-water ------------------------------------------------- */

/* Recurses `depth` frames of about 1 KiB each, parks at the bottom.  alloca,
 * not an array: ASan may move arrays to its fake stack; the asm makes the
 * whole block escape, so no compiler shrinks it. */
__attribute__((noinline)) static int deep(greenlet_t *self, int depth) {
  char *pad = __builtin_alloca(1024);
  memset(pad, depth, 1024);
  __asm__ volatile("" : : "r"(pad) : "memory");
  int r;
  if (depth > 0)
    r = deep(self, depth - 1);
  else
    r = greenlet_switch(greenlet_parent(self), P(-1), NULL);
  __asm__ volatile("" : : "r"(pad) : "memory");
  return r + pad[0] - pad[1023];
}

/* Each value v > 0 asks for a recursion v frames deep (parked at the bottom
 * once, then back up to park here); 0 returns. */
static int digger(greenlet_t *self, void *arg, void **result) {
  void *v = arg;
  while (I(v) > 0) {
    deep(self, (int)I(v));
    if (greenlet_switch(greenlet_parent(self), P(0), &v) != GREENLET_OK)
      break;
  }
  *result = NULL;
  return GREENLET_OK;
}

static size_t hw_self;
static int measure_self(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  (void)result;
  hw_self = greenlet_stack_high_water(self);
  return GREENLET_OK;
}

Test(introspect, high_water_follows_deep_recursion) {
  /* A size no other greenlet of this test uses: the stack is fresh. */
  const size_t size = 1024 * 1024 + 4096 * 3;
  greenlet_attr_t attr = {.stack_size = size};
  greenlet_t *g, *u;
  EXPECT_RC(greenlet_create(&g, digger, NULL, &attr), 0);
  EXPECT_RC(greenlet_create(&u, digger, NULL, &attr), 0);
  cr_assert_eq(greenlet_stack_high_water(u), 0, "unstarted: no stack");
  cr_assert_eq(greenlet_stack_high_water(greenlet_main()), 0);
  cr_assert_eq(greenlet_stack_high_water(NULL), 0);

  void *v;
  EXPECT_RC(greenlet_switch(g, P(4), &v), GREENLET_OK); /* parked deep(4) */
  cr_assert_eq(I(v), -1);
  size_t shallow = greenlet_stack_high_water(g);
  cr_assert_geq(shallow, greenlet_stack_in_use(g));
  cr_assert_gt(shallow, 0);
  cr_assert_lt(shallow, 64 * 1024, "4 frames touched %zu bytes", shallow);

  EXPECT_RC(greenlet_switch(g, NULL, &v), GREENLET_OK); /* back up */
  EXPECT_RC(greenlet_switch(g, P(400), &v), GREENLET_OK); /* ~400 KiB */
  cr_assert_eq(I(v), -1);
  size_t in_use = greenlet_stack_in_use(g);
  size_t hw = greenlet_stack_high_water(g);
  cr_assert_geq(in_use, 400 * 1024);
  cr_assert_geq(hw, in_use);
  cr_assert_leq(hw, size);

  EXPECT_RC(greenlet_switch(g, NULL, &v), GREENLET_OK); /* parked shallow */
  cr_assert_lt(greenlet_stack_in_use(g), 64 * 1024);
  cr_assert_geq(greenlet_stack_high_water(g), hw, "a high-water mark stays");

  /* The running greenlet can measure itself. */
  greenlet_t *self_g;
  EXPECT_RC(greenlet_create(&self_g, measure_self, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(self_g, NULL, NULL), GREENLET_OK);
  cr_assert_gt(hw_self, 0);
  cr_assert_lt(hw_self, 64 * 1024);

  /* Dead: no stack. */
  EXPECT_RC(greenlet_switch(g, P(0), NULL), GREENLET_OK);
  cr_assert(greenlet_dead(g));
  cr_assert_eq(greenlet_stack_high_water(g), 0);

  /* As documented: a stack recycled with its pages still resident carries
   * the depth its earlier user reached. */
  EXPECT_RC(greenlet_destroy(g, 0), 0); /* returns g's stack to the pool */
  EXPECT_RC(greenlet_switch(u, P(1), &v), GREENLET_OK);
  cr_assert_geq(greenlet_stack_high_water(u), hw);
  EXPECT_RC(greenlet_kill(u, NULL), GREENLET_OK);
  greenlet_destroy(u, 0);
  greenlet_destroy(self_g, 0);
}

/* ---- process scope ---------------------------------------------------- */

static pthread_barrier_t bar;
static greenlet_t *worker_kept[2];

static void *worker(void *arg) {
  (void)arg;
  greenlet_t *e, *keep;
  if (greenlet_create(&e, echo, NULL, NULL) != 0 ||
      greenlet_create(&keep, ret_arg, NULL, NULL) != 0)
    return P(1);
  for (int i = 0; i < 10; i++) /* 20 switches */
    if (greenlet_switch(e, P(i), NULL) != GREENLET_OK)
      return P(1);
  worker_kept[0] = e; /* the thread exits with both unreleased */
  worker_kept[1] = keep;
  pthread_barrier_wait(&bar); /* main checks: worker alive */
  pthread_barrier_wait(&bar);
  return NULL; /* e, suspended, is discarded by the thread exit */
}

/*
 * Both thread tests look at the registry while a worker waits at the
 * barrier: start it, wait until it is there, and check that the process
 * lists two threads.  *st keeps that view for the caller's own checks.
 */
static void start_worker(void *(*fn)(void *), pthread_t *t,
                         greenlet_stats_t *st) {
  pthread_barrier_init(&bar, NULL, 2);
  cr_assert_eq(pthread_create(t, NULL, fn, NULL), 0);
  pthread_barrier_wait(&bar);
  EXPECT_RC(greenlet_process_stats(st), 0);
  cr_assert_eq(st->threads, 2);
}

Test(introspect, process_stats_sum_threads_and_survive_exit) {
  greenlet_t *g;
  EXPECT_RC(greenlet_create(&g, echo, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, NULL, NULL), GREENLET_OK);
  greenlet_stats_t p0;
  EXPECT_RC(greenlet_process_stats(&p0), 0);
  cr_assert_eq(p0.threads, 1);
  cr_assert_eq(p0.created, 1);
  cr_assert_eq(p0.switches, 2);
  cr_assert_eq(p0.live, 2);
  cr_assert_eq(p0.stacks, 1);
  cr_assert_eq(p0.stack_in_use, 0);

  pthread_t t;
  greenlet_stats_t p1;
  start_worker(worker, &t, &p1);
  cr_assert_eq(p1.created, 3);
  cr_assert_eq(p1.switches, 22);
  cr_assert_eq(p1.live, 2 + 3); /* worker: main, e, keep */
  cr_assert_eq(p1.stacks, 2);
  pthread_barrier_wait(&bar);
  void *ret;
  pthread_join(t, &ret);
  cr_assert_null(ret);

  greenlet_stats_t p2;
  EXPECT_RC(greenlet_process_stats(&p2), 0);
  cr_assert_eq(p2.threads, 1);
  cr_assert_eq(p2.created, 3, "an exited thread's counts remain");
  cr_assert_eq(p2.switches, 22);
  cr_assert_eq(p2.live, 2);
  cr_assert_eq(p2.stacks, 1);
  /* Releasing the last records frees the worker's state; totals stay. */
  cr_assert(greenlet_dead(worker_kept[0]) && greenlet_dead(worker_kept[1]));
  EXPECT_RC(greenlet_destroy(worker_kept[0], 0), 0);
  EXPECT_RC(greenlet_destroy(worker_kept[1], 0), 0);
  greenlet_stats_t p3;
  EXPECT_RC(greenlet_process_stats(&p3), 0);
  cr_assert_eq(p3.created, 3);
  cr_assert_eq(p3.switches, 22);
  EXPECT_RC(greenlet_kill(g, NULL), GREENLET_OK);
  greenlet_destroy(g, 0);
  pthread_barrier_destroy(&bar);
}

/* ---- fork ------------------------------------------------------------- */

static void *parked_worker(void *arg) {
  (void)arg;
  greenlet_t *e;
  if (greenlet_create(&e, echo, NULL, NULL) != 0 ||
      greenlet_switch(e, NULL, NULL) != GREENLET_OK)
    return P(1);
  pthread_barrier_wait(&bar); /* parked: the test forks now */
  pthread_barrier_wait(&bar);
  return NULL;
}

Test(introspect, fork_child_lists_only_the_forking_thread) {
  greenlet_t *g;
  EXPECT_RC(greenlet_create(&g, echo, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, NULL, NULL), GREENLET_OK);
  pthread_t t;
  greenlet_stats_t before;
  start_worker(parked_worker, &t, &before);
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    /* The worker does not exist here: only this thread is listed, and the
     * registry lock works (a new greenlet, a new thread). */
    greenlet_stats_t s;
    int ok = greenlet_process_stats(&s) == 0 && s.threads == 1 &&
             s.live == 2 && s.stacks == 1;
    greenlet_t *h;
    ok = ok && greenlet_create(&h, echo, NULL, NULL) == 0 &&
         greenlet_switch(h, NULL, NULL) == GREENLET_OK;
    ok = ok && greenlet_process_stats(&s) == 0 && s.live == 3;
    _exit(ok ? 0 : 1);
  }
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "the fork child saw the wrong registry");
  pthread_barrier_wait(&bar);
  pthread_join(t, NULL);
  pthread_barrier_destroy(&bar);
  EXPECT_RC(greenlet_kill(g, NULL), GREENLET_OK);
  greenlet_destroy(g, 0);
}
