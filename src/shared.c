/*
 * shared.c - shared stacks: which slot a greenlet runs on, and moving its
 * bytes out of the slot and back (see shared.h).  The switch that needs a
 * move is greenlet.c's (the switcher); this file never switches.
 */
#define _GNU_SOURCE
#include "fault.h"
#include "internal.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(GREENLET_VALGRIND) && GREENLET_VALGRIND
#include <valgrind/memcheck.h>
#define MAKE_WRITABLE(p, n) VALGRIND_MAKE_MEM_UNDEFINED(p, n)
#else
#define MAKE_WRITABLE(p, n) ((void)(p), (void)(n))
#endif

#define SHARED_DEFAULT 128u
#define SHARED_MAX 65536u
/* Free slots kept mapped (with their pages) per thread; more are given
 * back to the stack pool. */
#define FREE_KEEP 8u

static atomic_uint max_slots; /* 0: not read from the environment yet */
static greenlet_move_hooks_t hooks;

int greenlet_set_shared_stacks(unsigned n) {
  if (n == 0 || n > SHARED_MAX)
    return GREENLET_EINVAL;
  atomic_store_explicit(&max_slots, n, memory_order_relaxed);
  return 0;
}

static unsigned slots_wanted(void) {
  unsigned n = atomic_load_explicit(&max_slots, memory_order_relaxed);
  if (n)
    return n;
  n = SHARED_DEFAULT;
  const char *e = getenv("CGREENLET_SHARED_STACKS");
  if (e && *e) {
    char *end;
    unsigned long v = strtoul(e, &end, 10);
    if (*end == '\0' && v > 0 && v <= SHARED_MAX)
      n = (unsigned)v;
  }
  unsigned zero = 0;
  atomic_compare_exchange_strong(&max_slots, &zero, n);
  return atomic_load_explicit(&max_slots, memory_order_relaxed);
}

void greenlet_set_move_hooks(const greenlet_move_hooks_t *h) {
  if (h)
    hooks = *h;
  else
    memset(&hooks, 0, sizeof hooks);
}

/* ---- slots -------------------------------------------------------------- */

static void slot_counted(greenlet__tstate *ts, const greenlet__slot *s,
                         int sign) {
  greenlet__stat_add(&ts->nstacks, sign);
  greenlet__stat_add(&ts->stack_bytes, sign * (long long)s->stack.size);
}

/* Maps a new slot of `size` usable bytes and lists it. */
static int slot_new(greenlet__tstate *ts, size_t size, greenlet__slot **out) {
  greenlet__shared *sh = &ts->shared;
  if (sh->nslots == sh->cap) {
    size_t cap = sh->cap ? sh->cap * 2 : 16;
    greenlet__slot **v =
        greenlet__fault_hit() ? NULL : realloc(sh->slots, cap * sizeof *v);
    if (!v)
      return GREENLET_ENOMEM;
    sh->slots = v;
    sh->cap = cap;
  }
  greenlet__slot *s = greenlet__fault_hit() ? NULL : calloc(1, sizeof *s);
  if (!s)
    return GREENLET_ENOMEM;
  int rc = greenlet__stack_get(&ts->pool, size, &s->stack);
  if (rc != 0) {
    free(s);
    return rc;
  }
  sh->slots[sh->nslots++] = s;
  slot_counted(ts, s, 1);
  *out = s;
  return 0;
}

/* Unlists a free slot and gives its stack to the pool. */
static void slot_drop(greenlet__tstate *ts, greenlet__slot *s) {
  greenlet__shared *sh = &ts->shared;
  for (size_t i = 0; i < sh->nslots; i++)
    if (sh->slots[i] == s) {
      sh->slots[i] = sh->slots[--sh->nslots];
      break;
    }
  slot_counted(ts, s, -1);
  greenlet__stack_put(&ts->pool, &s->stack);
  free(s);
}

/* Takes the first free slot of `size` off the free list, or NULL. */
static greenlet__slot *free_take(greenlet__shared *sh, size_t size) {
  for (greenlet__slot **p = &sh->free; *p; p = &(*p)->next_free)
    if ((*p)->stack.size == size) {
      greenlet__slot *s = *p;
      *p = s->next_free;
      sh->nfree--;
      return s;
    }
  return NULL;
}

/*
 * The slot a starting greenlet of `size` gets: a free one; else a new one
 * while the thread has fewer than the limit; else the next busy one of that
 * size, round-robin (so greenlets spread evenly over the slots).
 */
static int slot_pick(greenlet__tstate *ts, size_t size, greenlet__slot **out) {
  greenlet__shared *sh = &ts->shared;
  greenlet__slot *s = free_take(sh, size);
  if (s) {
    *out = s;
    return 0;
  }
  if (sh->nslots < slots_wanted())
    return slot_new(ts, size, out);
  for (size_t n = 0; n < sh->nslots; n++) {
    s = sh->slots[sh->cursor++ % sh->nslots];
    if (s->stack.size == size && s->nbound > 0) {
      *out = s;
      return 0;
    }
  }
  /* Every slot is of another size (or free of another size). */
  if (sh->free) {
    s = sh->free;
    sh->free = s->next_free;
    sh->nfree--;
    slot_drop(ts, s);
  }
  return slot_new(ts, size, out);
}

/* Where g's C stack starts (its reserve is above). */
static inline char *c_top(const greenlet_t *g) {
  return g->stack.lo + g->stack.size - g->reserve;
}

