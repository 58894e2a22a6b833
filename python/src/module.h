/*
 * module.h - greenlet._greenlet: the drop-in greenlet 2.0.2 module for
 * CPython, on libcgreenlet.  This private header is what its files share.
 *
 * Each Python greenlet owns a core greenlet (its own guarded stack); a
 * switch saves the interpreter state of the running greenlet (pystate.h),
 * switches the core, and the resumed side restores its own.  Values and
 * exceptions travel through slots of the per-thread state (cg_thread): both
 * sides hold the GIL, on one thread, so nothing else can touch them between
 * the store and the load.  The core's value pointers are unused.
 *
 * ABI (REFERENCE.md 1): PyGreenlet is {PyObject_HEAD; weakreflist; dict;
 * pimpl} (40 bytes), greenlet.greenlet is a static type, and the 12-slot
 * _C_API capsule is what compiled users (gevent) call.
 *
 * The module's files, one concern each (as the core is split):
 *   type.c     the greenlet type: creation, its attributes, repr, and how
 *              an object goes (the collector's view of its frames,
 *              traverse, clear, finalize, dealloc)
 *   switch.c   switch, throw and run: the value slots, the tracer, the
 *              thread checks, green_run, the late core greenlet, and the
 *              kill of a greenlet whose last reference went
 *   thread.c   the per-thread state (cg_thread): its creation, thread
 *              exit (orphans), the list of a thread's greenlet objects, and
 *              what other threads leave to it (greenlets to kill, core
 *              records to destroy)
 *   module.c   the module: its functions (getcurrent, settrace ...),
 *              greenlet.introspect's C side, the test hooks, the gc
 *              callback, the core's move hooks, the _C_API capsule and
 *              PyInit__greenlet
 *
 * What follows is the whole interface between them: the structs, the
 * shared objects, the state queries, and the functions one file calls in
 * another (prefix cg_; everything else is static to its file).  The gdb
 * extension (gdb/cgreenlet-gdb.py) reads PyGreenlet, cg_impl, cg_thread and
 * cg_pystate from the module's debug information, and finds the module by
 * its PyGreenlet_Type symbol: those names stay.
 */
#ifndef CGREENLET_MODULE_H
#define CGREENLET_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <string.h>

#include "cgreenlet.h"
#include "pystate.h"

/* The module is built with -fvisibility=hidden (setup.py), which hides what
 * a file defines but not what it declares extern: without this, the other
 * files would reach these through the GOT (and cg_tls through the
 * general-dynamic TLS model), as if another library could define them.
 * Hidden declarations compile as the single file did. */
#pragma GCC visibility push(hidden)

typedef struct cg_impl cg_impl;
typedef struct cg_thread cg_thread;

typedef struct {
  PyObject_HEAD
  PyObject *weakreflist;
  PyObject *dict;
  cg_impl *pimpl;
} PyGreenlet;

struct cg_impl {
  greenlet_t *core;   /* NULL once the owner thread has gone */
  cg_thread *thread;  /* owner (borrowed; NULL once it has gone) */
  PyObject *run;      /* until started */
  PyGreenlet *parent; /* strong; NULL for a main greenlet */
  cg_pystate st;      /* interpreter state while suspended */
  int is_main;
  int thread_gone;    /* the owner thread exited */
  /* 1: suspended when its thread exited; 2: and `dead` or repr() has been
   * read since.  Stock greenlet (2.0.2 and 3.x) then drops its stack state
   * and takes it for one never started when run or parent is set (both are
   * accepted; it stays dead): see forgot_start. */
  int orphan;
  PyObject *dead_frame; /* top frame when the thread exited mid-run */
  /* run and its arguments while it runs: held here, not on the C stack, so
   * that the collector sees them (a bound run method holds the greenlet). */
  PyObject *call_run, *call_args, *call_kwargs;
  cg_impl *prev, *next; /* all greenlet objects of the owner thread */
  PyGreenlet *self;     /* borrowed */
  /* The full collection that last saw its frames since it last parked
   * (0: none yet): see frames_shown (type.c). */
  unsigned long gc_shown;
  /* UnswitchableGreenlet's switches into it fail: with SystemError
   * (force_switch_error) or a fatal error (force_slp_switch_error). */
  uint8_t force_switch_error, force_slp_switch_error;
};

/* Per (OS thread, interpreter thread state): lives in the thread state's
 * dict, so CPython drops it when the thread ends. */
struct cg_thread {
  PyObject_HEAD
  PyThreadState *tstate;
  PyGreenlet *main;
  PyGreenlet *current; /* strong */
  PyGreenlet *origin;  /* greenlet the last switch left (strong, transient) */
  PyGreenlet *via;     /* last greenlet an outcome passed unrun (trace_unrun) */
  PyObject *tracefunc;
  cg_impl *all;        /* list of this thread's greenlet objects */
  /* Switch slots. */
  PyObject *xfer_args, *xfer_kwargs;          /* a value: args, kwargs */
  PyObject *xfer_type, *xfer_value, *xfer_tb; /* an exception */
  PyObject *deleteme; /* list of greenlets to kill, queued by other threads */
  /* The tracing flag of the greenlet that switched last, for the one it
   * resumes: read before the switch, because the origin's _PyCFrame (on
   * its stack) may have been copied away by then (shared stacks). */
  uint8_t tracing;
  /* Core records of this thread's greenlet objects freed on other threads
   * (cg_release_core), for this thread to destroy. */
  greenlet_t **core_free;
  Py_ssize_t ncore_free, core_free_cap;
};

