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
#endif
#ifdef GREENLET_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#endif /* GREENLET_SANITIZER_H */
