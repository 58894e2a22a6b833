/*
 * test_core.c - greenlet semantics on one thread: starting, switching with
 * values, errors, parents, dead greenlets, kill, destroy, queries.
 */
#include "helpers.h"
#include "run_once.h"

#include <execinfo.h>
#include <fenv.h>
#include <string.h>

/* ---- run functions used by several tests ------------------------------- */

/* Returns arg + 1. */
static int ret_plus_one(greenlet_t *self, void *arg, void **result) {
  (void)self;
  *result = P(I(arg) + 1);
  return GREENLET_OK;
}

/* Returns arg as an error. */
static int ret_error(greenlet_t *self, void *arg, void **result) {
  (void)self;
  *result = arg;
  return GREENLET_ERROR;
}

/* Echo: sends back to its parent every value it gets, times two, until it is
 * resumed with something other than a value; returns the last status as a
 * value in *result (GREENLET_EXIT for a kill). */
static int echo_twice(greenlet_t *self, void *arg, void **result) {
  void *v = arg;
  for (;;) {
    int rc = greenlet_switch(greenlet_parent(self), P(I(v) * 2), &v);
    if (rc != GREENLET_OK) {
      *result = P(rc * 1000 + I(v));
      return rc == GREENLET_EXIT ? GREENLET_EXIT : GREENLET_OK;
    }
  }
}

static int run_calls;
static int count_calls(greenlet_t *self, void *arg, void **result) {
  (void)self;
  run_calls++;
  *result = arg;
  return GREENLET_OK;
}

/* ---- main greenlet ------------------------------------------------------ */

Test(core, main_greenlet_on_first_use) {
  greenlet_t *cur = greenlet_current();
  cr_assert_not_null(cur);
  cr_assert_eq(cur, greenlet_main());
  cr_assert(greenlet_is_main(cur));
  cr_assert_null(greenlet_parent(cur));
  cr_assert(greenlet_started(cur));
  cr_assert(greenlet_active(cur));
  cr_assert(!greenlet_dead(cur));
  cr_assert(greenlet_owned_by_current_thread(cur));
  cr_assert_gt(greenlet_id(cur), 0);
  cr_assert_str_empty(greenlet_name(cur));
  cr_assert_eq(greenlet_stack_size(cur), 0);
  cr_assert_eq(greenlet_stack_in_use(cur), 0);
}

