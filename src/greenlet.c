/*
 * greenlet.c - greenlet semantics and per-thread state.
 *
 * Switching model.  Exactly one greenlet per thread runs: ts->current.  A
 * switch stores the outcome it carries (status, value) in the thread state,
 * makes the target current and jumps to its context; the resumed side reads
 * the outcome back.  A greenlet whose run function returns is marked dead and
 * jumps to its first live ancestor; its stack cannot be released while still
 * in use, so it is left in ts->dying and released by whoever runs next
 * (after_switch()).
 *
 * Ownership.  A record is reference counted: one reference for the handle
 * returned by greenlet_create() (dropped by greenlet_destroy()), one per
 * child that names it parent.  The main greenlet's handle belongs to the
 * thread and is dropped at thread exit.
 */
#define _GNU_SOURCE
#include "fault.h"
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

__thread greenlet__tstate *greenlet__tls
    __attribute__((tls_model("initial-exec"), visibility("hidden")));

static pthread_key_t tstate_key;
static pthread_once_t tstate_key_once = PTHREAD_ONCE_INIT;
static atomic_ullong next_id = 1;

static void thread_exit(void *arg);

/* ---- introspection counters and the thread registry -------------------- */

#define stat_add greenlet__stat_add

static inline unsigned long long stat_get(const unsigned long long *c) {
  return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* Every thread state not yet freed, newest first.  A debugger reading a core
 * file cannot reach other threads' TLS, so gdb/cgreenlet-gdb.py starts here
 * (the names are part of that contract: keep them in step). */
greenlet__tstate *greenlet__threads;
pthread_mutex_t greenlet__threads_lock = PTHREAD_MUTEX_INITIALIZER;
/* Totals of the states already freed, so process counters never go down. */
static unsigned long long retired_switches, retired_created;

static void registry_add(greenlet__tstate *ts) {
  ts->tid = (int)syscall(SYS_gettid);
  pthread_mutex_lock(&greenlet__threads_lock);
  ts->reg_prev = NULL;
  ts->reg_next = greenlet__threads;
  if (greenlet__threads)
    greenlet__threads->reg_prev = ts;
  greenlet__threads = ts;
  ts->listed = 1;
  pthread_mutex_unlock(&greenlet__threads_lock);
}

static void registry_remove(greenlet__tstate *ts) {
  pthread_mutex_lock(&greenlet__threads_lock);
  if (ts->listed) {
    if (ts->reg_prev)
      ts->reg_prev->reg_next = ts->reg_next;
    else
      greenlet__threads = ts->reg_next;
    if (ts->reg_next)
      ts->reg_next->reg_prev = ts->reg_prev;
    ts->listed = 0;
  }
  retired_switches += ts->switches;
  retired_created += ts->created;
  pthread_mutex_unlock(&greenlet__threads_lock);
}

/* fork(): the child must not inherit the lock held, and keeps only the
 * calling thread's state listed (the other threads do not exist there; their
 * states are never freed, as before, but no longer reported). */
static void registry_prefork(void) {
  pthread_mutex_lock(&greenlet__threads_lock);
}
static void registry_postfork_parent(void) {
  pthread_mutex_unlock(&greenlet__threads_lock);
}
static void registry_postfork_child(void) {
  pthread_mutex_init(&greenlet__threads_lock, NULL);
  greenlet__tstate *self = greenlet__tls;
  for (greenlet__tstate *t = greenlet__threads, *n; t; t = n) {
    n = t->reg_next;
    t->reg_prev = t->reg_next = NULL;
    t->listed = t == self;
  }
  greenlet__threads = self;
  if (self)
    self->tid = (int)syscall(SYS_gettid);
}

static void make_key(void) {
  /* Failure leaves thread exit cleanup off; nothing else depends on it. */
  (void)pthread_key_create(&tstate_key, thread_exit);
  (void)pthread_atfork(registry_prefork, registry_postfork_parent,
                       registry_postfork_child);
}

/* ---- the record list ---------------------------------------------------- */

/* ts->all: appended at creation, so greenlet_foreach() sees main first and
 * the rest in creation order; unlinked only when the record is freed.  It
 * is also how thread exit finds the greenlets it must end, so that a
 * create/finish cycle maintains one list, not two. */
static void all_link(greenlet__tstate *ts, greenlet_t *g) {
  g->all_next = NULL;
  g->all_prev = ts->all_tail;
  if (ts->all_tail)
    ts->all_tail->all_next = g;
  else
    ts->all = g;
  ts->all_tail = g;
}

static void all_unlink(greenlet__tstate *ts, greenlet_t *g) {
  if (g->all_prev)
    g->all_prev->all_next = g->all_next;
  else
    ts->all = g->all_next;
  if (g->all_next)
    g->all_next->all_prev = g->all_prev;
  else
    ts->all_tail = g->all_prev;
}

/* A non-main greenlet leaves the unstarted or active state for good. */
static inline void mark_dead(greenlet__tstate *ts, greenlet_t *g) {
  g->state = GREENLET__DEAD;
  stat_add(&ts->nlive, -1);
}

/* ---- records ----------------------------------------------------------- */

static void tstate_free(greenlet__tstate *ts) {
  registry_remove(ts);
  pthread_mutex_destroy(&ts->lock);
  free(ts);
}

/*
 * Drops one reference to g and frees every record that reaches zero, walking
 * up the parent chain (a child held its parent).  Freed records go to the
 * thread's cache when `cache` is set (owner thread, alive).  Returns the
 * number of references the freed records held on their thread state, for
 * the caller to drop (with the lock held after thread exit).
 */
/* always_inline: with the record list to maintain, gcc stopped inlining it
 * into unref(), which cost a create/finish cycle a call. */
static inline __attribute__((always_inline)) int
unref_chain(greenlet__tstate *ts, greenlet_t *g, int cache) {
  int freed = 0;
  while (g && --g->refcnt == 0) {
    greenlet_t *parent = g->parent;
    all_unlink(ts, g);
    if (cache && ts->spare_count < GREENLET__SPARE_MAX) {
      g->next = ts->spare;
      ts->spare = g;
      ts->spare_count++;
    } else {
      free(g);
    }
    freed++;
    g = parent;
  }
  return freed;
}

/* Owner thread, alive: no lock needed, the thread holds a reference. */
static void unref(greenlet__tstate *ts, greenlet_t *g) {
  ts->refcnt -= unref_chain(ts, g, 1);
}

/*
 * A zeroed record with one reference.  Records come from a small per-thread
 * cache and ids from per-thread blocks: create+finish loops then touch no
 * allocator lock and no shared cache line.
 */
static greenlet_t *record_new(greenlet__tstate *ts) {
  greenlet_t *g = ts->spare;
  if (g) {
    ts->spare = g->next;
    ts->spare_count--;
    memset(g, 0, sizeof *g);
  } else if (greenlet__fault_hit() || !(g = calloc(1, sizeof *g))) {
    return NULL;
  }
  if (ts->next_id == ts->end_id) {
    ts->next_id = atomic_fetch_add_explicit(&next_id, GREENLET__ID_BLOCK,
                                            memory_order_relaxed);
    ts->end_id = ts->next_id + GREENLET__ID_BLOCK;
  }
  g->id = ts->next_id++;
  g->ts = ts;
  g->refcnt = 1;
  ts->refcnt++;
  all_link(ts, g);
  return g;
}

static void spare_clear(greenlet__tstate *ts) {
  while (ts->spare) {
    greenlet_t *g = ts->spare;
    ts->spare = g->next;
    free(g);
  }
  ts->spare_count = 0;
}

/* ---- thread state ------------------------------------------------------ */

/*
 * Creates the calling thread's state and main greenlet.  The pthread key's
 * destructor tears them down at thread exit.
 */
static greenlet__tstate *tstate_create(void) {
  pthread_once(&tstate_key_once, make_key);
  greenlet__tstate *ts =
      greenlet__fault_hit() ? NULL : calloc(1, sizeof *ts);
  if (!ts)
    return NULL;
  if (pthread_mutex_init(&ts->lock, NULL) != 0) {
    free(ts);
    return NULL;
  }
  ts->refcnt = 1;
  ts->alive = 1;
  greenlet_t *m = record_new(ts);
  if (!m) {
    tstate_free(ts);
    return NULL;
  }
  m->state = GREENLET__ACTIVE;
  m->flags = GREENLET__MAIN;
#ifdef GREENLET_TSAN
  m->tsan_fiber = __tsan_get_current_fiber();
#endif
  ts->main = ts->current = m;
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void *lo;
    size_t size;
    if (pthread_attr_getstack(&attr, &lo, &size) == 0)
      ts->main_stack_hi = (char *)lo + size;
    pthread_attr_destroy(&attr);
  }
  ts->altstack = greenlet__overflow_setup();
  (void)pthread_setspecific(tstate_key, ts);
  greenlet__tls = ts;
  registry_add(ts);
  return ts;
}

