/*
 * pystate_313.h - CPython 3.13.
 *
 * The 3.12 layer (pystate_312.h, whose notes apply) with what 3.13 changed
 * (REFERENCE.md section 2):
 *
 * - No _PyCFrame: the thread's top interpreter frame is
 *   tstate->current_frame; a new greenlet starts with none.
 * - An interpreter frame's code is f_executable (a code object for every
 *   frame of a function; None for the entry frame); 3.13's trampoline
 *   frames (_PyFrame_PushTrampolineUnchecked, __init__'s cleanup shim) are
 *   thread-owned frames whose f_funcobj is None: plain references.  The
 *   owner constants are those of 3.12 (THREAD 0, GENERATOR 1,
 *   FRAME_OBJECT 2, CSTACK 3); entry frames (FRAME_OWNED_BY_CSTACK) still
 *   live on the C stack, with only owner, previous, f_executable and
 *   instr_ptr set.
 * - C recursion is counted against Py_C_RECURSION_LIMIT (10000 here), and
 *   the trashcan has no nesting counter of its own any more: it defers a
 *   deallocation when c_recursion_remaining is low (Py_TRASHCAN_BEGIN).
 *   So the carried C recursion budget is the trashcan nesting too.
 * - tstate->delete_later (the objects the trashcan deferred, formerly
 *   trash.delete_later) stays the thread's, as in 3.11 and 3.12: each
 *   object is unlinked from it before its deallocator runs
 *   (_PyTrash_thread_destroy_chain), so whichever greenlet next ends an
 *   outer trashcan with enough C budget frees them, and a switch inside a
 *   deallocator cannot free one twice.  Carrying the list per greenlet
 *   instead would strand it when a greenlet finishes or its thread exits
 *   with objects on it (or take relinking objects through their GC
 *   headers, whose encoding is private and changes between versions): the
 *   shared list is the conservative choice.
 * - tstate->critical_section (the innermost critical section, on the C
 *   stack) is carried per greenlet, though it is always 0 on a build with
 *   the GIL, the only kind supported here.
 * - tstate->eval_breaker, tracing, what_event and the trace and profile
 *   functions are the thread's, as in 3.12: a switch leaves them alone.
 *
 * Every greenlet runs on a stack of its own, so the entry frames of a
 * suspended greenlet stay where they are; saving current_frame is enough.
 */
#ifndef CGREENLET_PYSTATE_313_H
#define CGREENLET_PYSTATE_313_H

#ifdef Py_GIL_DISABLED
#error "cgreenlet's greenlet module needs a CPython with the GIL"
#endif

/* _PyInterpreterFrame, to see and release the frames of suspended
 * greenlets. */
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <internal/pycore_frame.h>

/* greenlet._greenlet.get_tstate_trash_delete_nesting(): 3.13 has no such
 * counter (see above); 0, as the upstream tests expect between calls. */
#define CG_TRASH_DELETE_NESTING(ts) ((void)(ts), 0)

typedef struct cg_pystate {
  /* Always NULL: 3.13 has no _PyCFrame (the module clears this field of
   * greenlets whose thread exits, whatever the version). */
  void *cframe;
  _PyInterpreterFrame *frame; /* tstate->current_frame while suspended */
  int py_recursion_depth;
  int c_recursion_depth;
  _PyStackChunk *datastack_chunk;
  PyObject **datastack_top;
  PyObject **datastack_limit;
  _PyErr_StackItem *exc_info;
  _PyErr_StackItem exc_state;
  PyObject *context;
  uintptr_t critical_section;
  _PyStackChunk *root; /* root data-stack chunk, from start to finish */
  _PyInterpreterFrame *abandoned; /* top frame of a greenlet dropped mid-run */
  /* End of the live value stack of the top frame, when it is suspended in a
   * switch() called from Python (see cg_pystate_save); else NULL. */
  PyObject **top_sp;
} cg_pystate;

/* Nothing on the new stack besides the root chunk (pystate_frames.h):
 * 3.13 has no _PyCFrame. */
typedef struct cg_start_buffers {
  char unused;
} cg_start_buffers;

/* What pystate_frames.h needs to know of 3.13's frames and of the record.
 * Frames whose slots are Python's: those of functions run by the thread
 * or by a generator (an entry frame's are not even initialised), with a
 * code object. */
