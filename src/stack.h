/*
 * stack.h - guarded greenlet stacks, a per-thread pool, and the overflow
 * reporter.
 *
 * Each stack is one anonymous mapping: a guard region at the low end, then
 * the usable bytes.  The guard is installed with MADV_GUARD_INSTALL where the
 * kernel has it (Linux 6.13+), which adds no VMA, so neighbouring stacks merge
 * into one mapping and a million of them stay far below vm.max_map_count.
 * Elsewhere it falls back to mprotect(PROT_NONE), which costs two VMAs per
 * stack.
 */
#ifndef GREENLET_STACK_H
#define GREENLET_STACK_H

#include <stddef.h>

typedef struct greenlet__stack {
  char *base;       /* start of the mapping (the guard) */
  size_t map_size;  /* guard + usable */
  char *lo;         /* lowest usable byte */
  size_t size;      /* usable bytes; the stack grows down from lo + size */
  unsigned vg_id;   /* Valgrind stack id */
  unsigned char cold; /* pages given back while pooled */
} greenlet__stack;

#define GREENLET__POOL_MAX 64 /* stacks kept mapped per thread */
#define GREENLET__POOL_HOT 8  /* of which this many keep their pages */

/*
 * A thread's spare stacks.  `items` is the pool proper (newest last).  With
 * MADV_GUARD_INSTALL guards, neighbouring stacks share one VMA, and
 * unmapping one from the middle would split it: freed in a scattered order,
 * a few hundred thousand stacks would exhaust vm.max_map_count.  So in that
 * mode a stack released into a full pool is not unmapped but handed to the
 * process-wide purger (stack.c), which gives its pages back and lets any
 * thread reuse it, or, without the purger (CGREENLET_PURGE=sync), kept in
 * `spill`, pages given back.  Its address space is reused by later stacks.
 * Kept free stacks still hold page tables, so past a budget of those
 * (stack.c: KEEP_MAX) the excess is unmapped in contiguous runs that split
 * no VMA needlessly (trim_plan).  The rest is unmapped at the exit of the
 * thread that released it, in address order, one munmap per contiguous run,
 * together with the purger's free stacks that lie between two of its own
 * (so that the exit leaves no fragments behind; stacks other threads
 * released otherwise stay).
 */
typedef struct greenlet__pool {
  unsigned count;
  greenlet__stack items[GREENLET__POOL_MAX];
  greenlet__stack *spill;
  size_t nspill, capspill;
  size_t spill_kept, spill_retry; /* free stacks' charge (stack.c: KEEP_MAX) */
  size_t npurge; /* stacks this pool released that the purger holds */
} greenlet__pool;

/* Rounds a requested usable size up to whole pages. */
__attribute__((visibility("hidden"))) size_t greenlet__stack_round(size_t size);

/* Takes a stack of exactly `size` usable bytes (already rounded) from the
 * pool, or maps a new one.  Returns 0, GREENLET_ENOMEM or GREENLET_EMAPLIMIT. */
__attribute__((visibility("hidden"))) int
greenlet__stack_get(greenlet__pool *pool, size_t size, greenlet__stack *out);

/* Gives a stack nobody runs on back to the pool (or unmaps it). */
__attribute__((visibility("hidden"))) void
greenlet__stack_put(greenlet__pool *pool, greenlet__stack *st);

/* Unmaps a stack at once. */
__attribute__((visibility("hidden"))) void
greenlet__stack_unmap(greenlet__stack *st);

/* Hands a stack to the pool for unmapping by greenlet__pool_clear() (thread
 * exit: its pages are about to go anyway). */
__attribute__((visibility("hidden"))) void
greenlet__pool_retire(greenlet__pool *pool, greenlet__stack *st);

/* Thread exit: unmaps every stack the pool holds and those it released to
 * the purger, in address order (no VMA splits). */
__attribute__((visibility("hidden"))) void
greenlet__pool_clear(greenlet__pool *pool);

/* "madvise" or "mprotect". */
__attribute__((visibility("hidden"))) const char *greenlet__guard_mode(void);

/* Installs (once per process) the SIGSEGV handler that reports guard hits,
 * and gives the calling thread an alternate signal stack if it has none.
 * Returns the mapping it created for the thread (to be passed to
 * greenlet__altstack_free at thread exit) or NULL. */
__attribute__((visibility("hidden"))) void *greenlet__overflow_setup(void);
__attribute__((visibility("hidden"))) void greenlet__altstack_free(void *alt);

#endif /* GREENLET_STACK_H */
