/*
 * scheduler.c - a tiny cooperative round-robin scheduler.
 *
 * The scheduler is itself a greenlet; every task is a greenlet whose parent
 * is the scheduler.  A task yields by switching to the scheduler with its
 * step number, and the scheduler resumes it with the current tick.  A task
 * that finishes, or fails by returning GREENLET_ERROR, delivers its result
 * to its parent -- the scheduler -- which tells the cases apart from the
 * return code of greenlet_switch() and greenlet_dead().  A watchdog kills
 * any task that has used its budget of slices; the killed task sees
 * GREENLET_EXIT from its pending switch, cleans up and returns.
 *
 * Tasks: alpha (3 steps), beta (5 steps), faulty (fails in its 2nd step),
 * spinner (never finishes; killed by the watchdog).
 */
#include <cgreenlet.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUDGET 5 /* slices a task may use */
#define NTASKS 4

static void fail(const char *what, int rc) {
  fprintf(stderr, "scheduler: %s: %d (%s)\n", what, rc, greenlet_strerror(rc));
  exit(1);
}

struct task {
  const char *name;
  int steps;       /* steps a counting task does; 0 = forever */
  greenlet_t *g;
  int slices;      /* slices run so far */
  char result[48]; /* run()'s result value points here */
};

struct summary {
  int ticks, finished, failed, killed;
};

static char faulty_error[] = "checksum mismatch";

static uint64_t id(const greenlet_t *g) { return greenlet_id(g); }

/*
 * Gives control back to the scheduler (our parent) with the step just done.
 * Returns the outcome; on GREENLET_OK *tick is the tick we were resumed at.
 */
static int yield(greenlet_t *self, int step, int *tick) {
  void *in;
  int rc = greenlet_switch(greenlet_parent(self), &step, &in);
  if (rc == GREENLET_OK)
    *tick = *(int *)in;
  return rc;
}

/* alpha, beta: count to t->steps, then return the sum of the ticks. */
static int counter_run(greenlet_t *self, void *arg, void **result) {
  struct task *t = greenlet_userdata(self);
  int tick = *(int *)arg; /* the first switch's value */
  int sum = 0;
  for (int step = 1;; step++) {
    printf("            %s #%" PRIu64 ": step %d of %d (tick %d)\n", t->name,
           id(self), step, t->steps, tick);
    sum += tick;
    if (step == t->steps)
      break;
    int rc = yield(self, step, &tick);
    if (rc != GREENLET_OK) {
      printf("            %s #%" PRIu64 ": %s\n", t->name, id(self),
             greenlet_strerror(rc));
      return rc == GREENLET_ERROR ? GREENLET_ERROR : GREENLET_OK;
    }
  }
  snprintf(t->result, sizeof t->result, "sum of ticks %d", sum);
  *result = t->result;
  return GREENLET_OK;
}

/* faulty: fails in its second step. */
static int faulty_run(greenlet_t *self, void *arg, void **result) {
  struct task *t = greenlet_userdata(self);
  int tick = *(int *)arg;
  printf("            %s #%" PRIu64 ": step 1 (tick %d)\n", t->name, id(self),
         tick);
  int rc = yield(self, 1, &tick);
  if (rc != GREENLET_OK)
    return GREENLET_OK;
  printf("            %s #%" PRIu64 ": step 2 (tick %d): failing\n", t->name,
         id(self), tick);
  *result = faulty_error;
  return GREENLET_ERROR; /* the scheduler receives GREENLET_ERROR */
}

/* spinner: holds a buffer and spins until it is told to exit. */
static int spinner_run(greenlet_t *self, void *arg, void **result) {
  struct task *t = greenlet_userdata(self);
  int tick = *(int *)arg;
  char *buffer = malloc(4096);
  if (!buffer)
    return GREENLET_ERROR;
  int spins = 0;
  for (;;) {
    spins++;
    printf("            %s #%" PRIu64 ": spin %d (tick %d)\n", t->name,
           id(self), spins, tick);
    int rc = yield(self, spins, &tick);
    if (rc == GREENLET_EXIT) {
      printf("            %s #%" PRIu64 ": GREENLET_EXIT after %d spins; "
             "freeing its buffer\n",
             t->name, id(self), spins);
      free(buffer);
      snprintf(t->result, sizeof t->result, "stopped after %d spins", spins);
      *result = t->result;
      return GREENLET_OK;
    }
    if (rc != GREENLET_OK) {
      free(buffer);
      return GREENLET_ERROR;
    }
  }
}

/* ---- the scheduler ---------------------------------------------------- */

struct queue {
  struct task *items[NTASKS];
  int head, count;
};

static void push(struct queue *q, struct task *t) {
  q->items[(q->head + q->count++) % NTASKS] = t;
}

static struct task *pop(struct queue *q) {
  struct task *t = q->items[q->head];
  q->head = (q->head + 1) % NTASKS;
  q->count--;
  return t;
}

