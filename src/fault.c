/*
 * fault.c - the allocation-failure counter (see fault.h).
 */
#include "fault.h"

atomic_int greenlet__fault_armed;
static atomic_long fault_seen;  /* allocations counted since the arm */
static atomic_long fault_target; /* the one of them to fail */
static atomic_int fault_fired;

int greenlet__fault_count(void) {
  long n = atomic_fetch_add(&fault_seen, 1);
  if (n != atomic_load(&fault_target))
    return 0;
  atomic_store(&fault_fired, 1);
  return 1;
}

void greenlet__fault_arm(long n) {
  atomic_store(&fault_seen, 0);
  atomic_store(&fault_fired, 0);
  atomic_store(&fault_target, n);
  atomic_store(&greenlet__fault_armed, 1);
}

long greenlet__fault_disarm(int *fired) {
  atomic_store(&greenlet__fault_armed, 0);
  if (fired)
    *fired = atomic_load(&fault_fired);
  return atomic_load(&fault_seen);
}
