/*
 * pystate_312.h - CPython 3.12.
 *
 * The 3.11 layer (pystate_311.h) with what 3.12 changed (REFERENCE.md
 * section 2):
 *
 * - No use_tracing flag (PEP 669): sys.settrace and sys.setprofile are
 *   per-thread functions (tstate->c_tracefunc, c_profilefunc) over
 *   per-interpreter instrumentation of code objects.  Nothing about them
 *   is per greenlet, so a switch leaves them alone, and with them
 *   tstate->tracing (the trace function's own nesting) and what_event.
 * - Two recursion counters: Python calls (py_recursion_remaining, against
 *   the changeable py_recursion_limit) and C recursion
 *   (c_recursion_remaining, against the constant C_RECURSION_LIMIT; every
 *   _PyEval_EvalFrameDefault takes some too).  Both are per greenlet: each
 *   runs on its own C stack, so it starts with the whole of both budgets.
 * - The trashcan nesting is tstate->trash.delete_nesting (per greenlet, as
 *   in 3.11).  The list of objects whose deallocation it deferred,
 *   trash.delete_later, stays the thread's, as in 3.11: whichever greenlet
 *   next leaves its outermost trashcan frees them (each is unlinked before
 *   its deallocator runs, so a switch inside one cannot free it twice).
 * - Every _PyEval_EvalFrameDefault links an "entry frame"
 *   (FRAME_OWNED_BY_CSTACK) into the frame chain, on the C stack.  Only its
 *   owner, previous and f_code are set: nothing else of it may be read.
 *   A suspended greenlet's entry frames stay valid on its own stack, so
 *   gr_frame.f_back walks its frames; when the thread exits they go with
 *   that stack, so cg_pystate_orphan unlinks them first.
 *
 * Every greenlet runs on a stack of its own, so the _PyCFrame entries of a
 * suspended greenlet stay where they are; saving tstate->cframe is enough.
 */
#ifndef CGREENLET_PYSTATE_312_H
#define CGREENLET_PYSTATE_312_H

/* _PyInterpreterFrame, to see and release the frames of suspended
 * greenlets. */
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <internal/pycore_frame.h>

/* greenlet._greenlet.get_tstate_trash_delete_nesting() */
#define CG_TRASH_DELETE_NESTING(ts) ((ts)->trash.delete_nesting)

typedef struct cg_pystate {
  _PyCFrame *cframe; /* while suspended */
  int py_recursion_depth;
  int c_recursion_depth;
  _PyStackChunk *datastack_chunk;
  PyObject **datastack_top;
  PyObject **datastack_limit;
  _PyErr_StackItem *exc_info;
  _PyErr_StackItem exc_state;
  PyObject *context;
  int trash_delete_nesting;
  _PyStackChunk *root; /* root data-stack chunk, from start to finish */
  _PyInterpreterFrame *abandoned; /* top frame of a greenlet dropped mid-run */
  /* End of the live value stack of the top frame, when it is suspended in a
   * switch() called from Python (see cg_pystate_save); else NULL. */
  PyObject **top_sp;
} cg_pystate;

/* What green_run keeps on the new stack besides the root chunk
 * (pystate_frames.h): the root _PyCFrame. */
typedef struct cg_start_buffers {
  _PyCFrame cframe;
} cg_start_buffers;

/* What pystate_frames.h needs to know of 3.12's frames and of the record.
 * Frames whose slots are Python's: those of functions run by the thread
 * or by a generator (an entry frame's are not even initialised). */
static inline int cg_frame_is_python(_PyInterpreterFrame *f) {
  return f->owner == FRAME_OWNED_BY_THREAD ||
         f->owner == FRAME_OWNED_BY_GENERATOR;
}

static inline PyCodeObject *cg_frame_code(_PyInterpreterFrame *f) {
  return f->f_code;
}

#define CG_FRAME_FUNC(f) ((f)->f_funcobj)
#define CG_FRAME_EXECUTABLE(f) ((f)->f_code)
#define CG_ENTRY_FRAMES 1