int greenlet__shared_start(greenlet__tstate *ts, greenlet_t *g) {
  greenlet__slot *s;
  int rc = slot_pick(ts, g->stack_size, &s);
  if (rc != 0)
    return rc;
  g->slot = s;
  g->stack = s->stack;
  g->saved = NULL;
  g->saved_len = 0;
  s->nbound++;
  if (s->resident) {
    g->flags |= GREENLET__AWAY; /* the switcher lays it out */
    return 0;
  }
  if (greenlet__context_make(&g->ctx, g->stack.lo,
                             g->stack.size - g->reserve) != 0) {
    greenlet__shared_release(ts, g);
    return GREENLET_ENOMEM;
  }
  s->resident = g;
  return 0;
}

/* ---- moving bytes ------------------------------------------------------ */

/* Slot memory is a stack: ASan may have left redzones of frames that never
 * returned (their owner was copied out), and Valgrind marks what lies below
 * a stack pointer as unaddressable.  The bytes being moved are in use by
 * the greenlet they belong to, so ASan is told they are plain memory
 * before they are read or written, and Valgrind before they are written
 * (the copy then carries their definedness). */
static inline void slot_bytes_readable(char *p, size_t n) {
#ifdef GREENLET_ASAN
  __asan_unpoison_memory_region(p, n);
#endif
  (void)p, (void)n;
}

static inline void slot_bytes_writable(char *p, size_t n) {
  slot_bytes_readable(p, n);
  MAKE_WRITABLE(p, n);
}

static inline ptrdiff_t distance(const void *from, const void *to) {
  return (ptrdiff_t)((uintptr_t)to - (uintptr_t)from);
}

/* Copies the resident r of its slot to the heap. */
static int evict(greenlet_t *r) {
  char *sp = greenlet__context_sp(&r->ctx);
  char *hi = c_top(r);
  if (r->reserve && hooks.reserve_in_use) {
    size_t used = hooks.reserve_in_use(r);
    hi += used < r->reserve ? used : r->reserve;
  }
  size_t len = (size_t)(hi - sp);
  char *copy = greenlet__fault_hit() ? NULL : malloc(len ? len : 1);
  if (!copy)
    return GREENLET_ENOMEM;
  slot_bytes_readable(sp, len);
  memcpy(copy, sp, len);
  r->saved = copy;
  r->saved_len = len;
  r->flags |= GREENLET__AWAY;
  r->slot->resident = NULL;
  if (hooks.moved)
    hooks.moved(r, sp, hi, distance(sp, copy));
  return 0;
}

/* Copies t's bytes back into its slot (or lays it out, if it never ran). */
static int restore(greenlet_t *t) {
  if (t->saved) {
    char *sp = greenlet__context_sp(&t->ctx);
    slot_bytes_writable(sp, t->saved_len);
    memcpy(sp, t->saved, t->saved_len);
    if (hooks.moved)
      hooks.moved(t, t->saved, t->saved + t->saved_len,
                  distance(t->saved, sp));
    free(t->saved);
    t->saved = NULL;
    t->saved_len = 0;
  } else if (greenlet__context_make(&t->ctx, t->stack.lo,
                                    t->stack.size - t->reserve) != 0) {
    return GREENLET_ENOMEM;
  }
  t->flags &= (unsigned char)~GREENLET__AWAY;
  t->slot->resident = t;
  return 0;
}

int greenlet__shared_bring_in(greenlet_t *to) {
  greenlet__slot *s = to->slot;
  greenlet_t *r = s->resident;
  if (r && r != to) {
    if (r->state == GREENLET__DEAD) {
      s->resident = NULL; /* finished: nothing of it to keep */
    } else {
      int rc = evict(r);
      if (rc != 0)
        return rc;
    }
  }
  /* Laying out a context fails only with ucontext (getcontext); the
   * evicted resident then simply stays away. */
  return (to->flags & GREENLET__AWAY) ? restore(to) : 0;
}

void greenlet__shared_release(greenlet__tstate *ts, greenlet_t *g) {
  greenlet__slot *s = g->slot;
  free(g->saved);
  g->saved = NULL;
  g->saved_len = 0;
  g->flags &= (unsigned char)~GREENLET__AWAY;
  g->slot = NULL;
  memset(&g->stack, 0, sizeof g->stack);
  if (!s)
    return;
  if (s->resident == g)
    s->resident = NULL;
  if (--s->nbound > 0 || !ts->alive)
    return;
  greenlet__shared *sh = &ts->shared;
  if (sh->nfree >= FREE_KEEP) {
    slot_drop(ts, s);
    return;
  }
  s->next_free = sh->free;
  sh->free = s;
  sh->nfree++;
}

void greenlet__shared_clear(greenlet__tstate *ts) {
  greenlet__shared *sh = &ts->shared;
  for (size_t i = 0; i < sh->nslots; i++) {
    slot_counted(ts, sh->slots[i], -1);
    greenlet__pool_retire(&ts->pool, &sh->slots[i]->stack);
    free(sh->slots[i]);
  }
  free(sh->slots);
  sh->slots = NULL;
  sh->nslots = sh->cap = sh->nfree = 0;
  sh->free = NULL;
  if (sh->sw_stack.base) {
    greenlet__pool_retire(&ts->pool, &sh->sw_stack);
    memset(&sh->sw_stack, 0, sizeof sh->sw_stack);
  }
#ifdef GREENLET_TSAN
  if (sh->sw_fiber) {
    __tsan_destroy_fiber(sh->sw_fiber);
    sh->sw_fiber = NULL;
  }
#endif
}