static inline greenlet__tstate *tstate_get(void) {
  greenlet__tstate *ts = greenlet__tls;
  return ts ? ts : tstate_create();
}

#ifdef GREENLET_TSAN
static void tsan_release_fiber(greenlet_t *g) {
  if (g->tsan_fiber) {
    __tsan_destroy_fiber(g->tsan_fiber);
    g->tsan_fiber = NULL;
  }
}
#else
#define tsan_release_fiber(g) ((void)0)
#endif

/*
 * Thread exit: every greenlet of the thread still suspended loses its stack
 * without running again (its thread is gone), unstarted ones can never run,
 * and the main greenlet's handle is dropped.  Records still held by the user
 * survive, dead, until greenlet_destroy() from another thread.
 */
static void thread_exit(void *arg) {
  greenlet__tstate *ts = arg;
  pthread_mutex_lock(&ts->lock);
  /* Atomic: greenlet_process_stats() reads it without the lock. */
  __atomic_store_n(&ts->alive, 0, __ATOMIC_RELAXED);
  for (greenlet_t *g = ts->all; g; g = g->all_next) {
    if ((g->flags & GREENLET__MAIN) || g->state == GREENLET__DEAD)
      continue; /* main: below; dead: no stack, but ts->dying's (below) */
    if (g->flags & GREENLET__SHARED)
      greenlet__shared_release(ts, g); /* its slot goes below */
    else
      greenlet__pool_retire(&ts->pool, &g->stack);
#ifdef GREENLET_ASAN
    greenlet__asan_drop_fake_stack(&g->asan_fake); /* it never runs again */
#endif
    tsan_release_fiber(g);
    mark_dead(ts, g);
  }
  if (ts->dying) {
    if (ts->dying->flags & GREENLET__SHARED)
      greenlet__shared_release(ts, ts->dying);
    else
      greenlet__pool_retire(&ts->pool, &ts->dying->stack);
    tsan_release_fiber(ts->dying);
    ts->dying = NULL;
  }
  greenlet__shared_clear(ts);      /* the slots, to the pool */
  greenlet__pool_clear(&ts->pool); /* unmaps them all, in address order */
  stat_add(&ts->nstacks, -(long long)ts->nstacks);
  stat_add(&ts->stack_bytes, -(long long)ts->stack_bytes);
  greenlet_t *m = ts->main;
  m->state = GREENLET__DEAD;
  m->flags |= GREENLET__RELEASED;
  ts->main = ts->current = NULL;
  ts->refcnt -= unref_chain(ts, m, 0);
  spare_clear(ts);
  greenlet__altstack_free(ts->altstack);
  ts->altstack = NULL;
  int last = --ts->refcnt == 0;
  pthread_mutex_unlock(&ts->lock);
  greenlet__tls = NULL;
  if (last)
    tstate_free(ts);
}

