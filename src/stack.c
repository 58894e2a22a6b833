/*
 * stack.c - mapping, guarding and pooling greenlet stacks.
 */
#define _GNU_SOURCE
#include "stack.h"

#include "cgreenlet.h"
#include "fault.h"
#include "sanitizer.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
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
  char *base;
  if (greenlet__fault_hit()) {
    base = MAP_FAILED; /* injected (fault.h) */
    errno = ENOMEM;
  } else {
    base = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  }
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

/*
 * Frames that never returned (the entry frame of a finished greenlet, all
 * frames of a discarded one) leave ASan redzones poisoned; clear them before
 * the memory is reused or unmapped.  __asan_unpoison_memory_region() memsets
 * the shadow (an eighth of the range), which makes every shadow page of the
 * range resident for good: 1 MiB per 8 MiB stack, kept after the stack is
 * unmapped.  Zero shadow means addressable, so for the whole shadow pages the
 * range covers, MADV_DONTNEED (which reads back as zeros) does the same and
 * gives the pages back; only the partial pages at the ends are cleared.  As
 * ASan itself does for large ranges (its clear_shadow_mmap_threshold), only
 * past 64 KiB of shadow: below that a memset is cheaper than a syscall.
 */
#ifdef GREENLET_ASAN
#define SHADOW_RELEASE_MIN ((uintptr_t)64 * 1024)

static void unpoison_range(char *lo, size_t size) {
  size_t scale, off;
  uintptr_t a = (uintptr_t)lo, e = a + size;
  if (greenlet__asan_shadow_mapping(&scale, &off)) {
    uintptr_t pg = page_size;
    uintptr_t sb = (a >> scale) + off, se = (e >> scale) + off;
    uintptr_t pb = (sb + pg - 1) & ~(pg - 1), pe = se & ~(pg - 1);
    /* a and e are page aligned, so pb..pe maps back to whole granules. */
    if (pe > pb && pe - pb >= SHADOW_RELEASE_MIN &&
        madvise((void *)pb, pe - pb, MADV_DONTNEED) == 0) {
      uintptr_t ab = (pb - off) << scale, ae = (pe - off) << scale;
      if (ab > a)
        __asan_unpoison_memory_region(lo, ab - a);
      if (e > ae)
        __asan_unpoison_memory_region((void *)ae, e - ae);
      return;
    }
  }
  __asan_unpoison_memory_region(lo, size);
}
#else
static void unpoison_range(char *lo, size_t size) {
  (void)lo;
  (void)size;
}
#endif

static void unpoison(greenlet__stack *st) { unpoison_range(st->lo, st->size); }

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
    greenlet__stack *p =
        greenlet__fault_hit() ? NULL : realloc(*list, c * sizeof *p);
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

static void spill_trim(greenlet__pool *pool);

/* Takes a stack of `size` from list, if any. */
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

/*
 * How much free stack address space is kept for reuse.  A kept stack costs
 * no memory but its page tables: MADV_DONTNEED frees a page-table page only
 * when the range covers it whole and it holds no guard marker, and the
 * page-table page holding a stack's top also maps its neighbour's guard.  So
 * each kept stack keeps about one page-table page (4 KiB for an 8 MiB stack;
 * stacks smaller than what one page-table page maps share it).  Only munmap
 * frees them.  The free stacks kept (by the purger, or in a thread's spill
 * list) are therefore charged their estimated page tables: a page-table page
 * per stack, or the fraction of one the stack's mapping covers.  Past
 * KEEP_MAX the excess is unmapped, one munmap per contiguous run (trim_plan).
 * 2 MiB of page tables: 512 free 8 MiB stacks, 3,855 of the default 256 KiB,
 * 32,768 of the smallest.
 */
#define KEEP_MAX ((size_t)2 << 20)

/* Forward: defined with the thread-exit code below. */
static void unmap_sorted(greenlet__stack *v, size_t n);
static long read_max_map_count(void);
static long count_maps(void);

