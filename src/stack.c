/*
 * stack.c - mapping, guarding and pooling greenlet stacks.
 */
#define _GNU_SOURCE
#include "stack.h"

#include "cgreenlet.h"
#include "sanitizer.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13 uapi value */
#endif

/* Guard below each stack.  It costs address space only, so it is larger than
 * one page: a frame that skips one page still lands in it. */
#define GUARD_SIZE ((size_t)16 * 1024)

enum { GUARD_MADVISE = 1, GUARD_MPROTECT = 2 };

static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static int guard_mode;
static int guard_forced; /* mprotect chosen by CGREENLET_GUARD */
static size_t page_size;

/*
 * Does reading the page at p fault?  Checked without a signal: write(2) from
 * an inaccessible buffer fails with EFAULT.  Some emulators (qemu-user 7.2)
 * accept MADV_GUARD_INSTALL and do nothing; this catches them.
 */
static int guard_faults(const void *p) {
  int fds[2];
  if (pipe(fds) != 0)
    return 0;
  ssize_t n = write(fds[1], p, 1);
  int faulted = n < 0 && errno == EFAULT;
  close(fds[0]);
  close(fds[1]);
  return faulted;
}

/*
 * Picks the guard mechanism once per process: MADV_GUARD_INSTALL if the
 * kernel accepts it on a probe mapping, unless CGREENLET_GUARD=mprotect asks
 * for the fallback (the tests use it to exercise the map-count limit).
 */
static void guard_probe(void) {
  page_size = (size_t)sysconf(_SC_PAGESIZE);
  const char *env = getenv("CGREENLET_GUARD");
  guard_mode = GUARD_MPROTECT;
  if (env && strcmp(env, "mprotect") == 0) {
    guard_forced = 1;
    return;
  }
  void *p = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return;
  if (madvise(p, page_size, MADV_GUARD_INSTALL) == 0 && guard_faults(p))
    guard_mode = GUARD_MADVISE;
  munmap(p, 2 * page_size);
}

const char *greenlet__guard_mode(void) {
  pthread_once(&guard_once, guard_probe);
  return guard_mode == GUARD_MADVISE ? "madvise" : "mprotect";
}

size_t greenlet__stack_round(size_t size) {
  pthread_once(&guard_once, guard_probe);
  return (size + page_size - 1) & ~(page_size - 1);
}

static long read_max_map_count(void) {
  long v = 65530;
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  if (f) {
    if (fscanf(f, "%ld", &v) != 1)
      v = 65530;
    fclose(f);
  }
  return v;
}

static long count_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f)
    return -1;
  long n = 0;
  int c;
  while ((c = getc(f)) != EOF)
    n += c == '\n';
  fclose(f);
  return n;
}

/*
 * Called when a mapping or mprotect failed with ENOMEM under mprotect guards:
 * if the process is at vm.max_map_count, say so once (the usual cause, since
 * every guarded stack costs two VMAs there) and report EMAPLIMIT.
 */
static int map_failure(void) {
  if (guard_mode != GUARD_MPROTECT)
    return GREENLET_ENOMEM;
  long max = read_max_map_count(), n = count_maps();
  if (n < 0 || n + 16 < max)
    return GREENLET_ENOMEM;
  static int warned;
  if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
    fprintf(stderr,
            "cgreenlet: cannot map another guarded stack: the process has %ld "
            "mappings and vm.max_map_count is %ld. %s, so each stack's "
            "mprotect guard page costs a mapping of its own (about %ld stacks "
            "at most). Raise the limit (sysctl vm.max_map_count=N)%s.\n",
            n, max,
            guard_forced ? "CGREENLET_GUARD=mprotect chose mprotect guards"
                         : "This kernel has no MADV_GUARD_INSTALL (Linux 6.13+)",
            max / 2, guard_forced ? "" : " or use a newer kernel");
  return GREENLET_EMAPLIMIT;
}

