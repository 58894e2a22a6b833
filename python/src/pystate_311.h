/*
 * pystate_311.h - CPython 3.11.
 *
 * What a switch must carry (REFERENCE.md section 2): the C-stack-resident
 * _PyCFrame chain (tstate->cframe; the current interpreter frame hangs off
 * it), the recursion depth, the frame data stack (Python frames live in
 * per-thread chunks, so each greenlet has its own chain), the handled
 * exception stack, the contextvars context and the trashcan nesting.
 *
 * Every greenlet runs on a stack of its own, so the _PyCFrame entries of a
 * suspended greenlet stay where they are; saving tstate->cframe is enough.
 */
#ifndef CGREENLET_PYSTATE_311_H
#define CGREENLET_PYSTATE_311_H

/* _PyInterpreterFrame, to release the frames of a greenlet dropped without
 * unwinding (cg_pystate_abandon). */
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <internal/pycore_frame.h>

typedef struct cg_pystate {
  _PyCFrame *cframe;
  int recursion_depth;
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

/* What pystate_frames.h needs to know of 3.11's frames and of the record.
 * Frames whose slots are Python's: those of functions run by the thread or
 * by a generator (the others, owned by frame objects, are never in a
 * chain). */
static inline int cg_frame_is_python(_PyInterpreterFrame *f) {
  return f->owner == FRAME_OWNED_BY_THREAD ||
         f->owner == FRAME_OWNED_BY_GENERATOR;
}

static inline PyCodeObject *cg_frame_code(_PyInterpreterFrame *f) {
  return f->f_code;
}

#define CG_FRAME_FUNC(f) ((f)->f_func)
#define CG_FRAME_EXECUTABLE(f) ((f)->f_code)
#define CG_ENTRY_FRAMES 0 /* (is_entry marks the frame entered from C) */

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
 * on the stack about to be released.  Whoever resumes next reads the
 * tracing flag (cg_pystate_use_tracing) from the thread's root one
 * instead. */
static inline void cg_finish_cframe(PyThreadState *ts) {
  ts->root_cframe.use_tracing = ts->cframe->use_tracing;
  ts->cframe = &ts->root_cframe;
}

#include "pystate_frames.h"

static inline uint8_t cg_pystate_use_tracing(PyThreadState *ts) {
  return ts->cframe->use_tracing;
}

/* Moves the running greenlet's state into st (references included).
 * call_end: see cg_frame_call_top (NULL when switch() was not called with
 * arguments in place, e.g. from C). */
static inline void cg_pystate_save(cg_pystate *st, PyThreadState *ts,
                                   PyObject *const *call_end) {
  st->top_sp = cg_frame_call_top(ts->cframe->current_frame, call_end);
  st->cframe = ts->cframe;
  st->recursion_depth = ts->recursion_limit - ts->recursion_remaining;
  st->datastack_chunk = ts->datastack_chunk;
  st->datastack_top = ts->datastack_top;
  st->datastack_limit = ts->datastack_limit;
  st->exc_info = ts->exc_info;
  st->exc_state = ts->exc_state;
  st->context = ts->context;
  st->trash_delete_nesting = ts->trash_delete_nesting;
  ts->exc_state.exc_value = NULL;
  ts->exc_state.previous_item = NULL;
  ts->context = NULL;
}

/* Moves st back into the thread state.  The tracing flag is the origin's,
 * so that a profiler set while another greenlet ran keeps working here. */
static inline void cg_pystate_restore(cg_pystate *st, PyThreadState *ts,
                                      uint8_t use_tracing) {
  ts->cframe = st->cframe;
  ts->cframe->use_tracing = use_tracing;
  ts->recursion_remaining = ts->recursion_limit - st->recursion_depth;
  ts->datastack_chunk = st->datastack_chunk;
  ts->datastack_top = st->datastack_top;
  ts->datastack_limit = st->datastack_limit;
  ts->exc_state = st->exc_state;
  ts->exc_info = st->exc_info;
  ts->context = st->context;
  ts->context_ver++;
  ts->trash_delete_nesting = st->trash_delete_nesting;
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
  _PyStackChunk *c = reserve;
  st->root = c;
  b->cframe.use_tracing = use_tracing;
  b->cframe.current_frame = NULL;
  b->cframe.previous = &ts->root_cframe;
  ts->cframe = &b->cframe;
  ts->recursion_remaining = ts->recursion_limit;
  cg_start_root_chunk(ts, c);
  cg_start_exc_context(ts, &st->context);
  ts->trash_delete_nesting = 0;
  return 0;
}

#endif