static size_t keep_charge(const greenlet__stack *st) {
  size_t reach = page_size / sizeof(void *) * page_size; /* one PT page */
  size_t m = st->map_size < reach ? st->map_size : reach;
  return m / (page_size / sizeof(void *));
}

/* A free stack that trimming may unmap: in the purger's list `list`, or in
 * a pool's spill list (list NULL), at `index`. */
typedef struct keep_span {
  char *base, *end;
  size_t charge;
  void *list;
  size_t index;
  int cut; /* planned for unmapping */
} keep_span;

static int keep_span_by_address(const void *a, const void *b) {
  const keep_span *x = a, *y = b;
  return (x->base > y->base) - (x->base < y->base);
}

typedef struct keep_run {
  size_t first, n;
} keep_run;

static int keep_run_longest(const void *a, const void *b) {
  const keep_run *x = a, *y = b;
  return (x->n < y->n) - (x->n > y->n);
}

/* Is the page at p mapped (by anything)?  mincore fails with ENOMEM on a
 * hole. */
static int page_mapped(const char *p) {
  unsigned char v;
  return mincore((void *)p, page_size, &v) == 0 || errno != ENOMEM;
}

/*
 * Marks (cut = 1) free stacks of s[0 .. n), sorted by address, for
 * unmapping, at least `excess` of charge if it can; returns the charge
 * marked.  The VMA rule of stack.h still holds: with madvise guards,
 * neighbouring stacks share one VMA, and unmapping a run of free stacks
 * whose both neighbours are mapped splits it.  So:
 *
 * - runs are taken longest first (the most page tables per munmap);
 * - a run that touches a hole (or other non-mergeable space: anything not
 *   mapped next to it) is cut from that end: no new VMA;
 * - a run mapped on both sides is cut only if it is two stacks or more
 *   (a lone free stack between live ones shares its page-table pages with
 *   them: unmapping it frees none) and while the process's VMA count is
 *   below half of vm.max_map_count (read once, only when needed), each
 *   such cut counted as one more VMA.
 */
static size_t trim_plan(keep_span *s, size_t n, size_t excess) {
  keep_run *r = greenlet__fault_hit() ? NULL : malloc(n * sizeof *r);
  if (!r)
    return 0; /* no memory: keep them (address space, not a failure) */
  size_t nr = 0;
  for (size_t i = 0; i < n; i++) {
    if (i == 0 || s[i].base != s[i - 1].end)
      r[nr++] = (keep_run){i, 0};
    r[nr - 1].n++;
  }
  qsort(r, nr, sizeof *r, keep_run_longest);
  long splits = -1; /* VMAs we may still add; -1: not read yet */
  size_t got = 0;
  for (size_t k = 0; k < nr && got < excess; k++) {
    size_t first = r[k].first, last = first + r[k].n - 1;
    int lo_mapped = page_mapped(s[first].base - page_size);
    int hi_mapped = page_mapped(s[last].end);
    if (lo_mapped && hi_mapped) {
      if (r[k].n < 2)
        continue;
      if (splits < 0) {
        long room = read_max_map_count() / 2 - count_maps();
        splits = room > 0 ? room : 0;
      }
      if (splits == 0)
        continue;
      splits--;
    }
    if (!lo_mapped) {
      for (size_t i = first; i <= last && got < excess; i++)
        s[i].cut = 1, got += s[i].charge;
    } else {
      for (size_t i = last + 1; i-- > first && got < excess;)
        s[i].cut = 1, got += s[i].charge;
    }
  }
  free(r);
  return got;
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
 *
 * Each stack the purger holds remembers the pool that released it (its
 * owner; pool->npurge counts them): when that thread exits, it unmaps those,
 * and only those (plus free neighbours, see purge_neighbours), so an exit
 * costs what the thread itself released, and the stacks of other threads
 * stay for reuse.
 */
typedef struct purge_item {
  greenlet__stack st;
  greenlet__pool *owner;
} purge_item;

/* v[head .. n) are the items: the purger takes the oldest from the head. */
typedef struct purge_list {
  purge_item *v;
  size_t head, n, cap;
} purge_list;

/* At most this many stacks per batch: a thread that exits while the purger
 * holds stacks of its own waits for one batch, not for a long list. */
#define PURGE_BATCH 64

/* Woken from idle, the purger first lets releases gather: it sleeps a
 * millisecond at a time while more arrive, PURGE_GATHER_STEPS at most (so
 * pages wait 10 ms at most).  A release while it gathers wakes nobody, a
 * stack asked for meanwhile is taken back with its pages (no zeroing, no
 * page faults), and a batch of neighbouring stacks gives its pages back in
 * one madvise.  Each madvise or munmap also interrupts the other CPUs
 * running this process (TLB shootdown), and on this VM giving pages back
 * slowed a thread killing parked greenlets by about 2 us per stack
 * (docs/design.md): batched, and skipped for stacks taken back, it costs
 * less. */
#define PURGE_GATHER_NS 1000000L
#define PURGE_GATHER_STEPS 10

static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake, idle;
  purge_list dirty, clean;
  unsigned long batches; /* batches done */
  size_t kept;           /* keep_charge() of the stacks in dirty and clean */
  size_t retry;          /* trim again once kept reaches this (0: at once) */
  int state;             /* 0: not started, 1: running, -1: inline (sync) */
  int sleeping;          /* the purger waits for work (wake it: a syscall) */
  int busy;              /* the purger holds a batch */
} purge = {.lock = PTHREAD_MUTEX_INITIALIZER,
           .wake = PTHREAD_COND_INITIALIZER,
           .idle = PTHREAD_COND_INITIALIZER};

