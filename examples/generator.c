/*
 * generator.c - generators built from greenlet_switch().
 *
 * Part 1: a Fibonacci generator.  The consumer (the main greenlet) switches
 * into the generator, which switches back to its parent with each number.
 * When run() returns, the generator is dead and its return value arrives at
 * the consumer like any other value; greenlet_dead() tells the two apart.
 *
 * Part 2: in-order walks of binary trees.  The walk is an ordinary recursive
 * function that yields from deep inside its recursion -- possible because
 * each greenlet has a stack of its own.  Two walks run in lockstep compare
 * the leaf sequence ("fringe") of two differently shaped trees.  When the
 * sequences differ the consumer stops early and kills both walks: the
 * pending yield returns GREENLET_EXIT and the recursion unwinds normally.
 *
 * Values are passed as pointers into the sender's stack frame.  Such a
 * pointer stays valid until the sender runs again, so the receiver copies
 * what it needs before it switches back.
 */
#include <cgreenlet.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static void fail(const char *what, int rc) {
  fprintf(stderr, "generator: %s: %d (%s)\n", what, rc, greenlet_strerror(rc));
  exit(1);
}

static uint64_t id(const greenlet_t *g) { return greenlet_id(g); }

/* ---- part 1: Fibonacci ------------------------------------------------ */

struct fib_job {
  int count;              /* how many numbers to generate */
  unsigned long long sum; /* filled in by the generator */
};

/* Yields the first job->count Fibonacci numbers, then returns the job (with
 * its sum) as the generator's result. */
static int fib_run(greenlet_t *self, void *arg, void **result) {
  struct fib_job *job = arg;
  unsigned long long a = 0, b = 1;
  printf("  [%s #%" PRIu64 "] started, will yield %d numbers\n",
         greenlet_name(self), id(self), job->count);
  for (int i = 0; i < job->count; i++) {
    unsigned long long value = a; /* lives on this greenlet's stack */
    job->sum += value;
    void *ignored;
    int rc = greenlet_switch(greenlet_parent(self), &value, &ignored);
    if (rc != GREENLET_OK) {
      printf("  [%s #%" PRIu64 "] stopped: %s\n", greenlet_name(self),
             id(self), greenlet_strerror(rc));
      return rc == GREENLET_ERROR ? GREENLET_ERROR : GREENLET_OK;
    }
    unsigned long long next = a + b;
    a = b;
    b = next;
  }
  printf("  [%s #%" PRIu64 "] exhausted, returning\n", greenlet_name(self),
         id(self));
  *result = job;
  return GREENLET_OK;
}

static void fibonacci_demo(void) {
  printf("== Fibonacci generator ==\n");
  greenlet_t *self = greenlet_current();
  if (!self)
    fail("greenlet_current", GREENLET_ENOMEM);
  greenlet_attr_t attr = GREENLET_ATTR_INIT;
  attr.stack_size = 32 * 1024;
  attr.name = "fib";
  greenlet_t *gen;
  int rc = greenlet_create(&gen, fib_run, NULL, &attr);
  if (rc != 0)
    fail("greenlet_create", rc);

  struct fib_job job = {12, 0};
  void *send = &job; /* the first switch's value becomes run()'s argument */
  unsigned long long expect_a = 0, expect_b = 1, got = 0;
  int n = 0;
  for (;;) {
    void *v;
    rc = greenlet_switch(gen, send, &v);
    send = NULL;
    if (rc != GREENLET_OK)
      fail("greenlet_switch(fib)", rc);
    if (greenlet_dead(gen)) {
      /* Not a yielded number: the value run() returned. */
      struct fib_job *done = v;
      printf("[main #%" PRIu64 "] fib is dead; it returned its job: sum=%llu\n",
             id(self), done->sum);
      if (done != &job || done->sum != got)
        fail("fib result", GREENLET_EINVAL);
      break;
    }
    unsigned long long value = *(unsigned long long *)v; /* copy it now */
    printf("[main #%" PRIu64 "] <- %s #%" PRIu64 ": %llu\n", id(self),
           greenlet_name(gen), id(gen), value);
    if (value != expect_a)
      fail("fib value", GREENLET_EINVAL);
    unsigned long long next = expect_a + expect_b;
    expect_a = expect_b;
    expect_b = next;
    got += value;
    n++;
  }
  if (n != job.count)
    fail("fib count", GREENLET_EINVAL);

  /* Switching to a dead greenlet resumes its first live ancestor -- here
   * that is us, so the call returns at once with the value we sent. */
  int probe = 42;
  void *back;
  rc = greenlet_switch(gen, &probe, &back);
  printf("[main #%" PRIu64 "] switch to dead fib returned at once: rc=%d "
         "value=%d\n",
         id(self), rc, *(int *)back);
  if (rc != GREENLET_OK || back != &probe)
    fail("switch to dead greenlet", rc);

  rc = greenlet_destroy(gen, 0);
  if (rc != 0)
    fail("greenlet_destroy(fib)", rc);
}

/* ---- part 2: tree walks ----------------------------------------------- */

struct node {
  int key;
  const struct node *left, *right;
};

/* What a walk yields: the node's key and how deep the recursion was. */
struct item {
  int key;
  int depth;
};

/*
 * In-order walk.  Yields from any depth of the recursion.  Returns
 * GREENLET_OK once the subtree is walked, or the outcome that stopped the
 * walk (GREENLET_EXIT after a kill), which every level passes up.
 */
