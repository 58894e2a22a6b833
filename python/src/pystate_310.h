/*
 * pystate_310.h - CPython 3.10.
 *
 * What a switch must carry (REFERENCE.md section 2): the CFrame chain
 * (tstate->cframe: each _PyEval_EvalFrameDefault call pushes a CFrame, on
 * the C stack, holding use_tracing), the thread's top frame (tstate->frame;
 * frames are heap PyFrameObjects linked by f_back), the recursion depth and
 * headroom, the handled-exception stack, the contextvars context and the
 * trashcan nesting.  There is no frame data stack.
 *
 * Every greenlet runs on a stack of its own, so the CFrames of a suspended
 * greenlet stay where they are; saving tstate->cframe is enough.
 *
 * All else is done as in 3.9, in pystate_pyframes.h (which also says who
 * owns a frame): this file defines what that header needs to know of
 * 3.10, then the tracing flag and what becomes of the frames of a greenlet
 * whose thread exits (cg_pystate_orphan), which differ.
 */
#ifndef CGREENLET_PYSTATE_310_H
#define CGREENLET_PYSTATE_310_H

#include <frameobject.h>

typedef struct cg_pystate {
  CFrame *cframe;         /* tstate->cframe while suspended, else NULL */
  PyFrameObject *frame;   /* top frame while suspended (borrowed), or NULL */
  int recursion_depth;
  int recursion_headroom; /* set while a RecursionError is raised */
  _PyErr_StackItem *exc_info;
  _PyErr_StackItem exc_state;
  PyObject *context;
  int trash_delete_nesting;
  PyFrameObject *abandoned; /* top frame of a greenlet dropped mid-run */
  /* End of the live value stack of the top frame, when it is suspended in a
   * switch() called from Python (see cg_pystate_save); else NULL. */
  PyObject **top_sp;
} cg_pystate;

/* What a starting greenlet keeps for its lifetime, on its own C stack (in
 * green_run's frame): the root of its CFrame chain. */
typedef struct cg_start_buffers {
  CFrame cframe;
} cg_start_buffers;

/* What pystate_pyframes.h needs to know of 3.10: the CFrame chain (see the
 * top of this file), and the recursion guard is tstate->recursion_headroom
 * (see cg_pystate). */
#define CG_CFRAMES 1
#define CG_RECURSION_GUARD(p) ((p)->recursion_headroom)

/* How many value-stack slots of frame f its own fields say are live:
 * f_stackdepth, kept while the frame is suspended (a generator's) or calls
 * a trace function; -1 while it runs (the stack pointer is then a local of
 * its eval loop). */
static inline int cg_frame_stack_known(PyFrameObject *f) {
  return f->f_stackdepth >= 0 ? f->f_stackdepth : -1;
}

/* Frame f, which will never run again, becomes defunct before its
 * references go, as frame_tp_clear marks it: cleared, no value stack. */
static inline void cg_frame_mark_cleared(PyFrameObject *f) {
  f->f_state = FRAME_CLEARED;
  f->f_stackdepth = 0;
}

#include "pystate_pyframes.h"

/* The tracing flag is the running CFrame's (see the top of this file). */
static inline uint8_t cg_pystate_use_tracing(PyThreadState *ts) {
  return (uint8_t)ts->cframe->use_tracing;
}

/*
 * The greenlet's thread is exiting while it is suspended: its C stack (its
 * CFrames, and the C code that owns its running frames) goes without
 * unwinding.  Its frames are heap objects and stay as they are, readable
 * through frame objects held elsewhere, and executing as far as anyone can
 * tell (frame.clear() refuses, as upstream greenlet's tests expect);
 * cg_pystate_abandon releases them when the greenlet object goes.  Until
 * then st->abandoned owns one reference to every frame of the chain: the
 * lost C code's, and for a generator's frame a new one (its generator may
 * go first: when its only holder was heap memory, say the run method of the
 * greenlet).  A generator's frame is marked cleared at once: its generator
 * then counts as finished, and finalizing it does not try to close it (and
 * print "generator already executing").
 */
static inline void cg_pystate_orphan(cg_pystate *st) {
  for (PyFrameObject *f = st->frame; f; f = f->f_back) {
    if (f->f_gen) {
      Py_INCREF(f);
      f->f_state = FRAME_CLEARED;
    }
  }
  st->abandoned = st->frame;
  st->frame = NULL;
  st->cframe = NULL;
}

#endif
