/*
 * shared.h - shared stacks: greenlets that take turns on a few stacks per
 * thread (GREENLET_ATTR_SHARED_STACK).
 *
 * A shared-stack greenlet is bound to one stack (a "slot") when it starts,
 * for its whole run: its frames must come back to the addresses they were
 * made at.  At most one greenlet bound to a slot has its bytes in place (the
 * slot's resident); the others are "away": the bytes they use are in a heap
 * copy, or (not yet run) nowhere.  Switching to an away greenlet goes
 * through the thread's switcher (greenlet.c), a small context of its own
 * that copies the resident out and the target in while neither runs.
 *
 * Why: a suspended greenlet then costs the bytes it uses, in dense heap
 * memory, instead of a page and a page-table page of its own; and while
 * there are few greenlets each has a slot to itself and nothing is copied.
 */
#ifndef GREENLET_SHARED_H
#define GREENLET_SHARED_H

#include "cgreenlet.h"
#include "context.h"
#include "sanitizer.h"
#include "stack.h"

typedef struct greenlet__slot {
  greenlet__stack stack;
  greenlet_t *resident; /* whose bytes are in place; NULL: nobody's */
  size_t nbound;        /* started, not yet released greenlets bound here */
  struct greenlet__slot *next_free; /* greenlet__shared.free */
} greenlet__slot;

typedef struct greenlet__shared {
  greenlet__slot **slots; /* every slot of the thread (unordered) */
  size_t nslots, cap;
  greenlet__slot *free; /* slots nobody is bound to, kept mapped */
  size_t nfree;
  size_t cursor; /* round-robin over busy slots once all are taken */
  /* The switcher (greenlet.c): its stack and context, and the switch it
   * is asked to finish. */
  greenlet__stack sw_stack;
  greenlet__context sw_ctx;
  greenlet_t *sw_from, *sw_to;
  void *sw_value;
  int sw_status;
  int sw_entering; /* its first entry comes through greenlet__entry */
#ifdef GREENLET_ASAN
  void *sw_fake;
#endif
  void *sw_fiber; /* TSan */
} greenlet__shared;

typedef struct greenlet__tstate greenlet__tstate;

/* Binds g (shared, unstarted) to a slot of its stack size.  If the slot is
 * empty g is laid out there (initial context) and becomes its resident;
 * otherwise g is marked away, to be laid out by the switcher.  Sets
 * g->stack to the slot's.  Returns 0, GREENLET_ENOMEM, GREENLET_EMAPLIMIT. */
__attribute__((visibility("hidden"))) int
greenlet__shared_start(greenlet__tstate *ts, greenlet_t *g);

/* Makes `to` (away) resident in its slot: copies the slot's resident out
 * (unless it is dead), then copies `to` back in, or lays it out if it never
 * ran.  Neither may be running.  Returns 0 or GREENLET_ENOMEM (nothing
 * changed). */
__attribute__((visibility("hidden"))) int
greenlet__shared_bring_in(greenlet_t *to);

/* g (shared) will never run again (finished, discarded, its thread exits):
 * frees its copy and unbinds it from its slot. */
__attribute__((visibility("hidden"))) void
greenlet__shared_release(greenlet__tstate *ts, greenlet_t *g);

/* Thread exit: gives every slot and the switcher's stack to the pool (the
 * greenlets were released first). */
__attribute__((visibility("hidden"))) void
greenlet__shared_clear(greenlet__tstate *ts);

#endif /* GREENLET_SHARED_H */
