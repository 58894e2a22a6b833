/*
 * greenlet_module.c - greenlet._greenlet: the drop-in greenlet 2.0.2 module
 * for CPython, on libcgreenlet.
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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <string.h>
#include <time.h>

#include "cgreenlet.h"
#include "fault.h"
#include "pystate.h"

#define CG_VERSION "0.1.0"
/* Bytes of stack per Python greenlet: room for the interpreter to reach its
 * recursion limit through C recursion (map, sorted(key=), __getattr__ ...)
 * before the guard page; untouched pages cost address space only. */
#define CG_STACK_SIZE ((size_t)8 << 20)

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
  PyObject *dead_frame; /* top frame when the thread exited mid-run */
  /* run and its arguments while it runs: held here, not on the C stack, so
   * that the collector sees them (a bound run method holds the greenlet). */
  PyObject *call_run, *call_args, *call_kwargs;
  cg_impl *prev, *next; /* all greenlet objects of the owner thread */
  PyGreenlet *self;     /* borrowed */
  /* The full collection that last saw its frames since it last parked
   * (0: none yet): see frames_shown. */
  unsigned long gc_shown;
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
   * (release_core), for this thread to destroy. */
  greenlet_t **core_free;
  Py_ssize_t ncore_free, core_free_cap;
};

static PyTypeObject PyGreenlet_Type;
static PyTypeObject cg_thread_Type;
static PyObject *PyExc_GreenletError;
static PyObject *PyExc_GreenletExit;
static PyObject *str_run, *thread_key, *empty_tuple;
static Py_ssize_t total_main_greenlets;
static __thread cg_thread *cg_tls;
/* The number of the full collection under way (0: none), and how many
 * have started (frames_shown). */
static unsigned long cg_full_gc, cg_full_count;

#define IMPL(g) (((PyGreenlet *)(g))->pimpl)
#define GREENLET_CHECK(o) PyObject_TypeCheck((o), &PyGreenlet_Type)

/* ---- per-thread state ---------------------------------------------------- */

static PyGreenlet *green_alloc(PyTypeObject *type);
static void impl_link(cg_thread *th, cg_impl *impl);
static int g_active(cg_impl *i);
static void process_deleteme(cg_thread *th);
static void drain_core_free(cg_thread *th);

/* The calling thread's state, created (with its main greenlet) on first
 * use.  NULL with an exception set on failure. */
static cg_thread *thread_get(void) {
  PyThreadState *ts = PyThreadState_Get();
  cg_thread *th = cg_tls;
  if (th && th->tstate == ts)
    return th;
  /* NULL here (a thread state exists) means making the dict failed, and
   * CPython cleared that MemoryError. */
  PyObject *dict = PyThreadState_GetDict();
  if (!dict) {
    PyErr_NoMemory();
    return NULL;
  }
  th = (cg_thread *)PyDict_GetItemWithError(dict, thread_key);
  if (th) {
    cg_tls = th;
    return th;
  }
  if (PyErr_Occurred())
    return NULL;
  greenlet_t *core_main = greenlet_current();
  if (!core_main)
    return (cg_thread *)PyErr_NoMemory();
  th = PyObject_New(cg_thread, &cg_thread_Type);
  if (!th)
    return NULL;
  th->tstate = ts;
  th->main = th->current = th->origin = th->via = NULL;
  th->tracefunc = NULL;
  th->tracing = 0;
  th->all = NULL;
  th->xfer_args = th->xfer_kwargs = NULL;
  th->xfer_type = th->xfer_value = th->xfer_tb = NULL;
  th->deleteme = PyList_New(0);
  th->core_free = NULL;
  th->ncore_free = th->core_free_cap = 0;
  PyGreenlet *m = th->deleteme ? green_alloc(&PyGreenlet_Type) : NULL;
  if (!m) {
    Py_DECREF(th);
    return NULL;
  }
  cg_impl *mi = m->pimpl;
  mi->core = core_main;
  mi->is_main = 1;
  greenlet_set_userdata(core_main, m);
  impl_link(th, mi);
  th->main = m; /* the reference green_alloc returned */
  Py_INCREF(m);
  th->current = m;
  total_main_greenlets++;
  if (PyDict_SetItem(dict, thread_key, (PyObject *)th) < 0) {
    Py_DECREF(th);
    return NULL;
  }
  Py_DECREF(th); /* the dict keeps it */
  cg_tls = th;
  return th;
}

/*
 * The thread is ending (CPython clears its dict): its greenlets can never
 * run again.  Suspended ones lose their stacks without running: their
 * Python frames move to the heap (cg_pystate_orphan) until the greenlet
 * object goes; every object is marked as belonging to a gone thread.
 */
static void cg_thread_dealloc(cg_thread *th) {
  if (cg_tls == th)
    cg_tls = NULL;
  drain_core_free(th);
  PyMem_Free(th->core_free);
  th->core_free = NULL;
  for (cg_impl *i = th->all; i; i = i->next) {
    /* Its C stack goes; its Python frames stay until the object goes
     * (release_orphan), and gr_frame keeps showing the top one. */
    if (g_active(i) && !i->is_main && th->current != i->self) {
      i->dead_frame = cg_pystate_frame(&i->st, th->tstate);
      if (!i->dead_frame)
        PyErr_Clear();
      cg_pystate_orphan(&i->st);
    }
    i->st.cframe = NULL;
    i->thread = NULL;
    /* One never switched to has no core yet: it may still start elsewhere
     * (if given a parent there). */
    i->thread_gone = (i->core && greenlet_started(i->core)) || i->is_main;
    if (i->core && !i->is_main)
      greenlet_destroy(i->core, GREENLET_DESTROY_DISCARD);
    i->core = NULL;
  }
  th->all = NULL;
  total_main_greenlets--;
  Py_CLEAR(th->origin);
  Py_CLEAR(th->via);
  Py_CLEAR(th->current);
  Py_CLEAR(th->main);
  Py_CLEAR(th->tracefunc);
  Py_CLEAR(th->xfer_args);
  Py_CLEAR(th->xfer_kwargs);
  Py_CLEAR(th->xfer_type);
  Py_CLEAR(th->xfer_value);
  Py_CLEAR(th->xfer_tb);
  Py_CLEAR(th->deleteme);
  PyObject_Free(th);
}

static PyTypeObject cg_thread_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "greenlet._greenlet._ThreadState",
    .tp_basicsize = sizeof(cg_thread),
    .tp_dealloc = (destructor)cg_thread_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

static void impl_link(cg_thread *th, cg_impl *impl) {
  impl->thread = th;
  impl->prev = NULL;
  impl->next = th->all;
  if (th->all)
    th->all->prev = impl;
  th->all = impl;
}

static void impl_unlink(cg_impl *impl) {
  cg_thread *th = impl->thread;
  if (!th)
    return;
  if (impl->prev)
    impl->prev->next = impl->next;
  else
    th->all = impl->next;
  if (impl->next)
    impl->next->prev = impl->prev;
  impl->prev = impl->next = NULL;
}

/* ---- state queries -------------------------------------------------------- */

static int g_started(cg_impl *i) {
  return i->is_main || i->thread_gone || (i->core && greenlet_started(i->core));
}

static int g_active(cg_impl *i) {
  return i->core && !i->thread_gone && greenlet_active(i->core);
}

static int g_dead(cg_impl *i) { return g_started(i) && !g_active(i); }

/* ---- switching ------------------------------------------------------------ */

static void slots_clear(cg_thread *th) {
  Py_CLEAR(th->xfer_args);
  Py_CLEAR(th->xfer_kwargs);
  Py_CLEAR(th->xfer_type);
  Py_CLEAR(th->xfer_value);
  Py_CLEAR(th->xfer_tb);
}

/* What switch() returns for the values in the slots: no args -> (), one
 * arg -> it, only kwargs -> the dict, both -> (args, kwargs).  Exceptions in
 * the slots are raised instead. */
static PyObject *slots_take(cg_thread *th) {
  if (th->xfer_type) {
    PyErr_Restore(th->xfer_type, th->xfer_value, th->xfer_tb);
    th->xfer_type = th->xfer_value = th->xfer_tb = NULL;
    Py_CLEAR(th->xfer_args);
    Py_CLEAR(th->xfer_kwargs);
    return NULL;
  }
  PyObject *args = th->xfer_args, *kwargs = th->xfer_kwargs;
  th->xfer_args = th->xfer_kwargs = NULL;
  if (!args)
    args = Py_NewRef(empty_tuple);
  if (kwargs && PyDict_GET_SIZE(kwargs) == 0)
    Py_CLEAR(kwargs);
  if (!kwargs) {
    if (PyTuple_GET_SIZE(args) == 1) {
      PyObject *r = Py_NewRef(PyTuple_GET_ITEM(args, 0));
      Py_DECREF(args);
      return r;
    }
    return args;
  }
  if (PyTuple_GET_SIZE(args) == 0) {
    Py_DECREF(args);
    return kwargs;
  }
  PyObject *r = PyTuple_Pack(2, args, kwargs);
  Py_DECREF(args);
  Py_DECREF(kwargs);
  return r;
}

/* Calls the thread's tracer for a switch that just arrived here.  A tracer
 * that raises is removed, and its exception replaces what was sent. */
