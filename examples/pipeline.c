/*
 * pipeline.c - a pull pipeline of greenlets:
 *
 *     reader -> parse -> odd -> square -> main
 *
 * Each stage is a greenlet whose parent is the stage downstream of it.  A
 * stage pulls an item by switching to its upstream stage and hands an item on
 * by switching to its parent.  When a stage's run() returns, its result goes
 * to its parent automatically: a plain return means "end of stream", a
 * return of GREENLET_ERROR delivers an error object.
 *
 * Run 1 streams a whole input.  Run 2 feeds a bad number: "parse" fails by
 * returning GREENLET_ERROR, "odd" passes the error on by returning it too,
 * "square" passes it on with greenlet_throw() and stays parked, and main
 * handles it and then kills the parked stage.  Run 3 reads an endless input,
 * takes three results and kills the last stage; every stage stops its
 * upstream with greenlet_kill() before it returns, so the kill cascades up
 * the pipeline.
 *
 * Items are pointers into the sending stage's stack; the receiver copies the
 * item before it switches again.
 */
#include <cgreenlet.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *what, int rc) {
  fprintf(stderr, "pipeline: %s: %d (%s)\n", what, rc, greenlet_strerror(rc));
  exit(1);
}

struct stage {
  const char *name;
  int depth;              /* distance from main, for the trace indent */
  greenlet_t *g;
  struct stage *up;       /* upstream stage; NULL for the reader */
  const char *const *input; /* reader: NULL-terminated, or NULL = 1, 2, ... */
};

/* The error object a failing stage delivers (static: it must outlive the
 * stage that created it). */
struct failure {
  const char *stage;
  char what[64];
};
static struct failure parse_failure;

__attribute__((format(printf, 2, 3))) static void say(const struct stage *st,
                                                      const char *fmt, ...) {
  printf("%*s%s #%" PRIu64 ": ", 2 * st->depth, "", st->name,
         greenlet_id(st->g));
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
}

/*
 * Asks upstream for its next item.  GREENLET_OK with *item set, or with
 * *item NULL at the end of the stream (upstream returned normally);
 * GREENLET_ERROR with *item = the error object.
 */
static int pull(struct stage *st, void **item) {
  int rc = greenlet_switch(st->up->g, NULL, item);
  if (rc == GREENLET_OK && greenlet_dead(st->up->g))
    *item = NULL;
  return rc;
}

/* Hands an item downstream and waits to be asked for the next one.
 * GREENLET_OK: asked again; GREENLET_EXIT: killed. */
static int push(greenlet_t *self, void *item) {
  void *ignored;
  return greenlet_switch(greenlet_parent(self), item, &ignored);
}

/* Kills the upstream stage if it is still parked. */
static void stop_upstream(struct stage *st) {
  if (!st->up || !greenlet_active(st->up->g))
    return;
  say(st, "killing upstream %s", st->up->name);
  void *v;
  int rc = greenlet_kill(st->up->g, &v);
  if (rc != GREENLET_OK || !greenlet_dead(st->up->g))
    fail("greenlet_kill(upstream)", rc);
}

/* A stage was resumed with something other than "next, please". */
static int stopped(struct stage *st, int rc) {
  say(st, "%s; shutting down", greenlet_strerror(rc));
  stop_upstream(st);
  return GREENLET_OK;
}

static int reader_run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  (void)result;
  struct stage *st = greenlet_userdata(self);
  char buf[16];
  for (int i = 0;; i++) {
    const char *text;
    if (st->input) {
      text = st->input[i];
      if (!text)
        break;
    } else {
      snprintf(buf, sizeof buf, "%d", i + 1);
      text = buf;
    }
    say(st, "yields \"%s\"", text);
    int rc = push(self, &text);
    if (rc != GREENLET_OK)
      return stopped(st, rc);
  }
  say(st, "end of input");
  return GREENLET_OK; /* *result stays NULL: end of stream */
}

static int parse_run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  struct stage *st = greenlet_userdata(self);
  for (;;) {
    void *item;
    int rc = pull(st, &item);
    if (rc != GREENLET_OK)
      return stopped(st, rc); /* the reader never fails */
    if (!item) {
      say(st, "end of stream");
      return GREENLET_OK;
    }
    const char *text = *(const char **)item;
    char *end;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\0') {
      say(st, "cannot parse \"%s\": failing with GREENLET_ERROR", text);
      parse_failure.stage = st->name;
      snprintf(parse_failure.what, sizeof parse_failure.what,
               "bad number \"%s\"", text);
      stop_upstream(st);
      *result = &parse_failure;
      return GREENLET_ERROR; /* delivered to our parent as an error */
    }
    say(st, "\"%s\" -> %ld", text, value);
    rc = push(self, &value);
    if (rc != GREENLET_OK)
      return stopped(st, rc);
  }
}

static int odd_run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  struct stage *st = greenlet_userdata(self);
  for (;;) {
    void *item;
    int rc = pull(st, &item);
    if (rc == GREENLET_ERROR) {
      say(st, "upstream failed; returning its error");
      stop_upstream(st);
      *result = item;
      return GREENLET_ERROR;
    }
    if (rc != GREENLET_OK)
      return stopped(st, rc);
    if (!item) {
      say(st, "end of stream");
      return GREENLET_OK;
    }
    long value = *(long *)item;
    if (value % 2 == 0) {
      say(st, "drops %ld", value);
      continue;
    }
    say(st, "passes %ld", value);
    rc = push(self, &value);
    if (rc != GREENLET_OK)
      return stopped(st, rc);
  }
}