/* pool->npurge changes under purge.lock, from any thread (whoever takes
 * the stack); atomic so that its owner may read it without the lock. */
static void npurge_add(greenlet__pool *pool, int d) {
  if (pool && d > 0)
    __atomic_add_fetch(&pool->npurge, 1, __ATOMIC_RELAXED);
  else if (pool)
    __atomic_sub_fetch(&pool->npurge, 1, __ATOMIC_RELAXED);
}

/* The caller holds purge.lock for all of these. */
static int items_push(purge_list *l, const greenlet__stack *st,
                      greenlet__pool *owner) {
  if (l->n == l->cap) {
    if (l->head >= l->n / 2 && l->head > 0) {
      /* At least half of it is taken: slide down (amortised O(1)). */
      memmove(l->v, l->v + l->head, (l->n - l->head) * sizeof *l->v);
      l->n -= l->head;
      l->head = 0;
    } else {
      size_t c = l->cap ? 2 * l->cap : 256;
      purge_item *p =
          greenlet__fault_hit() ? NULL : realloc(l->v, c * sizeof *p);
      if (!p)
        return -1;
      l->v = p;
      l->cap = c;
    }
  }
  l->v[l->n].st = *st;
  l->v[l->n].owner = owner;
  l->n++;
  return 0;
}

static void items_removed(purge_list *l) {
  if (l->head == l->n)
    l->head = l->n = 0;
}

/* The newest stack of `size` in l, if any. */
static int items_take(purge_list *l, size_t size, greenlet__stack *out) {
  for (size_t i = l->n; i-- > l->head;) {
    if (l->v[i].st.size == size) {
      *out = l->v[i].st;
      npurge_add(l->v[i].owner, -1);
      purge.kept -= keep_charge(out);
      l->v[i] = l->v[--l->n];
      items_removed(l);
      return 1;
    }
  }
  return 0;
}

/* Drops the items taken out (their base set to NULL). */
static void items_compact(purge_list *l) {
  size_t w = l->head;
  for (size_t i = l->head; i < l->n; i++)
    if (l->v[i].st.base)
      l->v[w++] = l->v[i];
  l->n = w;
  items_removed(l);
}