static int call_tracer(cg_thread *th, const char *event, PyGreenlet *origin,
                       PyGreenlet *target) {
  PyObject *tracer = th->tracefunc;
  if (!tracer || !origin)
    return 0;
  Py_INCREF(tracer);
  PyObject *exc_t, *exc_v, *exc_tb;
  PyErr_Fetch(&exc_t, &exc_v, &exc_tb);
  PyObject *r = PyObject_CallFunction(tracer, "s(OO)", event, origin, target);
  Py_DECREF(tracer);
  if (!r) {
    Py_CLEAR(th->tracefunc);
    Py_XDECREF(exc_t);
    Py_XDECREF(exc_v);
    Py_XDECREF(exc_tb);
    return -1;
  }
  Py_DECREF(r);
  PyErr_Restore(exc_t, exc_v, exc_tb);
  return 0;
}

/*
 * Stock greenlet enters every unstarted greenlet an error reaches (dead ones
 * are passed over): it dies there at once and passes the error on.  A
 * tracer sees each of those visits; they are reported from here, and the
 * last greenlet visited becomes the origin the receiver reports (th->via).
 * from: where the error comes from; t: where it is sent.
 */
static int trace_unrun(cg_thread *th, PyGreenlet *from, PyGreenlet *t) {
  if (!th->tracefunc)
    return 0;
  PyGreenlet *o = from;
  for (;;) {
    while (t && g_dead(t->pimpl))
      t = t->pimpl->parent;
    if (!t || g_started(t->pimpl))
      break;
    if (call_tracer(th, "throw", o, t) < 0)
      return -1;
    o = t;
    t = t->pimpl->parent;
  }
  if (o != from)
    Py_XSETREF(th->via, (PyGreenlet *)Py_NewRef(o));
  return 0;
}

static PyObject *core_error(int rc) {
  if (rc == GREENLET_ENOMEM)
    return PyErr_NoMemory();
  if (rc == GREENLET_EMAPLIMIT)
    return PyErr_Format(PyExc_MemoryError,
                        "cannot allocate a greenlet stack: %s",
                        greenlet_strerror(rc));
  return PyErr_Format(PyExc_GreenletError, "greenlet: %s",
                      greenlet_strerror(rc));
}

static int ensure_core(cg_thread *th, PyGreenlet *g);

/* The thread an unstarted greenlet will start in, as stock greenlet decides
 * it: that of the root of its parent chain (NULL if that thread is gone). */
static cg_thread *chain_thread(PyGreenlet *g) {
  while (!g->pimpl->core && !g->pimpl->is_main && !g->pimpl->thread_gone &&
         g->pimpl->parent)
    g = g->pimpl->parent;
  return g->pimpl->thread_gone ? NULL : g->pimpl->thread;
}

/* Sets greenlet.error for a switch to another thread (gone: one that has
 * exited) and returns -1. */
static int thread_error(int gone) {
  PyErr_SetString(PyExc_GreenletError,
                  gone ? "cannot switch to a different thread (which happens "
                         "to have exited)"
                       : "cannot switch to a different thread");
  return -1;
}

/* Sets greenlet.error, as switching there would, unless g's chain_thread
 * is th. */
static int check_start_thread(cg_thread *th, PyGreenlet *g) {
  cg_thread *gt = chain_thread(g);
  return gt == th ? 0 : thread_error(!gt);
}

/* Checks that target can be switched to from this thread.  An unstarted
 * greenlet belongs to the thread of its parent (checked at its start). */
static int check_thread(cg_thread *th, PyGreenlet *target) {
  cg_impl *i = target->pimpl;
  if (i->thread == th || (!i->core && !i->is_main && !i->thread_gone))
    return 0;
  return thread_error(i->thread_gone || !i->thread);
}

/*
 * Switches to target with what is in the slots (status GREENLET_OK: a value,
 * GREENLET_ERROR: an exception), and returns what this greenlet is resumed
 * with, as switch() returns it.  call_end: the end of switch()'s arguments
 * when the interpreter passed them in place (lets the collector see the
 * caller's value stack while we are suspended), else NULL.
 */
static PyObject *do_switch(cg_thread *th, PyGreenlet *target, int status,
                           PyObject *const *call_end) {
  /* The greenlet that will really run: dead ones pass on to their parent.
   * If it has not started, its run must exist: that error is the caller's. */
  PyGreenlet *t = target;
  while (g_dead(t->pimpl) && t->pimpl->parent)
    t = t->pimpl->parent;
  if (!g_started(t->pimpl)) {
    /* Looked up now (a subclass may define run as a method): a missing run
     * is the caller's error, and the greenlet stays unstarted. */
    PyObject *run = PyObject_GetAttr((PyObject *)t, str_run);
    if (!run) {
      slots_clear(th);
      return NULL;
    }
    Py_XSETREF(t->pimpl->run, run);
    /* An unstarted greenlet may have been given a parent of another thread
     * (even by that lookup); it can start only under one of this thread. */
    PyGreenlet *p = t->pimpl->parent;
    if (p && check_start_thread(th, p) < 0) {
      slots_clear(th);
      return NULL;
    }
    if (ensure_core(th, t) < 0 || cg_pystate_prepare(&t->pimpl->st) < 0) {
      slots_clear(th);
      return NULL;
    }
    if (p && greenlet_parent(t->pimpl->core) != p->pimpl->core &&
        greenlet_set_parent(t->pimpl->core, p->pimpl->core) != 0) {
      slots_clear(th);
      PyErr_SetString(PyExc_ValueError, "cyclic parent chain");
      return NULL;
    }
  }
  if (t->pimpl->thread != th) {
    slots_clear(th);
    check_thread(th, t);
    return NULL;
  }
  PyThreadState *ts = th->tstate;
  /* th->current's reference goes to whoever runs next: while suspended, a
   * greenlet is kept alive only by its users (dropping it kills it). */
  PyGreenlet *self = th->current;
  cg_impl *me = self->pimpl;
  if (status == GREENLET_ERROR && trace_unrun(th, self, target) < 0) {
    slots_clear(th);
    return NULL;
  }
  /* Before the save: dropping the old origin may run Python code. */
  Py_INCREF(self);
  Py_XSETREF(th->origin, self);
  if (th->via) { /* the tracer of the receiver reports it as the origin */
    Py_XSETREF(th->origin, th->via);
    th->via = NULL;
  }
  cg_pystate_save(&me->st, ts, call_end);
  if (!cg_full_gc)
    me->gc_shown = 0; /* parks anew: the next full collection sees it */
  uint8_t tracing = cg_pystate_use_tracing(ts);
  th->tracing = tracing;
  /* To t, the Python-level resolution: the core's parent links can differ
   * for a dead greenlet (see green_run). */
  int rc = status == GREENLET_OK ? greenlet_switch(t->pimpl->core, NULL, NULL)
                                 : greenlet_throw(t->pimpl->core, NULL, NULL);
  /* Resumed (or refused). */
  if (rc >= 0)
    tracing = th->tracing;
  cg_pystate_restore(&me->st, ts, tracing);
  PyObject *result;
  PyGreenlet *origin = NULL;
  if (rc < 0) {
    slots_clear(th);
    result = core_error(rc);
  } else {
    origin = th->origin;
    th->origin = NULL;
    result = slots_take(th); /* before anything can run Python code */
  }
  Py_INCREF(self);
  Py_XSETREF(th->current, self); /* may free (kill) the one we came from */
  /* (Also for a switch to the current greenlet, as stock greenlet does.) */
  if (origin && th->tracefunc &&
      call_tracer(th, rc == GREENLET_ERROR ? "throw" : "switch", origin,
                  self) < 0)
    Py_CLEAR(result);
  Py_XDECREF(origin);
  return result;
}

/*
 * The body of every Python greenlet, on its own stack: fresh interpreter
 * state, run(*args, **kwargs), and the outcome into the slots for the
 * parent.  GreenletExit escaping run is a normal return of the exception.
 */
