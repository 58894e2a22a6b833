/*
 * fuzz_core.c - libFuzzer harness for the C core (libcgreenlet).
 *
 * Built and run by scripts/fuzz.sh (clang, -fsanitize=fuzzer,address,
 * undefined, the library compiled from src/ with the same flags):
 *
 *   scripts/fuzz.sh --bounded        the corpus, then a fixed-seed run
 *   scripts/fuzz.sh --soak SECONDS   open-ended; new inputs go to the corpus
 *   build/fuzz/fuzz_core FILE        replay one input (FUZZ_CORE_TRACE=1
 *                                    prints every operation)
 *
 * tests/fuzz/corpus/ is the corpus (seed-*: hand-written, one per feature;
 * the rest kept by scripts/fuzz.sh --merge); tests/fuzz/repro/ holds the
 * reproducers of what the fuzzer found.
 *
 * The input is a program.  It runs in the thread's main greenlet over a
 * table of 16 greenlet slots, and every greenlet the program creates runs
 * the same interpreter (run_fn): its run function goes on reading the same
 * byte stream, so a switch really moves control to another stack, which
 * then executes the next operations.  A simple model of the greenlet
 * semantics (states, parents, the current greenlet, who receives a switch,
 * throw, kill or result, and with what) is kept next to the real thing, and
 * every return code and query is compared with it.  A mismatch prints what
 * and where and calls abort(), which libFuzzer reports as a crash.
 *
 * ---- Byte encoding -------------------------------------------------------
 *
 * Each operation is one opcode byte B, then its argument bytes.  A missing
 * byte (end of input) reads as 0.  OP = OPTAB[B & 31] (the table below, so
 * common operations have several codes), V = B >> 5 (0..7) is the variant.
 *
 * A reference R (one byte, r = R & 31) names a greenlet argument:
 *   0..15  slot r          16, 17  the main greenlet     18, 19  current
 *   20     NULL            21, 22  greenlet_parent(current) (NULL for main)
 *   23     greenlet_parent(slot S & 15), S the next byte
 *   24, 25 foreign greenlet 0, 1 (made by OP_FOREIGN in another thread)
 *   26     the foreign thread's main greenlet
 *   27..31 the slot of the last successful create
 * A reference to an empty slot (or to a foreign record not there) makes the
 * operation a no-op.  A slot stays usable after greenlet_destroy() while a
 * child still names it as parent (the record is alive, dead): switching to
 * it, throwing into it, killing it, naming it as parent are allowed; a
 * second destroy must say GREENLET_EINVAL.
 *
 *   CREATE S R A M  create into the first free slot from S & 15 (none: no-op)
 *                   with parent R (NULL: current).  A: bits 0-3 stack size
 *                   (SIZES[], 4 of 16 invalid), bits 4-6 reserve
 *                   (RESERVES[], some invalid for some sizes), bit 7 attr
 *                   NULL.  V & 3: name (NULL, "", short, 40 chars: cut to
 *                   31).  V == 7: misuse, M & 1 ? out NULL : run NULL.
 *   SWITCH R        greenlet_switch(R, value, &out).  V bit 0: out NULL,
 *                   bit 1: value NULL (else a fresh token).
 *   THROW R         greenlet_throw(R, error, &out), V as for SWITCH.
 *   KILL R          greenlet_kill(R, &out).  V bit 0: out NULL.
 *   TO_PARENT       switch (V bit 1: throw) to greenlet_parent(current);
 *                   V bit 0: out NULL, bit 2: value NULL.
 *   RET             in a greenlet: return from run.  V & 3: the return code
 *                   (GREENLET_OK, GREENLET_ERROR, GREENLET_EXIT, 7), bit 2:
 *                   *result NULL (else a token).  In main: no-op.
 *   SET_PARENT R R  greenlet_set_parent(g, parent).  g may not be a slot
 *                   whose handle was destroyed (no-op then).
 *   DESTROY R       greenlet_destroy(R, flags): V 0-3: 0, 4-6: DISCARD,
 *                   7: 2 (an invalid flag).
 *   QUERY R         every query function on R, checked against the model.
 *   USERDATA R      set_userdata(R, V & 1 ? NULL : token), read it back.
 *   FOREIGN M       (once per input; later ones are no-ops) a second
 *                   thread makes greenlets (M bit 0: an unstarted one, bit
 *                   1: a started, suspended one, bit 2: and kills it), and
 *                   tries every call on this thread's greenlets (ETHREAD;
 *                   with M bit 3 also before it has used the library at
 *                   all).  It waits while this thread tries every call on
 *                   its greenlets (ETHREAD, queries consistent), then exits;
 *                   if M >= 0xf0 it first runs a BULK of 70 16 KiB
 *                   greenlets (V = M >> 3), so that the purger holds its
 *                   stacks when it exits.  Its greenlets stay in foreign
 *                   slots 0, 1 (earlier ones are destroyed first): dead,
 *                   ETHREAD for switch/throw/kill/set_parent/create,
 *                   destroyable from here (EINVAL for its main greenlet).
 *   FENV            fesetround(MODES[V & 3]) in the current greenlet.
 *   STRERROR C      greenlet_strerror((int8_t)C).
 *   BULK N Z        (twice per input at most) (N & 7) + 1 greenlets, or
 *                   for N >= 0xfc 65 + (N & 3) * 8 (more than the pool's 64),
 *                   of stack size BULK_SIZES[Z & 7], children of the current
 *                   one, all started (suspended at once), then ended: V & 3
 *                   0 resumed (they return), 1 killed, 2 discarded, 3 each
 *                   in turn; V & 4 in reverse order.  Over 64 stacks come
 *                   back at once: the pool overflows (spill list, purger
 *                   thread) and later starts take from the purger.
 *   NOP             nothing (the invariants are checked after every op).
 *
 * At the end of the input each greenlet ends up returning from run: a
 * greenlet that reads past the end returns GREENLET_OK.  Back in main, every
 * suspended greenlet is killed (it returns), every handle is destroyed, and
 * the model must then have no record left; foreign handles are destroyed.
 * Nothing outlives the input (LeakSanitizer is on).
 *
 * ---- Invariants (each failure aborts) -------------------------------------
 *
 *  - every return code is the one the model predicts (docs/api.md: refusals
 *    in their documented order, outcomes GREENLET_OK/ERROR/EXIT), and a
 *    refused call leaves *out as it was;
 *  - a switch/throw/kill/return resumes exactly the greenlet the model says
 *    (dead targets pass to the first live ancestor, unstarted ones start on
 *    a value and die on an error, kill reparents to the killer unless that
 *    makes a cycle), and the resumed call returns the status and the value
 *    that were sent (a starting greenlet gets it as run's argument);
 *  - greenlet_current()/greenlet_main() are the model's;
 *  - for every live record: started/active/dead/is_main, parent, id (set at
 *    creation, increasing), name (truncated to 31 bytes), userdata,
 *    stack_size (rounded up to pages), owned_by_current_thread,
 *    stack_in_use (0 unless suspended; then 0 < n <= size - reserve),
 *    reserved (NULL unless started and not dead with a reserve; 16-byte
 *    aligned, above the C stack);
 *  - dead greenlets stay dead; a refused call changes no state;
 *  - the reserve keeps what its greenlet wrote in it while others run;
 *  - each greenlet keeps its own rounding mode (MXCSR / x87 CW) across
 *    switches, and a new one starts with the mode of the greenlet that
 *    started it;
 *  - record lifetimes: a record lives while its handle is held or a child
 *    names it (the model's `present`).  The harness touches no record the
 *    model has dropped; LeakSanitizer catches one never freed, ASan one
 *    freed (past the record cache) and used; greenlet_foreach() (if the
 *    library has it) visits main, then exactly the records the model has,
 *    in creation order, and stops at a nonzero return;
 *  - greenlet_stack_high_water() (if there) is 0 without a stack, at least
 *    stack_in_use and at most the C stack's size;
 *  - at the end of each input, greenlet_thread_stats() (if there) counts
 *    main as the only live greenlet and no stack held: every stack went
 *    back to the pool (or the purger), none was lost;
 *  - greenlet_strerror names every code and says "unknown code" otherwise;
 *  - other-thread rules: ETHREAD both ways while the owner lives, and after
 *    it exited, destroy from here works (EINVAL for its main greenlet).
 */