/*
 * Past KEEP_MAX, unmaps free stacks (clean or not yet purged: munmap frees
 * the pages too) down to 3/4 of it, in contiguous runs (trim_plan).  Runs in
 * the purger thread, with no batch in hand; drops purge.lock around the
 * munmaps.  The stacks go from the lists (and their owners' counts) before
 * the lock is dropped, so an exiting thread never sees them.  When little
 * or nothing could go (lone stacks between live ones), it waits until the
 * charge has grown by half before sorting again.
 */
static void purge_trim(void) {
  if (purge.kept <= KEEP_MAX) {
    purge.retry = 0;
    return;
  }
  if (purge.kept < purge.retry)
    return;
  purge_list *lists[2] = {&purge.clean, &purge.dirty};
  size_t n = purge.clean.n - purge.clean.head + purge.dirty.n - purge.dirty.head;
  keep_span *s = greenlet__fault_hit() ? NULL : malloc(n * sizeof *s);
  greenlet__stack *v = greenlet__fault_hit() ? NULL : malloc(n * sizeof *v);
  size_t nv = 0;
  if (s && v) {
    size_t k = 0;
    for (int j = 0; j < 2; j++)
      for (size_t i = lists[j]->head; i < lists[j]->n; i++) {
        const greenlet__stack *st = &lists[j]->v[i].st;
        s[k++] = (keep_span){st->base, st->base + st->map_size,
                             keep_charge(st), lists[j], i, 0};
      }
    qsort(s, n, sizeof *s, keep_span_by_address);
    trim_plan(s, n, purge.kept - KEEP_MAX / 4 * 3);
    for (size_t i = 0; i < n; i++) {
      if (!s[i].cut)
        continue;
      purge_item *it = &((purge_list *)s[i].list)->v[s[i].index];
      v[nv++] = it->st;
      npurge_add(it->owner, -1);
      purge.kept -= s[i].charge;
      it->st.base = NULL;
    }
    items_compact(&purge.clean);
    items_compact(&purge.dirty);
  }
  free(s);
  purge.retry = purge.kept > KEEP_MAX ? purge.kept + purge.kept / 2 : 0;
  if (nv > 0) {
    pthread_mutex_unlock(&purge.lock);
    unmap_sorted(v, nv); /* sorted: s was */
    pthread_mutex_lock(&purge.lock);
  }
  free(v);
}

static int item_by_address(const void *a, const void *b) {
  const purge_item *x = a, *y = b;
  return (x->st.base > y->st.base) - (x->st.base < y->st.base);
}

/* Gives back the pages of batch[0 .. n): sorted by address, one madvise per
 * run of neighbouring stacks (the guard markers between them stay:
 * MADV_DONTNEED does not remove them). */
static void purge_batch_pages(purge_item *batch, size_t n) {
  qsort(batch, n, sizeof batch[0], item_by_address);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n &&
           batch[j + 1].st.base == batch[j].st.base + batch[j].st.map_size)
      j++;
    char *lo = batch[i].st.lo, *hi = batch[j].st.lo + batch[j].st.size;
    madvise(lo, (size_t)(hi - lo), MADV_DONTNEED);
    for (; i <= j; i++)
      batch[i].st.cold = 1;
  }
}