static int green_run(greenlet_t *core, void *arg, void **result) {
  (void)arg;
  (void)result;
  PyGreenlet *self = greenlet_userdata(core);
  cg_impl *me = self->pimpl;
  cg_thread *th = me->thread;
  PyThreadState *ts = th->tstate;
  cg_start_buffers buffers;
  if (cg_pystate_start(&me->st, ts, &buffers, greenlet_reserved(core),
                       th->tracing) < 0)
    Py_FatalError("greenlet: started without cg_pystate_prepare()");
  PyObject *args = th->xfer_args ? th->xfer_args : Py_NewRef(empty_tuple);
  PyObject *kwargs = th->xfer_kwargs;
  th->xfer_args = th->xfer_kwargs = NULL;
  PyGreenlet *origin = th->origin;
  th->origin = NULL;
  /* Only now: dropping the greenlet we came from may run Python code. */
  Py_INCREF(self);
  Py_XSETREF(th->current, self);
  PyObject *run = me->run;
  me->run = NULL;
  if (!run) /* started by a child's result: look run up here */
    run = PyObject_GetAttr((PyObject *)self, str_run);
  PyObject *r = NULL;
  int traced = run ? call_tracer(th, "switch", origin, self) : -1;
  Py_XDECREF(origin); /* not held while run runs: it may never return */
  me->call_run = run;
  me->call_args = args;
  me->call_kwargs = kwargs;
  if (traced == 0)
    r = PyObject_Call(run, args, kwargs);
  Py_CLEAR(me->call_run);
  Py_CLEAR(me->call_args);
  Py_CLEAR(me->call_kwargs);
  int status = GREENLET_OK;
  if (!r && PyErr_ExceptionMatches(PyExc_GreenletExit)) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    r = v ? v : Py_NewRef(Py_None);
    Py_XDECREF(t);
    Py_XDECREF(tb);
  }
  slots_clear(th);
  if (r) {
    th->xfer_args = PyTuple_Pack(1, r);
    Py_DECREF(r);
    if (!th->xfer_args) /* MemoryError goes to the parent instead */
      r = NULL;
  }
  if (!r) {
    PyErr_Fetch(&th->xfer_type, &th->xfer_value, &th->xfer_tb);
    status = GREENLET_ERROR;
  }
  /* The outcome goes to the first live ancestor on the Python chain: a
   * parent set from another thread (here or higher up, even on a dead
   * greenlet) was not followed by the core's links. */
  PyGreenlet *t = me->parent;
  while (t && g_dead(t->pimpl))
    t = t->pimpl->parent;
  if (t && chain_thread(t) == th &&
      (!t->pimpl->core || greenlet_parent(me->core) != t->pimpl->core)) {
    if (ensure_core(th, t) == 0)
      greenlet_set_parent(me->core, t->pimpl->core);
    else
      PyErr_Clear();
  }
  /* The outcome starts an unstarted ancestor: its run is looked up here,
   * where Python code may run.  If that fails, the error goes past it to
   * its parent and it stays unstarted (as stock greenlet does). */
  if (status == GREENLET_OK && t && !g_started(t->pimpl) && t->pimpl->parent) {
    PyObject *trun = PyObject_GetAttr((PyObject *)t, str_run);
    if (trun && cg_pystate_prepare(&t->pimpl->st) < 0)
      Py_CLEAR(trun);
    if (trun) {
      Py_XSETREF(t->pimpl->run, trun);
    } else {
      slots_clear(th);
      PyErr_Fetch(&th->xfer_type, &th->xfer_value, &th->xfer_tb);
      status = GREENLET_ERROR;
      PyGreenlet *gp = t->pimpl->parent;
      if (gp->pimpl->thread == th && ensure_core(th, gp) == 0)
        greenlet_set_parent(me->core, gp->pimpl->core);
      else
        PyErr_Clear();
    }
  }
  if (status == GREENLET_ERROR && trace_unrun(th, self, me->parent) < 0) {
    slots_clear(th); /* the tracer's error replaces it */
    PyErr_Fetch(&th->xfer_type, &th->xfer_value, &th->xfer_tb);
  }
  Py_INCREF(self);
  Py_XSETREF(th->origin, self); /* for the tracer of whoever resumes */
  if (th->via) {
    Py_XSETREF(th->origin, th->via);
    th->via = NULL;
  }
  th->tracing = cg_pystate_use_tracing(ts);
  cg_pystate_finish(&me->st, ts);
  /* The parent (or whoever the core resumes) takes th->current over. */
  return status;
}

/* ---- the greenlet type --------------------------------------------------- */

static PyGreenlet *green_alloc(PyTypeObject *type) {
  cg_impl *impl = PyMem_Calloc(1, sizeof *impl);
  if (!impl)
    return (PyGreenlet *)PyErr_NoMemory();
  PyGreenlet *g = (PyGreenlet *)type->tp_alloc(type, 0);
  if (!g) {
    PyMem_Free(impl);
    return NULL;
  }
  g->pimpl = impl;
  impl->self = g;
  return g;
}

static PyObject *green_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  (void)args;
  (void)kw;
  if (type->tp_flags & Py_TPFLAGS_IS_ABSTRACT) /* object.__new__ says why */
    return PyBaseObject_Type.tp_new(type, empty_tuple, NULL);
  cg_thread *th = thread_get();
  if (!th)
    return NULL;
  process_deleteme(th);
  PyGreenlet *g = green_alloc(type);
  if (!g)
    return NULL;
  cg_impl *i = g->pimpl;
  /* The core greenlet is made when this one is first switched to, in the
   * thread that does it (ensure_core): an unstarted greenlet may be given a
   * parent of another thread and started there (gevent's thread pool). */
  i->parent = (PyGreenlet *)Py_NewRef(th->current);
  impl_link(th, i);
  return (PyObject *)g;
}

/*
 * Gives an unstarted greenlet, about to be switched to on thread th, its
 * core greenlet (and its ancestors theirs: a finishing child hands its
 * result to the core parent).  Moves it to th's list.
 */
static int ensure_core(cg_thread *th, PyGreenlet *g) {
  cg_impl *i = g->pimpl;
  if (i->core)
    return 0;
  PyGreenlet *p = i->parent;
  if (!p) {
    if (check_thread(th, g) == 0)
      PyErr_SetString(PyExc_GreenletError, "greenlet has no parent");
    return -1;
  }
  if (check_start_thread(th, p) < 0)
    return -1;
  if (ensure_core(th, p) < 0)
    return -1;
  greenlet_attr_t attr = {.stack_size = CG_STACK_SIZE,
                          .reserve = CG_PYSTATE_RESERVE,
                          .flags = GREENLET_ATTR_SHARED_STACK};
  int rc = greenlet_create(&i->core, green_run, p->pimpl->core, &attr);
  if (rc != 0) {
    i->core = NULL;
    core_error(rc);
    return -1;
  }
  greenlet_set_userdata(i->core, g);
  if (i->thread != th) {
    impl_unlink(i);
    impl_link(th, i);
  }
  return 0;
}

static int green_setparent(PyGreenlet *self, PyObject *value, void *c);
static int green_setrun(PyGreenlet *self, PyObject *value, void *c);

static int green_init(PyGreenlet *self, PyObject *args, PyObject *kwargs) {
  static char *kwlist[] = {"run", "parent", NULL};
  PyObject *run = NULL, *parent = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO:green", kwlist, &run,
                                   &parent))
    return -1;
  if (run && green_setrun(self, run, NULL) < 0)
    return -1;
  if (parent && parent != Py_None && green_setparent(self, parent, NULL) < 0)
    return -1;
  return 0;
}

/*
 * Whether the collector may see what the Python frames of a suspended
 * greenlet hold.  If it finds such a greenlet unreachable, it finalizes it
 * (green_finalize kills it) before it clears anything, so the frames are
 * gone or, if it could not be killed, not seen any more: the collector then
 * counts their references as outside ones and keeps their objects (a frame
 * that may run again must never see its objects cleared).  Hence: frames of
 * a greenlet of this thread (one it can kill), not yet finalized; and frames
 * of a greenlet whose thread exited, which can never run again.  A main
 * greenlet's frames are its thread's.
 */
static int frames_visible(PyGreenlet *self) {
  cg_impl *i = self->pimpl;
  if (i->is_main)
    return 0;
  if (i->thread_gone)
    return 1;
  return i->thread && i->thread->tstate == PyThreadState_Get() &&
         g_active(i) && i->thread->current != self &&
         !PyObject_GC_IsFinalized((PyObject *)self);
}

/*
 * The collector's schedule for the frames of suspended greenlets.  Walking
 * every parked greenlet's frames made a full collection with 100,000
 * parked cost twice what stock greenlet's does (which never shows them,
 * and never collects a cycle through a suspended greenlet).  So the frames
 * of a greenlet whose frames_visible() says yes are shown only in full
 * (generation 2) collections, and there only in the first one after it
 * parked and then in every CG_GC_SPREAD-th full collection (the same one
 * for all: a cycle through several greenlets is found only when all their
 * frames are shown at once).  A cycle through a suspended greenlet is
 * collected by the first full collection after it parked (gc.collect()
 * included), or, if it became garbage later, within CG_GC_SPREAD full
 * collections.  The cost: one full collection in CG_GC_SPREAD walks every
 * parked greenlet's frames, as each one did before.  Showing fewer
 * references is always safe (their objects count as held from outside);
 * the decision stays the same for one greenlet within one collection, and
 * a thread whose greenlets can never run again shows them always.  Full
 * collections are told apart by a gc.callbacks entry (cg_gc_callback):
 * without it (callbacks cleared, or the collection at interpreter exit)
 * frames are not shown, as in stock greenlet.
 */
#define CG_GC_SPREAD 16

static int frames_shown(PyGreenlet *self) {
  if (!frames_visible(self))
    return 0;
  cg_impl *i = self->pimpl;
  if (i->thread_gone)
    return 1;
  unsigned long now = cg_full_gc;
  if (!now)
    return 0;
  if (i->gc_shown == now)
    return 1;
  if (i->gc_shown == 0 || now % CG_GC_SPREAD == 0) {
    i->gc_shown = now;
    return 1;
  }
  return 0;
}

