/*
 * internal.h - the greenlet record and the per-thread state, shared by
 * greenlet.c (semantics, thread state) and overflow.c (the guard-page
 * reporter, which reads the current greenlet from a signal handler).
 */
#ifndef GREENLET_INTERNAL_H
#define GREENLET_INTERNAL_H

#include "cgreenlet.h"
#include "context.h"
#include "sanitizer.h"
#include "shared.h"
#include "stack.h"

#include <pthread.h>

enum { GREENLET__UNSTARTED = 0, GREENLET__ACTIVE = 1, GREENLET__DEAD = 2 };

enum {
  GREENLET__MAIN = 1u,     /* the thread's main greenlet */
  GREENLET__RELEASED = 2u, /* greenlet_destroy() was called on the handle */
  GREENLET__SHARED = 4u,   /* GREENLET_ATTR_SHARED_STACK */
  GREENLET__AWAY = 8u,     /* shared, active, bytes not in its slot (shared.h) */
};

typedef struct greenlet__tstate greenlet__tstate;

#define GREENLET__SPARE_MAX 64   /* freed records cached per thread */
#define GREENLET__ID_BLOCK 1024u /* ids taken from the global counter at once */

struct greenlet {
  greenlet__context ctx; /* first: the switch path touches it most */
  greenlet__tstate *ts;  /* owner thread; never changes */
  greenlet_t *parent;    /* strong reference; NULL only for main */
  greenlet_run_fn run;
  void *userdata;
  void **out; /* where the value resuming this greenlet goes (may be NULL) */
  greenlet__stack stack; /* base == NULL: no stack (unstarted, dead, main) */
  size_t stack_size;     /* usable size to allocate at start */
  size_t reserve;        /* top bytes of the stack kept for the caller */
  greenlet__slot *slot;  /* shared: the slot it runs on, once started */
  char *saved;           /* shared, away: the copy of its bytes, or NULL if
                            it never ran */
  size_t saved_len;
  unsigned long long id;
  int refcnt; /* 1 for the handle + 1 per child naming it parent */
  unsigned char state;
  unsigned char flags;
  greenlet_t *next; /* ts->spare: freed records kept for reuse */
  /* ts->all: every record not yet freed (main and dead ones included), in
   * creation order: thread exit, greenlet_foreach() and debuggers (gdb/). */
  greenlet_t *all_prev, *all_next;
#ifdef GREENLET_ASAN
  void *asan_fake;         /* fake stack saved while suspended */
  const void *asan_bottom; /* main greenlet: learnt on first switch away */
  size_t asan_size;
#endif
#ifdef GREENLET_TSAN
  void *tsan_fiber;
#endif
  char name[32];
};

struct greenlet__tstate {
  greenlet_t *current;
  greenlet_t *main;
  void *start_value; /* run()'s argument for a greenlet starting now */
  /* A greenlet that finished: it could not release the stack it ran on, so
   * the next call into the library returns it to the pool. */
  greenlet_t *dying;
  /* Context switches made on this thread (greenlet_thread_stats): here, in
   * the cache line the switch path touches anyway.  See `created`. */
  unsigned long long switches;
#ifdef GREENLET_ASAN
  greenlet_t *origin; /* the greenlet the last switch left */
#endif
  greenlet_t *all, *all_tail; /* every record not yet freed, oldest first */
  greenlet_t *spare; /* freed records kept for reuse (linked by next) */
  unsigned spare_count;
  unsigned long long next_id, end_id; /* this thread's block of ids */
  greenlet__pool pool;
  greenlet__shared shared;
  void *altstack;
  char *main_stack_hi; /* top of the thread's own stack (0 if unknown) */
  /* Lifetime: one reference for the running thread and one per greenlet
   * record.  After the thread has exited, records are freed from other
   * threads under `lock`. */
  pthread_mutex_t lock;
  int refcnt;
  int alive;
  /* Introspection (greenlet_thread_stats).  Written by the owner thread
   * only, with relaxed atomic stores, so greenlet_process_stats() may read
   * them from any thread; the switch path pays one increment. */
  unsigned long long created;  /* greenlet_create() successes */
  unsigned long long nlive;    /* unstarted + active greenlets, not main */
  unsigned long long nstacks;  /* greenlets holding a stack (dying too) */
  unsigned long long stack_bytes; /* their usable bytes */
  /* Process-wide registry (greenlet.c), under greenlet__threads_lock: a
   * state is listed from its creation until it is freed, i.e. past its
   * thread's exit while records of it are still held.  Debuggers walk it
   * from the symbol greenlet__threads (gdb/cgreenlet-gdb.py). */
  greenlet__tstate *reg_prev, *reg_next;
  int tid;    /* kernel thread id (what gdb shows as LWP) */
  int listed; /* on the registry (not before setup, nor in a fork child) */
};

/* A counter of the calling thread's state: only its owner writes it, so a
 * load and a relaxed store suffice (no locked instruction on the switch
 * path), and greenlet_process_stats() may read it from another thread. */
static inline void greenlet__stat_add(unsigned long long *c, long long d) {
  __atomic_store_n(c, *c + (unsigned long long)d, __ATOMIC_RELAXED);
}

extern greenlet__tstate *greenlet__threads
    __attribute__((visibility("hidden")));
extern pthread_mutex_t greenlet__threads_lock
    __attribute__((visibility("hidden")));

/* The calling thread's state (NULL until its first greenlet call).
 * initial-exec: the switch path reads it, and so does the SIGSEGV handler. */
extern __thread greenlet__tstate *greenlet__tls
    __attribute__((tls_model("initial-exec"), visibility("hidden")));

#endif /* GREENLET_INTERNAL_H */