static int square_run(greenlet_t *self, void *arg, void **result) {
  (void)arg;
  (void)result;
  struct stage *st = greenlet_userdata(self);
  for (;;) {
    void *item;
    int rc = pull(st, &item);
    if (rc == GREENLET_ERROR) {
      /* Pass the error on but stay alive: main decides what happens next. */
      say(st, "upstream failed; throwing the error to main and parking");
      void *in;
      rc = greenlet_throw(greenlet_parent(self), item, &in);
      if (rc == GREENLET_OK)
        continue; /* asked again: upstream is dead, so that ends the stream */
      return stopped(st, rc);
    }
    if (rc != GREENLET_OK)
      return stopped(st, rc);
    if (!item) {
      say(st, "end of stream");
      return GREENLET_OK;
    }
    long value = *(long *)item;
    long squared = value * value;
    say(st, "%ld -> %ld", value, squared);
    rc = push(self, &squared);
    if (rc != GREENLET_OK)
      return stopped(st, rc);
  }
}

#define NSTAGES 4

/* Builds the pipeline downstream first, so each stage can name its parent. */
static void build(struct stage *s, const char *const *input) {
  static const char *const names[NSTAGES] = {"reader", "parse", "odd",
                                             "square"};
  static const greenlet_run_fn runs[NSTAGES] = {reader_run, parse_run, odd_run,
                                                square_run};
  greenlet_t *parent = NULL; /* main, for the last stage */
  for (int i = NSTAGES - 1; i >= 0; i--) {
    s[i] = (struct stage){names[i], NSTAGES - i, NULL, i ? &s[i - 1] : NULL,
                          i ? NULL : input};
    greenlet_attr_t attr = GREENLET_ATTR_INIT;
    attr.stack_size = 64 * 1024;
    attr.name = names[i];
    int rc = greenlet_create(&s[i].g, runs[i], parent, &attr);
    if (rc != 0)
      fail("greenlet_create", rc);
    greenlet_set_userdata(s[i].g, &s[i]);
    parent = s[i].g;
  }
}

static void teardown(struct stage *s) {
  for (int i = 0; i < NSTAGES; i++) {
    if (!greenlet_dead(s[i].g))
      fail("stage still alive at teardown", GREENLET_EBUSY);
    int rc = greenlet_destroy(s[i].g, 0);
    if (rc != 0)
      fail("greenlet_destroy", rc);
  }
}

/*
 * Main pulls from the last stage.  Takes at most max results (then kills
 * the pipeline), stores them in got[] and returns how many; *err receives the
 * error object if the pipeline failed.
 */
static int drain(struct stage *s, int max, long *got,
                 const struct failure **err) {
  struct stage *last = &s[NSTAGES - 1];
  *err = NULL;
  for (int n = 0;; n++) {
    void *item;
    int rc;
    if (n == max) {
      printf("main: have %d results, killing %s\n", n, last->name);
      rc = greenlet_kill(last->g, &item);
      printf("main: greenlet_kill(%s) returned %d (%s), dead=%d\n", last->name,
             rc, greenlet_strerror(rc), greenlet_dead(last->g));
      if (rc != GREENLET_OK || !greenlet_dead(last->g))
        fail("greenlet_kill", rc);
      return n;
    }
    rc = greenlet_switch(last->g, NULL, &item);
    if (rc == GREENLET_ERROR) {
      /* An error object, not a value: the return code says which. */
      *err = item;
      printf("main: GREENLET_ERROR from the pipeline: stage %s: %s\n",
             (*err)->stage, (*err)->what);
      if (greenlet_active(last->g)) {
        printf("main: %s is parked; killing it\n", last->name);
        rc = greenlet_kill(last->g, &item);
        if (rc != GREENLET_OK || !greenlet_dead(last->g))
          fail("greenlet_kill", rc);
      }
      return n;
    }
    if (rc != GREENLET_OK)
      fail("greenlet_switch", rc);
    if (greenlet_dead(last->g)) {
      printf("main: end of stream\n");
      return n;
    }
    got[n] = *(long *)item;
    printf("main: got %ld\n", got[n]);
  }
}

static void expect(const char *run, int n, const long *got, int want_n,
                   const long *want) {
  int ok = n == want_n;
  for (int i = 0; ok && i < n; i++)
    ok = got[i] == want[i];
  if (!ok)
    fail(run, GREENLET_EINVAL);
}

int main(void) {
  struct stage s[NSTAGES];
  long got[16];
  const struct failure *err;

  printf("== run 1: a whole stream ==\n");
  static const char *const input1[] = {"3", "8", "5", "12", "7", NULL};
  build(s, input1);
  int n = drain(s, 16, got, &err);
  static const long want1[] = {9, 25, 49};
  expect("run 1", n, got, 3, want1);
  if (err)
    fail("run 1 failed", GREENLET_ERROR);
  teardown(s);

  printf("== run 2: a stage fails ==\n");
  static const char *const input2[] = {"1", "4", "x9", "6", NULL};
  build(s, input2);
  n = drain(s, 16, got, &err);
  static const long want2[] = {1};
  expect("run 2", n, got, 1, want2);
  if (err != &parse_failure || strcmp(err->stage, "parse") != 0)
    fail("run 2 should fail in parse", GREENLET_EINVAL);
  teardown(s);

  printf("== run 3: endless input, killed after three results ==\n");
  build(s, NULL);
  n = drain(s, 3, got, &err);
  static const long want3[] = {1, 9, 25};
  expect("run 3", n, got, 3, want3);
  if (err)
    fail("run 3 failed", GREENLET_ERROR);
  teardown(s);

  printf("ok\n");
  return 0;
}
