/*
 * gdb_greenlets_target.c - greenlets parked at known places in three
 * threads, for tests/gdb_greenlets.sh (gdb/cgreenlet-gdb.py).  At the
 * breakpoint on stop_here():
 *
 *   main thread   main (running, in stop_here)
 *                 "alpha"    suspended in alpha_leaf <- alpha_mid <- alpha_run
 *                 "beta"     suspended in beta_leaf <- beta_run, parent alpha
 *                 "later"    not started
 *                 "finished" dead, handle still held
 *   worker thread main (suspended in worker, waiting for "delta")
 *                 "gamma"    suspended in gamma_leaf <- gamma_mid <- gamma_run
 *                 "delta"    running, blocked in delta_block (a condition)
 *   exited thread "omega"    dead (its thread exited), handle held by main
 *
 * Built like the gdb-target rule: -O1 -g -fno-omit-frame-pointer.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cgreenlet.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x)                                                               \
  do {                                                                         \
    if ((x) != 0) {                                                            \
      fprintf(stderr, "gdb_greenlets_target: %s failed\n", #x);                \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

/* Keeps the nested frames real at -O1 (no inlining, no tail calls). */
#define KEEP() __asm__ volatile("" ::: "memory")

static volatile int sink;

/* The breakpoint; with an argument ("abort") the program dumps core here
 * instead, for the kernel-core half of the test. */
static int abort_at_stop;

__attribute__((noinline)) void stop_here(void) {
  KEEP();
  puts("all greenlets parked");
  fflush(stdout);
  if (abort_at_stop)
    abort();
}

/* ---- main thread's greenlets ------------------------------------------ */

__attribute__((noinline)) static int alpha_leaf(greenlet_t *self, int x) {
  int rc = greenlet_switch(greenlet_parent(self), NULL, NULL);
  KEEP();
  return rc + x;
}

__attribute__((noinline)) static int alpha_mid(greenlet_t *self, int x) {
  int r = alpha_leaf(self, x + 1);
  KEEP();
  return r + 1;
}

static int alpha_run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  sink = alpha_mid(self, 1);
  *result = NULL;
  return GREENLET_OK;
}

__attribute__((noinline)) static int beta_leaf(greenlet_t *self) {
  /* Back to main directly, not to alpha (the parent). */
  int rc = greenlet_switch(greenlet_main(), NULL, NULL);
  KEEP();
  (void)self;
  return rc;
}

static int beta_run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  sink = beta_leaf(self);
  *result = NULL;
  return GREENLET_OK;
}

static int finished_run(greenlet_t *self, void *arg, void **result) {
  (void)self;
  *result = arg;
  return GREENLET_OK;
}

/* ---- worker thread ---------------------------------------------------- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int worker_parked, release_worker;
static long worker_tid;

__attribute__((noinline)) static int gamma_leaf(greenlet_t *self, int x) {
  int rc = greenlet_switch(greenlet_parent(self), NULL, NULL);
  KEEP();
  return rc + x;
}

__attribute__((noinline)) static int gamma_mid(greenlet_t *self, int x) {
  int r = gamma_leaf(self, x * 2);
  KEEP();
  return r + 1;
}

static int gamma_run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  sink = gamma_mid(self, 3);
  *result = NULL;
  return GREENLET_OK;
}

__attribute__((noinline)) static void delta_block(void) {
  pthread_mutex_lock(&lock);
  worker_tid = syscall(SYS_gettid);
  worker_parked = 1;
  pthread_cond_broadcast(&cond);
  while (!release_worker)
    pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  KEEP();
}

static int delta_run(greenlet_t *self, void *arg, void **result) {
  (void)self;
  (void)arg;
  delta_block();
  *result = NULL;
  return GREENLET_OK;
}

__attribute__((noinline)) static void *worker(void *arg) {
  (void)arg;
  greenlet_attr_t ga = {.name = "gamma"}, da = {.name = "delta"};
  greenlet_t *gamma, *delta;
  CHECK(greenlet_create(&gamma, gamma_run, NULL, &ga));
  CHECK(greenlet_switch(gamma, NULL, NULL));
  CHECK(greenlet_create(&delta, delta_run, NULL, &da));
  CHECK(greenlet_switch(delta, NULL, NULL)); /* returns once released */
  KEEP();
  CHECK(greenlet_kill(gamma, NULL));
  CHECK(greenlet_destroy(gamma, 0));
  CHECK(greenlet_destroy(delta, 0));
  return NULL;
}

/* Waits (10 s at most) until the worker sleeps in pthread_cond_wait's
 * futex: until then it may be anywhere in libc's condition variable code,
 * which gdb cannot unwind through on every ISA (armhf's libc). */
static void wait_worker_asleep(void) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/self/task/%ld/stat", worker_tid);
  for (int i = 0; i < 2000; i++) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
      fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p || (p[1] == ' ' && p[2] == 'S'))
      return;
    nanosleep(&(struct timespec){0, 5000000}, NULL);
  }
}

/* ---- a thread that exits, leaving a record behind ------------------- */

static void *short_lived(void *arg) {
  greenlet_attr_t oa = {.name = "omega"};
  greenlet_t *omega;
  CHECK(greenlet_create(&omega, finished_run, NULL, &oa));
  CHECK(greenlet_switch(omega, NULL, NULL));
  *(greenlet_t **)arg = omega;
  return NULL;
}

int main(int argc, char **argv) {
  (void)argv;
  abort_at_stop = argc > 1;
  greenlet_attr_t aa = {.name = "alpha"}, ba = {.name = "beta"},
                  la = {.name = "later"}, fa = {.name = "finished"};
  greenlet_t *alpha, *beta, *later, *finished, *omega = NULL;
  CHECK(greenlet_create(&alpha, alpha_run, NULL, &aa));
  CHECK(greenlet_switch(alpha, NULL, NULL));
  CHECK(greenlet_create(&beta, beta_run, alpha, &ba));
  CHECK(greenlet_switch(beta, NULL, NULL));
  CHECK(greenlet_create(&later, finished_run, NULL, &la));
  CHECK(greenlet_create(&finished, finished_run, NULL, &fa));
  CHECK(greenlet_switch(finished, NULL, NULL));

  pthread_t t1, t2;
  CHECK(pthread_create(&t2, NULL, short_lived, &omega));
  CHECK(pthread_join(t2, NULL));
  CHECK(pthread_create(&t1, NULL, worker, NULL));
  pthread_mutex_lock(&lock);
  while (!worker_parked)
    pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  wait_worker_asleep();

  stop_here();

  pthread_mutex_lock(&lock);
  release_worker = 1;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
  CHECK(pthread_join(t1, NULL));
  CHECK(greenlet_kill(beta, NULL));
  CHECK(greenlet_kill(alpha, NULL));
  CHECK(greenlet_destroy(alpha, 0));
  CHECK(greenlet_destroy(beta, 0));
  CHECK(greenlet_destroy(later, 0));
  CHECK(greenlet_destroy(finished, 0));
  CHECK(greenlet_destroy(omega, 0));
  puts("done");
  return 0;
}
