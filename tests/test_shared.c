/*
 * test_shared.c - shared stacks (GREENLET_ATTR_SHARED_STACK): greenlets that
 * take turns on a few stacks keep their frames intact across switches, get
 * values, errors and kills like any other, fail a switch cleanly when a
 * copy cannot be allocated, and tell the move hooks where their bytes went.
 */
#include "helpers.h"

#include <pthread.h>
#include <string.h>

#include "fault.h"

static greenlet_attr_t shared_attr(size_t reserve) {
  greenlet_attr_t a = GREENLET_ATTR_INIT;
  a.flags = GREENLET_ATTR_SHARED_STACK;
  a.reserve = reserve;
  return a;
}

/* Fills a frame of its own with a pattern that depends on the greenlet and
 * the depth, recurses `depth` times, and at the bottom yields to its parent
 * `rounds` times, checking every frame's pattern (and a pointer to a local,
 * which must still point into the same frame) after each resume.  Returns
 * the number of checks that failed. */
typedef struct walker {
  greenlet_t *self;
  int id, depth, rounds;
} walker;

static int walk(const walker *w, int level) {
  volatile char buf[256];
  volatile char *self_ptr = buf;
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (char)(w->id * 31 + level * 7 + (int)i);
  int bad = 0;
  if (level < w->depth) {
    bad += walk(w, level + 1);
  } else {
    for (int r = 0; r < w->rounds; r++) {
      void *v;
      int rc = greenlet_switch(greenlet_parent(w->self), P(w->id), &v);
      if (rc != GREENLET_OK || I(v) != w->id * 1000 + r)
        bad++;
    }
  }
  if (self_ptr != buf)
    bad++;
  for (size_t i = 0; i < sizeof buf; i++)
    if (buf[i] != (char)(w->id * 31 + level * 7 + (int)i))
      bad++;
  return bad;
}

static int walker_run(greenlet_t *self, void *arg, void **result) {
  walker *w = arg;
  w->self = self;
  *result = P(walk(w, 0));
  return GREENLET_OK;
}

/* n greenlets of varied depth on `slots` slots, resumed round-robin. */
static void round_robin(unsigned slots, int n, int rounds) {
  EXPECT_RC(greenlet_set_shared_stacks(slots), 0);
  greenlet_attr_t a = shared_attr(0);
  greenlet_t *g[64];
  walker w[64];
  cr_assert(n <= 64);
  for (int i = 0; i < n; i++) {
    w[i] = (walker){NULL, i + 1, (i * 5) % 23, rounds};
    EXPECT_RC(greenlet_create(&g[i], walker_run, NULL, &a), 0);
    void *v;
    EXPECT_RC(greenlet_switch(g[i], &w[i], &v), GREENLET_OK);
    cr_assert_eq(I(v), i + 1);
  }
  greenlet_stats_t st;
  EXPECT_RC(greenlet_thread_stats(&st), 0);
  cr_assert_leq(st.stacks, slots, "%llu stacks for %u slots",
                (unsigned long long)st.stacks, slots);
  for (int r = 0; r < rounds; r++)
    for (int i = 0; i < n; i++) {
      void *v;
      EXPECT_RC(greenlet_switch(g[i], P((i + 1) * 1000 + r), &v), GREENLET_OK);
      if (r + 1 < rounds)
        cr_assert_eq(I(v), i + 1, "greenlet %d round %d sent %ld", i, r,
                     (long)I(v));
      else
        cr_assert_eq(I(v), 0, "greenlet %d found %ld damaged frames", i,
                     (long)I(v));
    }
  for (int i = 0; i < n; i++) {
    cr_assert(greenlet_dead(g[i]));
    EXPECT_RC(greenlet_destroy(g[i], 0), 0);
  }
}

Test(shared, one_slot_keeps_every_frame) { round_robin(1, 20, 5); }
Test(shared, few_slots_keep_every_frame) { round_robin(3, 40, 4); }
Test(shared, a_slot_each_copies_nothing) { round_robin(64, 30, 3); }

/* A ring: each greenlet switches straight to the next one on the same slot
 * (the switching greenlet is the resident that must be copied out). */
static greenlet_t *ring[8];
static int ring_run(greenlet_t *self, void *arg, void **result) {
  (void)self;
  int me = (int)I(arg);
  volatile int mark = me * 11;
  void *v;
  int rc = greenlet_switch(greenlet_main(), P(1), &v); /* started: park */
  while (rc == GREENLET_OK) {
    if (mark != me * 11)
      return GREENLET_ERROR;
    greenlet_t *next = me == 7 ? greenlet_main() : ring[me + 1];
    rc = greenlet_switch(next, P(I(v) + 1), &v);
  }
  *result = v;
  return GREENLET_OK;
}

