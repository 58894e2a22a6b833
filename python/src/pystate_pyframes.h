/*
 * pystate_pyframes.h - what the 3.9 and 3.10 layers share, all but a few
 * details: what a switch carries and how a greenlet starts and finishes
 * (3.10 adds the CFrame chain); Python frames that are heap objects
 * (PyFrameObject, linked by f_back): what the collector sees of those of
 * a suspended greenlet, and what becomes of them when the object of a
 * greenlet whose thread exited goes; and the record's own references.
 *
 * Included by pystate_39.h and pystate_310.h once they have defined (the
 * differences between those versions):
 *
 *   cg_pystate                  the record: frame, recursion_depth, the
 *                               recursion guard, exc_info, exc_state,
 *                               context, trash_delete_nesting, abandoned,
 *                               top_sp, and (3.10) cframe
 *   cg_start_buffers            what green_run keeps for a starting
 *                               greenlet (3.10: its root CFrame, cframe)
 *   CG_CFRAMES                  1 if each _PyEval_EvalFrameDefault call
 *                               pushes a CFrame, the one holding the
 *                               tracing flag (3.10), 0 if there is none
 *                               (3.9: use_tracing is the thread's)
 *   CG_RECURSION_GUARD(p)       the recursion guard of a thread state or of
 *                               the record (lvalue: the flag that allows
 *                               calls past the limit while a RecursionError
 *                               is raised; 3.9: overflowed, 3.10:
 *                               recursion_headroom)
 *   cg_frame_stack_known(f)     how many value-stack slots of frame f its
 *                               own fields say are live, or -1 while it
 *                               runs (3.9: f_stacktop; 3.10: f_stackdepth)
 *   cg_frame_mark_cleared(f)    marks a frame that will never run again
 *                               defunct, as frame_tp_clear does
 *
 * Frame ownership, which the collector and the thread-exit code rely on:
 * - tstate->frame is borrowed.  A frame that runs is owned by the C code
 *   that evaluates it (function_code_fastcall and _PyEval_EvalCode in 3.9,
 *   _PyEval_Vector in 3.10, hold one reference until the frame returns;
 *   Cython's and Nuitka's calls do the same), except a generator's
 *   (coroutine's) frame, which its generator owns (f_gen is set).  Each
 *   frame owns its f_back.
 * - A running frame is created untracked (_PyFrame_New_NoTrack) and is
 *   tracked only when it returns while still referenced.  The collector
 *   therefore never traverses or clears it, nor what it holds: its
 *   references count as outside ones, exactly as another thread's frames do.
 *   A generator's frame, and a frame made by PyFrame_New (Cython), are
 *   tracked: frame_traverse visits their locals, and their value stack when
 *   its extent is known (3.9: f_stacktop is set, NULL while the frame runs;
 *   3.10: f_stackdepth > 0, -1 while it runs).
 */
#ifndef CGREENLET_PYSTATE_PYFRAMES_H
#define CGREENLET_PYSTATE_PYFRAMES_H

/* No data stack of frames: nothing kept at the top of the stack. */
#define CG_PYSTATE_RESERVE 0

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
#if CG_CFRAMES
  st->cframe = ts->cframe;
#endif
  st->frame = ts->frame;
  st->recursion_depth = ts->recursion_depth;
  CG_RECURSION_GUARD(st) = CG_RECURSION_GUARD(ts);
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
 * so that a profiler set while another greenlet ran keeps working here: in
 * 3.10 it is copied into the CFrame resumed; 3.9's is the thread's
 * (tstate->use_tracing), the origin's already. */
static inline void cg_pystate_restore(cg_pystate *st, PyThreadState *ts,
                                      uint8_t use_tracing) {
#if CG_CFRAMES
  ts->cframe = st->cframe;
  ts->cframe->use_tracing = use_tracing;
#else
  (void)use_tracing;
#endif
  ts->frame = st->frame;
  ts->recursion_depth = st->recursion_depth;
  CG_RECURSION_GUARD(ts) = CG_RECURSION_GUARD(st);
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
#if CG_CFRAMES
  st->cframe = NULL;
#endif
  st->frame = NULL;
  st->top_sp = NULL;
}

