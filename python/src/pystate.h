/*
 * pystate.h - the per-version layer: the CPython thread state a greenlet
 * carries while it is suspended, and how it is saved, restored, started and
 * finished.  Everything that depends on the interpreter version lives in the
 * header this one selects; the module's files (module.h) call only:
 *
 *   cg_pystate_save(st, ts)          running greenlet -> its record
 *   cg_pystate_restore(st, ts, tr)   its record -> thread state (tr: the
 *                                    tracing flag of the greenlet we came from)
 *   cg_pystate_prepare(st)           allocate, before the switch, what a
 *                                    greenlet needs to start (MemoryError)
 *   cg_pystate_start(st, ts, b, r, tr)  fresh state for a greenlet
 *                                    starting on its own stack; r is the
 *                                    CG_PYSTATE_RESERVE bytes the core keeps
 *                                    at the top of that stack
 *   cg_pystate_finish(st, ts)        a finished greenlet gives back what it
 *                                    allocated (no Python code runs after)
 *   cg_pystate_use_tracing(ts)       the tracing flag to copy across a switch
 *   cg_pystate_frame(st, ts)         new reference to the suspended greenlet's
 *                                    top frame object, or None
 *   cg_pystate_orphan(st)            its thread exits while it is suspended
 *   cg_pystate_abandon(st)           releases what such a greenlet's frames
 *                                    hold, when its object is freed
 *   cg_pystate_context / _set_context, cg_pystate_traverse, cg_pystate_clear
 *   cg_pystate_traverse_frames(st, visit, arg)
 *                                    what a suspended greenlet's frames hold,
 *                                    for the collector (see frames_visible)
 *   cg_pystate_fail_relocations(n)   test hook: the next n orphans cannot
 *                                    move their frames (as if out of
 *                                    memory); -1 if this version has none
 *
 * Each version's header (pystate_39.h to pystate_313.h) defines the record
 * (cg_pystate, cg_start_buffers), the tracing flag and whatever else of
 * the layer is its own.  What several versions share is written once, in
 * a header that the version's includes once it has defined the few
 * accessors it differs by (listed at the top of that header):
 *   pystate_pyframes.h   3.9 and 3.10, whose frames are heap frame objects:
 *                        all but the tracing flag and cg_pystate_orphan
 *   pystate_frames.h     3.11 to 3.13, whose frames are interpreter frames
 *                        in data-stack chunks: the root chunk, the frame
 *                        objects of suspended greenlets, their traversal,
 *                        moving and releasing the frames of orphans, the
 *                        end of a run (save, restore and start, which
 *                        differ in most of what they carry, stay with each
 *                        version)
 * What every version does alike (cg_pystate_prepare, cg_pystate_context,
 * cg_pystate_set_context) follows the version's header, here; the end of a
 * start (cg_start_exc_context) precedes it.
 */
#ifndef CGREENLET_PYSTATE_H
#define CGREENLET_PYSTATE_H

#include <Python.h>
#include <string.h>
#include "pycompat.h"

/* The end of every version's cg_pystate_start: the greenlet starts handling
 * no exception, and the context set on it before it started (gr_context; a
 * reference, moved out of *context) becomes the thread's.  Defined before the
 * version's header, which uses it. */
static inline void cg_start_exc_context(PyThreadState *ts, PyObject **context) {
  memset(&ts->exc_state, 0, sizeof ts->exc_state); /* every field a pointer */
  ts->exc_info = &ts->exc_state;
  ts->context = *context;
  *context = NULL;
  ts->context_ver++;
}

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#include "pystate_311.h"
#elif PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
#include "pystate_312.h"
#elif PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000
#include "pystate_313.h"
#elif PY_VERSION_HEX >= 0x03090000 && PY_VERSION_HEX < 0x030A0000
#include "pystate_39.h"
#elif PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030B0000
#include "pystate_310.h"
#else
#error "cgreenlet's greenlet module supports CPython 3.9 to 3.13 only (so far)"
#endif

/* Nothing to allocate before a start, in any version: a starting greenlet
 * needs either nothing (3.9, 3.10) or its root data-stack chunk, which is
 * on its new stack (CG_PYSTATE_RESERVE). */
static inline int cg_pystate_prepare(cg_pystate *st) {
  (void)st;
  return 0;
}

/* The context of a greenlet that is not running (gr_context; borrowed, NULL
 * if none): the one it will start or resume with, or finished in.  A
 * running greenlet's is the thread's (tstate->context). */
static inline PyObject *cg_pystate_context(cg_pystate *st) {
  return st->context;
}

/* Sets it (the old one is released, after the new one is held). */
static inline void cg_pystate_set_context(cg_pystate *st, PyObject *ctx) {
  Py_XINCREF(ctx);
  Py_XSETREF(st->context, ctx);
}

#endif