/* ---- switching --------------------------------------------------------- */

#ifdef GREENLET_CONTEXT_UCONTEXT
__thread int greenlet__context_status;
#endif

/* Stack accounting for greenlet_thread_stats(), off the switch path. */
static inline void stack_taken(greenlet__tstate *ts,
                               const greenlet__stack *st) {
  stat_add(&ts->nstacks, 1);
  stat_add(&ts->stack_bytes, (long long)st->size);
}

static inline void stack_released(greenlet__tstate *ts,
                                  const greenlet__stack *st) {
  stat_add(&ts->nstacks, -1);
  stat_add(&ts->stack_bytes, -(long long)st->size);
}

/*
 * A greenlet that finished left its stack in ts->dying (it could not give
 * back the stack it was running on).  Every entry point that may reuse
 * stacks or free records calls this first.
 */
static inline void flush_dying(greenlet__tstate *ts) {
  greenlet_t *dying = ts->dying;
  if (dying) {
    ts->dying = NULL;
    tsan_release_fiber(dying);
    if (dying->flags & GREENLET__SHARED) {
      greenlet__shared_release(ts, dying);
    } else {
      stack_released(ts, &dying->stack);
      greenlet__stack_put(&ts->pool, &dying->stack);
    }
  }
}

#ifdef GREENLET_ASAN
/* Runs on the resumed side of every switch (ASan builds only). */
static void asan_after_switch(greenlet__tstate *ts, greenlet_t *self) {
  const void *bottom;
  size_t size;
  __sanitizer_finish_switch_fiber(self->asan_fake, &bottom, &size);
  greenlet_t *origin = ts->origin;
  if (origin && (origin->flags & GREENLET__MAIN) && !origin->asan_bottom) {
    origin->asan_bottom = bottom;
    origin->asan_size = size;
  }
}
#endif

/*
 * Suspends `from` and resumes `to` with (status, value); returns the outcome
 * `from` is resumed with later.  The value goes straight into the pointer
 * `to` is waiting with (or to run()'s argument if `to` starts now); the
 * status comes back as the context switch's return value.  Callers tail-call
 * this so the jump returns directly to the user's call site; nothing may
 * need doing after it on the resumed side (ASan builds excepted).
 */
/* The bookkeeping of a switch to `to` with value: counted, the value into
 * the pointer `to` waits with (or run()'s argument if it starts now), `to`
 * current.  (transfer(), and the switcher once `to`'s bytes are in place.) */
static inline void deliver(greenlet__tstate *ts, greenlet_t *to,
                           void *value) {
  stat_add(&ts->switches, 1);
  if (to->out)
    *to->out = value;
  else /* starting (prepare_start cleared out), or it waits with out NULL */
    ts->start_value = value;
  ts->current = to;
}