Test(shared, greenlets_of_one_slot_switch_to_each_other) {
  EXPECT_RC(greenlet_set_shared_stacks(1), 0);
  greenlet_attr_t a = shared_attr(0);
  for (int i = 0; i < 8; i++)
    EXPECT_RC(greenlet_create(&ring[i], ring_run, NULL, &a), 0);
  /* Start them in order; each parks back here... */
  void *v;
  for (int i = 0; i < 8; i++) {
    EXPECT_RC(greenlet_switch(ring[i], P(i), &v), GREENLET_OK);
    cr_assert_eq(I(v), 1, "greenlet %d sent %ld", i, (long)I(v));
  }
  /* ...then each lap passes a counter through all of them, ring[7] back to
   * main. */
  long total = 0;
  for (int lap = 0; lap < 9; lap++) {
    EXPECT_RC(greenlet_switch(ring[0], P(total), &v), GREENLET_OK);
    cr_assert_eq(I(v), total + 8);
    total = I(v);
  }
  for (int i = 0; i < 8; i++)
    EXPECT_RC(greenlet_destroy(ring[i], GREENLET_DESTROY_DISCARD), 0);
}

/* Errors and kills reach away greenlets; a greenlet finishing on a slot
 * hands its result to a parent that is away on the same slot. */
static int parent_of_child(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  greenlet_attr_t a = shared_attr(0);
  greenlet_t *child;
  if (greenlet_create(&child, walker_run, self, &a) != 0)
    return GREENLET_ERROR;
  static walker w = {NULL, 3, 4, 1}; /* not on this stack: it moves */
  void *v;
  int rc = greenlet_switch(child, &w, &v); /* child parks back here */
  if (rc != GREENLET_OK || I(v) != 3)
    return GREENLET_ERROR;
  rc = greenlet_switch(greenlet_main(), P(77), &v); /* park in main */
  if (rc != GREENLET_OK)
    return GREENLET_ERROR;
  /* Resume the child: it finishes and its result comes back here, while
   * this greenlet is away (copied out by the child's run). */
  rc = greenlet_switch(child, P(3000), &v);
  *result = P(rc == GREENLET_OK && greenlet_dead(child) ? I(v) + 500 : -1);
  greenlet_destroy(child, 0);
  return GREENLET_OK;
}

Test(shared, results_errors_and_kills_reach_away_greenlets) {
  EXPECT_RC(greenlet_set_shared_stacks(1), 0);
  greenlet_attr_t a = shared_attr(0);
  greenlet_t *p;
  void *v;
  EXPECT_RC(greenlet_create(&p, parent_of_child, NULL, &a), 0);
  EXPECT_RC(greenlet_switch(p, NULL, &v), GREENLET_OK);
  cr_assert_eq(I(v), 77);
  EXPECT_RC(greenlet_switch(p, NULL, &v), GREENLET_OK);
  cr_assert_eq(I(v), 500, "child's damaged frames + 500: %ld", (long)I(v));
  EXPECT_RC(greenlet_destroy(p, 0), 0);

  /* throw and kill into a greenlet that is away. */
  greenlet_t *x, *y;
  walker wx = {NULL, 5, 6, 2}, wy = {NULL, 6, 2, 1};
  EXPECT_RC(greenlet_create(&x, walker_run, NULL, &a), 0);
  EXPECT_RC(greenlet_create(&y, walker_run, NULL, &a), 0);
  EXPECT_RC(greenlet_switch(x, &wx, &v), GREENLET_OK);
  EXPECT_RC(greenlet_switch(y, &wy, &v), GREENLET_OK); /* x is away now */
  EXPECT_RC(greenlet_throw(x, P(9), &v), GREENLET_OK);  /* x counts a bad */
  cr_assert_eq(I(v), 5);
  EXPECT_RC(greenlet_kill(x, &v), GREENLET_OK);
  cr_assert(greenlet_dead(x));
  cr_assert_eq(I(v), 2, "x saw the throw and the kill as bad resumes");
  EXPECT_RC(greenlet_kill(y, &v), GREENLET_OK);
  cr_assert_eq(I(v), 1);
  EXPECT_RC(greenlet_destroy(x, 0), 0);
  EXPECT_RC(greenlet_destroy(y, 0), 0);
}

/* Two walkers on a single shared stack. */
static void one_slot_pair(greenlet_t **x, greenlet_t **y) {
  EXPECT_RC(greenlet_set_shared_stacks(1), 0);
  greenlet_attr_t a = shared_attr(0);
  EXPECT_RC(greenlet_create(x, walker_run, NULL, &a), 0);
  EXPECT_RC(greenlet_create(y, walker_run, NULL, &a), 0);
}

/* A switch to t with the n-th allocation from now failing: refused. */
static void switch_refused(long n, greenlet_t *t, void *value, void **v) {
  int fired = 0;
  greenlet__fault_arm(n);
  int rc = greenlet_switch(t, value, v);
  greenlet__fault_disarm(&fired);
  cr_assert(fired, "allocation %ld was not made", n);
  cr_assert_eq(rc, GREENLET_ENOMEM);
}

