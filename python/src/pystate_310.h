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
 * Frame ownership, which the collector and the thread-exit code rely on:
 * - tstate->frame is borrowed.  A frame that runs is owned by the C code
 *   that evaluates it (_PyEval_Vector holds one reference until the frame
 *   returns; Cython's and Nuitka's calls do the same), except a generator's
 *   (coroutine's) frame, which its generator owns (f_gen is set).  Each
 *   frame owns its f_back.
 * - A running frame is created untracked (_PyFrame_New_NoTrack) and is
 *   tracked only when it returns while still referenced.  The collector
 *   therefore never traverses or clears it, nor what it holds: its
 *   references count as outside ones, exactly as another thread's frames do.
 *   A generator's frame, and a frame made by PyFrame_New (Cython), are
 *   tracked: frame_traverse visits their locals, and their value stack when
 *   f_stackdepth > 0 (while a frame runs it is -1).
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

/* No data stack of frames: nothing kept at the top of the stack. */
#define CG_PYSTATE_RESERVE 0

/* Nothing to allocate before a start. */
static inline int cg_pystate_prepare(cg_pystate *st) {
  (void)st;
  return 0;
}

static inline uint8_t cg_pystate_use_tracing(PyThreadState *ts) {
  return (uint8_t)ts->cframe->use_tracing;
}

/* How many value-stack slots of frame f its own fields say are live:
 * f_stackdepth, kept while the frame is suspended (a generator's) or calls
 * a trace function; -1 while it runs (the stack pointer is then a local of
 * its eval loop). */
static inline int cg_frame_stack_known(PyFrameObject *f) {
  return f->f_stackdepth >= 0 ? f->f_stackdepth : -1;
}

/*
 * The end of the value stack of frame f, if call_end (the end of the
 * arguments of the C call f is making) points into it; else NULL.
 * The interpreter does not store its stack pointer in a running frame, but
 * it passes vectorcall arguments in place, on top of that stack
 * (call_function: CALL_FUNCTION, CALL_METHOD, CALL_FUNCTION_KW): the
 * arguments of switch() end where the live stack ends.
 */
static inline PyObject **cg_frame_call_top(PyFrameObject *f,
                                           PyObject *const *call_end) {
  if (!f || !call_end || cg_frame_stack_known(f) >= 0)
    return NULL;
  PyObject **base = f->f_valuestack;
  PyObject **sp = (PyObject **)call_end;
  return sp > base && sp <= base + f->f_code->co_stacksize ? sp : NULL;
}

/* Moves the running greenlet's state into st (references included).
 * call_end: see cg_frame_call_top (NULL when switch() was not called with
 * arguments in place, e.g. from C). */
static inline void cg_pystate_save(cg_pystate *st, PyThreadState *ts,
                                   PyObject *const *call_end) {
  st->top_sp = cg_frame_call_top(ts->frame, call_end);
  st->cframe = ts->cframe;
  st->frame = ts->frame;
  st->recursion_depth = ts->recursion_depth;
  st->recursion_headroom = ts->recursion_headroom;
  st->exc_info = ts->exc_info;
  st->exc_state = ts->exc_state;
  st->context = ts->context;
  st->trash_delete_nesting = ts->trash_delete_nesting;
  ts->exc_state.exc_type = NULL;
  ts->exc_state.exc_value = NULL;
  ts->exc_state.exc_traceback = NULL;
  ts->exc_state.previous_item = NULL;
  ts->context = NULL;
}

/* Moves st back into the thread state.  The tracing flag is the origin's,
 * so that a profiler set while another greenlet ran keeps working here. */
static inline void cg_pystate_restore(cg_pystate *st, PyThreadState *ts,
                                      uint8_t use_tracing) {
  ts->cframe = st->cframe;
  ts->cframe->use_tracing = use_tracing;
  ts->frame = st->frame;
  ts->recursion_depth = st->recursion_depth;
  ts->recursion_headroom = st->recursion_headroom;
  ts->exc_state = st->exc_state;
  ts->exc_info = st->exc_info;
  ts->context = st->context;
  ts->context_ver++;
  ts->trash_delete_nesting = st->trash_delete_nesting;
  st->exc_state.exc_type = NULL;
  st->exc_state.exc_value = NULL;
  st->exc_state.exc_traceback = NULL;
  st->exc_state.previous_item = NULL;
  st->context = NULL;
  st->cframe = NULL;
  st->frame = NULL;
  st->top_sp = NULL;
}

/* The state of a greenlet that starts now, on its own stack: no frame, its
 * own root CFrame (ending in the thread's root_cframe, as CPython's chain
 * does), depth 0.  The context set on it before it started (gr_context)
 * becomes the thread's. */
static inline int cg_pystate_start(cg_pystate *st, PyThreadState *ts,
                                   cg_start_buffers *b, void *reserve,
                                   uint8_t use_tracing) {
  (void)reserve;
  b->cframe.use_tracing = use_tracing;
  b->cframe.previous = &ts->root_cframe;
  ts->cframe = &b->cframe;
  ts->frame = NULL;
  ts->recursion_depth = 0;
  ts->recursion_headroom = 0;
  ts->exc_state.exc_type = NULL;
  ts->exc_state.exc_value = NULL;
  ts->exc_state.exc_traceback = NULL;
  ts->exc_state.previous_item = NULL;
  ts->exc_info = &ts->exc_state;
  ts->context = st->context; /* reference moves */
  st->context = NULL;
  ts->context_ver++;
  ts->trash_delete_nesting = 0;
  return 0;
}

/*
 * A greenlet's run returned; it will never run Python code again.  Its
 * context stays with it (gr_context of a dead greenlet shows the context it
 * ran in); the handled-exception state is dropped.  Its frames have all
 * returned, but tstate->cframe is its root CFrame, on the stack about to be
 * released: whoever resumes next reads the tracing flag
 * (cg_pystate_use_tracing) from the thread's root CFrame instead.
 */
static inline void cg_pystate_finish(cg_pystate *st, PyThreadState *ts) {
  Py_XSETREF(st->context, ts->context);
  ts->context = NULL;
  Py_CLEAR(ts->exc_state.exc_type);
  Py_CLEAR(ts->exc_state.exc_value);
  Py_CLEAR(ts->exc_state.exc_traceback);
  ts->root_cframe.use_tracing = ts->cframe->use_tracing;
  ts->cframe = &ts->root_cframe;
}

/* New reference to the top frame object of a suspended greenlet (None if it
 * has none).  Frames are objects already: nothing to allocate. */
static inline PyObject *cg_pystate_frame(cg_pystate *st, PyThreadState *ts) {
  (void)ts;
  return Py_NewRef(st->frame ? (PyObject *)st->frame : Py_None);
}

static inline PyObject *cg_pystate_context(cg_pystate *st) {
  return st->context;
}

static inline void cg_pystate_set_context(cg_pystate *st, PyObject *ctx) {
  Py_XINCREF(ctx);
  Py_XSETREF(st->context, ctx);
}

static inline int cg_pystate_traverse(cg_pystate *st, visitproc visit,
                                      void *arg) {
  Py_VISIT(st->context);
  Py_VISIT(st->exc_state.exc_type);
  Py_VISIT(st->exc_state.exc_value);
  Py_VISIT(st->exc_state.exc_traceback);
  return 0;
}

/* The top frame of a suspended greenlet (NULL if it has none or runs). */
static inline PyFrameObject *cg_pystate_top(cg_pystate *st) {
  return st->frame ? st->frame : st->abandoned;
}

/*
 * How many value-stack slots of frame f (of a suspended greenlet's chain;
 * top_sp: the stack end recorded for the top frame, else NULL) hold
 * references that f's own frame_traverse does not visit: the known live
 * stack of an untracked frame; of a tracked one, only the extent recorded
 * by switch() (frame_traverse visits f_stackdepth slots itself).  A frame
 * suspended in a call keeps an unknown stack: 0.
 * A caller below the top keeps the arguments of the call it is making on
 * its stack until that returns (3.11 moves them into the callee), and
 * they stay unseen: the bytecode at f_lasti would give their extent, but
 * f_lasti still names the CALL while a finalizer, signal handler or
 * tracer runs after the call popped them, and stale slots must never be
 * visited.  (tests: test_frame_chains.py, the cycle-through-switch ones)
 */
static inline int cg_frame_stack_slots(PyFrameObject *f, PyObject **top_sp,
                                       int tracked) {
  int known = cg_frame_stack_known(f);
  if (known >= 0)
    return tracked ? 0 : known;
  return top_sp ? (int)(top_sp - f->f_valuestack) : 0;
}

/*
 * Visits what the Python frames of a suspended (or orphaned) greenlet hold,
 * so that the collector can find cycles through them: of each frame the
 * collector never traverses (an untracked, running one: see the top of this
 * file) its locals (fast locals, cells, f_locals), code, globals, builtins
 * and trace function, and its live value stack where known; of a tracked
 * frame only the stack that its own traverse leaves out.  The frame objects
 * of a suspended greenlet are not visited (nor f_back): the collector must
 * never clear a frame that may still run, and a running frame must keep
 * its outside reference.  Those of an orphan are (the references
 * cg_pystate_orphan took over): they never run again.
 */
static inline int cg_pystate_traverse_frames(cg_pystate *st, visitproc visit,
                                             void *arg) {
  PyObject **sp = st->top_sp;
  int orphan = !st->frame; /* st->abandoned owns its frames */
  for (PyFrameObject *f = cg_pystate_top(st); f; f = f->f_back, sp = NULL) {
    int tracked = PyObject_GC_IsTracked((PyObject *)f);
    if (orphan)
      Py_VISIT(f);
    if (!tracked) {
      Py_VISIT(f->f_code);
      Py_VISIT(f->f_builtins);
      Py_VISIT(f->f_globals);
      Py_VISIT(f->f_locals);
      Py_VISIT(f->f_trace);
      for (PyObject **p = f->f_localsplus; p < f->f_valuestack; p++)
        Py_VISIT(*p);
    }
    int n = cg_frame_stack_slots(f, sp, tracked);
    for (int k = 0; k < n; k++)
      Py_VISIT(f->f_valuestack[k]);
  }
  return 0;
}

/* A greenlet that is not running (never started, or finished) is freed. */
static inline void cg_pystate_clear(cg_pystate *st) {
  Py_CLEAR(st->context);
  Py_CLEAR(st->exc_state.exc_type);
  Py_CLEAR(st->exc_state.exc_value);
  Py_CLEAR(st->exc_state.exc_traceback);
}

/* Frames are heap objects here: an orphan's frames never move. */
static inline int cg_pystate_fail_relocations(int n) {
  (void)n;
  return -1;
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

/*
 * The object of a greenlet dropped without unwinding (its thread exited) is
 * freed.  Its frames never run again, so they are cleared as frame.clear()
 * would clear them: locals, f_locals, trace function and the known part of
 * the value stack (the top frame's, recorded by switch(); a frame suspended
 * in a call keeps its stack, whose extent only the lost C frame knew:
 * leaked), and marked cleared.  Then our reference to each frame (see
 * cg_pystate_orphan) is dropped: frames nobody else holds are freed; one
 * still held (gr_frame, a traceback, its generator) is tracked by the
 * collector, as CPython tracks a frame that outlives its call.
 */
static inline void cg_pystate_abandon(cg_pystate *st) {
  PyFrameObject *f = st->abandoned;
  PyObject **sp = st->top_sp;
  st->abandoned = NULL; /* the collector sees none of this from now on */
  st->top_sp = NULL;
  /* Clearing may run code: each frame stays alive (our reference) until we
   * are done with it, and the links never change (no frame of the chain
   * can run again). */
  while (f) {
    int n = cg_frame_stack_slots(f, sp, 0);
    sp = NULL;
    f->f_state = FRAME_CLEARED; /* first, as frame_tp_clear does */
    f->f_stackdepth = 0;
    for (PyObject **p = f->f_localsplus; p < f->f_valuestack; p++)
      Py_CLEAR(*p);
    for (int k = 0; k < n; k++)
      Py_CLEAR(f->f_valuestack[k]);
    Py_CLEAR(f->f_locals);
    Py_CLEAR(f->f_trace);
    PyFrameObject *back = f->f_back; /* we hold a reference to it too */
    if (Py_REFCNT(f) > 1 && !PyObject_GC_IsTracked((PyObject *)f))
      PyObject_GC_Track(f);
    Py_DECREF(f);
    f = back;
  }
}

#endif