Test(core, main_refusals) {
  greenlet_t *m = greenlet_main();
  greenlet_t *g;
  EXPECT_RC(greenlet_create(&g, ret_plus_one, NULL, NULL), 0);
  EXPECT_RC(greenlet_set_parent(m, g), GREENLET_EINVAL);
  EXPECT_RC(greenlet_kill(m, NULL), GREENLET_EINVAL);
  EXPECT_RC(greenlet_destroy(m, 0), GREENLET_EINVAL);
  cr_assert_null(greenlet_parent(m));
  cr_assert(greenlet_active(m));
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

/* ---- create ------------------------------------------------------------- */

Test(core, create_refusals) {
  greenlet_t *g = NULL;
  EXPECT_RC(greenlet_create(NULL, ret_plus_one, NULL, NULL), GREENLET_EINVAL);
  EXPECT_RC(greenlet_create(&g, NULL, NULL, NULL), GREENLET_EINVAL);
  cr_assert_null(g);
  greenlet_attr_t attr = GREENLET_ATTR_INIT;
  attr.stack_size = GREENLET_MIN_STACK_SIZE - 1;
  EXPECT_RC(greenlet_create(&g, ret_plus_one, NULL, &attr), GREENLET_EINVAL);
  attr.stack_size = GREENLET_MAX_STACK_SIZE + 1;
  EXPECT_RC(greenlet_create(&g, ret_plus_one, NULL, &attr), GREENLET_EINVAL);
  cr_assert_null(g);
}

Test(core, create_state_and_attributes) {
  greenlet_t *g;
  greenlet_attr_t attr = {.stack_size = 100000,
                          .name = "a-rather-long-name-that-is-truncated-here"};
  EXPECT_RC(greenlet_create(&g, ret_plus_one, NULL, &attr), 0);
  cr_assert_eq(greenlet_parent(g), greenlet_current());
  cr_assert(!greenlet_started(g));
  cr_assert(!greenlet_active(g));
  cr_assert(!greenlet_dead(g));
  cr_assert(!greenlet_is_main(g));
  cr_assert_eq(strlen(greenlet_name(g)), 31);
  cr_assert_eq(strncmp(greenlet_name(g), attr.name, 31), 0);
  cr_assert_geq(greenlet_stack_size(g), 100000);
  cr_assert_eq(greenlet_stack_size(g) % 4096, 0);
  cr_assert_eq(greenlet_stack_in_use(g), 0);
  cr_assert_null(greenlet_userdata(g));
  int x;
  greenlet_set_userdata(g, &x);
  cr_assert_eq(greenlet_userdata(g), &x);

  greenlet_t *h;
  EXPECT_RC(greenlet_create(&h, ret_plus_one, g, NULL), 0);
  cr_assert_eq(greenlet_parent(h), g);
  cr_assert_gt(greenlet_id(h), greenlet_id(g));
  cr_assert_eq(greenlet_stack_size(h), GREENLET_DEFAULT_STACK_SIZE);
  EXPECT_RC(greenlet_destroy(h, 0), 0);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

/* ---- switch -------------------------------------------------------------- */

/* ---- the reserve at the top of the stack -------------------------------- */

/* Fills the reserve it was given, then reports where it and its C stack are;
 * checks after a switch away and back that nothing else wrote the reserve. */
static int use_reserve(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  unsigned char *r = greenlet_reserved(self);
  size_t n = (size_t)I(greenlet_userdata(self));
  memset(r, 0xa5, n);
  int here;
  void *where[2] = {r, &here};
  void *v;
  if (greenlet_switch(greenlet_parent(self), where, &v) != GREENLET_OK)
    return GREENLET_ERROR;
  for (size_t i = 0; i < n; i++)
    if (r[i] != 0xa5)
      return GREENLET_ERROR;
  *result = greenlet_reserved(self);
  return GREENLET_OK;
}

Test(core, reserve_sits_above_the_c_stack) {
  size_t n = 20000; /* rounded up to 20000 (a multiple of 16 already) */
  greenlet_attr_t attr = {.stack_size = 64 * 1024, .reserve = n};
  greenlet_t *g;
  EXPECT_RC(greenlet_create(&g, use_reserve, NULL, &attr), 0);
  cr_assert_null(greenlet_reserved(g), "no stack before the start");
  greenlet_set_userdata(g, P(n));
  void **where;
  EXPECT_RC(greenlet_switch(g, NULL, (void **)&where), GREENLET_OK);
  char *r = greenlet_reserved(g);
  cr_assert_eq(where[0], r);
  cr_assert_eq((uintptr_t)r % 16, 0);
  /* The C stack starts below the reserve, which ends the stack. */
  cr_assert_lt((char *)where[1], r);
  size_t in_use = greenlet_stack_in_use(g);
  cr_assert_gt(in_use, 0);
  cr_assert_lt(in_use, 16 * 1024, "in use counts the C stack only");
  cr_assert_eq((uintptr_t)(r + n) % 4096, 0, "the reserve ends the stack");
  /* Another greenlet running meanwhile leaves the reserve alone. */
  greenlet_t *other;
  EXPECT_RC(greenlet_create(&other, ret_plus_one, NULL, &attr), 0);
  void *v;
  EXPECT_RC(greenlet_switch(other, P(1), &v), GREENLET_OK);
  cr_assert_eq(I(v), 2);
  EXPECT_RC(greenlet_switch(g, NULL, &v), GREENLET_OK);
  cr_assert_eq(v, r, "run saw its reserve intact and unmoved");
  cr_assert_null(greenlet_reserved(g), "none once dead");
  EXPECT_RC(greenlet_destroy(g, 0), 0);
  EXPECT_RC(greenlet_destroy(other, 0), 0);
}

Test(core, reserve_refusals) {
  greenlet_t *g = NULL;
  greenlet_attr_t attr = {.stack_size = 64 * 1024,
                          .reserve = 64 * 1024 - GREENLET_MIN_STACK_SIZE + 1};
  EXPECT_RC(greenlet_create(&g, ret_plus_one, NULL, &attr), GREENLET_EINVAL);
  attr.reserve = (size_t)-1;
  EXPECT_RC(greenlet_create(&g, ret_plus_one, NULL, &attr), GREENLET_EINVAL);
  cr_assert_null(g);
  /* The most it can be: the C stack keeps the minimum. */
  attr.reserve = 64 * 1024 - GREENLET_MIN_STACK_SIZE;
  EXPECT_RC(greenlet_create(&g, ret_plus_one, NULL, &attr), 0);
  void *v;
  EXPECT_RC(greenlet_switch(g, P(4), &v), GREENLET_OK);
  cr_assert_eq(I(v), 5);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
  cr_assert_null(greenlet_reserved(greenlet_main()));
  cr_assert_null(greenlet_reserved(NULL));
}

Test(core, first_switch_runs_and_result_goes_to_parent) {
  greenlet_t *g;
  void *v = NULL;
  EXPECT_RC(greenlet_create(&g, ret_plus_one, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, P(41), &v), GREENLET_OK);
  cr_assert_eq(I(v), 42);
  cr_assert(greenlet_started(g));
  cr_assert(greenlet_dead(g));
  cr_assert(!greenlet_active(g));
  cr_assert_eq(greenlet_stack_in_use(g), 0);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

Test(core, switch_to_current_returns_at_once) {
  void *v = NULL;
  EXPECT_RC(greenlet_switch(greenlet_current(), P(5), &v), GREENLET_OK);
  cr_assert_eq(I(v), 5);
  EXPECT_RC(greenlet_switch(greenlet_current(), P(6), NULL), GREENLET_OK);
  EXPECT_RC(greenlet_switch(NULL, P(6), &v), GREENLET_EINVAL);
}

Test(core, ping_pong_values) {
  greenlet_t *g;
  void *v;
  EXPECT_RC(greenlet_create(&g, echo_twice, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, P(1), &v), GREENLET_OK);
  cr_assert_eq(I(v), 2);
  for (int i = 2; i < 10000; i++) {
    EXPECT_RC(greenlet_switch(g, P(i), &v), GREENLET_OK);
    cr_assert_eq(I(v), 2 * i);
    cr_assert(greenlet_active(g));
    cr_assert_gt(greenlet_stack_in_use(g), 0);
    cr_assert_lt(greenlet_stack_in_use(g), greenlet_stack_size(g));
  }
  /* A NULL out is allowed on both sides. */
  EXPECT_RC(greenlet_switch(g, P(3), NULL), GREENLET_OK);
  EXPECT_RC(greenlet_kill(g, &v), GREENLET_OK);
  cr_assert_eq(I(v), GREENLET_EXIT * 1000);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

/* Nested calls: the greenlet suspends from deep recursion, twice. */
static int deep_switch(int depth, greenlet_t *self) {
  volatile char pad[64];
  pad[0] = (char)depth;
  if (depth == 0) {
    void *v;
    int rc = greenlet_switch(greenlet_parent(self), P(1000), &v);
    cr_assert_eq(rc, GREENLET_OK);
    rc = greenlet_switch(greenlet_parent(self), P(I(v) + 1), &v);
    cr_assert_eq(rc, GREENLET_OK);
    return (int)I(v) + pad[0];
  }
  return deep_switch(depth - 1, self) + 1 + (pad[0] - (char)depth);
}

static int run_deep(greenlet_t *self, void *arg, void **result) {
  *result = P(deep_switch((int)I(arg), self));
  return GREENLET_OK;
}

Test(core, switch_from_deep_recursion) {
  greenlet_t *g;
  void *v;
  EXPECT_RC(greenlet_create(&g, run_deep, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, P(500), &v), GREENLET_OK);
  cr_assert_eq(I(v), 1000);
  size_t deep_use = greenlet_stack_in_use(g);
  cr_assert_gt(deep_use, 500 * 64);
  EXPECT_RC(greenlet_switch(g, P(7), &v), GREENLET_OK);
  cr_assert_eq(I(v), 8);
  EXPECT_RC(greenlet_switch(g, P(20), &v), GREENLET_OK);
  cr_assert_eq(I(v), 520);
  cr_assert(greenlet_dead(g));
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

/* Greenlets switching among themselves, not only with main: a ring. */
static greenlet_t *ring[5];
static int ring_step(greenlet_t *self, void *arg, void **result) {
  int idx = (int)I(greenlet_userdata(self));
  void *v = arg;
  for (int lap = 0; lap < 3; lap++) {
    int rc = greenlet_switch(ring[(idx + 1) % 5], P(I(v) + 1), &v);
    if (rc == GREENLET_EXIT)
      return GREENLET_EXIT; /* killed at the end of the test */
    cr_assert_eq(rc, GREENLET_OK);
  }
  *result = v;
  return GREENLET_OK;
}

Test(core, ring_of_greenlets) {
  for (int i = 0; i < 5; i++) {
    EXPECT_RC(greenlet_create(&ring[i], ring_step, NULL, NULL), 0);
    greenlet_set_userdata(ring[i], P(i));
  }
  void *v;
  /* 0 starts and passes to 1, ... each greenlet switches 3 times; the first
   * to finish is ring[0] (its fourth resume), whose result goes to main. */
  EXPECT_RC(greenlet_switch(ring[0], P(0), &v), GREENLET_OK);
  cr_assert_eq(I(v), 15);
  cr_assert(greenlet_dead(ring[0]));
  for (int i = 1; i < 5; i++) {
    cr_assert(greenlet_active(ring[i]));
    EXPECT_RC(greenlet_kill(ring[i], NULL), GREENLET_OK);
  }
  for (int i = 0; i < 5; i++)
    EXPECT_RC(greenlet_destroy(ring[i], 0), 0);
}

Test(core, many_live_greenlets) {
  enum { N = 2000 };
  static greenlet_t *gs[N];
  void *v;
  for (int i = 0; i < N; i++) {
    greenlet_attr_t attr = {.stack_size = GREENLET_MIN_STACK_SIZE};
    EXPECT_RC(greenlet_create(&gs[i], echo_twice, NULL, &attr), 0);
    EXPECT_RC(greenlet_switch(gs[i], P(i), &v), GREENLET_OK);
    cr_assert_eq(I(v), 2 * i);
  }
  for (int round = 0; round < 3; round++)
    for (int i = N - 1; i >= 0; i--) {
      EXPECT_RC(greenlet_switch(gs[i], P(i + round), &v), GREENLET_OK);
      cr_assert_eq(I(v), 2 * (i + round));
    }
  for (int i = 0; i < N; i++) {
    EXPECT_RC(greenlet_kill(gs[i], NULL), GREENLET_OK);
    EXPECT_RC(greenlet_destroy(gs[i], 0), 0);
  }
}

/* ---- errors --------------------------------------------------------------- */

Test(core, error_from_run_goes_to_parent) {
  greenlet_t *g;
  void *v;
  int err;
  EXPECT_RC(greenlet_create(&g, ret_error, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, &err, &v), GREENLET_ERROR);
  cr_assert_eq(v, &err);
  cr_assert(greenlet_dead(g));
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

Test(core, throw_into_suspended) {
  greenlet_t *g;
  void *v;
  int err;
  EXPECT_RC(greenlet_create(&g, echo_twice, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, P(1), &v), GREENLET_OK);
  /* echo_twice returns rc*1000 + value as a value when resumed with an
   * error; &err is not a small integer, so check via the offset. */
  EXPECT_RC(greenlet_throw(g, P(7), &v), GREENLET_OK);
  cr_assert_eq(I(v), GREENLET_ERROR * 1000 + 7);
  cr_assert(greenlet_dead(g));
  EXPECT_RC(greenlet_destroy(g, 0), 0);
  (void)err;
}

/* A greenlet that catches an error and rethrows it to its parent. */
static int rethrow(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  void *e;
  int rc = greenlet_switch(greenlet_parent(self), NULL, &e);
  cr_assert_eq(rc, GREENLET_ERROR);
  return greenlet_throw(greenlet_parent(self), e, result);
}

Test(core, throw_and_rethrow_to_parent) {
  greenlet_t *g;
  void *v;
  int err;
  EXPECT_RC(greenlet_create(&g, rethrow, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, NULL, &v), GREENLET_OK);
  EXPECT_RC(greenlet_throw(g, &err, &v), GREENLET_ERROR);
  cr_assert_eq(v, &err);
  cr_assert(greenlet_active(g));
  /* g is parked in its throw; resume it with an error it returns. */
  EXPECT_RC(greenlet_throw(g, P(9), &v), GREENLET_ERROR);
  cr_assert_eq(I(v), 9);
  cr_assert(greenlet_dead(g));
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

Test(core, throw_into_unstarted_never_runs) {
  greenlet_t *g;
  void *v;
  int err;
  run_calls = 0;
  EXPECT_RC(greenlet_create(&g, count_calls, NULL, NULL), 0);
  /* Its parent is the current greenlet, so the error comes straight back. */
  EXPECT_RC(greenlet_throw(g, &err, &v), GREENLET_ERROR);
  cr_assert_eq(v, &err);
  cr_assert_eq(run_calls, 0);
  cr_assert(greenlet_dead(g));
  cr_assert(greenlet_started(g)); /* started means "left the unstarted state" */
  EXPECT_RC(greenlet_switch(g, P(1), &v), GREENLET_OK); /* dead: to main */
  cr_assert_eq(I(v), 1);
  cr_assert_eq(run_calls, 0);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

Test(core, throw_into_self) {
  void *v;
  int err;
  EXPECT_RC(greenlet_throw(greenlet_current(), &err, &v), GREENLET_ERROR);
  cr_assert_eq(v, &err);
  EXPECT_RC(greenlet_throw(NULL, &err, &v), GREENLET_EINVAL);
}

/* ---- dead greenlets and parents --------------------------------------- */

/* Child of A: finishes at once with arg * 10. */
static int child_times_ten(greenlet_t *self, void *arg, void **result) {
  (void)self;
  *result = P(I(arg) * 10);
  return GREENLET_OK;
}

/* A: starts its child B, then reports B's result to main, then waits for
 * whatever comes and returns it + 1. */
static int parent_a(greenlet_t *self, void *arg, void **result) {
  greenlet_t *b;
  void *v;
  cr_assert_eq(greenlet_create(&b, child_times_ten, NULL, NULL), 0);
  cr_assert_eq(greenlet_parent(b), self);
  greenlet_set_userdata(self, b);
  cr_assert_eq(greenlet_switch(b, arg, &v), GREENLET_OK);
  cr_assert(greenlet_dead(b));
  cr_assert_eq(greenlet_switch(greenlet_main(), v, &v), GREENLET_OK);
  *result = P(I(v) + 1);
  return GREENLET_OK;
}

Test(core, switch_to_dead_goes_to_first_live_ancestor) {
  greenlet_t *a;
  void *v;
  EXPECT_RC(greenlet_create(&a, parent_a, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(a, P(3), &v), GREENLET_OK);
  cr_assert_eq(I(v), 30);
  greenlet_t *b = greenlet_userdata(a);
  cr_assert(greenlet_dead(b));
  /* Switching to dead b resumes a, b's parent. */
  EXPECT_RC(greenlet_switch(b, P(100), &v), GREENLET_OK);
  cr_assert_eq(I(v), 101);
  cr_assert(greenlet_dead(a));
  /* Now a and b are dead: the first live ancestor is main, the caller. */
  EXPECT_RC(greenlet_switch(b, P(5), &v), GREENLET_OK);
  cr_assert_eq(I(v), 5);
  EXPECT_RC(greenlet_throw(b, P(6), &v), GREENLET_ERROR);
  cr_assert_eq(I(v), 6);
  EXPECT_RC(greenlet_destroy(b, 0), 0);
  EXPECT_RC(greenlet_destroy(a, 0), 0);
}

Test(core, set_parent_redirects_result) {
  greenlet_t *p, *c;
  void *v;
  EXPECT_RC(greenlet_create(&p, echo_twice, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(p, P(1), &v), GREENLET_OK);
  EXPECT_RC(greenlet_create(&c, ret_plus_one, NULL, NULL), 0);
  EXPECT_RC(greenlet_set_parent(c, p), 0);
  cr_assert_eq(greenlet_parent(c), p);
  /* c's result goes to p (parked in echo_twice), which echoes it doubled
   * to its own parent, main. */
  EXPECT_RC(greenlet_switch(c, P(4), &v), GREENLET_OK);
  cr_assert_eq(I(v), 10);
  cr_assert(greenlet_dead(c));
  EXPECT_RC(greenlet_kill(p, NULL), GREENLET_OK);
  EXPECT_RC(greenlet_destroy(c, 0), 0);
  EXPECT_RC(greenlet_destroy(p, 0), 0);
}

Test(core, set_parent_refusals_change_nothing) {
  greenlet_t *a, *b, *c;
  EXPECT_RC(greenlet_create(&a, ret_plus_one, NULL, NULL), 0);
  EXPECT_RC(greenlet_create(&b, ret_plus_one, a, NULL), 0);
  EXPECT_RC(greenlet_create(&c, ret_plus_one, b, NULL), 0);
  EXPECT_RC(greenlet_set_parent(a, c), GREENLET_ECYCLE);
  EXPECT_RC(greenlet_set_parent(a, a), GREENLET_ECYCLE);
  EXPECT_RC(greenlet_set_parent(b, c), GREENLET_ECYCLE);
  EXPECT_RC(greenlet_set_parent(NULL, a), GREENLET_EINVAL);
  EXPECT_RC(greenlet_set_parent(a, NULL), GREENLET_EINVAL);
  cr_assert_eq(greenlet_parent(a), greenlet_main());
  cr_assert_eq(greenlet_parent(b), a);
  cr_assert_eq(greenlet_parent(c), b);
  /* A legal change, and main as parent. */
  EXPECT_RC(greenlet_set_parent(c, a), 0);
  cr_assert_eq(greenlet_parent(c), a);
  EXPECT_RC(greenlet_set_parent(c, greenlet_main()), 0);
  EXPECT_RC(greenlet_destroy(c, 0), 0);
  EXPECT_RC(greenlet_destroy(b, 0), 0);
  EXPECT_RC(greenlet_destroy(a, 0), 0);
}

/* An unstarted parent receives its child's result as its run argument. */
Test(core, result_starts_unstarted_parent) {
  greenlet_t *p, *c;
  void *v;
  EXPECT_RC(greenlet_create(&p, ret_plus_one, NULL, NULL), 0);
  EXPECT_RC(greenlet_create(&c, child_times_ten, p, NULL), 0);
  EXPECT_RC(greenlet_switch(c, P(2), &v), GREENLET_OK);
  /* c returns 20 to p, which starts with it and returns 21 to main. */
  cr_assert_eq(I(v), 21);
  cr_assert(greenlet_dead(p));
  cr_assert(greenlet_dead(c));
  EXPECT_RC(greenlet_destroy(c, 0), 0);
  EXPECT_RC(greenlet_destroy(p, 0), 0);
}

/* An error passes over (and kills) an unstarted parent. */
Test(core, error_kills_unstarted_parent) {
  greenlet_t *p, *c;
  void *v;
  run_calls = 0;
  EXPECT_RC(greenlet_create(&p, count_calls, NULL, NULL), 0);
  EXPECT_RC(greenlet_create(&c, ret_error, p, NULL), 0);
  EXPECT_RC(greenlet_switch(c, P(8), &v), GREENLET_ERROR);
  cr_assert_eq(I(v), 8);
  cr_assert_eq(run_calls, 0);
  cr_assert(greenlet_dead(p));
  EXPECT_RC(greenlet_destroy(p, 0), 0); /* c still holds p's record */
  EXPECT_RC(greenlet_destroy(p, 0), GREENLET_EINVAL);
  EXPECT_RC(greenlet_destroy(c, 0), 0);
}

/* ---- kill ---------------------------------------------------------------- */

static int unwound;
static int cleanup_on_exit(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  void *v;
  int rc = greenlet_switch(greenlet_parent(self), P(1), &v);
  if (rc == GREENLET_EXIT) {
    unwound = 1;
    *result = P(77);
    return GREENLET_EXIT;
  }
  *result = P(-1);
  return GREENLET_OK;
}

Test(core, kill_unwinds_suspended) {
  greenlet_t *g;
  void *v;
  unwound = 0;
  EXPECT_RC(greenlet_create(&g, cleanup_on_exit, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, NULL, &v), GREENLET_OK);
  EXPECT_RC(greenlet_kill(g, &v), GREENLET_OK);
  cr_assert_eq(unwound, 1);
  cr_assert_eq(I(v), 77);
  cr_assert(greenlet_dead(g));
  EXPECT_RC(greenlet_kill(g, &v), GREENLET_OK); /* dead: nothing to do */
  cr_assert_null(v);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

Test(core, kill_unstarted_never_runs) {
  greenlet_t *g;
  void *v = P(1);
  run_calls = 0;
  EXPECT_RC(greenlet_create(&g, count_calls, NULL, NULL), 0);
  EXPECT_RC(greenlet_kill(g, &v), GREENLET_OK);
  cr_assert_null(v);
  cr_assert(greenlet_dead(g));
  cr_assert_eq(run_calls, 0);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}

Test(core, kill_refusals) {
  EXPECT_RC(greenlet_kill(NULL, NULL), GREENLET_EINVAL);
  EXPECT_RC(greenlet_kill(greenlet_current(), NULL), GREENLET_EINVAL);
}

static int kill_self_attempt(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  *result = P(greenlet_kill(self, NULL));
  return GREENLET_OK;
}

Test(core, kill_current_refused_inside_greenlet) {
  cr_assert_eq(I(run_once(kill_self_attempt)), GREENLET_EINVAL);
}

/* The killed greenlet's result comes back to the killer even when its parent
 * is another greenlet; an error while unwinding is reported as an error. */
static int error_on_exit(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  void *v;
  int rc = greenlet_switch(greenlet_main(), NULL, &v);
  (void)self;
  *result = P(rc == GREENLET_EXIT ? 55 : -1);
  return GREENLET_ERROR;
}

static greenlet_t *victim;
static int killer(greenlet_t *self, void *arg, void **result) {
  (void)self;
  (void)arg;
  void *v;
  int rc = greenlet_kill(victim, &v);
  *result = P(rc * 1000 + I(v));
  return GREENLET_OK;
}

Test(core, kill_returns_to_killer_and_reports_error) {
  greenlet_t *other, *k;
  void *v;
  EXPECT_RC(greenlet_create(&other, echo_twice, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(other, P(1), &v), GREENLET_OK);
  EXPECT_RC(greenlet_create(&victim, error_on_exit, other, NULL), 0);
  EXPECT_RC(greenlet_switch(victim, NULL, &v), GREENLET_OK);
  EXPECT_RC(greenlet_create(&k, killer, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(k, NULL, &v), GREENLET_OK);
  cr_assert_eq(I(v), GREENLET_ERROR * 1000 + 55);
  cr_assert(greenlet_dead(victim));
  cr_assert_eq(greenlet_parent(victim), k);
  cr_assert(greenlet_active(other)); /* never resumed */
  EXPECT_RC(greenlet_kill(other, NULL), GREENLET_OK);
  EXPECT_RC(greenlet_destroy(victim, 0), 0);
  EXPECT_RC(greenlet_destroy(k, 0), 0);
  EXPECT_RC(greenlet_destroy(other, 0), 0);
}

/* Killing an ancestor of the current greenlet: no reparenting (it would be
 * a cycle); the ancestor's result goes to its own parent. */
static greenlet_t *outer;
static int inner_kills_outer(greenlet_t *self, void *arg, void **result) {
  (void)self;
  (void)arg;
  *result = P(greenlet_kill(outer, NULL));
  return GREENLET_OK;
}

static int outer_run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  greenlet_t *in;
  void *v;
  cr_assert_eq(greenlet_create(&in, inner_kills_outer, self, NULL), 0);
  greenlet_set_userdata(self, in);
  int rc = greenlet_switch(in, NULL, &v);
  *result = P(rc == GREENLET_EXIT ? 321 : -1);
  return GREENLET_OK;
}

Test(core, kill_ancestor_of_current) {
  void *v;
  EXPECT_RC(greenlet_create(&outer, outer_run, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(outer, NULL, &v), GREENLET_OK);
  cr_assert_eq(I(v), 321);
  cr_assert(greenlet_dead(outer));
  cr_assert_eq(greenlet_parent(outer), greenlet_main());
  greenlet_t *in = greenlet_userdata(outer);
  cr_assert(greenlet_active(in)); /* parked in its kill call */
  EXPECT_RC(greenlet_destroy(in, 0), GREENLET_EBUSY);
  EXPECT_RC(greenlet_destroy(in, GREENLET_DESTROY_DISCARD), 0);
  EXPECT_RC(greenlet_destroy(outer, 0), 0);
}

/* ---- destroy ---------------------------------------------------------- */

Test(core, destroy_suspended_must_be_explicit) {
  greenlet_t *g;
  void *v;
  EXPECT_RC(greenlet_create(&g, echo_twice, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, P(1), &v), GREENLET_OK);
  EXPECT_RC(greenlet_destroy(g, 0), GREENLET_EBUSY);
  EXPECT_RC(greenlet_destroy(g, 99), GREENLET_EINVAL);
  cr_assert(greenlet_active(g)); /* refused: nothing changed */
  EXPECT_RC(greenlet_switch(g, P(4), &v), GREENLET_OK);
  cr_assert_eq(I(v), 8);
  EXPECT_RC(greenlet_destroy(g, GREENLET_DESTROY_DISCARD), 0);
  EXPECT_RC(greenlet_destroy(NULL, 0), GREENLET_EINVAL);
}

static int destroy_self(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  *result = P(greenlet_destroy(self, GREENLET_DESTROY_DISCARD));
  return GREENLET_OK;
}

Test(core, destroy_current_refused) {
  cr_assert_eq(I(run_once(destroy_self)), GREENLET_EBUSY);
}

/* A parent record outlives its handle while a child names it. */
Test(core, parent_record_outlives_handle) {
  greenlet_t *p, *c;
  void *v;
  EXPECT_RC(greenlet_create(&p, ret_plus_one, NULL, NULL), 0);
  EXPECT_RC(greenlet_create(&c, child_times_ten, p, NULL), 0);
  EXPECT_RC(greenlet_destroy(p, 0), 0); /* unstarted: dies, record kept */
  cr_assert(greenlet_dead(p));
  cr_assert_eq(greenlet_parent(c), p);
  /* c's result skips dead p and reaches main. */
  EXPECT_RC(greenlet_switch(c, P(3), &v), GREENLET_OK);
  cr_assert_eq(I(v), 30);
  EXPECT_RC(greenlet_destroy(c, 0), 0);
}

/* A finished greenlet's stack is reused by the next one (the pool). */
Test(core, stacks_are_reused) {
  greenlet_t *g;
  void *v;
  EXPECT_RC(greenlet_create(&g, echo_twice, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, P(1), &v), GREENLET_OK);
  size_t in_use = greenlet_stack_in_use(g);
  cr_assert_gt(in_use, 0);
  EXPECT_RC(greenlet_kill(g, NULL), GREENLET_OK);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
  int n = test_light() ? 2000 : 100000;
  for (int i = 0; i < n; i++) {
    EXPECT_RC(greenlet_create(&g, ret_plus_one, NULL, NULL), 0);
    EXPECT_RC(greenlet_switch(g, P(i), &v), GREENLET_OK);
    cr_assert_eq(I(v), i + 1);
    EXPECT_RC(greenlet_destroy(g, 0), 0);
  }
}

/* ---- misc ---------------------------------------------------------------- */

Test(core, strerror_names_every_code) {
  int codes[] = {GREENLET_OK,      GREENLET_ERROR,   GREENLET_EXIT,
                 GREENLET_EINVAL,  GREENLET_ENOMEM,  GREENLET_ETHREAD,
                 GREENLET_ECYCLE,  GREENLET_EBUSY,   GREENLET_EMAPLIMIT};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    cr_assert_str_neq(greenlet_strerror(codes[i]), "unknown code");
    for (size_t j = 0; j < i; j++)
      cr_assert_str_neq(greenlet_strerror(codes[i]),
                        greenlet_strerror(codes[j]));
  }
  cr_assert_str_eq(greenlet_strerror(12345), "unknown code");
}

Test(core, null_queries_are_safe) {
  cr_assert_null(greenlet_parent(NULL));
  cr_assert(!greenlet_started(NULL));
  cr_assert(!greenlet_active(NULL));
  cr_assert(!greenlet_dead(NULL));
  cr_assert(!greenlet_is_main(NULL));
  cr_assert_eq(greenlet_id(NULL), 0);
  cr_assert_str_empty(greenlet_name(NULL));
  cr_assert_null(greenlet_userdata(NULL));
  greenlet_set_userdata(NULL, P(1));
  cr_assert(!greenlet_owned_by_current_thread(NULL));
  cr_assert_eq(greenlet_stack_in_use(NULL), 0);
  cr_assert_eq(greenlet_stack_size(NULL), 0);
  const char *mode = greenlet_guard_mode();
  cr_assert(strcmp(mode, "madvise") == 0 || strcmp(mode, "mprotect") == 0);
}

/* The unwinder stops at the greenlet's entry: a backtrace taken inside a
 * greenlet is short and does not run off the stack. */
static int take_backtrace(greenlet_t *self, void *arg, void **result) {
  (void)self;
  (void)arg;
  void *frames[256];
  *result = P(backtrace(frames, 256));
  return GREENLET_OK;
}

Test(core, backtrace_stops_at_entry) {
  void *v = run_once(take_backtrace);
  cr_assert_gt(I(v), 1);
  cr_assert_lt(I(v), 10, "backtrace inside a greenlet has %d frames", (int)I(v));
}

#if !defined(GREENLET_NO_FPU_SAVE) &&                                         \
    (defined(__x86_64__) ||                                                    \
     (!defined(GREENLET_CONTEXT_UCONTEXT) && !defined(__aarch64__)))
/* Each greenlet keeps its own rounding mode (the ABIs make the FP control
 * word callee-saved, and a switch is a call; the AArch64 switch leaves FPCR
 * shared: docs/platforms.md). */
static int set_rounding(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  fesetround(FE_UPWARD);
  void *v;
  greenlet_switch(greenlet_parent(self), NULL, &v);
  *result = P(fegetround() == FE_UPWARD);
  return GREENLET_OK;
}

Test(core, rounding_mode_is_per_greenlet) {
  greenlet_t *g;
  void *v;
  cr_assert_eq(fegetround(), FE_TONEAREST);
  EXPECT_RC(greenlet_create(&g, set_rounding, NULL, NULL), 0);
  EXPECT_RC(greenlet_switch(g, NULL, &v), GREENLET_OK);
  cr_assert_eq(fegetround(), FE_TONEAREST);
  fesetround(FE_DOWNWARD);
  EXPECT_RC(greenlet_switch(g, NULL, &v), GREENLET_OK);
  cr_assert_eq(I(v), 1);
  cr_assert_eq(fegetround(), FE_DOWNWARD);
  fesetround(FE_TONEAREST);
  EXPECT_RC(greenlet_destroy(g, 0), 0);
}
#endif

/* A suspended main greenlet reports the bytes its thread's stack uses. */
static int main_stack_use(greenlet_t *self, void *arg, void **result) {
  (void)self;
  (void)arg;
  *result = P(greenlet_stack_in_use(greenlet_main()));
  return GREENLET_OK;
}

Test(core, suspended_main_reports_stack_in_use) {
  void *v = run_once(main_stack_use);
  cr_assert_gt(I(v), 0);
  cr_assert_lt(I(v), 8 << 20);
  cr_assert_eq(greenlet_stack_in_use(greenlet_main()), 0); /* running */
}

/* Regression (found by the fuzzer): a greenlet finishing right after
 * another one, with no library call in between, used to lose the first
 * one's stack (ts->dying was overwritten). */
static int returns_at_once(greenlet_t *self, void *arg, void **result) {
  (void)self;
  *result = arg;
  return GREENLET_OK;
}

Test(core, back_to_back_finishes_release_both_stacks) {
  for (int round = 0; round < 100; round++) {
    greenlet_t *parent, *child;
    void *v;
    EXPECT_RC(greenlet_create(&parent, returns_at_once, NULL, NULL), 0);
    EXPECT_RC(greenlet_create(&child, returns_at_once, parent, NULL), 0);
    /* child returns: its value starts parent, which returns at once. */
    EXPECT_RC(greenlet_switch(child, P(5), &v), GREENLET_OK);
    cr_assert_eq(I(v), 5);
    cr_assert(greenlet_dead(parent) && greenlet_dead(child));
    EXPECT_RC(greenlet_destroy(child, 0), 0);
    EXPECT_RC(greenlet_destroy(parent, 0), 0);
  }
  greenlet_stats_t s;
  EXPECT_RC(greenlet_thread_stats(&s), 0);
  cr_assert_eq(s.stacks, 0, "%llu stacks still held", (unsigned long long)s.stacks);
  cr_assert_eq(s.live, 1); /* main */
}
