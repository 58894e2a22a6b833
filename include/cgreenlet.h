/*
 * cgreenlet.h - greenlets for C programs.
 *
 * A greenlet is a stackful micro-thread with explicit switching.  Every OS
 * thread has an implicit *main* greenlet (the thread's own stack), created on
 * first use.  Every other greenlet runs on its own guarded stack and has a
 * *parent*: when its run function finishes, its result (a value or an error)
 * is delivered to the parent, or to the first live ancestor if the parent is
 * dead.
 *
 * Results of a resume.  greenlet_switch(), greenlet_throw() and greenlet_kill()
 * suspend the caller; when somebody resumes it again they return one of
 *
 *   GREENLET_OK     the resumer sent a value (*out = the value)
 *   GREENLET_ERROR  the resumer sent an error (*out = the error object)
 *   GREENLET_EXIT   the resumer asked this greenlet to exit (greenlet_kill);
 *                   the run function should unwind and return
 *
 * or, when the call was refused, a negative GREENLET_E* code; a refused call
 * changes nothing and the caller was not suspended.  So a caller can always
 * tell a value from an error from a usage mistake by the return code alone;
 * value and error pointers are opaque to the library and never inspected.
 *
 * Thread rules.  A greenlet belongs to the thread that created it.  Calls
 * that act on a greenlet of another (live) thread return GREENLET_ETHREAD and
 * change nothing.  greenlet_destroy() of a greenlet whose thread has exited
 * may be called from any thread.  The queries (greenlet_parent ...
 * greenlet_userdata) read the record without a lock: from another thread
 * they are safe only while the owner cannot change it (it has exited, or it
 * is blocked on something that orders memory, such as a join or a mutex).
 * Calling pthread_exit() while a non-main greenlet runs is not supported.
 */
#ifndef CGREENLET_H
#define CGREENLET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define GREENLET_API __attribute__((visibility("default")))
#else
#define GREENLET_API
#endif

#define GREENLET_VERSION_MAJOR 0
#define GREENLET_VERSION_MINOR 1
#define GREENLET_VERSION_PATCH 0

/* Outcomes of a resume (>= 0). */
#define GREENLET_OK 0
#define GREENLET_ERROR 1
#define GREENLET_EXIT 2

/* Refusals (< 0): nothing was changed. */
#define GREENLET_EINVAL (-1)   /* bad argument (NULL, main greenlet, ...) */
#define GREENLET_ENOMEM (-2)   /* out of memory or address space */
#define GREENLET_ETHREAD (-3)  /* greenlet belongs to another thread */
#define GREENLET_ECYCLE (-4)   /* new parent would make a cycle */
#define GREENLET_EBUSY (-5)    /* greenlet is running or suspended mid-run */
#define GREENLET_EMAPLIMIT (-6) /* vm.max_map_count reached (mprotect guards) */

typedef struct greenlet greenlet_t;

/*
 * The body of a greenlet.  It is called on the greenlet's own stack with the
 * value of the first switch into it.  It returns GREENLET_ERROR to deliver
 * *result as an error to the parent; any other return value (GREENLET_OK, or
 * GREENLET_EXIT after a kill) delivers *result as a value.  *result starts as
 * NULL.
 */
typedef int (*greenlet_run_fn)(greenlet_t *self, void *arg, void **result);

/* Creation attributes.  Zero-initialise (or use GREENLET_ATTR_INIT). */
typedef struct greenlet_attr {
  size_t stack_size; /* usable bytes; 0 = GREENLET_DEFAULT_STACK_SIZE */
  const char *name;  /* copied (first 31 bytes); shown in overflow reports */
  /* Bytes at the top of the stack set aside for the caller, above where the
   * C stack starts (see greenlet_reserved); 0 = none.  Rounded up to 16. */
  size_t reserve;
  unsigned flags; /* GREENLET_ATTR_* */
} greenlet_attr_t;

#define GREENLET_ATTR_INIT {0, NULL, 0, 0}

