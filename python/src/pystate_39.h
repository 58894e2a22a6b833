/*
 * pystate_39.h - CPython 3.9.
 *
 * What a switch must carry (REFERENCE.md section 2): the thread's top frame
 * (tstate->frame; frames are heap PyFrameObjects linked by f_back), the
 * recursion depth and its overflow flag (tstate->overflowed), the
 * handled-exception stack, the contextvars context and the trashcan
 * nesting.  There is no frame data stack and no CFrame; the tracing flag
 * (tstate->use_tracing) is the thread's, not a frame's, so it needs no
 * carrying.
 *
 * All else is done as in 3.10, in pystate_pyframes.h (which also says who
 * owns a frame): this file defines what that header needs to know of
 * 3.9, then the tracing flag and what becomes of the frames of a greenlet
 * whose thread exits (cg_pystate_orphan), which differ.
 */
#ifndef CGREENLET_PYSTATE_39_H
#define CGREENLET_PYSTATE_39_H

#include <frameobject.h>

typedef struct cg_pystate {
  /* Always NULL: 3.9 has no CFrame (the module clears this field of
   * greenlets whose thread exits, whatever the version). */
  void *cframe;
  PyFrameObject *frame;   /* top frame while suspended (borrowed), or NULL */
  int recursion_depth;
  /* While set, 50 calls more than the limit are allowed.  3.9.18 sets it
   * only while it raises a RecursionError, like 3.10's recursion_headroom
   * (ceval.h still describes an older rule: set until the depth falls 50
   * below the limit).  Either way it belongs to the C stack it was set on. */
  char overflowed;
  _PyErr_StackItem *exc_info;
  _PyErr_StackItem exc_state;
  PyObject *context;
  int trash_delete_nesting;
  PyFrameObject *abandoned; /* top frame of a greenlet dropped mid-run */
  /* End of the live value stack of the top frame, when it is suspended in a
   * switch() called from Python (see cg_pystate_save); else NULL. */
  PyObject **top_sp;
} cg_pystate;

/* What a starting greenlet keeps on its own C stack: nothing here. */
typedef struct cg_start_buffers {
  char unused;
} cg_start_buffers;

/* What pystate_pyframes.h needs to know of 3.9: no CFrame, and the
 * recursion guard is tstate->overflowed (see cg_pystate). */
#define CG_CFRAMES 0
#define CG_RECURSION_GUARD(p) ((p)->overflowed)

/* How many value-stack slots of frame f its own fields say are live:
 * up to f_stacktop, set while the frame is suspended (a generator's), not
 * yet started, or calls a line trace function; -1 while it runs
 * (f_stacktop is NULL; the stack pointer is a local of its eval loop). */
static inline int cg_frame_stack_known(PyFrameObject *f) {
  return f->f_stacktop ? (int)(f->f_stacktop - f->f_valuestack) : -1;
}

/* Frame f, which will never run again, becomes defunct before its
 * references go, as frame_tp_clear marks it: no value stack, and no longer
 * executing. */
static inline void cg_frame_mark_cleared(PyFrameObject *f) {
  f->f_stacktop = NULL;
  f->f_executing = 0;
}

#include "pystate_pyframes.h"

/* The tracing flag is the thread's (see the top of this file). */
static inline uint8_t cg_pystate_use_tracing(PyThreadState *ts) {
  return (uint8_t)ts->use_tracing;
}

/*
 * The greenlet's thread is exiting while it is suspended: its C stack (and
 * the C code that owns its running frames) goes without unwinding.  Its
 * frames are heap objects and stay as they are, readable through frame
 * objects held elsewhere, and executing as far as anyone can tell
 * (frame.clear() refuses, as upstream greenlet's tests expect; a generator
 * whose frame it is keeps gi_running set and refuses to run);
 * cg_pystate_abandon releases them when the greenlet object goes.  Until
 * then st->abandoned owns one reference to every frame of the chain: the
 * lost C code's, and for a generator's frame a new one (its generator may
 * go first: when its only holder was heap memory, say the run method of the
 * greenlet).
 */
static inline void cg_pystate_orphan(cg_pystate *st) {
  for (PyFrameObject *f = st->frame; f; f = f->f_back)
    if (f->f_gen)
      Py_INCREF(f);
  st->abandoned = st->frame;
  st->frame = NULL;
}

#endif