static void *purger(void *arg) {
  (void)arg;
  purge_item batch[PURGE_BATCH];
  pthread_mutex_lock(&purge.lock);
  for (;;) {
    int woken = 0;
    while (purge.dirty.n == purge.dirty.head) {
      purge.sleeping = 1;
      pthread_cond_wait(&purge.wake, &purge.lock);
      purge.sleeping = 0;
      woken = 1;
    }
    for (int step = 0; woken && step < PURGE_GATHER_STEPS; step++) {
      /* Let releases gather (see PURGE_GATHER_STEPS). */
      size_t before = purge.dirty.n - purge.dirty.head;
      pthread_mutex_unlock(&purge.lock);
      struct timespec gather = {0, PURGE_GATHER_NS};
      nanosleep(&gather, NULL);
      pthread_mutex_lock(&purge.lock);
      if (purge.dirty.n - purge.dirty.head <= before)
        break; /* none came (or they were taken back): go */
    }
    purge_trim();
    if (purge.dirty.n == purge.dirty.head)
      continue; /* all of it went */
    /* The oldest first: the newest are the likeliest to be taken back. */
    size_t n = purge.dirty.n - purge.dirty.head;
    if (n > PURGE_BATCH)
      n = PURGE_BATCH;
    memcpy(batch, purge.dirty.v + purge.dirty.head, n * sizeof batch[0]);
    purge.dirty.head += n;
    items_removed(&purge.dirty);
    purge.busy = 1;
    pthread_mutex_unlock(&purge.lock);
    purge_batch_pages(batch, n);
    pthread_mutex_lock(&purge.lock);
    for (size_t i = 0; i < n; i++) {
      if (items_push(&purge.clean, &batch[i].st, batch[i].owner) != 0) {
        purge.kept -= keep_charge(&batch[i].st);
        greenlet__stack_unmap(&batch[i].st); /* no memory: let it go */
        npurge_add(batch[i].owner, -1);
      }
    }
    purge.busy = 0;
    purge.batches++;
    pthread_cond_broadcast(&purge.idle);
  }
  return NULL;
}

/* fork(): the child has no purger thread (the next release starts one), and
 * must not inherit the lock held.  A batch the purger held is lost to the
 * child (address space only: its pages were being given back). */
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

/* Queues a stack released by `pool` for the purger.  0, or -1: give its
 * pages back inline. */
