/*
 * fault.h - allocation-failure injection, for tests.
 *
 * Every allocation site of the core (calloc, malloc, mmap of stacks and
 * signal stacks) asks greenlet__fault_hit() first and fails as if the
 * system had said no when it returns 1.  The Python module's test hook
 * routes CPython's allocators through the same counter, so one sequence
 * numbers the allocations of the core and of the module together.
 *
 * Off by default: a relaxed load and a branch at allocation sites, never
 * on the switch path.  A test arms it to fail the n-th allocation from now
 * (0-based), runs something, disarms it, and learns how many allocations
 * were counted: when that is at most n, the fault never fired and every
 * site of that run has been tried.
 */
#ifndef GREENLET_FAULT_H
#define GREENLET_FAULT_H

#include <stdatomic.h>

extern atomic_int greenlet__fault_armed
    __attribute__((visibility("hidden")));

/* Counts one allocation; 1 if it is the one to fail. */
int greenlet__fault_count(void) __attribute__((visibility("hidden")));

static inline int greenlet__fault_hit(void) {
  return atomic_load_explicit(&greenlet__fault_armed, memory_order_relaxed) &&
         greenlet__fault_count();
}

/* Fails the n-th allocation from now (n >= 0), in any thread. */
void greenlet__fault_arm(long n) __attribute__((visibility("hidden")));

/* Stops failing; returns how many allocations were counted since the arm
 * and sets *fired (if not NULL) to whether the fault was injected. */
long greenlet__fault_disarm(int *fired) __attribute__((visibility("hidden")));

#endif /* GREENLET_FAULT_H */