#define _GNU_SOURCE
#include "cgreenlet.h"

#include <fenv.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Introspection, when this tree has it: declared weak, so that a library
 * without them leaves them NULL and those checks are skipped. */
extern int greenlet_foreach(int (*fn)(greenlet_t *, void *), void *arg)
    __attribute__((weak));
extern size_t greenlet_stack_high_water(const greenlet_t *g)
    __attribute__((weak));

/* greenlet_thread_stats(), through a name of our own (the header's type
 * may change while that API is young).  The fields read mirror the head of
 * greenlet_stats_t; `created` must agree with our own count, else the
 * layout changed and the check is skipped (with a warning). */
typedef struct stats_head {
  uint64_t threads, created, switches, live, stacks;
  uint64_t rest[32]; /* room for whatever follows */
} stats_head;
extern int fuzz_thread_stats(void *out) __asm__("greenlet_thread_stats")
    __attribute__((weak));

#define NSLOTS 16
#define MAINN NSLOTS /* node index of the main greenlet */
#define NNODES (NSLOTS + 1)

enum { ST_U = 0, ST_A = 1, ST_D = 2 };

enum {
  OP_NOP,
  OP_CREATE,
  OP_SWITCH,
  OP_THROW,
  OP_KILL,
  OP_TO_PARENT,
  OP_RET,
  OP_SET_PARENT,
  OP_DESTROY,
  OP_QUERY,
  OP_USERDATA,
  OP_FOREIGN,
  OP_FENV,
  OP_STRERROR,
  OP_BULK,
};

/* clang-format off */
static const unsigned char OPTAB[32] = {
    OP_CREATE,     OP_CREATE,    OP_CREATE,    OP_CREATE,     /* 0-3 */
    OP_SWITCH,     OP_SWITCH,    OP_SWITCH,    OP_SWITCH,     /* 4-7 */
    OP_SWITCH,     OP_SWITCH,    OP_THROW,     OP_THROW,      /* 8-11 */
    OP_KILL,       OP_KILL,      OP_TO_PARENT, OP_TO_PARENT,  /* 12-15 */
    OP_RET,        OP_RET,       OP_RET,       OP_SET_PARENT, /* 16-19 */
    OP_SET_PARENT, OP_DESTROY,   OP_DESTROY,   OP_DESTROY,    /* 20-23 */
    OP_QUERY,      OP_USERDATA,  OP_FOREIGN,   OP_FENV,       /* 24-27 */
    OP_STRERROR,   OP_TO_PARENT, OP_BULK,      OP_NOP,        /* 28-31 */
};
/* clang-format on */

static const char *const OPNAME[] = {
    "nop",       "create",  "switch",     "throw",    "kill",
    "to_parent", "ret",     "set_parent", "destroy",  "query",
    "userdata",  "foreign", "fenv",       "strerror", "bulk",
};

#define KIB ((size_t)1024)
static const size_t SIZES[16] = {
    0,            /* default, 256 KiB */
    16 * KIB,     /* the minimum */
    16 * KIB + 1, /* rounds up a page */
    64 * KIB,
    0,
    16 * KIB,
    100000,
    1024 * KIB,
    64 * KIB,
    16 * KIB,
    0,
    20 * KIB,
    16 * KIB - 1,                /* invalid: below the minimum */
    GREENLET_MAX_STACK_SIZE + 1, /* invalid: above the maximum */
    (size_t)-1,                  /* invalid */
    1,                           /* invalid */
};
static const size_t RESERVES[8] = {
    0,
    0,
    1 /* 16 */,
    100 /* 112 */,
    4000,
    48 * KIB /* fits 64 KiB and up */,
    240 * KIB + 1 /* too big for the default size */,
    (size_t)-1 /* invalid */,
};
static const char LONGNAME[] = "a-name-longer-than-thirty-one-bytes-0123";
static const int MODES[4] = {FE_TONEAREST, FE_DOWNWARD, FE_UPWARD,
                             FE_TOWARDZERO};

#define SENTINEL ((void *)(uintptr_t)0x5e5e5e5e5e5e50)
#define FILL_MAX 4096 /* reserve bytes filled at each end */

typedef struct node {
  greenlet_t *g;
  int present;  /* the record exists (handle held, or a child names it) */
  int released; /* greenlet_destroy() was called on the handle */
  int state;
  int parent; /* node index, -1 for main */
  size_t stack_size, reserve;
  char name[32];
  void *userdata;
  uint64_t id;
  int round;   /* rounding mode it runs with */
  int exp_set; /* someone resumed it with: */
  int exp_status;
  void *exp_value;
  unsigned char *resv;   /* its reserve, once started */
  unsigned char pattern; /* what it wrote there */
} node;

/* The foreign thread's records: 0, 1 greenlets, 2 its main greenlet. */
typedef struct fnode {
  greenlet_t *g;
  int present;
  size_t stack_size;
} fnode;

static node N[NNODES];
static fnode F[3];
static int cur;       /* the model's current greenlet (node index) */
static int last_slot; /* slot of the last successful create, or -1 */
static const uint8_t *in;
static size_t in_len, in_pos;
static uintptr_t tok_seq;
static uint64_t last_id; /* greenlet ids increase within a thread */
static long page_size;
static int trace;
static unsigned long op_count;
static uint64_t created;      /* greenlet_create() successes on this thread */
static uint64_t created_base; /* stats' `created` before the first input */
static int stats_ok;          /* fuzz_thread_stats() is there and agrees */
static int foreign_done;      /* OP_FOREIGN ran in this input */
static int bulk_done;         /* OP_BULK runs in this input */
static unsigned char fillbuf[FILL_MAX];

/* ---- failure reporting --------------------------------------------------- */

static __attribute__((noreturn, format(printf, 2, 3))) void
fail(int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr,
          "fuzz_core: invariant failed at fuzz_core.c:%d (op #%lu, "
          "input byte %zu of %zu, in %s greenlet %d): ",
          line, op_count, in_pos, in_len, cur == MAINN ? "main" : "slot", cur);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  abort();
}