/* The state of a greenlet that starts now, on its own stack: no frame,
 * depth 0, and in 3.10 its own root CFrame (ending in the thread's
 * root_cframe, as CPython's chain does).  The context set on it before it
 * started (gr_context) becomes the thread's. */
static inline int cg_pystate_start(cg_pystate *st, PyThreadState *ts,
                                   cg_start_buffers *b, void *reserve,
                                   uint8_t use_tracing) {
  (void)reserve;
#if CG_CFRAMES
  b->cframe.use_tracing = use_tracing;
  b->cframe.previous = &ts->root_cframe;
  ts->cframe = &b->cframe;
#else
  (void)b;
  (void)use_tracing;
#endif
  ts->frame = NULL;
  ts->recursion_depth = 0;
  CG_RECURSION_GUARD(ts) = 0;
  cg_start_exc_context(ts, &st->context);
  ts->trash_delete_nesting = 0;
  return 0;
}

/*
 * A greenlet's run returned; it will never run Python code again.  Its
 * context stays with it (gr_context of a dead greenlet shows the context it
 * ran in); the handled-exception state is dropped.  Its frames have all
 * returned, but in 3.10 tstate->cframe is its root CFrame, on the stack
 * about to be released: whoever resumes next reads the tracing flag
 * (cg_pystate_use_tracing) from the thread's root CFrame instead.
 */
static inline void cg_pystate_finish(cg_pystate *st, PyThreadState *ts) {
  Py_XSETREF(st->context, ts->context);
  ts->context = NULL;
  Py_CLEAR(ts->exc_state.exc_type);
  Py_CLEAR(ts->exc_state.exc_value);
  Py_CLEAR(ts->exc_state.exc_traceback);
#if CG_CFRAMES
  ts->root_cframe.use_tracing = ts->cframe->use_tracing;
  ts->cframe = &ts->root_cframe;
#endif
}

/* Shared stacks: frames are heap objects here, and nothing but the running
 * greenlet reads its C stack, so only the record's pointer into it (the
 * saved CFrame, 3.10) moves with the bytes; the root chunk is 3.11's. */
static inline size_t cg_pystate_reserve_in_use(const cg_pystate *st) {
  (void)st;
  return 0;
}

static inline void cg_pystate_moved(cg_pystate *st, char *lo, char *hi,
                                    ptrdiff_t d) {
#if CG_CFRAMES
  if ((char *)st->cframe >= lo && (char *)st->cframe <= hi)
    st->cframe = (CFrame *)((uintptr_t)st->cframe + (uintptr_t)d);
#else
  (void)st, (void)lo, (void)hi, (void)d;
#endif
}

/* New reference to the top frame object of a suspended greenlet (None if it
 * has none).  Frames are objects already: nothing to allocate. */
static inline PyObject *cg_pystate_frame(cg_pystate *st, PyThreadState *ts) {
  (void)ts;
  return Py_NewRef(st->frame ? (PyObject *)st->frame : Py_None);
}

/* What the record itself holds, for the collector (its frames:
 * cg_pystate_traverse_frames). */
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
 * by switch() (frame_traverse visits the known stack itself:
 * cg_frame_stack_known).  A frame suspended in a call keeps an unknown
 * stack: 0.
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
 * The object of a greenlet dropped without unwinding (its thread exited) is
 * freed.  Its frames never run again, so they are cleared as frame.clear()
 * would clear them: locals, f_locals, trace function and the known part of
 * the value stack (the top frame's, recorded by switch(); a frame suspended
 * in a call keeps its stack, whose extent only the lost C frame knew:
 * leaked), and marked defunct (cg_frame_mark_cleared).  Then our reference
 * to each frame (see cg_pystate_orphan) is dropped: frames nobody else
 * holds are freed; one still held (gr_frame, a traceback, its generator) is
 * tracked by the collector, as CPython tracks a frame that outlives its
 * call.
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
    cg_frame_mark_cleared(f); /* first, as frame_tp_clear does */
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
