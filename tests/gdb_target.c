/* gdb_target.c - a greenlet stopped three calls deep, for tests/gdb_bt.sh. */
#include "cgreenlet.h"

#include <stdio.h>

__attribute__((noinline)) void stop_here(int depth) {
  __asm__ volatile("" ::: "memory");
  printf("inside greenlet at depth %d\n", depth);
}

__attribute__((noinline)) static void descend(int depth) {
  if (depth == 0)
    stop_here(3);
  else
    descend(depth - 1);
  __asm__ volatile("" ::: "memory");
}

static int body(greenlet_t *self, void *arg, void **result) {
  (void)self;
  (void)arg;
  (void)result;
  descend(2);
  return GREENLET_OK;
}

int main(void) {
  greenlet_t *g;
  if (greenlet_create(&g, body, NULL, NULL) != 0)
    return 1;
  return greenlet_switch(g, NULL, NULL) == GREENLET_OK ? 0 : 1;
}