static int purge_push(greenlet__pool *pool, const greenlet__stack *st) {
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
  if (purge.state == 1 && items_push(&purge.dirty, st, pool) == 0) {
    rc = 0;
    npurge_add(pool, 1);
    purge.kept += keep_charge(st);
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
  int got = items_take(&purge.clean, size, out) ||
            items_take(&purge.dirty, size, out);
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
  if (list_take(pool->spill, &pool->nspill, size, out)) {
    size_t c = keep_charge(out);
    pool->spill_kept -= c < pool->spill_kept ? c : pool->spill_kept;
    return 0;
  }
  if (purge_take(size, out))
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
      if (purge_push(pool, st) == 0) {
        st->base = NULL;
        return;
      }
      madvise(st->lo, st->size, MADV_DONTNEED);
      st->cold = 1;
      if (spill_push(pool, st) == 0) {
        st->base = NULL;
        pool->spill_kept += keep_charge(&pool->spill[pool->nspill - 1]);
        spill_trim(pool);
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

/* Moves item i of l to the pool's spill list (caller holds purge.lock). */
static void item_reclaim(greenlet__pool *pool, purge_list *l, size_t i) {
  purge_item *it = &l->v[i];
  npurge_add(it->owner, -1);
  purge.kept -= keep_charge(&it->st);
  if (spill_push(pool, &it->st) == 0)
    it->st.base = NULL;
  else
    greenlet__stack_unmap(&it->st); /* no memory: one by one then */
}

/* Afterwards no item names the pool (whose memory goes with its thread). */
static void take_own(greenlet__pool *pool, purge_list *l) {
  for (size_t i = l->head; i < l->n; i++)
    if (l->v[i].owner == pool)
      item_reclaim(pool, l, i);
  items_compact(l);
}

/* Does [b, e) touch one of the stacks in sorted v[0 .. n)? */
static int touches(const greenlet__stack *v, size_t n, const char *b,
                   const char *e) {
  size_t lo = 0, hi = n; /* first stack at or above b */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (v[mid].base < b)
      lo = mid + 1;
    else
      hi = mid;
  }
  return (lo < n && v[lo].base == e) ||
         (lo > 0 && v[lo - 1].base + v[lo - 1].map_size == b);
}

typedef struct span {
  char *base, *end;
  purge_list *list; /* NULL: a stack of the exiting thread */
  size_t index;
} span;

static int span_by_address(const void *a, const void *b) {
  const span *x = a, *y = b;
  return (x->base > y->base) - (x->base < y->base);
}

/*
 * The exiting thread's stacks may sit next to free stacks of other threads
 * in the purger's lists, all in one merged VMA.  Unmapping only its own
 * would cut that VMA at each of them: with threads that shared stacks
 * through the purger, a VMA per stack, the explosion stack.h is about.  So
 * within each contiguous run of free stacks (the purger's and the thread's
 * own), the purger's stacks that lie between two of the thread's own go too
 * (their owners lose a spare, nothing else).  A run then loses one span and
 * splits in two at most, so the VMAs left are bounded by the stacks in use,
 * in private pools or in the purger's batch (which end runs), as when every
 * thread exit emptied the purger; the free stacks at the ends of a run stay
 * for reuse.  Caller holds purge.lock; the pool's spill list is sorted.
 * Costs a pass over the purger's lists, and a sort only when one of its
 * stacks touches one of ours.
 */
static void purge_neighbours(greenlet__pool *pool) {
  purge_list *lists[2] = {&purge.clean, &purge.dirty};
  size_t nown = pool->nspill, nfree = 0;
  int touch = 0;
  for (int k = 0; k < 2; k++) {
    purge_list *l = lists[k];
    nfree += l->n - l->head;
    for (size_t i = l->head; i < l->n && !touch; i++)
      touch = touches(pool->spill, nown, l->v[i].st.base,
                      l->v[i].st.base + l->v[i].st.map_size);
  }
  if (!touch)
    return;
  span *s = greenlet__fault_hit() ? NULL : malloc((nown + nfree) * sizeof *s);
  if (!s)
    return; /* no memory: leave them (fragmentation, not a failure) */
  size_t n = 0;
  for (size_t i = 0; i < nown; i++)
    s[n++] = (span){pool->spill[i].base,
                    pool->spill[i].base + pool->spill[i].map_size, NULL, i};
  for (int k = 0; k < 2; k++)
    for (size_t i = lists[k]->head; i < lists[k]->n; i++) {
      const greenlet__stack *st = &lists[k]->v[i].st;
      s[n++] = (span){st->base, st->base + st->map_size, lists[k], i};
    }
  qsort(s, n, sizeof *s, span_by_address);
  size_t last = SIZE_MAX; /* the run's last own stack so far (or none) */
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && s[i].base != s[i - 1].end)
      last = SIZE_MAX; /* a new run */
    if (s[i].list)
      continue;
    if (last != SIZE_MAX) /* own again: take what lies between */
      for (size_t k = last + 1; k < i; k++)
        item_reclaim(pool, s[k].list, s[k].index);
    last = i;
  }
  free(s);
  items_compact(&purge.clean);
  items_compact(&purge.dirty);
}

/* Thread exit: moves to the pool's spill list the stacks it released to the
 * purger, and those of the purger's lying between two of its own. */
static void purge_reclaim(greenlet__pool *pool) {
  if (__atomic_load_n(&purge.state, __ATOMIC_ACQUIRE) < 0)
    return; /* inline mode: the purger never held anything */
  if (pool->nspill == 0 &&
      __atomic_load_n(&pool->npurge, __ATOMIC_RELAXED) == 0)
    return; /* the common exit: nothing to look for (no lock taken) */
  pthread_mutex_lock(&purge.lock);
  if (pool->npurge > 0) {
    take_own(pool, &purge.dirty);
    take_own(pool, &purge.clean);
    /* The rest is in the purger's batch (nothing of ours can join a later
     * one): wait for that batch, then take them from the clean list. */
    if (pool->npurge > 0 && purge.busy) {
      unsigned long b = purge.batches;
      while (purge.busy && purge.batches == b)
        pthread_cond_wait(&purge.idle, &purge.lock);
      take_own(pool, &purge.clean);
    }
    /* A batch lost to fork() leaves a count behind. */
    __atomic_store_n(&pool->npurge, 0, __ATOMIC_RELAXED);
  }
  if (pool->nspill > 0 &&
      purge.clean.n + purge.dirty.n > purge.clean.head + purge.dirty.head) {
    if (pool->nspill > 1)
      qsort(pool->spill, pool->nspill, sizeof *pool->spill, by_address);
    purge_neighbours(pool);
  }
  pthread_mutex_unlock(&purge.lock);
}