/* ---- shared objects (defined in the file named) ----------------------- */

extern PyTypeObject PyGreenlet_Type;       /* type.c */
/* _greenlet.UnswitchableGreenlet (greenlet 3.x's, for tests of switches
 * that fail): type.c. */
extern PyTypeObject cg_unswitchable_Type;
extern PyTypeObject cg_thread_Type;        /* thread.c */
extern PyObject *PyExc_GreenletError;      /* module.c, made by PyInit */
extern PyObject *PyExc_GreenletExit;       /* module.c, made by PyInit */
extern PyObject *cg_str_run, *cg_thread_key, *cg_empty_tuple; /* module.c */
extern Py_ssize_t cg_total_main_greenlets; /* thread.c */
extern __thread cg_thread *cg_tls;         /* thread.c: cg_thread_get's cache */
/* The number of the full collection under way (0: none), and whether a
 * young one is: module.c. */
extern unsigned long cg_full_gc;
extern int cg_young_gc;

#define IMPL(g) (((PyGreenlet *)(g))->pimpl)
#define GREENLET_CHECK(o) PyObject_TypeCheck((o), &PyGreenlet_Type)

/* ---- state queries ------------------------------------------------------- */
/* (Inline: every file asks, and the switch path asks often.) */

static inline int g_started(cg_impl *i) {
  return i->is_main || i->thread_gone || (i->core && greenlet_started(i->core));
}

static inline int g_active(cg_impl *i) {
  return i->core && !i->thread_gone && greenlet_active(i->core);
}

static inline int g_dead(cg_impl *i) { return g_started(i) && !g_active(i); }

/* Whether setting run or parent treats i as never started (see orphan). */
static inline int forgot_start(cg_impl *i) { return i->orphan == 2; }

/* ---- type.c -------------------------------------------------------------- */
/* A thread's main greenlet is made by thread.c; the capsule makes greenlets
 * and sets their run and parent as the type's own code does. */

PyGreenlet *cg_green_alloc(PyTypeObject *type);
int cg_green_types_ready(void);
PyObject *cg_green_new(PyTypeObject *type, PyObject *args, PyObject *kw);
int cg_green_setrun(PyGreenlet *self, PyObject *value, void *c);
int cg_green_setparent(PyGreenlet *self, PyObject *value, void *c);

/* ---- switch.c ------------------------------------------------------------ */
/* The type's switch and throw methods, setparent (which makes the core of a
 * new parent), finalize and dealloc (the kill), and the capsule's switch
 * and throw all go through here. */

PyObject *cg_core_error(int rc);
int cg_check_thread(cg_thread *th, PyGreenlet *target);
PyObject *cg_do_switch(cg_thread *th, PyGreenlet *target, int status,
                       PyObject *const *call_end);
int cg_ensure_core(cg_thread *th, PyGreenlet *g);
int cg_kill_in_place(cg_thread *th, PyGreenlet *self);
void cg_sync_core_chain(cg_thread *th, PyGreenlet *g);
PyObject *cg_switch_owned(PyGreenlet *self, PyObject *args, PyObject *kwargs,
                          PyObject *const *call_end);
PyObject *cg_green_switch(PyGreenlet *self, PyObject *const *args,
                          Py_ssize_t nargsf, PyObject *kwnames);
int cg_throw_prepare(cg_thread *th, PyObject *typ, PyObject *val,
                     PyObject *tb);
PyObject *cg_green_throw(PyGreenlet *self, PyObject *args);

/* ---- thread.c ------------------------------------------------------------ */
/* The entry points find the calling thread's state, and greenlet(),
 * switch(), throw() and getcurrent() first take in what other threads left
 * it; a greenlet object joins its thread's list when made (and moves when
 * it starts on another thread), and leaves it, with its core record, when
 * freed. */

cg_thread *cg_thread_get(void);
void cg_impl_link(cg_thread *th, cg_impl *impl);
void cg_impl_unlink(cg_impl *impl);
void cg_release_core(cg_impl *i);
void cg_process_deleteme(cg_thread *th);
/* _fail_orphan_relocations: in thread.c, the file that orphans greenlets,
 * because the counter it sets (pystate_frames.h) is a static of the file
 * that includes it. */
PyObject *cg_mod_fail_orphan_relocations(PyObject *m, PyObject *n);

/* ---- module.c (also the type's static methods) --------------------------- */

PyObject *cg_mod_getcurrent(PyObject *m, PyObject *unused);
PyObject *cg_mod_settrace(PyObject *m, PyObject *args);
PyObject *cg_mod_gettrace(PyObject *m, PyObject *unused);

#pragma GCC visibility pop

#endif
