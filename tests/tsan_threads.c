/*
 * tsan_threads.c - the thread scenarios as a plain program, for the
 * ThreadSanitizer build (Criterion's forking runner cannot start under
 * TSan).  Exits non-zero on the first failed check; TSan reports races.
 *
 *   1. 8 threads, each with its own main greenlet, ping-pong and nested
 *      greenlets, kills; each leaves some greenlets suspended and exits.
 *   2. While an owner thread is alive, other threads are refused (ETHREAD)
 *      and change nothing.
 *   3. After the owners exit, two threads destroy their leftover greenlets
 *      concurrently (records of one dead thread, freed under its lock).
 *
 * Odd-numbered threads make every greenlet with a shared stack (two per
 * thread), so their switches copy stacks in and out.
 */
#define _GNU_SOURCE
#include "cgreenlet.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

#define P(i) ((void *)(intptr_t)(i))
#define I(p) ((intptr_t)(p))

enum { THREADS = 8, LEFT = 16, ROUNDS = 2000 };

static greenlet_t *leftover[THREADS][LEFT];
static greenlet_t *shared_target; /* parked greenlet of thread 0 */
static pthread_barrier_t ready, probed;
static const greenlet_attr_t shared = {.flags = GREENLET_ATTR_SHARED_STACK};

static const greenlet_attr_t *attr_of(int id) {
  return id % 2 ? &shared : NULL;
}

static int echo(greenlet_t *self, void *arg, void **result) {
  void *v = arg;
  for (;;) {
    int rc = greenlet_switch(greenlet_parent(self), P(I(v) + 1), &v);
    if (rc != GREENLET_OK) {
      *result = v;
      return rc;
    }
  }
}

static int nested(greenlet_t *self, void *arg, void **result) {
  greenlet_t *inner;
  void *v;
  CHECK(greenlet_create(&inner, echo, NULL, greenlet_userdata(self)) == 0);
  CHECK(greenlet_switch(inner, arg, &v) == GREENLET_OK);
  CHECK(I(v) == I(arg) + 1);
  CHECK(greenlet_kill(inner, NULL) == GREENLET_OK);
  CHECK(greenlet_destroy(inner, 0) == 0);
  *result = P(I(v) * 2);
  return GREENLET_OK;
}

static void *worker(void *arg) {
  int id = (int)I(arg);
  greenlet_t *main_g = greenlet_current();
  CHECK(main_g && greenlet_is_main(main_g));
  greenlet_t *g;
  void *v;
  CHECK(greenlet_create(&g, echo, NULL, attr_of(id)) == 0);
  CHECK(greenlet_switch(g, P(0), &v) == GREENLET_OK && I(v) == 1);
  for (int i = 0; i < ROUNDS; i++) {
    CHECK(greenlet_switch(g, P(i), &v) == GREENLET_OK);
    CHECK(I(v) == i + 1);
  }
  CHECK(greenlet_kill(g, NULL) == GREENLET_OK && greenlet_dead(g));
  CHECK(greenlet_destroy(g, 0) == 0);
  for (int i = 0; i < 200; i++) {
    CHECK(greenlet_create(&g, nested, NULL, attr_of(id)) == 0);
    greenlet_set_userdata(g, (void *)attr_of(id));
    CHECK(greenlet_switch(g, P(i), &v) == GREENLET_OK && I(v) == 2 * (i + 1));
    CHECK(greenlet_destroy(g, 0) == 0);
  }
  /* Leave greenlets behind: half parked, half never started. */
  for (int i = 0; i < LEFT; i++) {
    CHECK(greenlet_create(&leftover[id][i], echo, NULL, attr_of(id)) == 0);
    if (i % 2 == 0)
      CHECK(greenlet_switch(leftover[id][i], P(i), &v) == GREENLET_OK);
  }
  if (id == 0) {
    shared_target = leftover[0][0];
    pthread_barrier_wait(&ready);   /* others probe while we are alive */
    pthread_barrier_wait(&probed);
    CHECK(greenlet_active(shared_target));
    CHECK(greenlet_parent(shared_target) == main_g);
  }
  return NULL;
}

static void *prober(void *arg) {
  (void)arg;
  pthread_barrier_wait(&ready);
  greenlet_t *mine;
  void *v = P(123);
  CHECK(greenlet_switch(shared_target, NULL, &v) == GREENLET_ETHREAD);
  CHECK(I(v) == 123);
  CHECK(greenlet_throw(shared_target, NULL, NULL) == GREENLET_ETHREAD);
  CHECK(greenlet_kill(shared_target, NULL) == GREENLET_ETHREAD);
  CHECK(greenlet_destroy(shared_target, 0) == GREENLET_ETHREAD);
  CHECK(greenlet_set_parent(shared_target, greenlet_current()) ==
        GREENLET_ETHREAD);
  CHECK(greenlet_create(&mine, echo, shared_target, NULL) == GREENLET_ETHREAD);
  CHECK(!greenlet_owned_by_current_thread(shared_target));
  pthread_barrier_wait(&probed);
  return NULL;
}

static void *destroyer(void *arg) {
  int half = (int)I(arg);
  for (int t = 0; t < THREADS; t++)
    for (int i = half; i < LEFT; i += 2) {
      greenlet_t *g = leftover[t][i];
      CHECK(greenlet_dead(g));
      CHECK(greenlet_stack_in_use(g) == 0);
      CHECK(greenlet_destroy(g, 0) == 0);
    }
  return NULL;
}

int main(void) {
  pthread_t th[THREADS], pr, d[2];
  CHECK(greenlet_set_shared_stacks(2) == 0);
  pthread_barrier_init(&ready, NULL, 2);
  pthread_barrier_init(&probed, NULL, 2);
  CHECK(pthread_create(&pr, NULL, prober, NULL) == 0);
  for (int i = 0; i < THREADS; i++)
    CHECK(pthread_create(&th[i], NULL, worker, P(i)) == 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  pthread_join(pr, NULL);
  for (int i = 0; i < 2; i++)
    CHECK(pthread_create(&d[i], NULL, destroyer, P(i)) == 0);
  for (int i = 0; i < 2; i++)
    pthread_join(d[i], NULL);
  printf("tsan_threads: %d threads, %d leftover greenlets each: ok\n", THREADS,
         LEFT);
  return 0;
}
