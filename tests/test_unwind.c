/*
 * test_unwind.c - the entry trampoline ends unwinding.  An exception raised
 * inside a greenlet (C++ throw is _Unwind_RaiseException underneath) must
 * find the end of the stack at the greenlet's entry, so the C++ runtime
 * calls std::terminate instead of unwinding into memory that is not a frame.
 */
#include "helpers.h"
#include "run_once.h"

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <unwind.h>

static void cleanup(_Unwind_Reason_Code reason, struct _Unwind_Exception *e) {
  (void)reason;
  (void)e;
}

static int raise_inside(greenlet_t *self, void *arg, void **result) {
  (void)self;
  (void)arg;
  static struct _Unwind_Exception exc;
  memset(&exc, 0, sizeof exc);
  /* A uint64 on most ISAs, char[8] on ARM EHABI. */
  memcpy(&exc.exception_class, "CGREENLT", sizeof exc.exception_class);
  exc.exception_cleanup = cleanup;
  /* Returns only if no handler was found: at the end of the stack. */
  *result = P(_Unwind_RaiseException(&exc));
  return GREENLET_OK;
}

Test(unwind, raise_stops_at_greenlet_entry) {
  void *v = run_once(raise_inside);
#if defined(__x86_64__)
  cr_assert_eq(I(v), _URC_END_OF_STACK, "unwinder returned %d", (int)I(v));
#else
  /* Reaching here is the check: it returns only when no frame handled the
   * exception.  (Debian 12's arm64 libgcc returns a garbled code, even on a
   * plain thread, so the value is not compared.) */
  (void)v;
#endif
}

static _Unwind_Reason_Code count_frame(struct _Unwind_Context *ctx, void *arg) {
  (void)ctx;
  ++*(int *)arg;
  return _URC_NO_REASON;
}

static int count_frames(greenlet_t *self, void *arg, void **result) {
  (void)self;
  (void)arg;
  int n = 0;
  _Unwind_Reason_Code rc = _Unwind_Backtrace(count_frame, &n);
#if defined(__arm__)
  /* ARM EHABI's unwinder ends with _URC_FAILURE at a "cannot unwind" entry
   * (the trampoline's, or _start's on a plain thread). */
  int ended = rc == _URC_END_OF_STACK || rc == _URC_FAILURE;
#else
  int ended = rc == _URC_END_OF_STACK;
#endif
  *result = P(ended ? n : -1);
  return GREENLET_OK;
}

Test(unwind, backtrace_ends_cleanly) {
  void *v = run_once(count_frames);
  /* count_frames, run's caller (entry), the trampoline: a handful. */
  cr_assert_gt(I(v), 1);
  cr_assert_lt(I(v), 8, "%d frames", (int)I(v));
}