#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c))                                                                  \
      fail(__LINE__, "%s", #c);                                                \
  } while (0)
#define CHECK_RC(got, want)                                                    \
  do {                                                                         \
    int got_ = (got), want_ = (want);                                          \
    if (got_ != want_)                                                         \
      fail(__LINE__, "%s returned %d (%s), model expects %d (%s)", #got, got_, \
           greenlet_strerror(got_), want_, greenlet_strerror(want_));          \
  } while (0)

static void tracef(const char *fmt, ...) {
  if (!trace)
    return;
  va_list ap;
  fprintf(stderr, "[%lu @%zu g%d] ", op_count, in_pos, cur);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* ---- input --------------------------------------------------------------- */

static int at_end(void) { return in_pos >= in_len; }
static unsigned get(void) { return in_pos < in_len ? in[in_pos++] : 0; }
static void *token(void) {
  return (void *)(uintptr_t)(0x10000 + ++tok_seq * 16);
}

/* ---- model helpers ------------------------------------------------------- */

static greenlet_t *gp(int n) { return n < 0 ? NULL : N[n].g; }

/* Is a an ancestor of b, or b itself? */
static int is_ancestor(int a, int b) {
  for (; b >= 0; b = N[b].parent)
    if (a == b)
      return 1;
  return 0;
}

/* A record lives while its handle is held or a live child names it. */
static void recompute_presence(void) {
  int keep[NNODES] = {0};
  keep[MAINN] = 1;
  for (int i = 0; i < NSLOTS; i++)
    if (N[i].present && !N[i].released)
      for (int j = i; j >= 0 && !keep[j]; j = N[j].parent)
        keep[j] = 1;
  for (int i = 0; i < NSLOTS; i++)
    if (N[i].present && !keep[i]) {
      CHECK(N[i].released && N[i].state == ST_D);
      memset(&N[i], 0, sizeof N[i]);
      N[i].parent = -1;
      if (last_slot == i)
        last_slot = -1;
    }
  if (!F[0].present && !F[1].present)
    F[2].present = 0;
}

/* ---- references ---------------------------------------------------------- */

enum { R_SKIP, R_NULL, R_NODE, R_FOREIGN };
typedef struct ref {
  int kind;
  int n; /* node, or foreign index */
  greenlet_t *p;
} ref;

static ref node_ref(int n) {
  ref r = {R_SKIP, -1, NULL};
  if (n < 0) {
    r.kind = R_NULL;
  } else if (N[n].present) {
    r.kind = R_NODE;
    r.n = n;
    r.p = N[n].g;
  }
  return r;
}

static ref parent_ref(int n) {
  greenlet_t *p = greenlet_parent(N[n].g);
  CHECK(p == gp(N[n].parent));
  return node_ref(N[n].parent);
}

static ref get_ref(void) {
  unsigned r = get() & 31;
  ref out = {R_SKIP, -1, NULL};
  if (r < 16)
    return node_ref((int)r);
  if (r < 18)
    return node_ref(MAINN);
  if (r < 20)
    return node_ref(cur);
  if (r == 20) {
    out.kind = R_NULL;
    return out;
  }
  if (r < 23)
    return parent_ref(cur);
  if (r == 23) {
    unsigned s = get() & 15;
    return N[s].present ? parent_ref((int)s) : out;
  }
  if (r < 27) {
    if (F[r - 24].present) {
      out.kind = R_FOREIGN;
      out.n = (int)(r - 24);
      out.p = F[r - 24].g;
    }
    return out;
  }
  return last_slot >= 0 ? node_ref(last_slot) : out;
}

static const char *ref_str(ref r, char *buf, size_t n) {
  switch (r.kind) {
  case R_NULL:
    return "NULL";
  case R_FOREIGN:
    snprintf(buf, n, "foreign%d", r.n);
    return buf;
  case R_NODE:
    if (r.n == MAINN)
      return "main";
    snprintf(buf, n, "slot%d", r.n);
    return buf;
  default:
    return "skip";
  }
}

/* ---- the reserve --------------------------------------------------------- */

static void reserve_fill(int n) {
  node *x = &N[n];
  size_t len = x->reserve;
  if (len <= 2 * FILL_MAX) {
    memset(x->resv, x->pattern, len);
  } else {
    memset(x->resv, x->pattern, FILL_MAX);
    memset(x->resv + len - FILL_MAX, x->pattern, FILL_MAX);
  }
}

/* Checks `edge` bytes at each end of n's reserve (all of what was filled
 * when edge is FILL_MAX). */
static void reserve_check(int n, size_t edge) {
  node *x = &N[n];
  size_t len = x->reserve;
  if (!x->resv || !len)
    return;
  memset(fillbuf, x->pattern, sizeof fillbuf);
  if (edge > len)
    edge = len;
  if (edge > FILL_MAX)
    edge = FILL_MAX;
  if (memcmp(x->resv, fillbuf, edge) != 0 ||
      memcmp(x->resv + len - edge, fillbuf, edge) != 0)
    fail(__LINE__, "the reserve of greenlet %d was overwritten", n);
}

/* ---- invariants over the whole table ------------------------------------- */

static void check_node(int n) {
  node *x = &N[n];
  greenlet_t *g = x->g;
  CHECK(g != NULL);
  CHECK(greenlet_started(g) == (x->state != ST_U));
  CHECK(greenlet_active(g) == (x->state == ST_A));
  CHECK(greenlet_dead(g) == (x->state == ST_D));
  CHECK(greenlet_is_main(g) == (n == MAINN));
  CHECK(greenlet_parent(g) == gp(x->parent));
  CHECK(greenlet_id(g) == x->id);
  CHECK(strcmp(greenlet_name(g), x->name) == 0);
  CHECK(greenlet_userdata(g) == x->userdata);
  CHECK(greenlet_owned_by_current_thread(g) == 1);
  size_t in_use = greenlet_stack_in_use(g);
  if (n == MAINN) {
    CHECK(greenlet_stack_size(g) == 0);
    CHECK(greenlet_reserved(g) == NULL);
    if (greenlet_stack_high_water)
      CHECK(greenlet_stack_high_water(g) == 0);
    if (cur == MAINN)
      CHECK(in_use == 0);
    else
      CHECK(in_use > 0 && in_use < ((size_t)64 << 20));
    return;
  }
  CHECK(greenlet_stack_size(g) == x->stack_size);
  if (x->state == ST_A && n != cur) {
    if (in_use == 0 || in_use > x->stack_size - x->reserve)
      fail(__LINE__, "stack_in_use(slot %d) = %zu, stack %zu, reserve %zu", n,
           in_use, x->stack_size, x->reserve);
  } else {
    CHECK(in_use == 0);
  }
  if (greenlet_stack_high_water) {
    size_t hw = greenlet_stack_high_water(g);
    if (x->state != ST_A)
      CHECK(hw == 0);
    else if (hw < in_use || hw > x->stack_size - x->reserve ||
             (n == cur && hw == 0))
      fail(__LINE__,
           "stack_high_water(slot %d) = %zu, in use %zu, stack "
           "%zu, reserve %zu",
           n, hw, in_use, x->stack_size, x->reserve);
  }
  void *r = greenlet_reserved(g);
  if (x->state == ST_A && x->reserve) {
    CHECK(r != NULL && r == x->resv);
    reserve_check(n, 32);
  } else {
    CHECK(r == NULL);
  }
}

/* greenlet_foreach(): the thread's records not yet freed, main first,
 * then in creation order, so the model's present ones by id. */
typedef struct visit {
  greenlet_t *seen[NNODES];
  int n, stop_at;
} visit;

static int visit_fn(greenlet_t *g, void *arg) {
  visit *v = arg;
  if (v->n < NNODES)
    v->seen[v->n] = g;
  v->n++;
  return v->n == v->stop_at ? 42 : 0;
}

static void check_foreach(void) {
  if (!greenlet_foreach)
    return;
  int order[NNODES], k = 0;
  order[k++] = MAINN;
  for (int i = 0; i < NSLOTS; i++) {
    if (!N[i].present)
      continue;
    int j = k++;
    while (j > 1 && N[order[j - 1]].id > N[i].id) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = i;
  }
  visit v = {.n = 0, .stop_at = 0};
  CHECK_RC(greenlet_foreach(visit_fn, &v), 0);
  if (v.n != k)
    fail(__LINE__, "greenlet_foreach visited %d records, the model has %d", v.n,
         k);
  for (int i = 0; i < k; i++)
    if (v.seen[i] != N[order[i]].g)
      fail(__LINE__,
           "greenlet_foreach: record %d is %p, expected greenlet "
           "%d (%p)",
           i, (void *)v.seen[i], order[i], (void *)N[order[i]].g);
  if (k > 1) { /* a nonzero return stops the walk and is returned */
    visit w = {.n = 0, .stop_at = 2};
    CHECK_RC(greenlet_foreach(visit_fn, &w), 42);
    CHECK(w.n == 2);
  }
}

static void check_foreign(void) {
  for (int i = 0; i < 3; i++) {
    if (!F[i].present)
      continue;
    greenlet_t *g = F[i].g;
    CHECK(greenlet_started(g) == 1);
    CHECK(greenlet_active(g) == 0);
    CHECK(greenlet_dead(g) == 1);
    CHECK(greenlet_is_main(g) == (i == 2));
    CHECK(greenlet_owned_by_current_thread(g) == 0);
    CHECK(greenlet_stack_in_use(g) == 0);
    CHECK(greenlet_reserved(g) == NULL);
    CHECK(greenlet_stack_size(g) == F[i].stack_size);
    CHECK(greenlet_parent(g) == (i == 2 ? NULL : F[2].g));
  }
}

static void check_all(void) {
  CHECK(greenlet_current() == N[cur].g);
  CHECK(greenlet_main() == N[MAINN].g);
  CHECK(N[cur].state == ST_A);
  CHECK(N[MAINN].state == ST_A);
  for (int n = 0; n < NNODES; n++)
    if (N[n].present)
      check_node(n);
  check_foreign();
  check_foreach();
}

/* ---- control transfer ---------------------------------------------------- */

/*
 * The model's view of resume(target, status): dead greenlets pass it on to
 * their parent, unstarted ones die on an error.  Returns the receiver, which
 * is `cur` if the call returns at once.
 */
static int plan_resume(int t, int status) {
  for (;;) {
    if (N[t].state == ST_D) {
      t = N[t].parent;
    } else if (N[t].state == ST_U && status != GREENLET_OK) {
      N[t].state = ST_D;
      t = N[t].parent;
    } else {
      return t;
    }
  }
}

/* `from` hands control to r with (status, value): r starts if unstarted. */
static void plan_transfer(int from, int r, int status, void *value) {
  if (N[r].state == ST_U) {
    CHECK(status == GREENLET_OK);
    N[r].state = ST_A;
    N[r].round = N[from].round; /* its context is made on from's stack */
  }
  CHECK(!N[r].exp_set);
  N[r].exp_set = 1;
  N[r].exp_status = status;
  N[r].exp_value = value;
  cur = r;
}

/* The caller `me` has been resumed: by whom the model says, with what was
 * sent. */
static void resumed(int me, int rc, void *out, int out_given) {
  if (cur != me)
    fail(__LINE__, "greenlet %d resumed, the model expects %d to run", me, cur);
  CHECK(greenlet_current() == N[me].g);
  CHECK(N[me].state == ST_A);
  CHECK(N[me].exp_set);
  if (rc != N[me].exp_status)
    fail(__LINE__, "greenlet %d resumed with status %d, expected %d", me, rc,
         N[me].exp_status);
  if (out_given && out != N[me].exp_value)
    fail(__LINE__, "greenlet %d resumed with value %p, expected %p", me, out,
         N[me].exp_value);
  N[me].exp_set = 0;
  if (fegetround() != N[me].round)
    fail(__LINE__, "greenlet %d resumed with rounding mode %d, it set %d", me,
         fegetround(), N[me].round);
  reserve_check(me, FILL_MAX);
}

enum { K_SWITCH, K_THROW, K_KILL };

/* switch/throw/kill to r, as the model and the library see it. */
static void do_resume(int kind, ref r, void *value, int out_null) {
  void *out = SENTINEL;
  void **outp = out_null ? NULL : &out;
  int me = cur, rc, want;
  if (r.kind == R_SKIP)
    return;
  if (r.kind == R_NULL || r.kind == R_FOREIGN) {
    want = r.kind == R_NULL ? GREENLET_EINVAL : GREENLET_ETHREAD;
    rc = kind == K_SWITCH  ? greenlet_switch(r.p, value, outp)
         : kind == K_THROW ? greenlet_throw(r.p, value, outp)
                           : greenlet_kill(r.p, outp);
    CHECK_RC(rc, want);
    CHECK(out == SENTINEL);
    return;
  }
  int t = r.n;
  int status = kind == K_SWITCH ? GREENLET_OK : GREENLET_ERROR;
  if (kind == K_KILL) {
    if (t == MAINN || t == cur) {
      CHECK_RC(greenlet_kill(r.p, outp), GREENLET_EINVAL);
      CHECK(out == SENTINEL);
      return;
    }
    if (N[t].state != ST_A) {
      N[t].state = ST_D; /* unstarted: dies without running */
      CHECK_RC(greenlet_kill(r.p, outp), GREENLET_OK);
      CHECK(out_null || out == NULL);
      return;
    }
    if (!is_ancestor(t, cur)) {
      N[t].parent = cur; /* the old parent may go */
      recompute_presence();
    }
    status = GREENLET_EXIT;
    value = NULL;
  }
  int recv = plan_resume(t, status);
  if (recv == cur) {
    rc = kind == K_SWITCH ? greenlet_switch(r.p, value, outp)
                          : greenlet_throw(r.p, value, outp);
    CHECK_RC(rc, status);
    CHECK(out_null || out == value);
    return;
  }
  plan_transfer(me, recv, status, value);
  tracef("  -> resumes %d (status %d, value %p)", recv, status, value);
  rc = kind == K_SWITCH  ? greenlet_switch(r.p, value, outp)
       : kind == K_THROW ? greenlet_throw(r.p, value, outp)
                         : greenlet_kill(r.p, outp);
  resumed(me, rc, out, !out_null);
}

/* ---- operations ---------------------------------------------------------- */

static int run_fn(greenlet_t *self, void *arg, void **result);

static int free_slot(unsigned s) {
  for (unsigned k = 0; k < NSLOTS; k++)
    if (!N[(s + k) % NSLOTS].present)
      return (int)((s + k) % NSLOTS);
  return -1;
}

static size_t round_page(size_t n) {
  return (n + (size_t)page_size - 1) & ~((size_t)page_size - 1);
}

static void op_create(unsigned v) {
  unsigned s = get();
  ref pr = get_ref();
  unsigned a = get();
  unsigned m = get();
  int slot = free_slot(s & 15);
  if (slot < 0 || pr.kind == R_SKIP)
    return;
  greenlet_attr_t attr = GREENLET_ATTR_INIT;
  const char *names[4] = {NULL, "", "g", LONGNAME};
  attr.stack_size = SIZES[a & 15];
  attr.reserve = RESERVES[(a >> 4) & 7];
  attr.name = names[v & 3];
  int attr_null = (a & 0x80) != 0;
  int misuse = v == 7;
  greenlet_t *g = SENTINEL;
  greenlet_t **outp = misuse && (m & 1) ? NULL : &g;
  greenlet_run_fn run = misuse && !(m & 1) ? NULL : run_fn;

  /* The documented order: out/run, sizes, then the parent's thread. */
  size_t size = attr_null || !attr.stack_size ? GREENLET_DEFAULT_STACK_SIZE
                                              : attr.stack_size;
  size_t reserve = attr_null ? 0 : attr.reserve;
  int want = 0;
  if (!outp || !run)
    want = GREENLET_EINVAL;
  else if (size < GREENLET_MIN_STACK_SIZE || size > GREENLET_MAX_STACK_SIZE)
    want = GREENLET_EINVAL;
  else if (reserve > GREENLET_MAX_STACK_SIZE ||
           ((reserve + 15) & ~(size_t)15) >
               round_page(size) - GREENLET_MIN_STACK_SIZE)
    want = GREENLET_EINVAL;
  else if (pr.kind == R_FOREIGN)
    want = GREENLET_ETHREAD;
  tracef("create slot %d parent %d size %zu reserve %zu%s%s -> %d", slot,
         pr.kind == R_NODE ? pr.n : -1, size, reserve,
         attr_null ? " attr NULL" : "", misuse ? " misuse" : "", want);
  int rc = greenlet_create(outp, run, pr.p, attr_null ? NULL : &attr);
  CHECK_RC(rc, want);
  if (rc != 0) {
    CHECK(g == SENTINEL);
    return;
  }
  created++;
  node *x = &N[slot];
  memset(x, 0, sizeof *x);
  x->g = g;
  x->present = 1;
  x->state = ST_U;
  x->parent = pr.kind == R_NODE ? pr.n : cur;
  x->stack_size = round_page(size);
  x->reserve = (reserve + 15) & ~(size_t)15;
  if (!attr_null && attr.name) {
    strncpy(x->name, attr.name, sizeof x->name - 1);
    x->name[sizeof x->name - 1] = '\0';
  }
  x->id = greenlet_id(g);
  if (x->id <= last_id)
    fail(__LINE__, "id %llu not above the last one, %llu",
         (unsigned long long)x->id, (unsigned long long)last_id);
  last_id = x->id;
  x->pattern = (unsigned char)(x->id * 37 + 11);
  last_slot = slot;
}

static void op_set_parent(void) {
  ref g = get_ref(), p = get_ref();
  if (g.kind == R_SKIP || p.kind == R_SKIP)
    return;
  if (g.kind == R_NODE && N[g.n].released)
    return; /* not a handle any more */
  int want = 0;
  if (g.kind == R_NULL || p.kind == R_NULL)
    want = GREENLET_EINVAL;
  else if (g.kind == R_FOREIGN || p.kind == R_FOREIGN)
    want = GREENLET_ETHREAD;
  else if (g.n == MAINN)
    want = GREENLET_EINVAL;
  else if (is_ancestor(g.n, p.n))
    want = GREENLET_ECYCLE;
  char b1[16], b2[16];
  tracef("set_parent %s %s -> %d", ref_str(g, b1, sizeof b1),
         ref_str(p, b2, sizeof b2), want);
  CHECK_RC(greenlet_set_parent(g.p, p.p), want);
  if (want == 0) {
    N[g.n].parent = p.n;
    recompute_presence();
  }
}

static void op_destroy(unsigned v) {
  ref r = get_ref();
  if (r.kind == R_SKIP)
    return;
  unsigned flags = v < 4 ? 0 : v < 7 ? GREENLET_DESTROY_DISCARD : 2u;
  int want;
  if (r.kind == R_NULL || (flags & ~GREENLET_DESTROY_DISCARD))
    want = GREENLET_EINVAL;
  else if (r.kind == R_FOREIGN)
    want = r.n == 2 ? GREENLET_EINVAL : 0; /* its thread has exited */
  else if (r.n == MAINN || N[r.n].released)
    want = GREENLET_EINVAL;
  else if (r.n == cur)
    want = GREENLET_EBUSY;
  else if (N[r.n].state == ST_A && !(flags & GREENLET_DESTROY_DISCARD))
    want = GREENLET_EBUSY;
  else
    want = 0;
  char b[16];
  tracef("destroy %s flags %u -> %d", ref_str(r, b, sizeof b), flags, want);
  CHECK_RC(greenlet_destroy(r.p, flags), want);
  if (want != 0)
    return;
  if (r.kind == R_FOREIGN) {
    F[r.n].present = 0;
    F[r.n].g = NULL;
    recompute_presence();
    return;
  }
  N[r.n].state = ST_D; /* unstarted: never runs; suspended: discarded */
  N[r.n].released = 1;
  N[r.n].exp_set = 0;
  N[r.n].resv = NULL;
  recompute_presence();
}

static void op_query(void) {
  ref r = get_ref();
  if (r.kind == R_SKIP)
    return;
  if (r.kind == R_NODE) {
    check_node(r.n);
    return;
  }
  if (r.kind == R_FOREIGN) {
    check_foreign();
    return;
  }
  CHECK(greenlet_parent(NULL) == NULL);
  CHECK(greenlet_started(NULL) == 0);
  CHECK(greenlet_active(NULL) == 0);
  CHECK(greenlet_dead(NULL) == 0);
  CHECK(greenlet_is_main(NULL) == 0);
  CHECK(greenlet_id(NULL) == 0);
  CHECK(strcmp(greenlet_name(NULL), "") == 0);
  CHECK(greenlet_owned_by_current_thread(NULL) == 0);
  CHECK(greenlet_stack_in_use(NULL) == 0);
  CHECK(greenlet_stack_size(NULL) == 0);
  CHECK(greenlet_reserved(NULL) == NULL);
  CHECK(greenlet_userdata(NULL) == NULL);
  greenlet_set_userdata(NULL, token());
  if (greenlet_foreach)
    CHECK_RC(greenlet_foreach(NULL, NULL), GREENLET_EINVAL);
  if (greenlet_stack_high_water)
    CHECK(greenlet_stack_high_water(NULL) == 0);
}

static void op_userdata(unsigned v) {
  ref r = get_ref();
  if (r.kind == R_SKIP || (r.kind == R_NODE && N[r.n].released))
    return;
  void *d = v & 1 ? NULL : token();
  greenlet_set_userdata(r.p, d);
  if (r.kind == R_NODE)
    N[r.n].userdata = d;
  CHECK(greenlet_userdata(r.p) == (r.kind == R_NULL ? NULL : d));
}

static void op_strerror(void) {
  int code = (int8_t)get();
  const char *s = greenlet_strerror(code);
  CHECK(s != NULL && *s);
  int known = code >= GREENLET_EMAPLIMIT && code <= GREENLET_EXIT;
  CHECK(known == (strcmp(s, "unknown code") != 0));
}

/* ---- many stacks at once ------------------------------------------------- */

/* Sends its argument back to its parent, then returns what it is resumed
 * with (a kill: returns 7 with NULL). */
static int bulk_run(greenlet_t *self, void *arg, void **result) {
  void *v = SENTINEL;
  int rc = greenlet_switch(greenlet_parent(self), arg, &v);
  if (rc == GREENLET_EXIT) {
    CHECK(v == NULL);
    return 7;
  }
  CHECK_RC(rc, GREENLET_OK);
  *result = v;
  return GREENLET_OK;
}

static const size_t BULK_SIZES[8] = {
    16 * KIB, 16 * KIB, 20 * KIB, 64 * KIB, 0, 100000, 16 * KIB, 1024 * KIB,
};

/*
 * n greenlets of one stack size, children of the current one, all started
 * and suspended at once, then ended (how & 3: each resumed and returning,
 * killed, discarded, or each in turn), in creation order or reversed
 * (how & 4), and destroyed.  More than the pool's 64 stacks come back at
 * once: the pool overflows (spill list, purger thread), and the next ones
 * take stacks from the purger.  Runs in the calling thread, checks its own.
 */
static void bulk(unsigned n, size_t size, unsigned how) {
  greenlet_t **gs = calloc(n, sizeof *gs);
  CHECK(gs != NULL);
  greenlet_attr_t attr = {.stack_size = size};
  greenlet_t *self = greenlet_current();
  for (unsigned i = 0; i < n; i++) {
    CHECK_RC(greenlet_create(&gs[i], bulk_run, NULL, &attr), 0);
    CHECK(greenlet_parent(gs[i]) == self);
    if (greenlet_owned_by_current_thread(N[MAINN].g))
      created++; /* this thread's, not a foreign one's */
  }
  for (unsigned i = 0; i < n; i++) {
    void *out = SENTINEL, *v = (void *)(uintptr_t)(0x100 + 16 * i);
    CHECK_RC(greenlet_switch(gs[i], v, &out), GREENLET_OK);
    CHECK(out == v && greenlet_active(gs[i]) && greenlet_current() == self);
    CHECK(greenlet_stack_in_use(gs[i]) > 0);
  }
  for (unsigned k = 0; k < n; k++) {
    unsigned i = how & 4 ? n - 1 - k : k;
    unsigned way = (how & 3) == 3 ? i % 3 : how & 3;
    void *out = SENTINEL, *v = (void *)(uintptr_t)(0x200 + 16 * i);
    if (way == 0) {
      CHECK_RC(greenlet_switch(gs[i], v, &out), GREENLET_OK);
      CHECK(out == v);
    } else if (way == 1) {
      CHECK_RC(greenlet_kill(gs[i], &out), GREENLET_OK);
      CHECK(out == NULL);
    } else {
      CHECK_RC(greenlet_destroy(gs[i], 0), GREENLET_EBUSY);
      CHECK_RC(greenlet_destroy(gs[i], GREENLET_DESTROY_DISCARD), 0);
      gs[i] = NULL;
      continue;
    }
    CHECK(greenlet_dead(gs[i]) && greenlet_current() == self);
  }
  for (unsigned i = 0; i < n; i++)
    if (gs[i])
      CHECK_RC(greenlet_destroy(gs[i], 0), 0);
  free(gs);
}

static void op_bulk(unsigned v) {
  unsigned b = get();
  /* More than the pool holds costs tens of milliseconds (fresh pages, the
   * purger's TLB shootdowns): only for N >= 0xfc. */
  unsigned n = b >= 0xfc ? 65 + (b & 3) * 8 : (b & 7) + 1;
  size_t size = BULK_SIZES[get() & 7];
  if (bulk_done >= 2)
    return;
  bulk_done++;
  tracef("bulk %u of %zu, how %u", n, size, v);
  bulk(n, size, v);
}

/* ---- the foreign thread -------------------------------------------------- */

typedef struct fctx {
  unsigned mode;
  greenlet_t *fu, *fa, *fmain;     /* made by the thread */
  greenlet_t *lmain, *lcur, *lany; /* this thread's, for the thread to try */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int phase; /* 1: the thread waits; 2: it may exit */
} fctx;

static int foreign_run(greenlet_t *self, void *arg, void **result) {
  void *v = NULL;
  int rc = greenlet_switch(greenlet_parent(self), arg, &v);
  if (rc != GREENLET_EXIT)
    fail(__LINE__, "foreign greenlet resumed with %d", rc);
  *result = v;
  return GREENLET_OK;
}

/* This thread's calls on the other thread's greenlets (it waits): refused,
 * also from a thread that has not used the library yet (fresh: nothing
 * here may set it up). */
static void try_local(fctx *fc, int fresh) {
  void *out = SENTINEL;
  CHECK_RC(greenlet_switch(fc->lcur, NULL, &out), GREENLET_ETHREAD);
  CHECK_RC(greenlet_throw(fc->lmain, NULL, &out), GREENLET_ETHREAD);
  CHECK_RC(greenlet_kill(fc->lmain, &out), GREENLET_ETHREAD);
  CHECK(out == SENTINEL);
  CHECK_RC(greenlet_destroy(fc->lmain, 0), GREENLET_ETHREAD);
  if (fc->lany)
    CHECK_RC(greenlet_destroy(fc->lany, GREENLET_DESTROY_DISCARD),
             GREENLET_ETHREAD);
  CHECK_RC(greenlet_set_parent(fc->lcur, fc->lmain), GREENLET_ETHREAD);
  CHECK(greenlet_owned_by_current_thread(fc->lmain) == 0);
  if (fresh && greenlet_foreach) { /* no greenlets: fn is not called */
    visit v = {.n = 0, .stop_at = 0};
    CHECK_RC(greenlet_foreach(visit_fn, &v), 0);
    CHECK(v.n == 0);
  }
}

static void *foreign_thread(void *arg) {
  fctx *fc = arg;
  if (fc->mode & 8)
    try_local(fc, 1);
  fc->fmain = greenlet_main();
  CHECK(fc->fmain != NULL && fc->fmain != fc->lmain);
  if (fc->mode & 1) {
    CHECK_RC(greenlet_create(&fc->fu, foreign_run, NULL, NULL), 0);
    CHECK(greenlet_parent(fc->fu) == fc->fmain);
  }
  if (fc->mode & 2) {
    greenlet_attr_t attr = {.stack_size = GREENLET_MIN_STACK_SIZE};
    void *v = NULL;
    CHECK_RC(greenlet_create(&fc->fa, foreign_run, NULL, &attr), 0);
    CHECK_RC(greenlet_switch(fc->fa, (void *)(uintptr_t)0x770, &v), 0);
    CHECK(v == (void *)(uintptr_t)0x770);
    CHECK(greenlet_active(fc->fa));
    if (fc->mode & 4) {
      v = SENTINEL;
      CHECK_RC(greenlet_kill(fc->fa, &v), GREENLET_OK);
      CHECK(v == NULL && greenlet_dead(fc->fa));
    }
  }
  if ((fc->mode & 0xf0) == 0xf0) /* its stacks go to the purger first */
    bulk(70, 16 * KIB, fc->mode >> 3);
  try_local(fc, 0);
  greenlet_t *x = SENTINEL;
  CHECK_RC(greenlet_create(&x, foreign_run, fc->lcur, NULL), GREENLET_ETHREAD);
  CHECK(x == SENTINEL);
  CHECK_RC(greenlet_set_parent(fc->lcur, fc->fmain), GREENLET_ETHREAD);
  if (fc->fu)
    CHECK_RC(greenlet_set_parent(fc->fu, fc->lmain), GREENLET_ETHREAD);
  CHECK(greenlet_owned_by_current_thread(fc->lmain) == 0);
  CHECK(greenlet_owned_by_current_thread(fc->fmain) == 1);

  pthread_mutex_lock(&fc->mu);
  fc->phase = 1;
  pthread_cond_broadcast(&fc->cv);
  while (fc->phase != 2)
    pthread_cond_wait(&fc->cv, &fc->mu);
  pthread_mutex_unlock(&fc->mu);
  return NULL; /* thread exit: fa, if suspended, is discarded; all die */
}

/* Calls from this thread on a live foreign thread's greenlet g. */
static void try_foreign_live(greenlet_t *g) {
  void *out = SENTINEL;
  greenlet_t *x = SENTINEL;
  CHECK_RC(greenlet_switch(g, token(), &out), GREENLET_ETHREAD);
  CHECK_RC(greenlet_throw(g, token(), &out), GREENLET_ETHREAD);
  CHECK_RC(greenlet_kill(g, &out), GREENLET_ETHREAD);
  CHECK(out == SENTINEL);
  CHECK_RC(greenlet_destroy(g, 0), GREENLET_ETHREAD);
  CHECK_RC(greenlet_destroy(g, GREENLET_DESTROY_DISCARD), GREENLET_ETHREAD);
  CHECK_RC(greenlet_create(&x, run_fn, g, NULL), GREENLET_ETHREAD);
  CHECK(x == SENTINEL);
  CHECK_RC(greenlet_set_parent(N[cur].g, g), GREENLET_ETHREAD);
  CHECK_RC(greenlet_set_parent(N[MAINN].g, g), GREENLET_ETHREAD);
  CHECK(greenlet_owned_by_current_thread(g) == 0);
}

static void op_foreign(void) {
  unsigned mode = get();
  /* A thread costs milliseconds under ASan: one per input. */
  if (foreign_done)
    return;
  foreign_done = 1;
  /* Earlier foreign records go first (destroy after their thread exit);
   * their main greenlet's record goes with the last of them. */
  if (F[2].present)
    CHECK_RC(greenlet_destroy(F[2].g, 0), GREENLET_EINVAL);
  for (int i = 0; i < 2; i++)
    if (F[i].present) {
      CHECK_RC(greenlet_destroy(F[i].g, 0), 0);
      F[i].present = 0;
    }
  F[2].present = 0;
  tracef("foreign mode %u", mode);

  fctx fc;
  memset(&fc, 0, sizeof fc);
  fc.mode = mode;
  fc.lmain = N[MAINN].g;
  fc.lcur = N[cur].g;
  for (int i = 0; i < NSLOTS; i++)
    if (N[i].present && !N[i].released)
      fc.lany = N[i].g;
  pthread_mutex_init(&fc.mu, NULL);
  pthread_cond_init(&fc.cv, NULL);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, foreign_thread, &fc) == 0);
  pthread_mutex_lock(&fc.mu);
  while (fc.phase != 1)
    pthread_cond_wait(&fc.cv, &fc.mu);
  pthread_mutex_unlock(&fc.mu);

  /* The thread waits on the mutex: its records may be read. */
  CHECK(greenlet_is_main(fc.fmain) && greenlet_active(fc.fmain));
  CHECK(greenlet_owned_by_current_thread(fc.fmain) == 0);
  try_foreign_live(fc.fmain);
  if (fc.fu) {
    CHECK(!greenlet_started(fc.fu) && !greenlet_dead(fc.fu));
    CHECK(greenlet_parent(fc.fu) == fc.fmain);
    try_foreign_live(fc.fu);
  }
  if (fc.fa) {
    if (mode & 4) {
      CHECK(greenlet_dead(fc.fa) && greenlet_stack_in_use(fc.fa) == 0);
    } else {
      CHECK(greenlet_active(fc.fa));
      size_t u = greenlet_stack_in_use(fc.fa);
      CHECK(u > 0 && u <= GREENLET_MIN_STACK_SIZE);
    }
    try_foreign_live(fc.fa);
  }

  pthread_mutex_lock(&fc.mu);
  fc.phase = 2;
  pthread_cond_broadcast(&fc.cv);
  pthread_mutex_unlock(&fc.mu);
  CHECK(pthread_join(t, NULL) == 0);
  pthread_cond_destroy(&fc.cv);
  pthread_mutex_destroy(&fc.mu);

  F[0] = (fnode){fc.fu, fc.fu != NULL, GREENLET_DEFAULT_STACK_SIZE};
  F[1] = (fnode){fc.fa, fc.fa != NULL, round_page(GREENLET_MIN_STACK_SIZE)};
  F[2] = (fnode){fc.fmain, fc.fu || fc.fa, 0};
  check_foreign();
  if (F[2].present) /* a main greenlet: refused from any thread */
    CHECK_RC(greenlet_destroy(F[2].g, 0), GREENLET_EINVAL);
}