/*
 * A shared stack: the greenlet runs on one of a few stacks its thread keeps
 * for shared-stack greenlets of its stack size (greenlet_set_shared_stacks),
 * taking turns with the others bound to the same one.  While it is
 * suspended, the part of its stack in use (from its stack pointer to where
 * its C stack starts, plus the reserve's bytes in use, see
 * greenlet_move_hooks_t) may be copied to the heap to let another greenlet
 * run there, and is copied back before it resumes, at the same address.
 * So a suspended greenlet costs the bytes it uses, not pages and page
 * tables of its own, and a switch between greenlets on different stacks
 * copies nothing; but pointers into a suspended greenlet's stack are not
 * valid until it runs again (stock Python greenlet and libaco's copying
 * stacks have the same rule).  A switch that must copy can fail with
 * GREENLET_ENOMEM (nothing changed).
 */
#define GREENLET_ATTR_SHARED_STACK 1u
#define GREENLET_DEFAULT_STACK_SIZE ((size_t)256 * 1024)
#define GREENLET_MIN_STACK_SIZE ((size_t)16 * 1024)
#define GREENLET_MAX_STACK_SIZE ((size_t)1 << 30)

/*
 * Shared stacks (GREENLET_ATTR_SHARED_STACK).  A process-wide setting: how
 * many shared stacks of each stack size a thread keeps at most (default
 * 128, or the environment variable CGREENLET_SHARED_STACKS).  Up to that
 * many shared-stack greenlets of a thread each get a stack of their own
 * (no copying); past it they take turns.  Affects greenlets started after
 * the call.  Errors: EINVAL (n is 0 or above 65536).
 */
GREENLET_API int greenlet_set_shared_stacks(unsigned n);

/*
 * Hooks for shared-stack greenlets whose stacks hold data that other
 * memory points into (an interpreter's frames, say); process-wide, set once
 * before such greenlets start (NULL: none).  Both run on the thread that
 * owns g, inside a switch: they must not call into the library.
 *   reserve_in_use(g)   bytes at the low end of g's reserve that g uses
 *                       (copied with its C stack); NULL: none.
 *   moved(g, lo, hi, delta)  g's bytes [lo, hi) were just copied to
 *                       [lo + delta, hi + delta) (out to the heap or back
 *                       into place): move the pointers into [lo, hi) that
 *                       live outside the copy, and those the copy holds
 *                       that readers follow while g is suspended.
 */
typedef struct greenlet_move_hooks {
  size_t (*reserve_in_use)(greenlet_t *g);
  void (*moved)(greenlet_t *g, char *lo, char *hi, ptrdiff_t delta);
} greenlet_move_hooks_t;
GREENLET_API void greenlet_set_move_hooks(const greenlet_move_hooks_t *hooks);

/* The current greenlet of the calling thread (creating the thread's main
 * greenlet on first use).  NULL only if that first allocation fails. */
GREENLET_API greenlet_t *greenlet_current(void);

/* The calling thread's main greenlet (NULL only on allocation failure). */
GREENLET_API greenlet_t *greenlet_main(void);

/*
 * Create a greenlet that will call run() on its first switch.  parent NULL
 * means the current greenlet.  The stack is allocated when the greenlet
 * starts, not here.  On success stores the new greenlet in *out and returns 0.
 * Errors: EINVAL (out or run NULL, bad stack size), ETHREAD (parent of another
 * thread), ENOMEM.
 */
GREENLET_API int greenlet_create(greenlet_t **out, greenlet_run_fn run,
                                 greenlet_t *parent,
                                 const greenlet_attr_t *attr);

/*
 * Suspend the current greenlet and resume target with value.  If target is
 * dead the first live ancestor is resumed instead; if it has not started it
 * starts with run(target, value, ...).  Switching to the current greenlet
 * returns GREENLET_OK with *out = value at once.  out may be NULL.
 * Returns an outcome (see top) when resumed, or EINVAL, ETHREAD, ENOMEM (the
 * target's stack could not be allocated), EMAPLIMIT.
 */
GREENLET_API int greenlet_switch(greenlet_t *target, void *value, void **out);