static int walk(greenlet_t *self, const struct node *n, int depth) {
  if (!n)
    return GREENLET_OK;
  int rc = walk(self, n->left, depth + 1);
  if (rc == GREENLET_OK) {
    struct item it = {n->key, depth};
    void *ignored;
    rc = greenlet_switch(greenlet_parent(self), &it, &ignored);
    if (rc == GREENLET_OK)
      rc = walk(self, n->right, depth + 1);
  }
  if (rc != GREENLET_OK)
    printf("    [%s #%" PRIu64 "] unwinding frame key=%d depth=%d\n",
           greenlet_name(self), id(self), n->key, depth);
  return rc;
}

static int walk_run(greenlet_t *self, void *arg, void **result) {
  int rc = walk(self, arg, 0);
  printf("    [%s #%" PRIu64 "] walk %s\n", greenlet_name(self), id(self),
         rc == GREENLET_OK ? "complete" : "cancelled");
  (void)result; /* NULL: "no more items" */
  return rc == GREENLET_ERROR ? GREENLET_ERROR : GREENLET_OK;
}

static greenlet_t *start_walk(const char *name) {
  greenlet_attr_t attr = GREENLET_ATTR_INIT;
  attr.name = name;
  greenlet_t *g;
  int rc = greenlet_create(&g, walk_run, NULL, &attr);
  if (rc != 0)
    fail("greenlet_create(walk)", rc);
  return g;
}

/* Next item of a walk, or NULL once the walk has finished. */
static const struct item *next_item(greenlet_t *g, const struct node *root) {
  void *v;
  /* The first switch starts the walk with the root as run()'s argument. */
  int rc = greenlet_switch(g, greenlet_started(g) ? NULL : (void *)root, &v);
  if (rc != GREENLET_OK)
    fail("greenlet_switch(walk)", rc);
  return greenlet_dead(g) ? NULL : v;
}

static void stop_walk(greenlet_t *g) {
  if (greenlet_active(g)) {
    void *v;
    int rc = greenlet_kill(g, &v);
    printf("[main] greenlet_kill(%s #%" PRIu64 ") returned %d (%s); dead=%d\n",
           greenlet_name(g), id(g), rc, greenlet_strerror(rc), greenlet_dead(g));
    if (rc != GREENLET_OK || !greenlet_dead(g))
      fail("greenlet_kill(walk)", rc);
  }
  int rc = greenlet_destroy(g, 0);
  if (rc != 0)
    fail("greenlet_destroy(walk)", rc);
}

/* Compares the in-order key sequences of two trees. */
static int same_fringe(const char *name_a, const struct node *a,
                       const char *name_b, const struct node *b) {
  printf("== same fringe: %s vs %s ==\n", name_a, name_b);
  greenlet_t *ga = start_walk(name_a), *gb = start_walk(name_b);
  size_t in_use_shallow = 0, in_use_deep = 0;
  int shallow = 1000, deep = -1;
  int same = 1;
  for (;;) {
    const struct item *ia = next_item(ga, a);
    struct item xa = ia ? *ia : (struct item){0, -1}; /* copy before ... */
    const struct item *ib = next_item(gb, b); /* ... switching again */
    struct item xb = ib ? *ib : (struct item){0, -1};
    if (!ia && !ib)
      break;
    /* Stack bytes the suspended walk uses grow with its recursion depth. */
    size_t in_use = greenlet_stack_in_use(gb);
    if (ib && xb.depth < shallow) {
      shallow = xb.depth;
      in_use_shallow = in_use;
    }
    if (ib && xb.depth > deep) {
      deep = xb.depth;
      in_use_deep = in_use;
    }
    printf("[main] %s: key %d (depth %d)   %s: key %d (depth %d)\n", name_a,
           xa.key, xa.depth, name_b, xb.key, xb.depth);
    if (!ia || !ib || xa.key != xb.key) {
      printf("[main] fringes differ; killing both walks\n");
      same = 0;
      break;
    }
  }
  if (deep > shallow)
    printf("[main] %s suspended at depth %d uses more stack than at depth "
           "%d: %s\n",
           name_b, deep, shallow, in_use_deep > in_use_shallow ? "yes" : "NO");
  if (deep > shallow && in_use_deep <= in_use_shallow)
    fail("stack_in_use", GREENLET_EINVAL);
  stop_walk(ga);
  stop_walk(gb);
  printf("[main] %s and %s: %s\n", name_a, name_b,
         same ? "same fringe" : "different fringe");
  return same;
}

/*
 * balanced:      4          chain: 1          other:     4
 *              /   \                 \                 /   \
 *             2     6                 2               2     6
 *            / \   / \                 \             / \   / \
 *           1   3 5   7                 ...  7      1   3 5   8
 */
#define N(k, l, r) {k, l, r}
static const struct node b1 = N(1, NULL, NULL), b3 = N(3, NULL, NULL),
                         b5 = N(5, NULL, NULL), b7 = N(7, NULL, NULL),
                         b2 = N(2, &b1, &b3), b6 = N(6, &b5, &b7),
                         balanced = N(4, &b2, &b6);
static const struct node c7 = N(7, NULL, NULL), c6 = N(6, NULL, &c7),
                         c5 = N(5, NULL, &c6), c4 = N(4, NULL, &c5),
                         c3 = N(3, NULL, &c4), c2 = N(2, NULL, &c3),
                         chain = N(1, NULL, &c2);
static const struct node o8 = N(8, NULL, NULL), o6 = N(6, &b5, &o8),
                         other = N(4, &b2, &o6);

int main(void) {
  fibonacci_demo();
  if (!same_fringe("balanced", &balanced, "chain", &chain))
    fail("balanced vs chain should match", GREENLET_EINVAL);
  if (same_fringe("chain", &chain, "other", &other))
    fail("chain vs other should differ", GREENLET_EINVAL);
  printf("ok\n");
  return 0;
}