static int stack_map(size_t size, greenlet__stack *out) {
  size_t map_size = GUARD_SIZE + size;
  char *base = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1,
                    0);
  if (base == MAP_FAILED)
    return errno == ENOMEM ? map_failure() : GREENLET_ENOMEM;
  int rc = guard_mode == GUARD_MADVISE
               ? madvise(base, GUARD_SIZE, MADV_GUARD_INSTALL)
               : mprotect(base, GUARD_SIZE, PROT_NONE);
  if (rc != 0) {
    int err = errno;
    munmap(base, map_size);
    return err == ENOMEM ? map_failure() : GREENLET_ENOMEM;
  }
  out->base = base;
  out->map_size = map_size;
  out->lo = base + GUARD_SIZE;
  out->size = size;
  out->cold = 0;
  out->vg_id = GREENLET__VALGRIND_STACK_REGISTER(out->lo, out->lo + size);
  return 0;
}

/* Frames that never returned (the entry frame of a finished greenlet, all
 * frames of a discarded one) leave ASan redzones poisoned; clear them before
 * the memory is reused or unmapped. */
static void unpoison(greenlet__stack *st) {
#ifdef GREENLET_ASAN
  __asan_unpoison_memory_region(st->lo, st->size);
#else
  (void)st;
#endif
}

void greenlet__stack_unmap(greenlet__stack *st) {
  if (!st->base)
    return;
  unpoison(st);
  GREENLET__VALGRIND_STACK_DEREGISTER(st->vg_id);
  munmap(st->base, st->map_size);
  st->base = NULL;
}

static int list_push(greenlet__stack **list, size_t *n, size_t *cap,
                     const greenlet__stack *st) {
  if (*n == *cap) {
    size_t c = *cap ? 2 * *cap : 256;
    greenlet__stack *p = realloc(*list, c * sizeof *p);
    if (!p)
      return -1;
    *list = p;
    *cap = c;
  }
  (*list)[(*n)++] = *st;
  return 0;
}

static int spill_push(greenlet__pool *pool, const greenlet__stack *st) {
  return list_push(&pool->spill, &pool->nspill, &pool->capspill, st);
}

/*
 * Giving pages back (MADV_DONTNEED) is the slow part of releasing a stack:
 * a syscall plus a page-table walk and TLB work per touched page, tens of
 * microseconds on some VMs.  With madvise guards, stacks that fall out of a
 * full pool therefore go to a process-wide purger thread: it gives their
 * pages back off the releasing thread's path and lists them as clean, for
 * any thread to reuse.  A stack asked for before its turn comes is taken
 * back from the dirty list, pages and all.  CGREENLET_PURGE=sync (or a
 * failure to start the thread) gives pages back inline instead.
 */
static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake, idle;
  greenlet__stack *dirty, *clean;
  size_t ndirty, capdirty, nclean, capclean;
  int state;    /* 0: not started, 1: running, -1: inline (sync) */
  int sleeping; /* the purger waits for work (wake it: a syscall) */
  int busy;     /* the purger holds a batch */
} purge = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
           PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0, 0, 0, 0, 0};


/* Takes a stack of `size` from list, if any (caller holds purge.lock). */
static int list_take(greenlet__stack *list, size_t *n, size_t size,
                     greenlet__stack *out) {
  for (size_t i = *n; i-- > 0;) {
    if (list[i].size == size) {
      *out = list[i];
      list[i] = list[--*n];
      return 1;
    }
  }
  return 0;
}