/* ---- the interpreter ----------------------------------------------------- */

/* Runs operations as greenlet `me` until a RET (not in main) or the end of
 * the input.  Returns the return code for run and sets *result. */
static int interp(int me, void **result) {
  while (!at_end()) {
    unsigned b = get();
    unsigned op = OPTAB[b & 31], v = b >> 5;
    op_count++;
    tracef("%s v%u", OPNAME[op], v);
    switch (op) {
    case OP_CREATE:
      op_create(v);
      break;
    case OP_SWITCH:
    case OP_THROW: {
      ref r = get_ref();
      char buf[16];
      tracef("  %s %s", op == OP_SWITCH ? "switch" : "throw",
             ref_str(r, buf, sizeof buf));
      do_resume(op == OP_SWITCH ? K_SWITCH : K_THROW, r, v & 2 ? NULL : token(),
                v & 1);
      break;
    }
    case OP_KILL: {
      ref r = get_ref();
      char buf[16];
      tracef("  kill %s", ref_str(r, buf, sizeof buf));
      do_resume(K_KILL, r, NULL, v & 1);
      break;
    }
    case OP_TO_PARENT: {
      ref r = parent_ref(cur);
      do_resume(v & 2 ? K_THROW : K_SWITCH, r, v & 4 ? NULL : token(), v & 1);
      break;
    }
    case OP_RET:
      if (me != MAINN) {
        static const int codes[4] = {GREENLET_OK, GREENLET_ERROR, GREENLET_EXIT,
                                     7};
        *result = v & 4 ? NULL : token();
        return codes[v & 3];
      }
      break;
    case OP_SET_PARENT:
      op_set_parent();
      break;
    case OP_DESTROY:
      op_destroy(v);
      break;
    case OP_QUERY:
      op_query();
      break;
    case OP_USERDATA:
      op_userdata(v);
      break;
    case OP_FOREIGN:
      op_foreign();
      break;
    case OP_FENV:
      CHECK(fesetround(MODES[v & 3]) == 0);
      N[me].round = MODES[v & 3];
      break;
    case OP_STRERROR:
      op_strerror();
      break;
    case OP_BULK:
      op_bulk(v);
      break;
    default:
      break;
    }
    CHECK(cur == me);
    check_all();
  }
  *result = token();
  return GREENLET_OK;
}

