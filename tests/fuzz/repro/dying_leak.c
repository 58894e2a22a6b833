/*
 * dying_leak.c - found by tests/fuzz/fuzz_core.c (its end-of-input check
 * that greenlet_thread_stats() reports no stack held; the fuzzer input is
 * stack-lost-back-to-back-finish.bin next to this file).
 *
 *   cc -O1 -Iinclude -Isrc -pthread tests/fuzz/repro/dying_leak.c \
 *      src/greenlet.c src/stack.c src/overflow.c src/fault.c \
 *      src/context_x86_64.S
 *
 * Two greenlets finishing back to back leak the first one's stack.
 *
 * A starts B (B's parent is A) and B returns at once: B's stack is parked
 * in ts->dying and A resumes inside greenlet_switch().  A then returns
 * straight away, without another library call: finish() sets ts->dying = A
 * and B's stack is never given back (neither pooled nor unmapped).  Each
 * round leaks one stack mapping (256 KiB + guard of address space, the
 * touched pages, and its Valgrind/ASan registrations).  The same happens
 * when B's result starts an unstarted parent that returns at once.
 *
 * Fix: finish() in src/greenlet.c releases the stack a greenlet that
 * finished before it left in ts->dying, first thing:
 *     flush_dying(ts);
 * (we run on g's stack, not on that one, so it can go to the pool).
 */
#include "cgreenlet.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ret_at_once(greenlet_t *self, void *arg, void **result) {
  (void)self;
  *result = arg;
  return GREENLET_OK;
}

static int start_child_then_return(greenlet_t *self, void *arg, void **result) {
  greenlet_t *b;
  void *v;
  if (greenlet_create(&b, ret_at_once, self, NULL) != 0 ||
      greenlet_switch(b, arg, &v) != GREENLET_OK || !greenlet_dead(b))
    abort();
  greenlet_destroy(b, 0); /* flushes dying (B), so not B's stack ... */
  *result = v;
  return GREENLET_OK;
}

static int start_child_return_now(greenlet_t *self, void *arg, void **result) {
  greenlet_t *b;
  void *v;
  if (greenlet_create(&b, ret_at_once, self, NULL) != 0 ||
      greenlet_switch(b, arg, &v) != GREENLET_OK)
    abort();
  /* ... but here: no library call between B's finish and ours. */
  greenlet_set_userdata(self, b); /* destroyed by main afterwards */
  *result = v;
  return GREENLET_OK;
}

static long vm_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmSize:", 7))
      kb = atol(line + 7);
  fclose(f);
  return kb;
}

static void rounds(greenlet_run_fn fn, const char *what) {
  long before = vm_kb();
  for (int r = 0; r < 2000; r++) {
    greenlet_t *a;
    void *v;
    if (greenlet_create(&a, fn, NULL, NULL) != 0 ||
        greenlet_switch(a, (void *)1, &v) != GREENLET_OK || v != (void *)1)
      abort();
    greenlet_t *b = greenlet_userdata(a);
    greenlet_destroy(a, 0);
    if (b)
      greenlet_destroy(b, 0);
  }
  printf("%-40s VmSize grew by %ld kB over 2000 rounds\n", what,
         vm_kb() - before);
}

int main(void) {
  rounds(start_child_then_return, "A destroys B, then returns:");
  rounds(start_child_return_now, "A returns right after B returned:");
  return 0;
}