static void *purger(void *arg) {
  (void)arg;
  greenlet__stack *batch = NULL;
  size_t nbatch = 0, capbatch = 0;
  pthread_mutex_lock(&purge.lock);
  for (;;) {
    while (purge.ndirty == 0) {
      purge.sleeping = 1;
      pthread_cond_wait(&purge.wake, &purge.lock);
      purge.sleeping = 0;
    }
    /* Swap the dirty list out: releasers go on while this one works. */
    greenlet__stack *t = purge.dirty;
    size_t tc = purge.capdirty;
    purge.dirty = batch;
    purge.capdirty = capbatch;
    batch = t;
    capbatch = tc;
    nbatch = purge.ndirty;
    purge.ndirty = 0;
    purge.busy = 1;
    pthread_mutex_unlock(&purge.lock);
    for (size_t i = 0; i < nbatch; i++) {
      madvise(batch[i].lo, batch[i].size, MADV_DONTNEED);
      batch[i].cold = 1;
    }
    pthread_mutex_lock(&purge.lock);
    for (size_t i = 0; i < nbatch; i++)
      if (list_push(&purge.clean, &purge.nclean, &purge.capclean, &batch[i]))
        greenlet__stack_unmap(&batch[i]); /* no memory: let it go */
    purge.busy = 0;
    pthread_cond_broadcast(&purge.idle);
  }
  return NULL;
}

/* fork(): the child has no purger thread (the next release starts one), and
 * must not inherit the lock held. */
static void purge_prefork(void) { pthread_mutex_lock(&purge.lock); }
static void purge_postfork_parent(void) { pthread_mutex_unlock(&purge.lock); }
static void purge_postfork_child(void) {
  pthread_mutex_init(&purge.lock, NULL);
  pthread_cond_init(&purge.wake, NULL);
  pthread_cond_init(&purge.idle, NULL);
  if (purge.state == 1)
    purge.state = 0;
  purge.sleeping = purge.busy = 0;
}

static pthread_once_t purge_once = PTHREAD_ONCE_INIT;
static void purge_init(void) {
  const char *env = getenv("CGREENLET_PURGE");
  if (env && strcmp(env, "sync") == 0)
    purge.state = -1;
  else
    pthread_atfork(purge_prefork, purge_postfork_parent, purge_postfork_child);
}

/* Queues a stack for the purger.  0, or -1: give its pages back inline. */
static int purge_push(const greenlet__stack *st) {
  pthread_once(&purge_once, purge_init);
  if (__atomic_load_n(&purge.state, __ATOMIC_ACQUIRE) < 0)
    return -1;
  pthread_mutex_lock(&purge.lock);
  if (purge.state == 0) {
    pthread_t t;
    pthread_attr_t attr;
    int ok = pthread_attr_init(&attr) == 0;
    if (ok) {
      pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
      pthread_attr_setstacksize(&attr, 64 * 1024);
      /* The purger takes no signal meant for the program. */
      sigset_t all, old;
      sigfillset(&all);
      pthread_sigmask(SIG_SETMASK, &all, &old);
      ok = pthread_create(&t, &attr, purger, NULL) == 0;
      pthread_sigmask(SIG_SETMASK, &old, NULL);
      pthread_attr_destroy(&attr);
    }
    __atomic_store_n(&purge.state, ok ? 1 : -1, __ATOMIC_RELEASE);
  }
  int rc = -1;
  if (purge.state == 1 &&
      list_push(&purge.dirty, &purge.ndirty, &purge.capdirty, st) == 0) {
    rc = 0;
    if (purge.sleeping)
      pthread_cond_signal(&purge.wake);
  }
  pthread_mutex_unlock(&purge.lock);
  return rc;
}

/* A stack of `size` from the purger's lists (clean ones first). */
static int purge_take(size_t size, greenlet__stack *out) {
  pthread_once(&purge_once, purge_init);
  if (__atomic_load_n(&purge.state, __ATOMIC_ACQUIRE) <= 0)
    return 0; /* nothing was ever queued */
  pthread_mutex_lock(&purge.lock);
  int got = list_take(purge.clean, &purge.nclean, size, out) ||
            list_take(purge.dirty, &purge.ndirty, size, out);
  pthread_mutex_unlock(&purge.lock);
  return got;
}