/* ASan: the bounds of the stack g runs on (a main greenlet's are learnt). */
#ifdef GREENLET_ASAN
static void asan_bounds(const greenlet_t *g, const void **bottom,
                        size_t *size) {
  *bottom = g->stack.base ? g->stack.lo : g->asan_bottom;
  *size = g->stack.base ? g->stack.size : g->asan_size;
}
#endif

static inline int transfer(greenlet__tstate *ts, greenlet_t *from,
                           greenlet_t *to, int status, void *value,
                           void **out) {
  from->out = out;
  deliver(ts, to, value);
#ifdef GREENLET_TSAN
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
#ifdef GREENLET_ASAN
  ts->origin = from;
  const void *bottom;
  size_t size;
  asan_bounds(to, &bottom, &size);
  __sanitizer_start_switch_fiber(ts->dying == from ? NULL : &from->asan_fake,
                                 bottom, size);
  status = greenlet__context_swap(&from->ctx, &to->ctx, status);
  asan_after_switch(ts, from);
  return status;
#else
  return greenlet__context_swap(&from->ctx, &to->ctx, status);
#endif
}

/* ---- the switcher (shared stacks) ---------------------------------------
 *
 * A switch to a greenlet whose bytes are away from its slot (shared.h) goes
 * through the thread's switcher: a context with a small stack of its own.
 * The switching greenlet jumps there (so it is suspended, with its stack
 * pointer saved, even when it is the slot's resident that must be copied
 * out), the switcher moves the bytes, then finishes the switch the way
 * transfer() does and jumps to the target.  If a copy cannot be allocated
 * it jumps back instead, and the switch returns GREENLET_ENOMEM with
 * nothing changed: values are delivered only once the target's bytes are
 * in place (its out pointer points into them).
 */

__attribute__((noreturn)) static void switcher_run(greenlet__tstate *ts) {
  greenlet__shared *sh = &ts->shared;
  for (;;) {
    greenlet_t *from = sh->sw_from, *to = sh->sw_to;
#ifdef GREENLET_ASAN
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(sh->sw_fake, &bottom, &size);
    if ((from->flags & GREENLET__MAIN) && !from->asan_bottom) {
      from->asan_bottom = bottom;
      from->asan_size = size;
    }
#endif
    int rc = greenlet__shared_bring_in(to);
    greenlet_t *next = to;
    int status = sh->sw_status;
    if (rc == 0) {
      deliver(ts, to, sh->sw_value);
    } else if (from->state == GREENLET__DEAD) {
      /* A finishing greenlet cannot be resumed to report it. */
      static const char msg[] = "cgreenlet: out of memory copying a shared "
                                "stack for a finishing greenlet; aborting\n";
      (void)!write(2, msg, sizeof msg - 1);
      abort();
    } else {
      next = from;
      status = rc;
    }
#ifdef GREENLET_TSAN
    __tsan_switch_to_fiber(next->tsan_fiber, 0);
#endif
#ifdef GREENLET_ASAN
    ts->origin = NULL; /* the switcher's bounds are nobody's to learn */
    asan_bounds(next, &bottom, &size);
    __sanitizer_start_switch_fiber(&sh->sw_fake, bottom, size);
#endif
    greenlet__context_swap(&sh->sw_ctx, &next->ctx, status);
  }
}

/* The switcher's stack and context, made at the first switch that needs it. */
static int switcher_make(greenlet__tstate *ts) {
  greenlet__shared *sh = &ts->shared;
  greenlet__stack st;
  int rc = greenlet__stack_get(
      &ts->pool, greenlet__stack_round(GREENLET_DEFAULT_STACK_SIZE), &st);
  if (rc != 0)
    return rc;
  if (greenlet__context_make(&sh->sw_ctx, st.lo, st.size) != 0) {
    greenlet__stack_put(&ts->pool, &st);
    return GREENLET_ENOMEM;
  }
  sh->sw_stack = st;
  sh->sw_entering = 1; /* greenlet__entry runs switcher_run */
#ifdef GREENLET_TSAN
  sh->sw_fiber = __tsan_create_fiber(0);
#endif
  return 0;
}

/* transfer() to a greenlet that is away from its slot. */
static __attribute__((noinline)) int transfer_away(greenlet__tstate *ts,
                                                   greenlet_t *from,
                                                   greenlet_t *to, int status,
                                                   void *value, void **out) {
  greenlet__shared *sh = &ts->shared;
  if (!sh->sw_stack.base) {
    int rc = switcher_make(ts);
    if (rc != 0)
      return rc;
  }
  from->out = out;
  sh->sw_from = from;
  sh->sw_to = to;
  sh->sw_status = status;
  sh->sw_value = value;
#ifdef GREENLET_TSAN
  __tsan_switch_to_fiber(sh->sw_fiber, 0);
#endif
#ifdef GREENLET_ASAN
  ts->origin = from;
  __sanitizer_start_switch_fiber(ts->dying == from ? NULL : &from->asan_fake,
                                 sh->sw_stack.lo, sh->sw_stack.size);
  status = greenlet__context_swap(&from->ctx, &sh->sw_ctx, 0);
  asan_after_switch(ts, from);
  return status;
#else
  return greenlet__context_swap(&from->ctx, &sh->sw_ctx, 0);
#endif
}