/* A copy that cannot be allocated refuses the switch and changes nothing. */
Test(shared, switch_without_memory_for_the_copy_is_refused) {
  greenlet_t *x, *y;
  walker wx = {NULL, 1, 3, 2}, wy = {NULL, 2, 8, 2};
  void *v;
  one_slot_pair(&x, &y);
  EXPECT_RC(greenlet_switch(x, &wx, &v), GREENLET_OK);
  cr_assert_eq(I(v), 1);
  EXPECT_RC(greenlet_switch(y, &wy, &v), GREENLET_OK); /* x copied out */
  cr_assert_eq(I(v), 2);
  for (int k = 0; k < 2; k++) {
    /* Into x, whose slot holds y: y's copy fails; then the reverse. */
    greenlet_t *t = k == 0 ? x : y;
    int id = k == 0 ? 1 : 2;
    v = P(-5);
    switch_refused(0, t, P(id * 1000), &v);
    cr_assert_eq(I(v), -5, "nothing delivered");
    EXPECT_RC(greenlet_switch(t, P(id * 1000), &v), GREENLET_OK);
    cr_assert_eq(I(v), id);
  }
  EXPECT_RC(greenlet_switch(x, P(1001), &v), GREENLET_OK);
  cr_assert(greenlet_dead(x));
  cr_assert_eq(I(v), 0, "x's frames: %ld damaged", (long)I(v));
  EXPECT_RC(greenlet_switch(y, P(2001), &v), GREENLET_OK);
  cr_assert(greenlet_dead(y));
  cr_assert_eq(I(v), 0, "y's frames: %ld damaged", (long)I(v));
  EXPECT_RC(greenlet_destroy(x, 0), 0);
  EXPECT_RC(greenlet_destroy(y, 0), 0);
}

/* A greenlet that could not be laid out stays unstarted. */
Test(shared, start_without_memory_leaves_it_unstarted) {
  greenlet_t *x, *y;
  walker wx = {NULL, 1, 3, 1}, wy = {NULL, 2, 3, 1};
  void *v;
  one_slot_pair(&x, &y);
  EXPECT_RC(greenlet_switch(x, &wx, &v), GREENLET_OK);
  /* y shares x's slot: the switcher's stack, then x's copy, fail. */
  for (long n = 0; n < 2; n++) {
    switch_refused(n, y, &wy, &v);
    cr_assert(!greenlet_started(y), "round %ld", n);
  }
  EXPECT_RC(greenlet_switch(y, &wy, &v), GREENLET_OK);
  cr_assert_eq(I(v), 2);
  EXPECT_RC(greenlet_kill(x, &v), GREENLET_OK);
  EXPECT_RC(greenlet_kill(y, &v), GREENLET_OK);
  EXPECT_RC(greenlet_destroy(x, 0), 0);
  EXPECT_RC(greenlet_destroy(y, 0), 0);
}

/* ---- the move hooks ------------------------------------------------------
 * Each greenlet keeps in its reserve a small record that points to itself
 * and to a local of its run function; the hooks report 64 bytes in use and
 * move the record's pointers, as an interpreter would move its frames. */
typedef struct rec {
  struct rec *self;
  volatile int *local;
  int id;
  char pad[64 - 2 * sizeof(void *) - sizeof(int)];
} rec;

static greenlet_t *hooked[4];
static rec *where[4]; /* each greenlet's record, wherever it is now */
static int moves;

static size_t reserve_in_use(greenlet_t *g) {
  (void)g;
  return sizeof(rec);
}

static void moved(greenlet_t *g, char *lo, char *hi, ptrdiff_t delta) {
  for (int i = 0; i < 4; i++) {
    if (hooked[i] != g)
      continue;
    rec *r = where[i];
    if ((char *)r < lo || (char *)r >= hi)
      return; /* not ours: a bug the test will see */
    rec *moved_r = (rec *)((char *)r + delta);
    /* The copy holds the old pointers: move those readers follow. */
    moved_r->self = moved_r;
    moved_r->local = (volatile int *)((char *)moved_r->local + delta);
    where[i] = moved_r;
    moves++;
  }
}

static int hooked_run(greenlet_t *self, void *arg, void **result) {
  int i = (int)I(arg);
  volatile int local = 100 + i;
  rec *r = greenlet_reserved(self);
  r->self = r;
  r->local = &local;
  r->id = i;
  where[i] = r;
  void *v;
  int bad = 0;
  for (int k = 0; k < 3; k++) {
    greenlet_switch(greenlet_main(), NULL, &v);
    r = greenlet_reserved(self);
    if (where[i] != r || r->self != r || r->local != &local ||
        *r->local != 100 + i || r->id != i)
      bad++;
  }
  *result = P(bad);
  return GREENLET_OK;
}