/*
 * Like greenlet_switch(), but target's pending switch reports GREENLET_ERROR
 * with error.  A target that has not started is marked dead without running
 * and the error goes on to its parent.  Throwing into the current greenlet
 * returns GREENLET_ERROR with *out = error at once.
 */
GREENLET_API int greenlet_throw(greenlet_t *target, void *error, void **out);

/*
 * Ask target to exit and run it until it has finished unwinding: its pending
 * switch reports GREENLET_EXIT, and it should return from run.  Its parent is
 * first set to the current greenlet (unless that would make a cycle), so its
 * result comes back here: greenlet_kill() returns the outcome it delivers
 * (GREENLET_OK with its return value, or GREENLET_ERROR).  A greenlet that has
 * not started is marked dead without running; a dead one is left alone; both
 * return GREENLET_OK with *out = NULL.  If target switches away instead of
 * finishing, this returns whatever resumes the caller; check greenlet_dead().
 * Errors: EINVAL (NULL, main greenlet, the current greenlet), ETHREAD.
 */
GREENLET_API int greenlet_kill(greenlet_t *target, void **out);

#define GREENLET_DESTROY_DISCARD 1u

/*
 * Release the handle returned by greenlet_create().  The memory is freed once
 * no child greenlet refers to it as parent.  Each handle is destroyed once: a
 * second call is undefined (it is caught, as EINVAL, only while children
 * still keep the record).  A greenlet suspended mid-run is
 * refused with EBUSY unless flags has GREENLET_DESTROY_DISCARD, which frees its
 * stack without running it again: its pending C frames never return (any
 * resources they hold are leaked).  Errors: EINVAL (NULL, main greenlet),
 * EBUSY (the current greenlet, or suspended without DISCARD), ETHREAD (owner
 * thread still running).  After the owner thread has exited, any thread may
 * destroy its greenlets.
 */
GREENLET_API int greenlet_destroy(greenlet_t *g, unsigned flags);

/* Change g's parent.  Errors: EINVAL (NULL, g is a main greenlet), ETHREAD
 * (g or parent of another thread), ECYCLE.  A refused call changes nothing. */
GREENLET_API int greenlet_set_parent(greenlet_t *g, greenlet_t *parent);

/* Queries.  greenlet_parent() is NULL for a main greenlet. */
GREENLET_API greenlet_t *greenlet_parent(const greenlet_t *g);
/* started: has left the unstarted state, by running or by dying before it
 * ran (killed or thrown into); active: started and not dead. */
GREENLET_API int greenlet_started(const greenlet_t *g);
GREENLET_API int greenlet_active(const greenlet_t *g);
GREENLET_API int greenlet_dead(const greenlet_t *g);
GREENLET_API int greenlet_is_main(const greenlet_t *g);
GREENLET_API uint64_t greenlet_id(const greenlet_t *g); /* unique, from 1 */
GREENLET_API const char *greenlet_name(const greenlet_t *g); /* "" if none */
GREENLET_API int greenlet_owned_by_current_thread(const greenlet_t *g);

/* Bytes of g's C stack in use while it is suspended (0 while it runs, before
 * it starts and once dead; measured from where the C stack starts, below the
 * reserve; for a suspended main greenlet, from the top of its thread's
 * stack), and its usable stack size, reserve included (0 for main). */
GREENLET_API size_t greenlet_stack_in_use(const greenlet_t *g);
GREENLET_API size_t greenlet_stack_size(const greenlet_t *g);

/*
 * The reserve of attr->reserve bytes at the top of g's stack (16-byte
 * aligned), or NULL if it has none or has no stack (unstarted, dead, main).
 * It is there from the start of run until run returns, while g is suspended
 * too, and nothing else writes to it: a place for per-greenlet data that
 * should cost memory only where it is touched, next to the C stack (an
 * interpreter's frame stack, say).  Like the C stack, its pages may be
 * reused by another greenlet once g is dead.
 */
GREENLET_API void *greenlet_reserved(const greenlet_t *g);

/* Per-greenlet user data, NULL until set. */
GREENLET_API void *greenlet_userdata(const greenlet_t *g);
GREENLET_API void greenlet_set_userdata(greenlet_t *g, void *data);