/* The frame chain hangs off the thread's _PyCFrame chain (current_frame). */
typedef _PyCFrame cg_frame_chain;
#define CG_THREAD_CHAIN(ts) ((ts)->cframe)
#define CG_SAVED_CHAIN(st) ((st)->cframe)
/* The saved _PyCFrame is on the C stack: when it moves (shared stacks),
 * its current_frame, which cg_saved_frame follows, moves too. */
#define CG_CHAIN_MOVED(st, M)                                                  \
  do {                                                                         \
    if ((st)->cframe)                                                          \
      M((st)->cframe->current_frame);                                          \
  } while (0)

static inline _PyInterpreterFrame *cg_saved_frame(const cg_pystate *st) {
  return st->cframe ? st->cframe->current_frame : NULL;
}

/* A greenlet's run returned (cg_pystate_finish): the _PyCFrame in use lives
 * on the stack about to be released.  The thread's root one stands in
 * until the next greenlet's is restored. */
static inline void cg_finish_cframe(PyThreadState *ts) {
  ts->cframe = &ts->root_cframe;
}

#include "pystate_frames.h"

/* No tracing flag to carry since 3.12 (see the top of this file). */
static inline uint8_t cg_pystate_use_tracing(PyThreadState *ts) {
  (void)ts;
  return 0;
}

/* Moves the running greenlet's state into st (references included).
 * call_end: see cg_frame_call_top (NULL when switch() was not called with
 * arguments in place, e.g. from C). */
static inline void cg_pystate_save(cg_pystate *st, PyThreadState *ts,
                                   PyObject *const *call_end) {
  st->top_sp = cg_frame_call_top(ts->cframe->current_frame, call_end);
  st->cframe = ts->cframe;
  st->py_recursion_depth = ts->py_recursion_limit - ts->py_recursion_remaining;
  st->c_recursion_depth = C_RECURSION_LIMIT - ts->c_recursion_remaining;
  st->datastack_chunk = ts->datastack_chunk;
  st->datastack_top = ts->datastack_top;
  st->datastack_limit = ts->datastack_limit;
  st->exc_info = ts->exc_info;
  st->exc_state = ts->exc_state;
  st->context = ts->context;
  st->trash_delete_nesting = ts->trash.delete_nesting;
  ts->exc_state.exc_value = NULL;
  ts->exc_state.previous_item = NULL;
  ts->context = NULL;
}

/* Moves st back into the thread state.  (A recursion limit changed while
 * the greenlet was suspended applies to it: its depth is what is kept.) */
static inline void cg_pystate_restore(cg_pystate *st, PyThreadState *ts,
                                      uint8_t use_tracing) {
  (void)use_tracing;
  ts->cframe = st->cframe;
  ts->py_recursion_remaining = ts->py_recursion_limit - st->py_recursion_depth;
  ts->c_recursion_remaining = C_RECURSION_LIMIT - st->c_recursion_depth;
  ts->datastack_chunk = st->datastack_chunk;
  ts->datastack_top = st->datastack_top;
  ts->datastack_limit = st->datastack_limit;
  ts->exc_state = st->exc_state;
  ts->exc_info = st->exc_info;
  ts->context = st->context;
  ts->context_ver++;
  ts->trash.delete_nesting = st->trash_delete_nesting;
  st->exc_state.exc_value = NULL;
  st->exc_state.previous_item = NULL;
  st->context = NULL;
  st->cframe = NULL;
}

/* The state of a greenlet that starts now, on its own stack.  The context
 * set on it before it started (gr_context) becomes the thread's. */
static inline int cg_pystate_start(cg_pystate *st, PyThreadState *ts,
                                   cg_start_buffers *b, void *reserve,
                                   uint8_t use_tracing) {
  (void)use_tracing;
  _PyStackChunk *c = reserve;
  st->root = c;
  b->cframe.current_frame = NULL;
  b->cframe.previous = &ts->root_cframe;
  ts->cframe = &b->cframe;
  ts->py_recursion_remaining = ts->py_recursion_limit;
  ts->c_recursion_remaining = C_RECURSION_LIMIT;
  cg_start_root_chunk(ts, c);
  cg_start_exc_context(ts, &st->context);
  ts->trash.delete_nesting = 0;
  return 0;
}

#endif
