/*
 * procfs.h - what the tests read from /proc: mapping counts, VmSize, the
 * map-count limit; and a monotonic clock.  Shared by test_threads.c (also in
 * its standalone build) and test_limits.c.
 */
#ifndef CGREENLET_TEST_PROCFS_H
#define CGREENLET_TEST_PROCFS_H

#include <stdio.h>
#include <time.h>

/* Lines of a /proc file (-1 if unreadable). */
static inline long proc_count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  long n = 0;
  int c;
  while ((c = getc(f)) != EOF)
    n += c == '\n';
  fclose(f);
  return n;
}

/* Mappings (VMAs) of this process. */
static inline long map_count(void) {
  return proc_count_lines("/proc/self/maps");
}

static inline long max_map_count(void) {
  long v = -1;
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  if (f) {
    if (fscanf(f, "%ld", &v) != 1)
      v = -1;
    fclose(f);
  }
  return v;
}

/* VmSize in bytes (-1 if unreadable). */
static inline long long vm_size_bytes(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f)
    return -1;
  char line[256];
  long long kib = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmSize: %lld kB", &kib) == 1)
      break;
  fclose(f);
  return kib < 0 ? -1 : kib * 1024;
}

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ThreadSanitizer maps shadow and meta memory for every range the program
 * maps, and keeps those mappings after munmap: mapping counts mean nothing
 * there (VmSize still does). */
#if defined(__SANITIZE_THREAD__)
#define MAPS_MEANINGFUL 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MAPS_MEANINGFUL 0
#endif
#endif
#ifndef MAPS_MEANINGFUL
#define MAPS_MEANINGFUL 1
#endif

#endif