static inline int cg_frame_is_python(_PyInterpreterFrame *f) {
  return (f->owner == FRAME_OWNED_BY_THREAD ||
          f->owner == FRAME_OWNED_BY_GENERATOR) &&
         PyCode_Check(f->f_executable);
}

/* The code object of a frame cg_frame_is_python() accepts. */
static inline PyCodeObject *cg_frame_code(_PyInterpreterFrame *f) {
  return (PyCodeObject *)f->f_executable;
}

#define CG_FRAME_FUNC(f) ((f)->f_funcobj)
#define CG_FRAME_EXECUTABLE(f) ((f)->f_executable)
#define CG_ENTRY_FRAMES 1

/* The frame chain is the thread's top interpreter frame itself. */
typedef _PyInterpreterFrame cg_frame_chain;
#define CG_THREAD_CHAIN(ts) ((ts)->current_frame)
#define CG_SAVED_CHAIN(st) ((st)->frame)
/* (The chain is the saved frame pointer itself.) */
#define CG_CHAIN_MOVED(st, M) ((void)0)

static inline _PyInterpreterFrame *cg_saved_frame(const cg_pystate *st) {
  return st->frame;
}

/* No _PyCFrame (3.13): a finished greenlet leaves nothing of one. */
static inline void cg_finish_cframe(PyThreadState *ts) { (void)ts; }

#include "pystate_frames.h"

/* No tracing flag to carry since 3.12 (see pystate_312.h). */
static inline uint8_t cg_pystate_use_tracing(PyThreadState *ts) {
  (void)ts;
  return 0;
}

/* Moves the running greenlet's state into st (references included).
 * call_end: see cg_frame_call_top (NULL when switch() was not called with
 * arguments in place, e.g. from C). */
static inline void cg_pystate_save(cg_pystate *st, PyThreadState *ts,
                                   PyObject *const *call_end) {
  st->top_sp = cg_frame_call_top(ts->current_frame, call_end);
  st->frame = ts->current_frame;
  st->py_recursion_depth = ts->py_recursion_limit - ts->py_recursion_remaining;
  st->c_recursion_depth = Py_C_RECURSION_LIMIT - ts->c_recursion_remaining;
  st->datastack_chunk = ts->datastack_chunk;
  st->datastack_top = ts->datastack_top;
  st->datastack_limit = ts->datastack_limit;
  st->exc_info = ts->exc_info;
  st->exc_state = ts->exc_state;
  st->context = ts->context;
  st->critical_section = ts->critical_section;
  ts->exc_state.exc_value = NULL;
  ts->exc_state.previous_item = NULL;
  ts->context = NULL;
}

/* Moves st back into the thread state.  (A recursion limit changed while
 * the greenlet was suspended applies to it: its depth is what is kept.) */
static inline void cg_pystate_restore(cg_pystate *st, PyThreadState *ts,
                                      uint8_t use_tracing) {
  (void)use_tracing;
  ts->current_frame = st->frame;
  ts->py_recursion_remaining = ts->py_recursion_limit - st->py_recursion_depth;
  ts->c_recursion_remaining = Py_C_RECURSION_LIMIT - st->c_recursion_depth;
  ts->datastack_chunk = st->datastack_chunk;
  ts->datastack_top = st->datastack_top;
  ts->datastack_limit = st->datastack_limit;
  ts->exc_state = st->exc_state;
  ts->exc_info = st->exc_info;
  ts->context = st->context;
  ts->context_ver++;
  ts->critical_section = st->critical_section;
  st->exc_state.exc_value = NULL;
  st->exc_state.previous_item = NULL;
  st->context = NULL;
  st->frame = NULL;
  st->critical_section = 0;
}

/* The state of a greenlet that starts now, on its own stack.  The context
 * set on it before it started (gr_context) becomes the thread's. */
static inline int cg_pystate_start(cg_pystate *st, PyThreadState *ts,
                                   cg_start_buffers *b, void *reserve,
                                   uint8_t use_tracing) {
  (void)b;
  (void)use_tracing;
  _PyStackChunk *c = reserve;
  st->root = c;
  ts->current_frame = NULL;
  ts->py_recursion_remaining = ts->py_recursion_limit;
  ts->c_recursion_remaining = Py_C_RECURSION_LIMIT;
  cg_start_root_chunk(ts, c);
  cg_start_exc_context(ts, &st->context);
  ts->critical_section = 0;
  return 0;
}

#endif