/* Gives an unstarted greenlet its stack and initial context. */
/* always_inline: the stack accounting made it too big for gcc to inline on
 * its own, which cost every start a call. */
static inline __attribute__((always_inline)) int
prepare_start(greenlet__tstate *ts, greenlet_t *g) {
  if (g->flags & GREENLET__SHARED) {
    int rc = greenlet__shared_start(ts, g); /* the slot is counted */
    if (rc != 0)
      return rc;
  } else {
    int rc = greenlet__stack_get(&ts->pool, g->stack_size, &g->stack);
    if (rc != 0)
      return rc;
    if (greenlet__context_make(&g->ctx, g->stack.lo,
                               g->stack.size - g->reserve) != 0) {
      greenlet__stack_put(&ts->pool, &g->stack);
      return GREENLET_ENOMEM;
    }
    stack_taken(ts, &g->stack);
  }
#ifdef GREENLET_TSAN
  g->tsan_fiber = __tsan_create_fiber(0);
#endif
  g->out = NULL;
  g->state = GREENLET__ACTIVE;
  return 0;
}

/* An unstarted greenlet that will never run: thrown into, or killed. */
static void kill_unstarted(greenlet__tstate *ts, greenlet_t *g) {
  mark_dead(ts, g);
}

/*
 * The general path of switch, throw and kill.  Walks from target to the
 * greenlet that really receives the outcome (dead ones pass it on to their
 * parent; unstarted ones thrown into die without running) and jumps there.
 */
static __attribute__((noinline)) int resume_slow(greenlet__tstate *ts,
                                                 greenlet_t *target,
                                                 int status, void *value,
                                                 void **out) {
  flush_dying(ts);
  for (;;) {
    if (target->state == GREENLET__DEAD) {
      target = target->parent;
    } else if (target->state == GREENLET__UNSTARTED && status != GREENLET_OK) {
      greenlet_t *parent = target->parent;
      kill_unstarted(ts, target);
      target = parent;
    } else {
      break;
    }
  }
  greenlet_t *cur = ts->current;
  if (target == cur) {
    if (out)
      *out = value;
    return status;
  }
  if (target->state == GREENLET__UNSTARTED) {
    int rc = prepare_start(ts, target);
    if (rc != 0)
      return rc;
  }
  if (target->flags & GREENLET__AWAY) {
    int fresh = !target->saved && target->out == NULL;
    int rc = transfer_away(ts, cur, target, status, value, out);
    if (rc < 0 && fresh && (target->flags & GREENLET__AWAY)) {
      /* Refused before it ever ran: unstarted again. */
      tsan_release_fiber(target);
      greenlet__shared_release(ts, target);
      target->state = GREENLET__UNSTARTED;
    }
    return rc;
  }
  return transfer(ts, cur, target, status, value, out);
}

/* The common case inline (a suspended target, nothing to clean up), so the
 * switch path saves no registers of its own; everything else goes to
 * resume_slow(). */
static inline int resume(greenlet__tstate *ts, greenlet_t *target, int status,
                         void *value, void **out) {
  greenlet_t *cur = ts->current;
  if (__builtin_expect(target->state == GREENLET__ACTIVE &&
                           !(target->flags & GREENLET__AWAY) && target != cur &&
                           !ts->dying,
                       1))
    return transfer(ts, cur, target, status, value, out);
  return resume_slow(ts, target, status, value, out);
}

/*
 * A run function returned: hand its outcome to the first ancestor able to
 * take it.  An unstarted ancestor starts with a value, dies with an error,
 * and is passed over (left unstarted) if its stack cannot be had.
 */
__attribute__((noreturn)) static void finish(greenlet__tstate *ts,
                                             greenlet_t *g, int status,
                                             void *value) {
  /* One that finished just before this one (nothing in between called the
   * library): its stack goes back now, or it would be lost when g takes
   * ts->dying.  Safe: we run on g's stack, not on that one. */
  flush_dying(ts);
  mark_dead(ts, g);
  greenlet_t *t = g->parent;
  for (;;) {
    if (t->state == GREENLET__DEAD) {
      t = t->parent;
    } else if (t->state == GREENLET__UNSTARTED) {
      greenlet_t *parent = t->parent;
      if (status != GREENLET_OK)
        kill_unstarted(ts, t);
      else if (prepare_start(ts, t) == 0)
        break;
      t = parent;
    } else {
      break;
    }
  }
  ts->dying = g;
  if (t->flags & GREENLET__AWAY)
    transfer_away(ts, g, t, status, value, NULL);
  else
    transfer(ts, g, t, status, value, NULL);
  abort(); /* a dead greenlet is never resumed */
}

