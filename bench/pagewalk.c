/*
 * pagewalk.c - what touching one page in each of N mappings costs on this
 * machine, with no greenlet code involved.
 *
 *   make pagewalk            (build/pagewalk, then runs the table below)
 *   build/pagewalk N SPAN_KIB [ROUNDS]
 *
 * A parked greenlet's touched stack top sits in its own mapping: with
 * 8 MiB stacks, each one needs a page-table page of its own, and a walk
 * over many parked greenlets (the collector's, say) reads one page in each.
 * This program maps N regions of SPAN_KIB each (MAP_NORESERVE, as stacks
 * are), touches two pages near the top of each, then times reading one
 * page of every region, ROUNDS times.  The median round is printed per
 * access.  Comparing N and SPAN tells a machine limit on page-table pages
 * in use (seen on the Firecracker VM this project is built on: past about
 * 130,000 page-table pages an access costs ~25 us instead of ~60 ns) from
 * a cost of cgreenlet's own.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median ns per access over `rounds` reads of one page in each region, or
 * a negative number if the regions cannot be mapped. */
static double measure(long n, size_t span, int rounds) {
  volatile char **p = malloc((size_t)n * sizeof *p);
  double *t = malloc((size_t)rounds * sizeof *t);
  if (!p || !t) {
    free(p);
    free(t);
    return -1;
  }
  long mapped = 0;
  for (; mapped < n; mapped++) {
    char *m = mmap(NULL, span, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
      break;
    /* Like a parked greenlet: a page at the top and one a little below. */
    m[span - 64] = 1;
    m[span - 40000] = 1;
    p[mapped] = m;
  }
  double result = -1;
  if (mapped == n) {
    for (int r = 0; r < rounds; r++) {
      long sum = 0;
      double t0 = now();
      for (long i = 0; i < n; i++)
        sum += p[i][span - 64];
      t[r] = (now() - t0) / (double)n * 1e9;
      if (sum != n)
        abort();
    }
    qsort(t, (size_t)rounds, sizeof *t, cmp);
    result = t[rounds / 2];
  } else {
    perror("mmap");
  }
  for (long i = 0; i < mapped; i++)
    munmap((void *)p[i], span);
  free(p);
  free(t);
  return result;
}

int main(int argc, char **argv) {
  if (argc >= 3) {
    long n = atol(argv[1]);
    size_t span = (size_t)atol(argv[2]) << 10;
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    if (n <= 0 || span < 16384 || rounds <= 0) {
      fprintf(stderr, "usage: pagewalk N SPAN_KIB [ROUNDS] (SPAN_KIB >= 16)\n");
      return 2;
    }
    double ns = measure(n, span, rounds);
    if (ns < 0)
      return 1;
    printf("%ld regions of %zu KiB: %.1f ns per access\n", n, span >> 10, ns);
    return 0;
  }
  /* The default table: page-table pages in use = regions whose tops lie in
   * different 2 MiB blocks (one per region from 2 MiB spans up). */
  static const struct {
    long n;
    size_t kib;
  } rows[] = {{100000, 8208}, {120000, 8208}, {150000, 8208},
              {200000, 8208}, {200000, 2064}, {200000, 1040},
              {400000, 1040}, {200000, 64}};
  printf("%10s %10s %16s %14s\n", "regions", "span KiB", "PT pages (est.)",
         "ns per access");
  for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
    size_t span = rows[k].kib << 10;
    long pt = span >= (2u << 20) ? rows[k].n
                                 : (long)((double)rows[k].n * (double)span /
                                          (double)(2u << 20));
    double ns = measure(rows[k].n, span, 5);
    if (ns < 0)
      return 1;
    printf("%10ld %10zu %16ld %14.1f\n", rows[k].n, rows[k].kib, pt, ns);
    fflush(stdout);
  }
  return 0;
}