/*
 * Introspection.  Nothing here changes a greenlet, and nothing here is on
 * the switch path but one per-thread counter increment, so it can stay on
 * in production (for monitoring, leak hunting, sizing stacks).
 */

/*
 * Calls fn(g, arg) for every greenlet record of the calling thread that has
 * not been freed: the main greenlet first, then the others in creation
 * order, whatever their state (unstarted, running, suspended, and dead ones
 * whose handle or a child still holds them).  Stops at the first nonzero
 * return of fn and returns it; 0 when all were visited.  fn must not
 * create, destroy, switch to, or reparent greenlets (it would change the
 * list being walked); collect what you need and act afterwards.  A thread
 * that never used the library has no greenlets: fn is not called.
 * Errors: EINVAL (fn NULL).
 */
typedef int (*greenlet_foreach_fn)(greenlet_t *g, void *arg);
GREENLET_API int greenlet_foreach(greenlet_foreach_fn fn, void *arg);

/* Counters, for one thread or the whole process. */
typedef struct greenlet_stats {
  uint64_t threads;  /* threads with a live greenlet state (thread: 0 or 1) */
  uint64_t created;  /* greenlet_create() successes (main greenlets not
                        counted); process: exited threads included */
  uint64_t switches; /* context switches: each time a switch, throw, kill or
                        a finishing greenlet handed the CPU to another
                        greenlet; process: exited threads included */
  uint64_t live;     /* greenlets not dead: main, unstarted, suspended and
                        running ones */
  uint64_t stacks;   /* stacks held: each started, not yet released
                        greenlet's own (a finished one until the next
                        call), and the thread's shared stacks (free ones
                        it keeps included) */
  size_t stack_reserved; /* usable bytes of those stacks (address space;
                            pooled spare stacks and main stacks excluded) */
  size_t stack_in_use;   /* thread only (0 in process scope): bytes in use
                            on those stacks, see greenlet_stack_in_use; the
                            running greenlet's up to the caller's frame */
  uint64_t records;      /* thread only (0 in process scope): greenlet
                            records not yet freed, main and dead ones still
                            held (by a handle or as a parent) included: a
                            handle leak shows here */
} greenlet_stats_t;

/*
 * Fills *out with the calling thread's counters (all zero if it never used
 * the library; this does not set it up).  Walks the thread's greenlets for
 * stack_in_use and records, so it costs O(greenlets).  Errors: EINVAL (out NULL).
 */
GREENLET_API int greenlet_thread_stats(greenlet_stats_t *out);

/*
 * The same counters summed over every thread (stack_in_use is 0: other
 * threads' stacks move while we look).  Safe from any thread; takes the
 * process-wide registry lock, and each figure is a snapshot that may be a
 * little stale for threads running meanwhile.  Errors: EINVAL (out NULL).
 */
GREENLET_API int greenlet_process_stats(greenlet_stats_t *out);

/*
 * How deep g's C stack has been touched: bytes from where the C stack
 * starts (below the reserve) down to the lowest page of it that is resident
 * (mincore), so a whole number of pages, rounded up to include the deepest
 * one.  It is a property of the stack's pages, not of g's frames:
 *   - a greenlet that took a stack recycled from the thread's pool with its
 *     pages kept (the few most recently freed ones) reports at least the
 *     depth earlier greenlets reached on it; a stack newly mapped, or whose
 *     pages were given back while pooled, starts from nothing;
 *   - pages swapped out are not counted.
 * 0 for a greenlet without a stack (main, unstarted, dead) or if mincore
 * fails.  One system call per 512 pages scanned, from the deep end up; no
 * cost until called.  For a running or suspended greenlet, >= its
 * greenlet_stack_in_use().
 */
GREENLET_API size_t greenlet_stack_high_water(const greenlet_t *g);

/* A static description of a return code. */
GREENLET_API const char *greenlet_strerror(int code);

/* The guard mechanism in use: "madvise" (MADV_GUARD_INSTALL), "mprotect". */
GREENLET_API const char *greenlet_guard_mode(void);

#ifdef __cplusplus
}
#endif
#endif /* CGREENLET_H */