/* gc.callbacks entry: numbers the full collections. */
static PyObject *cg_gc_callback(PyObject *mod, PyObject *const *args,
                                Py_ssize_t nargs) {
  (void)mod;
  if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyDict_Check(args[1]))
    Py_RETURN_NONE;
  PyObject *gen = PyDict_GetItemString(args[1], "generation");
  if (!gen || !PyLong_Check(gen) || PyLong_AsLong(gen) != 2) {
    PyErr_Clear();
    Py_RETURN_NONE;
  }
  if (PyUnicode_CompareWithASCIIString(args[0], "start") == 0) {
    if (++cg_full_count == 0)
      cg_full_count = 1;
    cg_full_gc = cg_full_count;
  } else {
    cg_full_gc = 0;
  }
  Py_RETURN_NONE;
}

static PyMethodDef cg_gc_callback_def = {
    "_cgreenlet_gc_callback", (PyCFunction)(void (*)(void))cg_gc_callback,
    METH_FASTCALL, "Numbers full collections for the greenlet module."};

static int green_traverse(PyGreenlet *self, visitproc visit, void *arg) {
  cg_impl *i = self->pimpl;
  Py_VISIT(self->dict);
  if (i) {
    Py_VISIT(i->run);
    Py_VISIT(i->parent);
    Py_VISIT(i->dead_frame);
    Py_VISIT(i->call_run);
    Py_VISIT(i->call_args);
    Py_VISIT(i->call_kwargs);
    int r = cg_pystate_traverse(&i->st, visit, arg);
    if (r)
      return r;
    if (frames_shown(self))
      return cg_pystate_traverse_frames(&i->st, visit, arg);
  }
  return 0;
}

/* What a greenlet that can no longer run (dead, or its thread gone) still
 * holds of its run: its top frame object, run's call, and (thread gone)
 * what its frames hold, then their memory (a frame object held elsewhere
 * keeps a copy of its frame). */
static void release_orphan(cg_impl *i) {
  Py_CLEAR(i->dead_frame);
  Py_CLEAR(i->call_run);
  Py_CLEAR(i->call_args);
  Py_CLEAR(i->call_kwargs);
  if (i->thread_gone)
    cg_pystate_abandon(&i->st);
}

/* Breaks cycles.  A greenlet that may still run keeps what it runs with. */
static int green_clear(PyGreenlet *self) {
  cg_impl *i = self->pimpl;
  Py_CLEAR(self->dict);
  if (i && !g_active(i)) {
    Py_CLEAR(i->run);
    Py_CLEAR(i->parent);
    if (i->thread_gone) /* its frames never run again */
      release_orphan(i);
    cg_pystate_clear(&i->st);
  }
  return 0;
}

/*
 * Makes the core parent links of g's chain follow the Python ones, as far
 * as both ends are this thread's and have a core.  A parent set from
 * another thread changes only the Python link (the core belongs to its
 * thread), and a stale core link can make a valid reparenting look cyclic
 * to the core (kill_in_place).  A link that cannot be set yet (its stale
 * ancestors form the cycle) is retried once those above it are fixed.
 */
static void sync_core_chain(cg_thread *th, PyGreenlet *g) {
  int changed, failed;
  do {
    changed = failed = 0;
    for (PyGreenlet *q = g; q && q->pimpl->parent; q = q->pimpl->parent) {
      cg_impl *qi = q->pimpl, *pi = qi->parent->pimpl;
      if (!qi->core || qi->thread != th || qi->thread_gone || !pi->core ||
          pi->thread != th || greenlet_parent(qi->core) == pi->core)
        continue;
      if (greenlet_set_parent(qi->core, pi->core) == 0)
        changed = 1;
      else
        failed = 1;
    }
  } while (failed && changed);
}

/*
 * Kills a suspended greenlet of this thread in place: GreenletExit thrown
 * into it, with the current greenlet as its parent so that it comes back
 * here.  Called with self kept alive by the caller.
 */
static int kill_in_place(cg_thread *th, PyGreenlet *self) {
  cg_impl *i = self->pimpl;
  PyObject *exc_t, *exc_v, *exc_tb;
  PyErr_Fetch(&exc_t, &exc_v, &exc_tb);
  PyGreenlet *old_parent = (PyGreenlet *)Py_XNewRef(i->parent);
  sync_core_chain(th, th->current);
  int rc = greenlet_set_parent(i->core, th->current->pimpl->core);
  if (rc == 0)
    Py_XSETREF(i->parent, (PyGreenlet *)Py_NewRef(th->current));
  slots_clear(th);
  th->xfer_type = Py_NewRef(PyExc_GreenletExit);
  th->xfer_value = PyUnicode_FromString(
      "Killing the greenlet because all references have vanished.");
  PyObject *r = do_switch(th, self, GREENLET_ERROR, NULL);
  int ok = r != NULL;
  if (!r)
    PyErr_WriteUnraisable((PyObject *)self);
  Py_XDECREF(r);
  /* It switched away instead of dying: give it back its parent. */
  if (rc == 0 && g_active(i) && old_parent && old_parent->pimpl->core &&
      greenlet_set_parent(i->core, old_parent->pimpl->core) == 0)
    Py_XSETREF(i->parent, (PyGreenlet *)Py_NewRef(old_parent));
  Py_XDECREF(old_parent);
  PyErr_Restore(exc_t, exc_v, exc_tb);
  return ok ? 0 : -1;
}

/* Destroys the core records other threads left to this one (see
 * release_core).  On the owner thread, or once the owner has exited. */
static void drain_core_free(cg_thread *th) {
  for (Py_ssize_t k = 0; k < th->ncore_free; k++) {
    greenlet_set_userdata(th->core_free[k], NULL);
    greenlet_destroy(th->core_free[k], GREENLET_DESTROY_DISCARD);
  }
  th->ncore_free = 0;
}

/*
 * The core record of greenlet object i goes with it.  While its owner
 * thread lives, only that thread may destroy it (the core's records are
 * per thread; others get GREENLET_ETHREAD), so one freed on another thread
 * (dead or never started: a live one went to the owner's deleteme queue
 * instead) waits on the owner's core_free list until the owner's next
 * greenlet call or its exit.  Its userdata is cleared first: a record a
 * child's parent link keeps must not name a freed object (gdb reads it).
 * If the list cannot grow, the record is leaked: one small block, never a
 * crash.
 */
static void release_core(cg_impl *i) {
  greenlet_t *core = i->core;
  i->core = NULL;
  if (!core || i->is_main)
    return;
  cg_thread *owner = i->thread;
  if (owner && owner != cg_tls) {
    if (owner->ncore_free == owner->core_free_cap) {
      Py_ssize_t cap = owner->core_free_cap ? 2 * owner->core_free_cap : 8;
      greenlet_t **grown =
          PyMem_Realloc(owner->core_free, (size_t)cap * sizeof *grown);
      if (!grown)
        return;
      owner->core_free = grown;
      owner->core_free_cap = cap;
    }
    owner->core_free[owner->ncore_free++] = core;
    return;
  }
  greenlet_set_userdata(core, NULL);
  greenlet_destroy(core, GREENLET_DESTROY_DISCARD);
}

/* Drops the greenlets other threads queued for this one to kill, and
 * destroys the core records they left to it. */
static void process_deleteme(cg_thread *th) {
  if (th->ncore_free)
    drain_core_free(th);
  if (!th->deleteme || PyList_GET_SIZE(th->deleteme) == 0)
    return;
  PyObject *list = th->deleteme;
  th->deleteme = PyList_New(0);
  if (!th->deleteme) {
    th->deleteme = list;
    PyErr_Clear();
    return;
  }
  Py_DECREF(list); /* each greenlet's dealloc runs here, on its own thread */
}

/* An instance of a subclass that survives its dealloc: subtype_dealloc
 * drops the type's reference after we return, as if the object were gone,
 * so take one more for the instance that lives on. */
static void keep_type_alive(PyGreenlet *self) {
  if (PyType_HasFeature(Py_TYPE(self), Py_TPFLAGS_HEAPTYPE))
    Py_INCREF(Py_TYPE(self));
}

/*
 * tp_finalize, which the collector calls on a suspended greenlet it found
 * unreachable (through its frames, see frames_visible): it is killed here,
 * as dropping it would, before anything of the cycle is cleared.  One of
 * another thread goes to that thread's queue (which revives it; its owner
 * kills it).  A subclass's dealloc calls this too (refcount 1): then
 * green_dealloc does the kill.
 */
static void green_finalize(PyGreenlet *self) {
  cg_impl *i = self->pimpl;
  if (Py_REFCNT(self) == 1 || !i || i->is_main || !g_active(i))
    return;
  PyObject *et, *ev, *etb;
  PyErr_Fetch(&et, &ev, &etb);
  cg_thread *th = i->thread;
  if (th && th->tstate == PyThreadState_Get()) {
    if (th->current != self)
      kill_in_place(th, self);
  } else if (th && th->deleteme) {
    if (PyList_Append(th->deleteme, (PyObject *)self) < 0)
      PyErr_WriteUnraisable((PyObject *)self);
  }
  PyErr_Restore(et, ev, etb);
}