int greenlet__stack_get(greenlet__pool *pool, size_t size,
                        greenlet__stack *out) {
  for (unsigned i = pool->count; i-- > 0;) {
    if (pool->items[i].size != size)
      continue;
    *out = pool->items[i];
    pool->count--;
    memmove(&pool->items[i], &pool->items[i + 1],
            (pool->count - i) * sizeof pool->items[0]);
    return 0;
  }
  if (list_take(pool->spill, &pool->nspill, size, out) ||
      purge_take(size, out))
    return 0;
  pthread_once(&guard_once, guard_probe);
  return stack_map(size, out);
}

/*
 * Pushes a stack on the pool.  The newest GREENLET__POOL_HOT stacks keep their
 * pages so that create/finish loops never fault; a stack that falls out of
 * that window gives its pages back with MADV_DONTNEED (once); a stack
 * released into a full pool is unmapped.
 */
void greenlet__stack_put(greenlet__pool *pool, greenlet__stack *st) {
  if (pool->count == GREENLET__POOL_MAX) {
    /* Full.  Unmapping from the middle of a merged VMA splits it (see
     * stack.h): with madvise guards keep the address space, not the pages. */
    if (guard_mode == GUARD_MADVISE) {
      unpoison(st);
      if (purge_push(st) == 0) {
        st->base = NULL;
        return;
      }
      madvise(st->lo, st->size, MADV_DONTNEED);
      st->cold = 1;
      if (spill_push(pool, st) == 0) {
        st->base = NULL;
        return;
      }
    }
    greenlet__stack_unmap(st);
    return;
  }
  unpoison(st);
  pool->items[pool->count++] = *st;
  st->base = NULL;
  if (pool->count > GREENLET__POOL_HOT) {
    greenlet__stack *old = &pool->items[pool->count - 1 - GREENLET__POOL_HOT];
    if (!old->cold) {
      madvise(old->lo, old->size, MADV_DONTNEED);
      old->cold = 1;
    }
  }
}

void greenlet__pool_retire(greenlet__pool *pool, greenlet__stack *st) {
  if (!st->base)
    return;
  if (spill_push(pool, st) == 0)
    st->base = NULL;
  else
    greenlet__stack_unmap(st);
}

static int by_address(const void *a, const void *b) {
  const greenlet__stack *x = a, *y = b;
  return (x->base > y->base) - (x->base < y->base);
}

/* Moves every stack the purger holds to the pool's spill list (thread
 * exit: unmapped there with the thread's own), once its batch is done. */
static void purge_drain(greenlet__pool *pool) {
  if (__atomic_load_n(&purge.state, __ATOMIC_ACQUIRE) <= 0)
    return;
  pthread_mutex_lock(&purge.lock);
  while (purge.busy)
    pthread_cond_wait(&purge.idle, &purge.lock);
  for (size_t i = 0; i < purge.ndirty; i++)
    if (spill_push(pool, &purge.dirty[i]) != 0)
      greenlet__stack_unmap(&purge.dirty[i]);
  for (size_t i = 0; i < purge.nclean; i++)
    if (spill_push(pool, &purge.clean[i]) != 0)
      greenlet__stack_unmap(&purge.clean[i]);
  purge.ndirty = purge.nclean = 0;
  pthread_mutex_unlock(&purge.lock);
}

/*
 * Thread exit.  The stacks the purger holds go too: address space comes
 * back to the process when a thread ends, as it would without the purger.
 */
void greenlet__pool_clear(greenlet__pool *pool) {
  purge_drain(pool);
  while (pool->count > 0) {
    greenlet__stack *st = &pool->items[--pool->count];
    if (spill_push(pool, st) != 0)
      greenlet__stack_unmap(st);
  }
  /* Lowest first: each unmap trims a merged VMA at its edge. */
  if (pool->nspill > 1)
    qsort(pool->spill, pool->nspill, sizeof *pool->spill, by_address);
  for (size_t i = 0; i < pool->nspill; i++)
    greenlet__stack_unmap(&pool->spill[i]);
  free(pool->spill);
  pool->spill = NULL;
  pool->nspill = pool->capspill = 0;
}