void greenlet__entry(void) {
  greenlet__tstate *ts = greenlet__tls;
  if (__builtin_expect(ts->shared.sw_entering, 0)) {
    ts->shared.sw_entering = 0;
    switcher_run(ts);
  }
  greenlet_t *g = ts->current;
#ifdef GREENLET_ASAN
  g->asan_fake = NULL;
  asan_after_switch(ts, g);
#endif
  void *result = NULL;
  int rc = g->run(g, ts->start_value, &result);
  finish(ts, g, rc == GREENLET_ERROR ? GREENLET_ERROR : GREENLET_OK, result);
}

/* ---- public API -------------------------------------------------------- */

greenlet_t *greenlet_current(void) {
  greenlet__tstate *ts = tstate_get();
  return ts ? ts->current : NULL;
}

greenlet_t *greenlet_main(void) {
  greenlet__tstate *ts = tstate_get();
  return ts ? ts->main : NULL;
}

int greenlet_create(greenlet_t **out, greenlet_run_fn run, greenlet_t *parent,
                    const greenlet_attr_t *attr) {
  if (!out || !run)
    return GREENLET_EINVAL;
  size_t size = attr && attr->stack_size ? attr->stack_size
                                         : GREENLET_DEFAULT_STACK_SIZE;
  if (size < GREENLET_MIN_STACK_SIZE || size > GREENLET_MAX_STACK_SIZE)
    return GREENLET_EINVAL;
  /* The C stack keeps at least the minimum below the reserve. */
  size_t reserve = attr ? attr->reserve : 0;
  if (reserve > GREENLET_MAX_STACK_SIZE)
    return GREENLET_EINVAL;
  reserve = (reserve + 15) & ~(size_t)15;
  if (reserve > greenlet__stack_round(size) - GREENLET_MIN_STACK_SIZE)
    return GREENLET_EINVAL;
  unsigned aflags = attr ? attr->flags : 0;
  if (aflags & ~GREENLET_ATTR_SHARED_STACK)
    return GREENLET_EINVAL;
  greenlet__tstate *ts = tstate_get();
  if (!ts)
    return GREENLET_ENOMEM;
  if (!parent)
    parent = ts->current;
  else if (parent->ts != ts)
    return GREENLET_ETHREAD;
  flush_dying(ts);
  greenlet_t *g = record_new(ts);
  if (!g)
    return GREENLET_ENOMEM;
  g->run = run;
  g->parent = parent;
  parent->refcnt++;
  g->stack_size = greenlet__stack_round(size);
  g->reserve = reserve;
  if (aflags & GREENLET_ATTR_SHARED_STACK)
    g->flags |= GREENLET__SHARED;
  if (attr && attr->name) {
    strncpy(g->name, attr->name, sizeof g->name - 1);
    g->name[sizeof g->name - 1] = '\0';
  }
  stat_add(&ts->nlive, 1);
  stat_add(&ts->created, 1);
  *out = g;
  return 0;
}

int greenlet_switch(greenlet_t *target, void *value, void **out) {
  if (!target)
    return GREENLET_EINVAL;
  greenlet__tstate *ts = greenlet__tls;
  if (target->ts != ts)
    return GREENLET_ETHREAD;
  return resume(ts, target, GREENLET_OK, value, out);
}

int greenlet_throw(greenlet_t *target, void *error, void **out) {
  if (!target)
    return GREENLET_EINVAL;
  greenlet__tstate *ts = greenlet__tls;
  if (target->ts != ts)
    return GREENLET_ETHREAD;
  return resume(ts, target, GREENLET_ERROR, error, out);
}

/* Is a an ancestor of (or equal to) b? */
static int is_ancestor(const greenlet_t *a, const greenlet_t *b) {
  for (; b; b = b->parent)
    if (a == b)
      return 1;
  return 0;
}

static void set_parent(greenlet__tstate *ts, greenlet_t *g, greenlet_t *p) {
  greenlet_t *old = g->parent;
  p->refcnt++;
  g->parent = p;
  unref(ts, old);
}

int greenlet_kill(greenlet_t *target, void **out) {
  if (!target)
    return GREENLET_EINVAL;
  greenlet__tstate *ts = greenlet__tls;
  if (target->ts != ts)
    return GREENLET_ETHREAD;
  if ((target->flags & GREENLET__MAIN) || target == ts->current)
    return GREENLET_EINVAL;
  flush_dying(ts);
  if (target->state != GREENLET__ACTIVE) {
    if (target->state == GREENLET__UNSTARTED)
      kill_unstarted(ts, target);
    if (out)
      *out = NULL;
    return GREENLET_OK;
  }
  /* Route its result back here, unless we descend from it. */
  if (!is_ancestor(target, ts->current))
    set_parent(ts, target, ts->current);
  return resume(ts, target, GREENLET_EXIT, NULL, out);
}