static void green_dealloc(PyGreenlet *self) {
  PyObject_GC_UnTrack(self);
  cg_impl *i = self->pimpl;
  if (i && g_active(i) && !i->is_main) {
    cg_thread *th = thread_get();
    if (!th) {
      PyErr_WriteUnraisable((PyObject *)self);
    } else if (i->thread == th) {
      /* Resurrect for the duration of the kill. */
      Py_SET_REFCNT(self, 1);
      kill_in_place(th, self);
      if (Py_REFCNT(self) > 1) {
        /* Revived: the kill stored a reference somewhere.  A later dealloc
         * kills it again. */
        Py_SET_REFCNT(self, Py_REFCNT(self) - 1);
        keep_type_alive(self);
        PyObject_GC_Track(self);
        return;
      }
      if (g_active(i)) {
        /* It caught GreenletExit and switched away: it refused to die.  As
         * stock greenlet does, it lives on (unreferenced; a later throw can
         * still finish it through a weak reference). */
        keep_type_alive(self);
        PyObject_GC_Track(self);
        return;
      }
      Py_SET_REFCNT(self, 0);
    } else if (i->thread && i->thread->deleteme) {
      /* The owner kills it at its next greenlet call. */
      Py_SET_REFCNT(self, 1);
      if (PyList_Append(i->thread->deleteme, (PyObject *)self) == 0) {
        Py_SET_REFCNT(self, Py_REFCNT(self) - 1);
        keep_type_alive(self);
        PyObject_GC_Track(self);
        return;
      }
      PyErr_WriteUnraisable((PyObject *)self);
      Py_SET_REFCNT(self, 0);
    }
  }
  if (self->weakreflist)
    PyObject_ClearWeakRefs((PyObject *)self);
  Py_CLEAR(self->dict);
  if (i) {
    release_core(i);
    impl_unlink(i);
    Py_CLEAR(i->run);
    Py_CLEAR(i->parent);
    release_orphan(i);
    cg_pystate_clear(&i->st);
    PyMem_Free(i);
    self->pimpl = NULL;
  }
  Py_TYPE(self)->tp_free((PyObject *)self);
}

/* switch(*args, **kwargs); takes over args (a tuple) and kwargs (a dict the
 * caller owns, or NULL).  call_end: see do_switch. */
static PyObject *switch_owned(PyGreenlet *self, PyObject *args,
                              PyObject *kwargs, PyObject *const *call_end) {
  cg_thread *th = thread_get();
  if (th) {
    process_deleteme(th);
    if (check_thread(th, self) == 0) {
      slots_clear(th);
      th->xfer_args = args;
      th->xfer_kwargs = kwargs;
      return do_switch(th, self, GREENLET_OK, call_end);
    }
  }
  Py_DECREF(args);
  Py_XDECREF(kwargs);
  return NULL;
}

/* switch() as the interpreter calls it: the arguments in place, on top of
 * the calling frame's value stack. */
static PyObject *green_switch(PyGreenlet *self, PyObject *const *args,
                              Py_ssize_t nargsf, PyObject *kwnames) {
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  PyObject *tuple = n ? PyTuple_New(n) : Py_NewRef(empty_tuple);
  if (!tuple)
    return NULL;
  for (Py_ssize_t k = 0; k < n; k++)
    PyTuple_SET_ITEM(tuple, k, Py_NewRef(args[k]));
  PyObject *kwargs = NULL;
  if (nkw) {
    kwargs = PyDict_New();
    for (Py_ssize_t k = 0; kwargs && k < nkw; k++)
      if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, k), args[n + k]) <
          0)
        Py_CLEAR(kwargs);
    if (!kwargs) {
      Py_DECREF(tuple);
      return NULL;
    }
  }
  return switch_owned(self, tuple, kwargs, args + n + nkw);
}

/* Normalises throw()'s (typ, val, tb) as greenlet does, into the slots. */
static int throw_prepare(cg_thread *th, PyObject *typ, PyObject *val,
                         PyObject *tb) {
  if (tb == Py_None)
    tb = NULL;
  if (tb && !PyTraceBack_Check(tb)) {
    PyErr_SetString(PyExc_TypeError,
                    "throw() third argument must be a traceback object");
    return -1;
  }
  Py_INCREF(typ);
  Py_XINCREF(val);
  Py_XINCREF(tb);
  if (PyExceptionClass_Check(typ)) {
    PyErr_NormalizeException(&typ, &val, &tb);
  } else if (PyExceptionInstance_Check(typ)) {
    if (val && val != Py_None) {
      PyErr_SetString(PyExc_TypeError,
                      "instance exception may not have a separate value");
      goto fail;
    }
    Py_XDECREF(val);
    val = typ;
    typ = Py_NewRef(PyExceptionInstance_Class(typ));
    if (!tb)
      tb = PyException_GetTraceback(val);
  } else {
    PyErr_Format(PyExc_TypeError,
                 "exceptions must be classes, or instances, not %s",
                 Py_TYPE(typ)->tp_name);
    goto fail;
  }
  slots_clear(th);
  th->xfer_type = typ;
  th->xfer_value = val;
  th->xfer_tb = tb;
  return 0;
fail:
  Py_XDECREF(typ);
  Py_XDECREF(val);
  Py_XDECREF(tb);
  return -1;
}

static PyObject *green_throw(PyGreenlet *self, PyObject *args) {
  PyObject *typ = PyExc_GreenletExit, *val = NULL, *tb = NULL;
  if (!PyArg_ParseTuple(args, "|OOO:throw", &typ, &val, &tb))
    return NULL;
  cg_thread *th = thread_get();
  if (!th)
    return NULL;
  process_deleteme(th);
  /* The arguments first, as stock greenlet checks them. */
  if (throw_prepare(th, typ, val, tb) < 0)
    return NULL;
  if (check_thread(th, self) < 0) {
    slots_clear(th);
    return NULL;
  }
  int unstarted = !g_started(self->pimpl);
  if ((unstarted || g_dead(self->pimpl)) &&
      PyErr_GivenExceptionMatches(th->xfer_type, PyExc_GreenletExit)) {
    /* Nothing (left) to exit: it passes on as the greenlet's return value,
     * like a GreenletExit escaping run; an unstarted one dies unrun. */
    if (unstarted) {
      PyObject *run = PyObject_GetAttr((PyObject *)self, str_run);
      if (!run || ensure_core(th, self) < 0) {
        Py_XDECREF(run);
        slots_clear(th);
        return NULL;
      }
      Py_DECREF(run);
      /* Stock greenlet enters it to die: a tracer sees that. */
      if (th->tracefunc &&
          call_tracer(th, "throw", th->current, self) < 0) {
        slots_clear(th);
        return NULL;
      }
      Py_XSETREF(th->via, (PyGreenlet *)Py_NewRef(self));
      greenlet_kill(self->pimpl->core, NULL);
    }
    PyObject *v = th->xfer_value ? th->xfer_value : Py_None;
    PyObject *args = PyTuple_Pack(1, v);
    slots_clear(th);
    if (!args) {
      Py_CLEAR(th->via);
      return NULL;
    }
    th->xfer_args = args;
    PyObject *r = do_switch(th, self, GREENLET_OK, NULL);
    Py_CLEAR(th->via); /* (left set only if do_switch refused early) */
    return r;
  }
  return do_switch(th, self, GREENLET_ERROR, NULL);
}

static int green_bool(PyGreenlet *self) { return g_active(self->pimpl); }

static PyObject *green_getdict(PyGreenlet *self, void *c) {
  (void)c;
  if (!self->dict && !(self->dict = PyDict_New()))
    return NULL;
  return Py_NewRef(self->dict);
}

static int green_setdict(PyGreenlet *self, PyObject *val, void *c) {
  (void)c;
  if (!val) {
    PyErr_SetString(PyExc_TypeError, "__dict__ may not be deleted");
    return -1;
  }
  if (!PyDict_Check(val)) {
    PyErr_SetString(PyExc_TypeError, "__dict__ must be set to a dictionary");
    return -1;
  }
  Py_XSETREF(self->dict, Py_NewRef(val));
  return 0;
}

static PyObject *green_getrun(PyGreenlet *self, void *c) {
  (void)c;
  cg_impl *i = self->pimpl;
  if (g_started(i) || !i->run) {
    PyErr_SetObject(PyExc_AttributeError, str_run);
    return NULL;
  }
  return Py_NewRef(i->run);
}

static int green_setrun(PyGreenlet *self, PyObject *value, void *c) {
  (void)c;
  cg_impl *i = self->pimpl;
  if (i->is_main) {
    PyErr_SetString(PyExc_AttributeError,
                    "Main greenlets do not have a run attribute.");
    return -1;
  }
  if (g_started(i)) {
    PyErr_SetString(PyExc_AttributeError,
                    "run cannot be set after the start of the greenlet");
    return -1;
  }
  Py_XINCREF(value);
  Py_XSETREF(i->run, value);
  return 0;
}

static PyObject *green_getparent(PyGreenlet *self, void *c) {
  (void)c;
  PyGreenlet *p = self->pimpl->parent;
  return Py_NewRef(p ? (PyObject *)p : Py_None);
}