/* Unmaps v[0 .. n), sorted by address, one munmap per contiguous run: fewer
 * system calls and TLB shootdowns (most of an munmap's cost here). */
static void unmap_sorted(greenlet__stack *v, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t j = i;
    GREENLET__VALGRIND_STACK_DEREGISTER(v[i].vg_id);
    while (j + 1 < n && v[j + 1].base == v[j].base + v[j].map_size) {
      j++;
      GREENLET__VALGRIND_STACK_DEREGISTER(v[j].vg_id);
    }
    size_t len = (size_t)(v[j].base - v[i].base) + v[j].map_size;
    unpoison_range(v[i].base, len);
    munmap(v[i].base, len);
    i = j + 1;
  }
}

/*
 * Without the purger (CGREENLET_PURGE=sync), the free stacks a thread keeps
 * are in its spill list: the same budget (KEEP_MAX) and the same plan
 * (trim_plan) apply there.  They are the thread's own, so it unmaps them.
 */
static void spill_trim(greenlet__pool *pool) {
  if (pool->spill_kept <= KEEP_MAX) {
    pool->spill_retry = 0;
    return;
  }
  if (pool->spill_kept < pool->spill_retry)
    return;
  size_t n = pool->nspill, nv = 0;
  keep_span *s = greenlet__fault_hit() ? NULL : malloc(n * sizeof *s);
  greenlet__stack *v = greenlet__fault_hit() ? NULL : malloc(n * sizeof *v);
  if (s && v) {
    for (size_t i = 0; i < n; i++) {
      const greenlet__stack *st = &pool->spill[i];
      s[i] = (keep_span){st->base, st->base + st->map_size, keep_charge(st),
                         NULL, i, 0};
    }
    qsort(s, n, sizeof *s, keep_span_by_address);
    trim_plan(s, n, pool->spill_kept - KEEP_MAX / 4 * 3);
    for (size_t i = 0; i < n; i++) {
      if (!s[i].cut)
        continue;
      v[nv++] = pool->spill[s[i].index];
      pool->spill_kept -= s[i].charge;
      pool->spill[s[i].index].base = NULL;
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
      if (pool->spill[i].base)
        pool->spill[w++] = pool->spill[i];
    pool->nspill = w;
  }
  free(s);
  pool->spill_retry =
      pool->spill_kept > KEEP_MAX ? pool->spill_kept + pool->spill_kept / 2 : 0;
  unmap_sorted(v, nv);
  free(v);
}

/*
 * Thread exit: unmaps the pool, the spill list (stacks of the thread's
 * suspended greenlets included), and the stacks this thread released to
 * the purger, lowest first and in contiguous runs.  Stacks other threads
 * released stay with the purger for reuse.
 */
void greenlet__pool_clear(greenlet__pool *pool) {
  while (pool->count > 0) {
    greenlet__stack *st = &pool->items[--pool->count];
    if (spill_push(pool, st) != 0)
      greenlet__stack_unmap(st);
  }
  purge_reclaim(pool);
  if (pool->nspill > 1)
    qsort(pool->spill, pool->nspill, sizeof *pool->spill, by_address);
  unmap_sorted(pool->spill, pool->nspill);
  free(pool->spill);
  pool->spill = NULL;
  pool->nspill = pool->capspill = 0;
  pool->spill_kept = pool->spill_retry = 0;
}