static int scheduler_run(greenlet_t *self, void *arg, void **result) {
  struct task *tasks = arg;
  static struct summary sum;
  struct queue q = {{NULL}, 0, 0};
  for (int i = 0; i < NTASKS; i++)
    push(&q, &tasks[i]);
  printf("[scheduler #%" PRIu64 "] %d tasks ready\n", id(self), q.count);

  int tick = 0;
  while (q.count > 0) {
    struct task *t = pop(&q);
    tick++;
    void *v;
    int rc;
    if (t->slices == BUDGET) {
      printf("[tick %2d] watchdog: %s #%" PRIu64 " used %d slices; killing "
             "it\n",
             tick, t->name, id(t->g), t->slices);
      rc = greenlet_kill(t->g, &v);
      if (rc != GREENLET_OK || !greenlet_dead(t->g))
        fail("greenlet_kill", rc);
      printf("[tick %2d] %s #%" PRIu64 " is dead; it returned \"%s\"\n", tick,
             t->name, id(t->g), (const char *)v);
      sum.killed++;
      continue;
    }
    printf("[tick %2d] scheduler -> %s #%" PRIu64 "\n", tick, t->name,
           id(t->g));
    rc = greenlet_switch(t->g, &tick, &v); /* first time: run()'s arg */
    t->slices++;
    if (rc < 0)
      fail("greenlet_switch", rc);
    if (greenlet_dead(t->g)) {
      if (rc == GREENLET_ERROR) {
        printf("[tick %2d] %s #%" PRIu64 " failed: \"%s\"; dropped\n", tick,
               t->name, id(t->g), (const char *)v);
        sum.failed++;
      } else {
        printf("[tick %2d] %s #%" PRIu64 " finished: \"%s\"\n", tick, t->name,
               id(t->g), (const char *)v);
        sum.finished++;
      }
      continue;
    }
    if (rc != GREENLET_OK)
      fail("unexpected outcome", rc);
    printf("[tick %2d] scheduler <- %s #%" PRIu64 " yielded %d\n", tick,
           t->name, id(t->g), *(int *)v);
    push(&q, t);
  }
  sum.ticks = tick;
  printf("[scheduler #%" PRIu64 "] no tasks left\n", id(self));
  *result = &sum;
  return GREENLET_OK;
}

int main(void) {
  greenlet_t *self = greenlet_current();
  if (!self)
    fail("greenlet_current", GREENLET_ENOMEM);
  greenlet_t *sched;
  greenlet_attr_t attr = GREENLET_ATTR_INIT;
  attr.name = "scheduler";
  int rc = greenlet_create(&sched, scheduler_run, NULL, &attr);
  if (rc != 0)
    fail("greenlet_create(scheduler)", rc);

  struct task tasks[NTASKS] = {
      {"alpha", 3, NULL, 0, ""},
      {"beta", 5, NULL, 0, ""},
      {"faulty", 0, NULL, 0, ""},
      {"spinner", 0, NULL, 0, ""},
  };
  static const greenlet_run_fn runs[NTASKS] = {counter_run, counter_run,
                                               faulty_run, spinner_run};
  for (int i = 0; i < NTASKS; i++) {
    attr.name = tasks[i].name;
    attr.stack_size = 32 * 1024;
    rc = greenlet_create(&tasks[i].g, runs[i], sched, &attr);
    if (rc != 0)
      fail("greenlet_create(task)", rc);
    greenlet_set_userdata(tasks[i].g, &tasks[i]);
  }

  printf("[main #%" PRIu64 "] starting the scheduler #%" PRIu64 "\n", id(self),
         id(sched));
  void *v;
  rc = greenlet_switch(sched, tasks, &v);
  if (rc != GREENLET_OK || !greenlet_dead(sched))
    fail("greenlet_switch(scheduler)", rc);
  const struct summary *s = v;
  printf("[main #%" PRIu64 "] scheduler returned: %d ticks, %d finished, "
         "%d failed, %d killed\n",
         id(self), s->ticks, s->finished, s->failed, s->killed);
  if (s->ticks != 16 || s->finished != 2 || s->failed != 1 || s->killed != 1)
    fail("unexpected summary", GREENLET_EINVAL);
  if (strcmp(tasks[0].result, "sum of ticks 15") != 0 ||
      strcmp(tasks[3].result, "stopped after 5 spins") != 0)
    fail("unexpected task results", GREENLET_EINVAL);

  for (int i = 0; i < NTASKS; i++) {
    rc = greenlet_destroy(tasks[i].g, 0);
    if (rc != 0)
      fail("greenlet_destroy(task)", rc);
  }
  rc = greenlet_destroy(sched, 0);
  if (rc != 0)
    fail("greenlet_destroy(scheduler)", rc);
  printf("ok\n");
  return 0;
}