static int run_fn(greenlet_t *self, void *arg, void **result) {
  int me = cur;
  CHECK(N[me].g == self);
  CHECK(greenlet_current() == self);
  CHECK(N[me].exp_set && N[me].exp_status == GREENLET_OK);
  if (arg != N[me].exp_value)
    fail(__LINE__, "greenlet %d started with %p, expected %p", me, arg,
         N[me].exp_value);
  N[me].exp_set = 0;
  CHECK(*result == NULL);
  if (fegetround() != N[me].round)
    fail(__LINE__, "greenlet %d started with rounding mode %d, expected %d", me,
         fegetround(), N[me].round);
  unsigned char *r = greenlet_reserved(self);
  if (N[me].reserve) {
    CHECK(r != NULL && ((uintptr_t)r & 15) == 0);
    CHECK((char *)__builtin_frame_address(0) < (char *)r);
    N[me].resv = r;
    reserve_fill(me);
  } else {
    CHECK(r == NULL);
  }
  tracef("greenlet %d starts", me);
  void *val = NULL;
  int rc = interp(me, &val);
  CHECK(cur == me);
  /* The result goes to the first ancestor able to take it. */
  int status = rc == GREENLET_ERROR ? GREENLET_ERROR : GREENLET_OK;
  N[me].state = ST_D;
  N[me].resv = NULL;
  int t = plan_resume(N[me].parent, status);
  tracef("greenlet %d returns %d (%p) -> %d", me, rc, val, t);
  plan_transfer(me, t, status, val);
  *result = val;
  return rc;
}