int greenlet_destroy(greenlet_t *g, unsigned flags) {
  if (!g || (flags & ~GREENLET_DESTROY_DISCARD))
    return GREENLET_EINVAL;
  greenlet__tstate *ts = g->ts;
  if (ts != greenlet__tls) {
    /* Only allowed once the owner thread is gone. */
    pthread_mutex_lock(&ts->lock);
    if (ts->alive) {
      pthread_mutex_unlock(&ts->lock);
      return GREENLET_ETHREAD;
    }
    if (g->flags & (GREENLET__MAIN | GREENLET__RELEASED)) {
      pthread_mutex_unlock(&ts->lock);
      return GREENLET_EINVAL;
    }
    g->flags |= GREENLET__RELEASED;
    ts->refcnt -= unref_chain(ts, g, 0);
    int last = ts->refcnt == 0;
    pthread_mutex_unlock(&ts->lock);
    if (last)
      tstate_free(ts);
    return 0;
  }
  if (g->flags & (GREENLET__MAIN | GREENLET__RELEASED))
    return GREENLET_EINVAL;
  if (g == ts->current)
    return GREENLET_EBUSY;
  flush_dying(ts);
  if (g->state == GREENLET__ACTIVE) {
    if (!(flags & GREENLET_DESTROY_DISCARD))
      return GREENLET_EBUSY;
    tsan_release_fiber(g);
#ifdef GREENLET_ASAN
    greenlet__asan_drop_fake_stack(&g->asan_fake); /* it never runs again */
#endif
    if (g->flags & GREENLET__SHARED) {
      greenlet__shared_release(ts, g);
    } else {
      stack_released(ts, &g->stack);
      greenlet__stack_put(&ts->pool, &g->stack);
    }
    mark_dead(ts, g);
  } else if (g->state == GREENLET__UNSTARTED) {
    mark_dead(ts, g);
  }
  g->flags |= GREENLET__RELEASED;
  unref(ts, g);
  return 0;
}

int greenlet_set_parent(greenlet_t *g, greenlet_t *parent) {
  if (!g || !parent)
    return GREENLET_EINVAL;
  greenlet__tstate *ts = greenlet__tls;
  if (g->ts != ts || parent->ts != ts)
    return GREENLET_ETHREAD;
  if (g->flags & GREENLET__MAIN)
    return GREENLET_EINVAL;
  if (is_ancestor(g, parent))
    return GREENLET_ECYCLE;
  flush_dying(ts);
  set_parent(ts, g, parent);
  return 0;
}

greenlet_t *greenlet_parent(const greenlet_t *g) { return g ? g->parent : NULL; }

int greenlet_started(const greenlet_t *g) {
  return g && g->state != GREENLET__UNSTARTED;
}

int greenlet_active(const greenlet_t *g) {
  return g && g->state == GREENLET__ACTIVE;
}

int greenlet_dead(const greenlet_t *g) {
  return g && g->state == GREENLET__DEAD;
}

int greenlet_is_main(const greenlet_t *g) {
  return g && (g->flags & GREENLET__MAIN) != 0;
}

uint64_t greenlet_id(const greenlet_t *g) { return g ? g->id : 0; }

const char *greenlet_name(const greenlet_t *g) { return g ? g->name : ""; }

int greenlet_owned_by_current_thread(const greenlet_t *g) {
  return g && g->ts == greenlet__tls;
}

size_t greenlet_stack_in_use(const greenlet_t *g) {
  if (!g || g->state != GREENLET__ACTIVE || g == g->ts->current ||
      ((g->flags & GREENLET__AWAY) && !g->saved))
    return 0;
  const char *sp = greenlet__context_sp(&g->ctx);
  const char *hi = g->stack.base ? g->stack.lo + g->stack.size - g->reserve
                                 : g->ts->main_stack_hi; /* main greenlet */
  return hi && sp && sp < hi ? (size_t)(hi - sp) : 0;
}

size_t greenlet_stack_size(const greenlet_t *g) {
  return g && !(g->flags & GREENLET__MAIN) ? g->stack_size : 0;
}

void *greenlet_reserved(const greenlet_t *g) {
  if (!g || !g->reserve || !g->stack.base || g->state != GREENLET__ACTIVE ||
      (g->flags & GREENLET__AWAY))
    return NULL;
  return g->stack.lo + g->stack.size - g->reserve;
}

void *greenlet_userdata(const greenlet_t *g) { return g ? g->userdata : NULL; }

