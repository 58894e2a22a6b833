/*
 * sanitizer.h - telling Valgrind, AddressSanitizer and ThreadSanitizer that
 * the stack changed.  Each hook compiles to nothing unless the build enables
 * that tool: Valgrind with -DGREENLET_VALGRIND=1 (client requests cost a few
 * instructions outside Valgrind), ASan and TSan when their -fsanitize= flag
 * is on.
 */
#ifndef GREENLET_SANITIZER_H
#define GREENLET_SANITIZER_H

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GREENLET_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define GREENLET_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(GREENLET_ASAN)
#define GREENLET_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(GREENLET_TSAN)
#define GREENLET_TSAN 1
#endif

#if defined(GREENLET_VALGRIND) && GREENLET_VALGRIND
#include <valgrind/valgrind.h>
#define GREENLET__VALGRIND_STACK_REGISTER(lo, hi) VALGRIND_STACK_REGISTER(lo, hi)
#define GREENLET__VALGRIND_STACK_DEREGISTER(id) VALGRIND_STACK_DEREGISTER(id)
#else
#define GREENLET__VALGRIND_STACK_REGISTER(lo, hi) ((void)(lo), (void)(hi), 0u)
#define GREENLET__VALGRIND_STACK_DEREGISTER(id) ((void)(id))
#endif

#ifdef GREENLET_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>

/* Declared weak: a runtime without it leaves it NULL. */
void __asan_get_shadow_mapping(size_t *shadow_scale, size_t *shadow_offset)
    __attribute__((weak));

/* ASan's shadow of addr is at (addr >> *scale) + *offset.  Asked of the
 * runtime, else the documented defaults of x86-64 and AArch64 Linux.
 * Returns 0 when unknown. */
static inline int greenlet__asan_shadow_mapping(size_t *scale, size_t *offset) {
  if (__asan_get_shadow_mapping) {
    __asan_get_shadow_mapping(scale, offset);
    return 1;
  }
#if defined(__linux__) && defined(__x86_64__) && !defined(__ILP32__)
  *scale = 3;
  *offset = 0x7fff8000;
  return 1;
#elif defined(__linux__) && defined(__aarch64__)
  *scale = 3;
  *offset = (size_t)1 << 36;
  return 1;
#else
  return 0;
#endif
}

/*
 * Frees the fake stack (detect_stack_use_after_return) a suspended greenlet
 * saved, for a greenlet that will never run again.  ASan frees a fiber's
 * fake stack only when the fiber switches away for the last time
 * (start_switch_fiber with NULL), which a discarded greenlet never does:
 * each one leaked its fake stack (tens of KiB resident, 11 MB mapped for an
 * 8 MiB stack).  So, without leaving the current stack: install it as the
 * current fake stack, switch away "for the last time", and put the
 * caller's back.  The first finish returns the caller's stack bounds, which
 * the second start restores.
 */
static inline void greenlet__asan_drop_fake_stack(void **fake) {
  if (!*fake)
    return;
  void *mine = NULL;
  const void *bottom = NULL;
  size_t size = 0;
  __sanitizer_start_switch_fiber(&mine, NULL, 0);
  __sanitizer_finish_switch_fiber(*fake, &bottom, &size);
  __sanitizer_start_switch_fiber(NULL, bottom, size);
  __sanitizer_finish_switch_fiber(mine, NULL, NULL);
  *fake = NULL;
}
#endif
#ifdef GREENLET_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#endif /* GREENLET_SANITIZER_H */