/* ---- one input ----------------------------------------------------------- */

/*
 * Once every handle is destroyed, the thread holds no stack and only its
 * main greenlet lives.  A stack that is never given back (the pool, the
 * purger, unmapped) shows here, as `stacks` that does not come back to 0.
 * The finished greenlet's stack parked until the next call is released by
 * the destroys above; greenlet_set_parent(main, main), refused, is one more
 * such call.
 */
static void check_stats_at_end(void) {
  if (!stats_ok)
    return;
  CHECK_RC(greenlet_set_parent(N[MAINN].g, N[MAINN].g), GREENLET_EINVAL);
  stats_head st;
  memset(&st, 0, sizeof st);
  CHECK_RC(fuzz_thread_stats(&st), 0);
  if (st.threads != 1 || st.created != created_base + created) {
    fprintf(stderr, "fuzz_core: greenlet_thread_stats() does not look like "
                    "greenlet_stats_t any more; its check is off\n");
    stats_ok = 0;
    return;
  }
  if (st.live != 1 || st.stacks != 0)
    fail(__LINE__,
         "at the end of the input: greenlet_thread_stats() says %llu live "
         "greenlets (only main expected) and %llu stacks held (0 expected)",
         (unsigned long long)st.live, (unsigned long long)st.stacks);
}