static int green_setparent(PyGreenlet *self, PyObject *value, void *c) {
  (void)c;
  if (!value) {
    PyErr_SetString(PyExc_AttributeError, "can't delete attribute");
    return -1;
  }
  if (self->pimpl->is_main) { /* before the type check, as stock greenlet */
    PyErr_SetString(PyExc_AttributeError,
                    "cannot set the parent of a main greenlet");
    return -1;
  }
  if (!GREENLET_CHECK(value)) {
    PyErr_Format(PyExc_TypeError,
                 "GreenletChecker: Expected any type of greenlet, not %s",
                 Py_TYPE(value)->tp_name);
    return -1;
  }
  PyGreenlet *p = (PyGreenlet *)value;
  cg_impl *i = self->pimpl;
  for (PyGreenlet *q = p; q; q = q->pimpl->parent)
    if (q == self) {
      PyErr_SetString(PyExc_ValueError, "cyclic parent chain");
      return -1;
    }
  /* Same thread: the chains end in the same main greenlet (p may not have
   * started; the thread may have exited), as stock greenlet decides it. */
  PyGreenlet *rp = p, *rs = self;
  while (rp->pimpl->parent)
    rp = rp->pimpl->parent;
  while (rs->pimpl->parent)
    rs = rs->pimpl->parent;
  int same_thread = rp == rs;
  if (!same_thread && g_started(i)) {
    PyErr_SetString(PyExc_ValueError, "parent cannot be on a different thread");
    return -1;
  }
  /* An unstarted greenlet may name a parent of another thread: switching
   * to it then fails (do_switch); the core parent follows at start. */
  if (same_thread && i->core && i->thread == cg_tls) {
    if (ensure_core(cg_tls, p) < 0)
      return -1;
    int rc = greenlet_set_parent(i->core, p->pimpl->core);
    if (rc == GREENLET_ECYCLE) {
      PyErr_SetString(PyExc_ValueError, "cyclic parent chain");
      return -1;
    }
    if (rc != 0) {
      core_error(rc);
      return -1;
    }
  }
  Py_XSETREF(i->parent, (PyGreenlet *)Py_NewRef(p));
  return 0;
}

static PyObject *green_getcontext(PyGreenlet *self, void *c) {
  (void)c;
  cg_impl *i = self->pimpl;
  cg_thread *th = thread_get();
  if (!th)
    return NULL;
  PyObject *ctx;
  if (i->thread == th && th->current == self) {
    ctx = th->tstate->context;
  } else if (i->thread && i->thread->current == self) {
    PyErr_SetString(PyExc_ValueError,
                    "cannot get context of a greenlet that is running in a "
                    "different thread");
    return NULL;
  } else {
    ctx = cg_pystate_context(&i->st);
  }
  return Py_NewRef(ctx ? ctx : Py_None);
}

static int green_setcontext(PyGreenlet *self, PyObject *ctx, void *c) {
  (void)c;
  if (!ctx) {
    PyErr_SetString(PyExc_AttributeError, "can't delete context attribute");
    return -1;
  }
  if (ctx == Py_None)
    ctx = NULL;
  else if (!PyContext_CheckExact(ctx)) {
    PyErr_SetString(PyExc_TypeError,
                    "greenlet context must be a contextvars.Context or None");
    return -1;
  }
  cg_impl *i = self->pimpl;
  cg_thread *th = thread_get();
  if (!th)
    return -1;
  if (i->thread == th && th->current == self) {
    Py_XINCREF(ctx);
    Py_XSETREF(th->tstate->context, ctx);
    th->tstate->context_ver++;
  } else if (i->thread && i->thread->current == self) {
    PyErr_SetString(PyExc_ValueError,
                    "cannot set context of a greenlet that is running in a "
                    "different thread");
    return -1;
  } else {
    cg_pystate_set_context(&i->st, ctx);
  }
  return 0;
}

static PyObject *green_getframe(PyGreenlet *self, void *c) {
  (void)c;
  cg_impl *i = self->pimpl;
  cg_thread *th = cg_tls;
  if (i->dead_frame)
    return Py_NewRef(i->dead_frame);
  /* Also of another (live) thread's greenlet, suspended there (as stock
   * greenlet shows it): that thread waits for the GIL, and the frames are
   * only read here. */
  if (!g_active(i) || !th || !i->thread || i->thread_gone ||
      i->thread->current == self)
    Py_RETURN_NONE;
  return cg_pystate_frame(&i->st, th->tstate);
}

static PyObject *green_getdead(PyGreenlet *self, void *c) {
  (void)c;
  return PyBool_FromLong(g_dead(self->pimpl));
}

static PyObject *green_get_stack_saved(PyGreenlet *self, void *c) {
  (void)c;
  cg_impl *i = self->pimpl;
  /* The bytes of its own stack a suspended greenlet occupies (stock
   * greenlet reports the bytes it copied off the C stack). */
  return PyLong_FromSize_t(i->core && !i->thread_gone
                               ? greenlet_stack_in_use(i->core)
                               : 0);
}

static PyObject *green_repr(PyGreenlet *self) {
  cg_impl *i = self->pimpl;
  const char *tp = Py_TYPE(self)->tp_name;
  if (g_active(i) || (i->is_main && !i->thread_gone))
    return PyUnicode_FromFormat(
        "<%s object at %p (otid=%p)%s active started%s>", tp, self, i->thread,
        cg_tls && cg_tls->current == self ? " current" : " suspended",
        i->is_main ? " main" : "");
  if (g_started(i))
    return PyUnicode_FromFormat("<%s object at %p (otid=%p) %sdead>", tp, self,
                                i->thread,
                                i->thread_gone ? "(thread exited) " : "");
  return PyUnicode_FromFormat("<%s object at %p (otid=%p) pending>", tp, self,
                              i->thread);
}

static PyObject *green_getstate(PyGreenlet *self, PyObject *unused) {
  (void)unused;
  PyErr_Format(PyExc_TypeError, "cannot serialize '%s' object",
               Py_TYPE(self)->tp_name);
  return NULL;
}

static PyObject *mod_getcurrent(PyObject *m, PyObject *unused);
static PyObject *mod_settrace(PyObject *m, PyObject *args);
static PyObject *mod_gettrace(PyObject *m, PyObject *unused);