Test(shared, move_hooks_see_every_copy) {
  EXPECT_RC(greenlet_set_shared_stacks(1), 0);
  greenlet_move_hooks_t h = {reserve_in_use, moved};
  greenlet_set_move_hooks(&h);
  greenlet_attr_t a = shared_attr(sizeof(rec));
  void *v;
  for (int i = 0; i < 4; i++) {
    EXPECT_RC(greenlet_create(&hooked[i], hooked_run, NULL, &a), 0);
    EXPECT_RC(greenlet_switch(hooked[i], P(i), &v), GREENLET_OK);
  }
  /* While away, each record is in the heap copy and still consistent. */
  for (int i = 0; i < 3; i++) {
    cr_assert_null(greenlet_reserved(hooked[i]), "greenlet %d is away", i);
    cr_assert_eq(where[i]->self, where[i]);
    cr_assert_eq(*where[i]->local, 100 + i, "the local moved with the copy");
    cr_assert_eq(where[i]->id, i);
  }
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < 4; i++)
      EXPECT_RC(greenlet_switch(hooked[i], NULL, &v), GREENLET_OK);
  for (int i = 0; i < 4; i++) {
    cr_assert(greenlet_dead(hooked[i]));
    cr_assert_eq(I(v), 0);
    EXPECT_RC(greenlet_destroy(hooked[i], 0), 0);
  }
  cr_assert_geq(moves, 24, "moves: %d", moves); /* out and in, 3 rounds */
  greenlet_set_move_hooks(NULL);
}

/* ---- scale and teardown ------------------------------------------------- */

static int park_run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  volatile char buf[512];
  memset((char *)buf, 0x5a, sizeof buf);
  void *v;
  int rc = greenlet_switch(greenlet_parent(self), NULL, &v);
  *result = P(rc == GREENLET_EXIT && buf[0] == 0x5a && buf[511] == 0x5a);
  return GREENLET_OK;
}

/* 20,000 parked greenlets on 16 slots: 16 stacks, not 20,000; each kill
 * finds its frame intact. */
Test(shared, many_parked_greenlets_hold_only_their_slots) {
  EXPECT_RC(greenlet_set_shared_stacks(16), 0);
  enum { N = 20000 };
  static greenlet_t *g[N];
  greenlet_attr_t a = shared_attr(0);
  for (int i = 0; i < N; i++) {
    EXPECT_RC(greenlet_create(&g[i], park_run, NULL, &a), 0);
    EXPECT_RC(greenlet_switch(g[i], NULL, NULL), GREENLET_OK);
  }
  greenlet_stats_t st;
  EXPECT_RC(greenlet_thread_stats(&st), 0);
  cr_assert_eq(st.stacks, 16);
  cr_assert_gt(st.stack_in_use, (size_t)N * 512, "in use: %zu",
               st.stack_in_use);
  for (int i = 0; i < N; i++) {
    void *v;
    EXPECT_RC(greenlet_kill(g[i], &v), GREENLET_OK);
    cr_assert_eq(I(v), 1, "greenlet %d", i);
    EXPECT_RC(greenlet_destroy(g[i], 0), 0);
  }
  EXPECT_RC(greenlet_thread_stats(&st), 0);
  cr_assert_leq(st.stacks, 8, "free slots kept: %llu",
                (unsigned long long)st.stacks);
}

/* A thread exits with greenlets away and resident: their copies and slots
 * are freed (ASan and Valgrind stages check for leaks). */
static void *exit_with_parked(void *arg) {
  (void)arg;
  greenlet_set_shared_stacks(2);
  greenlet_attr_t a = shared_attr(0);
  for (int i = 0; i < 10; i++) {
    greenlet_t *g;
    if (greenlet_create(&g, park_run, NULL, &a) != 0 ||
        greenlet_switch(g, NULL, NULL) != GREENLET_OK)
      return P(1);
    if (i % 3 == 0 && greenlet_destroy(g, GREENLET_DESTROY_DISCARD) != 0)
      return P(2);
  }
  return NULL;
}

Test(shared, thread_exit_frees_copies_and_slots) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, exit_with_parked, NULL), 0);
  void *r;
  pthread_join(t, &r);
  cr_assert_null(r);
}

Test(shared, bad_settings_are_refused) {
  EXPECT_RC(greenlet_set_shared_stacks(0), GREENLET_EINVAL);
  EXPECT_RC(greenlet_set_shared_stacks(65537), GREENLET_EINVAL);
  greenlet_attr_t a = GREENLET_ATTR_INIT;
  a.flags = 2;
  greenlet_t *g;
  EXPECT_RC(greenlet_create(&g, park_run, NULL, &a), GREENLET_EINVAL);
}