static void reset_model(void) {
  memset(N, 0, sizeof N);
  for (int i = 0; i < NNODES; i++)
    N[i].parent = -1;
  node *m = &N[MAINN];
  m->g = greenlet_main();
  CHECK(m->g != NULL);
  m->present = 1;
  m->state = ST_A;
  m->id = greenlet_id(m->g);
  m->round = fegetround();
  m->userdata = greenlet_userdata(m->g);
  cur = MAINN;
  last_slot = -1;
  tok_seq = 0;
  op_count = 0;
  foreign_done = 0;
  bulk_done = 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  page_size = sysconf(_SC_PAGESIZE);
  const char *t = getenv("FUZZ_CORE_TRACE");
  trace = t && *t && *t != '0';
  const char *mode = greenlet_guard_mode();
  CHECK(strcmp(mode, "madvise") == 0 || strcmp(mode, "mprotect") == 0);
  greenlet_t *m = greenlet_main();
  CHECK(m != NULL && greenlet_current() == m);
  last_id = greenlet_id(m);
  if (fuzz_thread_stats) {
    stats_head st;
    memset(&st, 0, sizeof st);
    if (fuzz_thread_stats(&st) == 0 && st.threads == 1) {
      created_base = st.created;
      stats_ok = 1;
    }
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  in = data;
  in_len = size;
  in_pos = 0;
  reset_model();
  check_all();
  void *unused;
  interp(MAINN, &unused);
  CHECK(cur == MAINN);
  /* The end: every suspended greenlet is killed (it reads no more input,
   * so it returns), every handle destroyed; nothing may remain. */
  for (int i = 0; i < NSLOTS; i++)
    if (N[i].present && N[i].state == ST_A)
      do_resume(K_KILL, node_ref(i), NULL, 0);
  for (int i = 0; i < NSLOTS; i++) {
    CHECK(!N[i].present || N[i].state != ST_A);
    if (N[i].present && !N[i].released) {
      CHECK_RC(greenlet_destroy(N[i].g, 0), 0);
      N[i].released = 1;
      N[i].state = ST_D; /* an unstarted one never runs */
    }
  }
  recompute_presence();
  for (int i = 0; i < NSLOTS; i++)
    CHECK(!N[i].present);
  for (int i = 0; i < 2; i++)
    if (F[i].present) {
      CHECK_RC(greenlet_destroy(F[i].g, 0), 0);
      F[i].present = 0;
    }
  F[2].present = 0;
  if (fegetround() != FE_TONEAREST)
    fesetround(FE_TONEAREST);
  CHECK(greenlet_current() == greenlet_main());
  check_stats_at_end();
  return 0;
}