static PyMethodDef green_methods[] = {
    {"switch", (PyCFunction)(void (*)(void))green_switch,
     METH_FASTCALL | METH_KEYWORDS,
     "switch(*args, **kwargs)\n\nSwitch execution to this greenlet."},
    {"throw", (PyCFunction)green_throw, METH_VARARGS,
     "throw(typ=GreenletExit, val=None, tb=None)\n\nRaise an exception in this "
     "greenlet."},
    {"__getstate__", (PyCFunction)green_getstate, METH_NOARGS, NULL},
    {"getcurrent", mod_getcurrent, METH_NOARGS | METH_STATIC, NULL},
    {"settrace", mod_settrace, METH_VARARGS | METH_STATIC, NULL},
    {"gettrace", mod_gettrace, METH_NOARGS | METH_STATIC, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef green_getsets[] = {
    {"__dict__", (getter)green_getdict, (setter)green_setdict, NULL, NULL},
    {"run", (getter)green_getrun, (setter)green_setrun, NULL, NULL},
    {"parent", (getter)green_getparent, (setter)green_setparent, NULL, NULL},
    {"gr_frame", (getter)green_getframe, NULL, NULL, NULL},
    {"gr_context", (getter)green_getcontext, (setter)green_setcontext, NULL,
     NULL},
    {"dead", (getter)green_getdead, NULL, NULL, NULL},
    {"_stack_saved", (getter)green_get_stack_saved, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyNumberMethods green_as_number = {.nb_bool = (inquiry)green_bool};

static PyTypeObject PyGreenlet_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "greenlet.greenlet",
    .tp_basicsize = sizeof(PyGreenlet),
    .tp_dealloc = (destructor)green_dealloc,
    .tp_repr = (reprfunc)green_repr,
    .tp_as_number = &green_as_number,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "greenlet(run=None, parent=None) -> greenlet\n\n"
              "Creates a new greenlet object (without running it).",
    .tp_traverse = (traverseproc)green_traverse,
    .tp_clear = (inquiry)green_clear,
    .tp_finalize = (destructor)green_finalize,
    .tp_weaklistoffset = offsetof(PyGreenlet, weakreflist),
    .tp_methods = green_methods,
    .tp_getset = green_getsets,
    .tp_dictoffset = offsetof(PyGreenlet, dict),
    .tp_init = (initproc)green_init,
    .tp_new = green_new,
};

/* ---- module functions ------------------------------------------------------ */

static PyObject *mod_getcurrent(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  cg_thread *th = thread_get();
  if (!th)
    return NULL;
  process_deleteme(th);
  return Py_NewRef(th->current);
}

static PyObject *mod_settrace(PyObject *m, PyObject *args) {
  (void)m;
  PyObject *f;
  if (!PyArg_ParseTuple(args, "O:settrace", &f))
    return NULL;
  cg_thread *th = thread_get();
  if (!th)
    return NULL;
  PyObject *prev = th->tracefunc ? th->tracefunc : Py_NewRef(Py_None);
  th->tracefunc = f == Py_None ? NULL : Py_NewRef(f);
  return prev;
}

static PyObject *mod_gettrace(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  cg_thread *th = thread_get();
  if (!th)
    return NULL;
  return Py_NewRef(th->tracefunc ? th->tracefunc : Py_None);
}

static PyObject *mod_get_pending_cleanup_count(PyObject *m, PyObject *u) {
  (void)m;
  (void)u;
  cg_thread *th = thread_get();
  if (!th)
    return NULL;
  return PyLong_FromSsize_t(th->deleteme ? PyList_GET_SIZE(th->deleteme) : 0);
}

static PyObject *mod_get_total_main_greenlets(PyObject *m, PyObject *u) {
  (void)m;
  (void)u;
  return PyLong_FromSsize_t(total_main_greenlets);
}

/* The thread state's trashcan nesting (a pystate_3xx.h whose version keeps
 * it elsewhere defines CG_TRASH_DELETE_NESTING). */
#ifndef CG_TRASH_DELETE_NESTING
#define CG_TRASH_DELETE_NESTING(ts) ((ts)->trash_delete_nesting)
#endif
static PyObject *mod_get_tstate_trash_delete_nesting(PyObject *m, PyObject *u) {
  (void)m;
  (void)u;
  return PyLong_FromLong(CG_TRASH_DELETE_NESTING(PyThreadState_Get()));
}

static PyObject *mod_set_thread_local(PyObject *m, PyObject *args) {
  (void)m;
  PyObject *key, *value;
  if (!PyArg_ParseTuple(args, "OO:set_thread_local", &key, &value))
    return NULL;
  PyObject *dict = PyThreadState_GetDict();
  if (!dict || PyDict_SetItem(dict, key, value) < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* Test hook (python/tests): makes the next n greenlets orphaned at thread
 * exit take the path of a failed allocation. */
static PyObject *mod_fail_orphan_relocations(PyObject *m, PyObject *n) {
  (void)m;
  long v = PyLong_AsLong(n);
  if (v == -1 && PyErr_Occurred())
    return NULL;
  if (cg_pystate_fail_relocations((int)v) < 0) {
    PyErr_SetString(PyExc_NotImplementedError,
                    "no orphan relocation on this Python version");
    return NULL;
  }
  Py_RETURN_NONE;
}

/*
 * Test hooks for allocation-failure injection (python/tests/test_faults.py):
 * CPython's three allocator domains are wrapped so that their allocations
 * count in the core's fault sequence (src/fault.h) and the chosen one
 * fails.  Frees and failed-over reallocs go to the saved allocators.
 */
static struct fault_domain {
  PyMemAllocatorDomain domain;
  PyMemAllocatorEx saved;
  int hooked;
} fault_domains[3] = {
    {PYMEM_DOMAIN_RAW, {0}, 0},
    {PYMEM_DOMAIN_MEM, {0}, 0},
    {PYMEM_DOMAIN_OBJ, {0}, 0},
};

static void *fault_malloc(void *ctx, size_t size) {
  struct fault_domain *d = ctx;
  return greenlet__fault_hit() ? NULL : d->saved.malloc(d->saved.ctx, size);
}

static void *fault_calloc(void *ctx, size_t n, size_t size) {
  struct fault_domain *d = ctx;
  return greenlet__fault_hit() ? NULL
                               : d->saved.calloc(d->saved.ctx, n, size);
}

static void *fault_realloc(void *ctx, void *ptr, size_t size) {
  struct fault_domain *d = ctx;
  return greenlet__fault_hit() ? NULL
                               : d->saved.realloc(d->saved.ctx, ptr, size);
}

static void fault_free(void *ctx, void *ptr) {
  struct fault_domain *d = ctx;
  d->saved.free(d->saved.ctx, ptr);
}

static void fault_unhook(void) {
  for (int k = 0; k < 3; k++)
    if (fault_domains[k].hooked) {
      PyMem_SetAllocator(fault_domains[k].domain, &fault_domains[k].saved);
      fault_domains[k].hooked = 0;
    }
}

/* _cgreenlet_fault_arm(n): the n-th allocation from now (CPython's or the
 * core's, any thread) fails. */
static PyObject *mod_fault_arm(PyObject *m, PyObject *arg) {
  (void)m;
  long n = PyLong_AsLong(arg);
  if (n == -1 && PyErr_Occurred())
    return NULL;
  if (n < 0) {
    PyErr_SetString(PyExc_ValueError, "n must be >= 0");
    return NULL;
  }
  greenlet__fault_disarm(NULL);
  fault_unhook();
  for (int k = 0; k < 3; k++) {
    struct fault_domain *d = &fault_domains[k];
    PyMem_GetAllocator(d->domain, &d->saved);
    PyMemAllocatorEx hook = {d, fault_malloc, fault_calloc, fault_realloc,
                             fault_free};
    PyMem_SetAllocator(d->domain, &hook);
    d->hooked = 1;
  }
  greenlet__fault_arm(n);
  Py_RETURN_NONE;
}

/* _cgreenlet_fault_disarm() -> (allocations counted, fault injected). */
static PyObject *mod_fault_disarm(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  int fired;
  long seen = greenlet__fault_disarm(&fired);
  fault_unhook();
  return Py_BuildValue("(lO)", seen, fired ? Py_True : Py_False);
}

/*
 * Introspection (greenlet.introspect): the core's counters and this
 * thread's greenlet objects.  Read-only; costs nothing until called.
 */
static PyObject *stats_dict(const greenlet_stats_t *s) {
  return Py_BuildValue(
      "{s:K,s:K,s:K,s:K,s:K,s:n,s:n,s:K}", "threads",
      (unsigned long long)s->threads, "created",
      (unsigned long long)s->created, "switches",
      (unsigned long long)s->switches, "live", (unsigned long long)s->live,
      "stacks", (unsigned long long)s->stacks, "stack_reserved",
      (Py_ssize_t)s->stack_reserved, "stack_in_use",
      (Py_ssize_t)s->stack_in_use, "records", (unsigned long long)s->records);
}

/* _cgreenlet_stats(process) -> dict of the core's counters. */
static PyObject *mod_cgreenlet_stats(PyObject *m, PyObject *process) {
  (void)m;
  int all = PyObject_IsTrue(process);
  if (all < 0)
    return NULL;
  greenlet_stats_t s;
  if ((all ? greenlet_process_stats(&s) : greenlet_thread_stats(&s)) != 0) {
    PyErr_SetString(PyExc_SystemError, "greenlet stats unavailable");
    return NULL;
  }
  return stats_dict(&s);
}

/* _cgreenlet_greenlets() -> list of this thread's greenlet objects, oldest
 * first (main included; dead ones too while something holds them). */
static PyObject *mod_cgreenlet_greenlets(PyObject *m, PyObject *u) {
  (void)m;
  (void)u;
  cg_thread *th = thread_get();
  if (!th)
    return NULL;
  PyObject *list = PyList_New(0);
  if (!list)
    return NULL;
  cg_impl *last = th->all;
  while (last && last->next)
    last = last->next;
  for (cg_impl *i = last; i; i = i->prev)
    if (i->self && Py_REFCNT(i->self) > 0 &&
        PyList_Append(list, (PyObject *)i->self) < 0) {
      Py_DECREF(list);
      return NULL;
    }
  return list;
}

/* _cgreenlet_stack(g) -> dict: its stack's size, bytes in use, high-water
 * mark and reserve (all 0 without a stack: unstarted, dead, main, or its
 * thread gone). */
static PyObject *mod_cgreenlet_stack(PyObject *m, PyObject *arg) {
  (void)m;
  if (!PyObject_TypeCheck(arg, &PyGreenlet_Type)) {
    PyErr_SetString(PyExc_TypeError, "expected a greenlet");
    return NULL;
  }
  cg_impl *i = ((PyGreenlet *)arg)->pimpl;
  greenlet_t *c = i && i->core && !i->thread_gone && !i->is_main &&
                          i->thread == cg_tls
                      ? i->core
                      : NULL;
  size_t size = 0, used = 0, high = 0;
  if (c && greenlet_started(c) && !greenlet_dead(c)) {
    size = greenlet_stack_size(c);
    used = greenlet_stack_in_use(c);
    high = greenlet_stack_high_water(c);
  }
  return Py_BuildValue("{s:n,s:n,s:n,s:n}", "size", (Py_ssize_t)size,
                       "in_use", (Py_ssize_t)used, "high_water",
                       (Py_ssize_t)high, "reserve",
                       (Py_ssize_t)(c ? CG_PYSTATE_RESERVE : 0));
}

static PyObject *mod_enable_optional_cleanup(PyObject *m, PyObject *flag) {
  (void)m;
  (void)flag;
  Py_RETURN_NONE;
}

static PyObject *mod_get_clocks_used(PyObject *m, PyObject *u) {
  (void)m;
  (void)u;
  return PyLong_FromLong(0);
}

static PyMethodDef mod_methods[] = {
    {"getcurrent", mod_getcurrent, METH_NOARGS,
     "getcurrent() -> greenlet\n\nThe greenlet running in this thread."},
    {"settrace", mod_settrace, METH_VARARGS, "settrace(callback) -> previous"},
    {"gettrace", mod_gettrace, METH_NOARGS, "gettrace() -> callback or None"},
    {"get_pending_cleanup_count", mod_get_pending_cleanup_count, METH_NOARGS,
     NULL},
    {"get_total_main_greenlets", mod_get_total_main_greenlets, METH_NOARGS,
     NULL},
    {"get_tstate_trash_delete_nesting", mod_get_tstate_trash_delete_nesting,
     METH_NOARGS, NULL},
    {"set_thread_local", mod_set_thread_local, METH_VARARGS, NULL},
    {"enable_optional_cleanup", mod_enable_optional_cleanup, METH_O, NULL},
    {"_fail_orphan_relocations", mod_fail_orphan_relocations, METH_O, NULL},
    {"_cgreenlet_fault_arm", mod_fault_arm, METH_O, NULL},
    {"_cgreenlet_stats", mod_cgreenlet_stats, METH_O, NULL},
    {"_cgreenlet_greenlets", mod_cgreenlet_greenlets, METH_NOARGS, NULL},
    {"_cgreenlet_stack", mod_cgreenlet_stack, METH_O, NULL},
    {"_cgreenlet_fault_disarm", mod_fault_disarm, METH_NOARGS, NULL},
    {"get_clocks_used_doing_optional_cleanup", mod_get_clocks_used, METH_NOARGS,
     NULL},
    {NULL, NULL, 0, NULL}};

/* ---- the C API capsule ----------------------------------------------------- */

static PyGreenlet *capi_new(PyObject *run, PyGreenlet *parent) {
  PyGreenlet *g =
      (PyGreenlet *)green_new(&PyGreenlet_Type, empty_tuple, NULL);
  if (!g)
    return NULL;
  if ((run && green_setrun(g, run, NULL) < 0) ||
      (parent && green_setparent(g, (PyObject *)parent, NULL) < 0)) {
    Py_DECREF(g);
    return NULL;
  }
  return g;
}

/* The capsule's entry points take any pointer: non-greenlets are refused
 * the way stock greenlet refuses them (TypeError, bad argument). */
static int capi_bad(PyGreenlet *g) {
  if (g && GREENLET_CHECK(g))
    return 0;
  PyErr_BadArgument();
  return 1;
}

static PyGreenlet *capi_getcurrent(void) {
  return (PyGreenlet *)mod_getcurrent(NULL, NULL);
}

static PyObject *capi_throw(PyGreenlet *g, PyObject *typ, PyObject *val,
                            PyObject *tb) {
  if (capi_bad(g))
    return NULL;
  cg_thread *th = thread_get();
  if (!th)
    return NULL;
  if (check_thread(th, g) < 0 ||
      throw_prepare(th, typ, val ? val : Py_None, tb ? tb : Py_None) < 0)
    return NULL;
  return do_switch(th, g, GREENLET_ERROR, NULL);
}

static PyObject *capi_switch(PyGreenlet *g, PyObject *args, PyObject *kwargs) {
  if (capi_bad(g))
    return NULL;
  if (!args)
    args = empty_tuple;
  if (kwargs && !PyDict_Check(kwargs))
    kwargs = NULL;
  PyObject *kw = kwargs ? PyDict_Copy(kwargs) : NULL;
  if (kwargs && !kw)
    return NULL;
  return switch_owned(g, Py_NewRef(args), kw, NULL);
}

static int capi_setparent(PyGreenlet *g, PyGreenlet *p) {
  if (capi_bad(g))
    return -1;
  return green_setparent(g, (PyObject *)p, NULL);
}

static int capi_main(PyGreenlet *g) {
  if (capi_bad(g))
    return -1;
  return g->pimpl->is_main;
}

static int capi_started(PyGreenlet *g) {
  if (capi_bad(g))
    return -1;
  return g_started(g->pimpl);
}

static int capi_active(PyGreenlet *g) {
  if (capi_bad(g))
    return -1;
  return g_active(g->pimpl);
}

static PyGreenlet *capi_getparent(PyGreenlet *g) {
  if (capi_bad(g))
    return NULL;
  PyGreenlet *p = g->pimpl->parent;
  Py_XINCREF(p);
  return p;
}

static void *capi_table[12];

/* ---- module --------------------------------------------------------------- */

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, .m_name = "greenlet._greenlet",
    .m_doc = "cgreenlet: greenlet 2.0.2 API on libcgreenlet", .m_size = -1,
    .m_methods = mod_methods};

/* ---- shared stacks ------------------------------------------------------
 * Every greenlet runs on a shared stack (cgreenlet.h): with few greenlets
 * each has one to itself; past the thread's limit, a suspended greenlet's
 * bytes may be copied to the heap while another runs on its stack.  The
 * core asks how much of the reserve (the root chunk) is in use, and tells
 * the state layer where the bytes went (cg_pystate_moved). */
static size_t cg_hook_reserve_in_use(greenlet_t *core) {
  PyGreenlet *g = greenlet_userdata(core);
  if (!g || !g->pimpl)
    return SIZE_MAX; /* unknown: the core copies the whole reserve */
  return cg_pystate_reserve_in_use(&g->pimpl->st);
}

static void cg_hook_moved(greenlet_t *core, char *lo, char *hi, ptrdiff_t d) {
  PyGreenlet *g = greenlet_userdata(core);
  if (g && g->pimpl)
    cg_pystate_moved(&g->pimpl->st, lo, hi, d);
}

PyMODINIT_FUNC PyInit__greenlet(void) {
  static const greenlet_move_hooks_t hooks = {cg_hook_reserve_in_use,
                                              cg_hook_moved};
  greenlet_set_move_hooks(&hooks);
  PyObject *m = PyModule_Create(&module_def);
  if (!m)
    return NULL;
  if (!str_run && !(str_run = PyUnicode_InternFromString("run")))
    goto fail;
  if (!thread_key &&
      !(thread_key = PyUnicode_InternFromString("__cgreenlet_thread_state__")))
    goto fail;
  if (!empty_tuple && !(empty_tuple = PyTuple_New(0)))
    goto fail;
  if (PyType_Ready(&PyGreenlet_Type) < 0 || PyType_Ready(&cg_thread_Type) < 0)
    goto fail;
  if (!PyExc_GreenletError &&
      !(PyExc_GreenletError = PyErr_NewException("greenlet.error", NULL, NULL)))
    goto fail;
  if (!PyExc_GreenletExit &&
      !(PyExc_GreenletExit = PyErr_NewException("greenlet.GreenletExit",
                                                PyExc_BaseException, NULL)))
    goto fail;
  if (PyModule_AddObjectRef(m, "greenlet", (PyObject *)&PyGreenlet_Type) < 0 ||
      PyModule_AddObjectRef(m, "UnswitchableGreenlet",
                            (PyObject *)&PyGreenlet_Type) < 0 ||
      PyModule_AddObjectRef(m, "error", PyExc_GreenletError) < 0 ||
      PyModule_AddObjectRef(m, "GreenletExit", PyExc_GreenletExit) < 0 ||
      PyModule_AddObjectRef(m, "GREENLET_USE_GC", Py_True) < 0 ||
      PyModule_AddObjectRef(m, "GREENLET_USE_TRACING", Py_True) < 0 ||
      PyModule_AddObjectRef(m, "GREENLET_USE_CONTEXT_VARS", Py_True) < 0 ||
      PyModule_AddObjectRef(m, "GREENLET_USE_STANDARD_THREADING", Py_True) < 0 ||
      PyModule_AddIntConstant(m, "CLOCKS_PER_SEC", CLOCKS_PER_SEC) < 0 ||
      PyModule_AddStringConstant(m, "_cgreenlet_version", CG_VERSION) < 0)
    goto fail;
  {
    PyObject *gcmod = PyImport_ImportModule("gc");
    PyObject *cbs = gcmod ? PyObject_GetAttrString(gcmod, "callbacks") : NULL;
    PyObject *cb = cbs ? PyCFunction_New(&cg_gc_callback_def, NULL) : NULL;
    int bad = !cb || PyList_Append(cbs, cb) < 0;
    Py_XDECREF(cb);
    Py_XDECREF(cbs);
    Py_XDECREF(gcmod);
    if (bad)
      goto fail;
  }
  /* Also reachable from the type, as stock greenlet has them. */
  if (PyDict_SetItemString(PyGreenlet_Type.tp_dict, "error",
                           PyExc_GreenletError) < 0 ||
      PyDict_SetItemString(PyGreenlet_Type.tp_dict, "GreenletExit",
                           PyExc_GreenletExit) < 0)
    goto fail;
  PyType_Modified(&PyGreenlet_Type);
  capi_table[0] = &PyGreenlet_Type;
  capi_table[1] = PyExc_GreenletError;
  capi_table[2] = PyExc_GreenletExit;
  capi_table[3] = (void *)capi_new;
  capi_table[4] = (void *)capi_getcurrent;
  capi_table[5] = (void *)capi_throw;
  capi_table[6] = (void *)capi_switch;
  capi_table[7] = (void *)capi_setparent;
  capi_table[8] = (void *)capi_main;
  capi_table[9] = (void *)capi_started;
  capi_table[10] = (void *)capi_active;
  capi_table[11] = (void *)capi_getparent;
  PyObject *capsule = PyCapsule_New(capi_table, "greenlet._C_API", NULL);
  if (!capsule || PyModule_AddObject(m, "_C_API", capsule) < 0) {
    Py_XDECREF(capsule);
    goto fail;
  }
  return m;
fail:
  Py_DECREF(m);
  return NULL;
}