void greenlet_set_userdata(greenlet_t *g, void *data) {
  if (g)
    g->userdata = data;
}

/* ---- introspection ----------------------------------------------------- */

int greenlet_foreach(greenlet_foreach_fn fn, void *arg) {
  if (!fn)
    return GREENLET_EINVAL;
  greenlet__tstate *ts = greenlet__tls;
  if (!ts)
    return 0; /* no greenlet on this thread yet; do not create main for it */
  for (greenlet_t *g = ts->all; g; g = g->all_next) {
    int rc = fn(g, arg);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Bytes of the running greenlet's own stack in use, up to the caller. */
static size_t running_in_use(const greenlet_t *g) {
  if (!g->stack.base)
    return 0; /* main: its thread's stack is not counted */
  const char *hi = g->stack.lo + g->stack.size - g->reserve;
  const char *sp = __builtin_frame_address(0);
  return sp < hi && sp >= g->stack.lo ? (size_t)(hi - sp) : 0;
}

int greenlet_thread_stats(greenlet_stats_t *out) {
  if (!out)
    return GREENLET_EINVAL;
  memset(out, 0, sizeof *out);
  greenlet__tstate *ts = greenlet__tls;
  if (!ts)
    return 0;
  out->threads = 1;
  out->created = ts->created;
  out->switches = ts->switches;
  out->live = ts->nlive + 1; /* + main: it lives while its thread does */
  out->stacks = ts->nstacks;
  out->stack_reserved = (size_t)ts->stack_bytes;
  for (greenlet_t *g = ts->all; g; g = g->all_next) {
    out->records++;
    if (g->stack.base && g != ts->dying)
      out->stack_in_use +=
          g == ts->current ? running_in_use(g) : greenlet_stack_in_use(g);
  }
  return 0;
}

int greenlet_process_stats(greenlet_stats_t *out) {
  if (!out)
    return GREENLET_EINVAL;
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&greenlet__threads_lock);
  out->created = retired_created;
  out->switches = retired_switches;
  for (greenlet__tstate *t = greenlet__threads; t; t = t->reg_next) {
    /* alive changes under t->lock only at exit, after which the counters
     * below are final; a stale read just counts an exiting thread once
     * more. */
    int alive = __atomic_load_n(&t->alive, __ATOMIC_RELAXED);
    out->threads += alive != 0;
    out->created += stat_get(&t->created);
    out->switches += stat_get(&t->switches);
    out->live += stat_get(&t->nlive) + (alive != 0);
    out->stacks += stat_get(&t->nstacks);
    out->stack_reserved += (size_t)stat_get(&t->stack_bytes);
  }
  pthread_mutex_unlock(&greenlet__threads_lock);
  return 0;
}

/* The lowest resident page of [lo, lo + size) (mincore), or NULL if none is
 * or mincore fails: how deep a stack has been touched since its pages were
 * last given back.  Scanned upwards in chunks from the deep end; a fixed
 * buffer keeps 1 GiB stacks off the heap. */
static const char *lowest_resident(const char *lo, size_t size) {
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t a = ((uintptr_t)lo + page - 1) & ~(page - 1);
  const uintptr_t e = (uintptr_t)lo + size;
  unsigned char vec[512];
  while (a < e) {
    size_t pages = (e - a + page - 1) / page;
    if (pages > sizeof vec)
      pages = sizeof vec;
    size_t len = pages * page;
    if (len > e - a)
      len = e - a;
    if (mincore((void *)a, len, vec) != 0)
      return NULL;
    for (size_t i = 0; i < pages; i++)
      if (vec[i] & 1)
        return (const char *)(a + i * page);
    a += pages * page;
  }
  return NULL;
}

size_t greenlet_stack_high_water(const greenlet_t *g) {
  if (!g || !g->stack.base || g->state != GREENLET__ACTIVE)
    return 0;
  const char *top = g->stack.lo + g->stack.size - g->reserve;
  const char *p = lowest_resident(g->stack.lo, g->stack.size - g->reserve);
  return p && p < top ? (size_t)(top - p) : 0;
}

const char *greenlet_strerror(int code) {
  switch (code) {
  case GREENLET_OK:
    return "resumed with a value";
  case GREENLET_ERROR:
    return "resumed with an error";
  case GREENLET_EXIT:
    return "asked to exit";
  case GREENLET_EINVAL:
    return "invalid argument";
  case GREENLET_ENOMEM:
    return "out of memory";
  case GREENLET_ETHREAD:
    return "greenlet belongs to another thread";
  case GREENLET_ECYCLE:
    return "cyclic parent chain";
  case GREENLET_EBUSY:
    return "greenlet is running or suspended";
  case GREENLET_EMAPLIMIT:
    return "vm.max_map_count reached";
  default:
    return "unknown code";
  }
}

const char *greenlet_guard_mode(void) { return greenlet__guard_mode(); }
