/*
 * qemu_maps_probe.c - does qemu-user keep memory for every guest mapping
 * ever made?  No greenlets: each of N threads (default 100) maps K stacks of
 * 8 MiB (default 4, as the upstream USS checks' threads start), touches one
 * page of each and unmaps them; the RSS growth per thread is printed.
 *
 * Why: two upstream checks (USS back to where it was after 100 threads that
 * leave greenlets unfinished) fail under qemu-user on arm64, ppc64el and
 * s390x, about 190 KiB per thread, and pass natively.  Run natively and
 * under qemu with K=4 and K=0 (python/tests/qemu_aarch64_skip.txt has the
 * figures), e.g.
 *   aarch64-linux-gnu-gcc -std=c11 -O2 -static -pthread tests/qemu_maps_probe.c -o p
 *   qemu-aarch64 ./p 100 4; qemu-aarch64 ./p 100 0
 * Natively the growth is 0 either way.
 */
#define _GNU_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE under -std=c11 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
static int K = 4;
static size_t SZ = 8u << 20;
static void *work(void *a) {
  (void)a;
  void *m[16];
  for (int i = 0; i < K; i++) {
    m[i] = mmap(NULL, SZ, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m[i] == MAP_FAILED) {
      perror("mmap");
      exit(1);
    }
    memset((char *)m[i] + SZ - 4096, 1, 4096);
  }
  for (int i = 0; i < K; i++) munmap(m[i], SZ);
  return NULL;
}
static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r"); char l[256]; long v = -1;
  while (fgets(l, sizeof l, f)) if (!strncmp(l, "VmRSS:", 6)) v = atol(l + 6);
  fclose(f); return v;
}
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 100;
  K = argc > 2 ? atoi(argv[2]) : 4;
  long r0 = rss_kb();
  for (int t = 0; t < n; t++) {
    pthread_t th; pthread_create(&th, NULL, work, NULL); pthread_join(th, NULL);
    if (t == 9) r0 = rss_kb();
  }
  long r1 = rss_kb();
  printf("threads %d x %d maps: RSS after 10 threads %ld KiB, after %d %ld KiB: %+.1f KiB per thread\n", n, K, r0, n, r1, (double)(r1 - r0) / (n - 10));
  return 0;
}
