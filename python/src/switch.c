/*
 * switch.c - switch, throw and run: the value slots, the tracer's events,
 * which thread may switch where, cg_do_switch (every switch goes through
 * it), green_run (the body of every Python greenlet), the core greenlet
 * made at the first switch into a greenlet, and the kill of a suspended
 * greenlet (GreenletExit thrown into it) when its last reference goes.
 */
#include "module.h"

/* Bytes of stack per Python greenlet: room for the interpreter to reach its
 * recursion limit through C recursion (map, sorted(key=), __getattr__ ...)
 * before the guard page; untouched pages cost address space only. */
#define CG_STACK_SIZE ((size_t)8 << 20)

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
    args = Py_NewRef(cg_empty_tuple);
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

PyObject *cg_core_error(int rc) {
  if (rc == GREENLET_ENOMEM)
    return PyErr_NoMemory();
  if (rc == GREENLET_EMAPLIMIT)
    return PyErr_Format(PyExc_MemoryError,
                        "cannot allocate a greenlet stack: %s",
                        greenlet_strerror(rc));
  return PyErr_Format(PyExc_GreenletError, "greenlet: %s",
                      greenlet_strerror(rc));
}

/* The thread whose list holds i, NULL once that thread has exited. */
static cg_thread *live_thread(const cg_impl *i) {
  return i->thread_gone ? NULL : i->thread;
}

/* The thread an unstarted greenlet will start in, as stock greenlet decides
 * it: that of the first started greenlet of its parent chain (NULL if that
 * thread is gone).  An unstarted one may have a core already (a child's
 * start needed it): its parent, set from another thread since, decides. */
static cg_thread *chain_thread(PyGreenlet *g) {
  while (!g_started(g->pimpl) && g->pimpl->parent)
    g = g->pimpl->parent;
  return live_thread(g->pimpl);
}

/* Sets greenlet.error for a switch from thread th to thread to (NULL: one
 * that has exited) and returns -1.  Greenlet 3.x's message names both
 * threads' main greenlets. */
static int thread_error(cg_thread *th, cg_thread *to) {
  if (!to)
    PyErr_SetString(PyExc_GreenletError,
                    "cannot switch to a different thread (which happens to "
                    "have exited)");
  else
    PyErr_Format(PyExc_GreenletError,
                 "Cannot switch to a different thread\n\tCurrent:  %R\n"
                 "\tExpected: %R",
                 (PyObject *)th->main, (PyObject *)to->main);
  return -1;
}

/* Sets greenlet.error, as switching there would, unless g's chain_thread
 * is th. */
static int check_start_thread(cg_thread *th, PyGreenlet *g) {
  cg_thread *gt = chain_thread(g);
  return gt == th ? 0 : thread_error(th, gt);
}

/* Checks that target can be switched to from this thread.  An unstarted
 * greenlet belongs to the thread of its parent chain (checked at its
 * start), even once it has a core: a parent set from another thread may
 * have moved that chain, as stock greenlet decides by the lineage. */
int cg_check_thread(cg_thread *th, PyGreenlet *target) {
  cg_impl *i = target->pimpl;
  if (i->thread == th || !g_started(i))
    return 0;
  return thread_error(th, live_thread(i));
}

/* UnswitchableGreenlet's forced failures of a switch into t (not already
 * current): SystemError, nothing changed; or, as a failed stack switch in
 * stock greenlet, a fatal error. */
static int forced_switch_error(cg_thread *th, PyGreenlet *t) {
  cg_impl *i = t->pimpl;
  if (i->force_switch_error) {
    PyErr_SetString(PyExc_SystemError,
                    g_started(i) ? "Failed to switch stacks into a running "
                                   "greenlet."
                                 : "Failed to switch stacks into a greenlet "
                                   "for the first time.");
    return -1;
  }
  if (i->force_slp_switch_error && t != th->current)
    Py_FatalError("greenlet: Failed low-level slp_switch(). The stack is "
                  "probably corrupt.");
  return 0;
}


/*
 * Switches to target with what is in the slots (status GREENLET_OK: a value,
 * GREENLET_ERROR: an exception), and returns what this greenlet is resumed
 * with, as switch() returns it.  call_end: the end of switch()'s arguments
 * when the interpreter passed them in place (lets the collector see the
 * caller's value stack while we are suspended), else NULL.
 */
PyObject *cg_do_switch(cg_thread *th, PyGreenlet *target, int status,
                       PyObject *const *call_end) {
  /* The greenlet that will really run: dead ones pass on to their parent.
   * If it has not started, its run must exist: that error is the caller's. */
  PyGreenlet *t = target;
  while (g_dead(t->pimpl) && t->pimpl->parent)
    t = t->pimpl->parent;
  if (!g_started(t->pimpl)) {
    /* Looked up now (a subclass may define run as a method): a missing run
     * is the caller's error, and the greenlet stays unstarted. */
    PyObject *run = PyObject_GetAttr((PyObject *)t, cg_str_run);
    if (!run) {
      slots_clear(th);
      return NULL;
    }
    /* What it will call; run itself is let go in the new greenlet. */
    Py_XSETREF(t->pimpl->call_run, run);
    /* An unstarted greenlet may have been given a parent of another thread
     * (even by that lookup); it can start only under one of this thread. */
    PyGreenlet *p = t->pimpl->parent;
    if (p && check_start_thread(th, p) < 0) {
      slots_clear(th);
      return NULL;
    }
    if (cg_ensure_core(th, t) < 0 || cg_pystate_prepare(&t->pimpl->st) < 0) {
      slots_clear(th);
      return NULL;
    }
    /* (A parent set from another thread may have no core yet.) */
    if (p && cg_ensure_core(th, p) < 0) {
      slots_clear(th);
      return NULL;
    }
    if (p && greenlet_parent(t->pimpl->core) != p->pimpl->core &&
        greenlet_set_parent(t->pimpl->core, p->pimpl->core) != 0) {
      slots_clear(th);
      PyErr_SetString(PyExc_ValueError, "cyclic parent chain");
      return NULL;
    }
    /* An error thrown in passes on the core's links, through unstarted
     * and dead ancestors: they must follow the Python ones. */
    if (status == GREENLET_ERROR)
      cg_sync_core_chain(th, t);
  }
  if (t->pimpl->thread != th) { /* (its core is another thread's) */
    slots_clear(th);
    thread_error(th, live_thread(t->pimpl));
    return NULL;
  }
  if (forced_switch_error(th, t) < 0) {
    slots_clear(th);
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
    result = cg_core_error(rc);
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
  /* A record released unstarted (cg_ensure_core moved its greenlet to
   * another thread) that a finishing child of this thread starts before the
   * owner drains it: it passes the outcome on, as a dead greenlet does. */
  if (!self)
    return GREENLET_OK;
  cg_impl *me = self->pimpl;
  cg_thread *th = me->thread;
  PyThreadState *ts = th->tstate;
  cg_start_buffers buffers;
  if (cg_pystate_start(&me->st, ts, &buffers, greenlet_reserved(core),
                       th->tracing) < 0)
    Py_FatalError("greenlet: started without cg_pystate_prepare()");
  PyObject *args = th->xfer_args ? th->xfer_args : Py_NewRef(cg_empty_tuple);
  PyObject *kwargs = th->xfer_kwargs;
  th->xfer_args = th->xfer_kwargs = NULL;
  PyGreenlet *origin = th->origin;
  th->origin = NULL;
  /* Only now: dropping the greenlet we came from may run Python code. */
  Py_INCREF(self);
  Py_XSETREF(th->current, self);
  /* The run attribute goes now, in this greenlet, as in greenlet 3.x: its
   * __del__ may switch away (and this greenlet resume later). */
  Py_CLEAR(me->run);
  PyObject *run = me->call_run;
  me->call_run = NULL;
  if (!run) /* looked up by whoever started it; if not, here */
    run = PyObject_GetAttr((PyObject *)self, cg_str_run);
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
    if (cg_ensure_core(th, t) == 0)
      greenlet_set_parent(me->core, t->pimpl->core);
    else
      PyErr_Clear();
  }
  /* And above it: an error passes through unstarted ancestors (each dies
   * unrun), on the core's links, which a parent set from another thread
   * did not change. */
  if (t && t->pimpl->core && t->pimpl->thread == th)
    cg_sync_core_chain(th, t);
  /* The outcome starts an unstarted ancestor: its run is looked up here,
   * where Python code may run.  If that fails, the error goes past it to
   * its parent and it stays unstarted (as stock greenlet does). */
  if (status == GREENLET_OK && t && !g_started(t->pimpl) && t->pimpl->parent) {
    PyObject *trun = PyObject_GetAttr((PyObject *)t, cg_str_run);
    if (trun && cg_pystate_prepare(&t->pimpl->st) < 0)
      Py_CLEAR(trun);
    if (trun) {
      Py_XSETREF(t->pimpl->call_run, trun);
    } else {
      slots_clear(th);
      PyErr_Fetch(&th->xfer_type, &th->xfer_value, &th->xfer_tb);
      status = GREENLET_ERROR;
      PyGreenlet *gp = t->pimpl->parent;
      if (gp->pimpl->thread == th && cg_ensure_core(th, gp) == 0)
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

/*
 * Gives an unstarted greenlet, about to be switched to on thread th, its
 * core greenlet (and its ancestors theirs: a finishing child hands its
 * result to the core parent).  Moves it to th's list.
 */
int cg_ensure_core(cg_thread *th, PyGreenlet *g) {
  cg_impl *i = g->pimpl;
  /* One never started whose core another thread made (a child that started
   * there needed it as its parent) starts, or becomes a parent, where its
   * parent chain now leads, as in stock greenlet (the callers checked that
   * chain): it gets a core here, and the old record dies on its own thread
   * (cg_release_core); children there pass through it to its parent. */
  if (i->core && i->thread != th && !g_started(i))
    cg_release_core(i);
  if (i->core)
    return 0;
  PyGreenlet *p = i->parent;
  if (!p) {
    if (cg_check_thread(th, g) == 0)
      PyErr_SetString(PyExc_GreenletError, "greenlet has no parent");
    return -1;
  }
  if (check_start_thread(th, p) < 0)
    return -1;
  if (cg_ensure_core(th, p) < 0)
    return -1;
  greenlet_attr_t attr = {.stack_size = CG_STACK_SIZE,
                          .reserve = CG_PYSTATE_RESERVE,
                          .flags = GREENLET_ATTR_SHARED_STACK};
  int rc = greenlet_create(&i->core, green_run, p->pimpl->core, &attr);
  if (rc != 0) {
    i->core = NULL;
    cg_core_error(rc);
    return -1;
  }
  greenlet_set_userdata(i->core, g);
  if (i->thread != th) {
    cg_impl_unlink(i);
    cg_impl_link(th, i);
  }
  return 0;
}

/*
 * cg_sync_core_chain: makes the core parent links of g's chain follow the
 * Python ones, as far as both ends are this thread's.  A parent set from
 * another thread changes only the Python link (the core belongs to its
 * thread), and a stale core link can make a valid reparenting look cyclic
 * to the core (cg_kill_in_place).  An unstarted parent that will start here gets its
 * core now (as a finishing child would give it one).  A link that cannot
 * be set yet (its stale ancestors form the cycle) is retried once those
 * above it are fixed.
 */
void cg_sync_core_chain(cg_thread *th, PyGreenlet *g) {
  int changed, failed;
  do {
    changed = failed = 0;
    for (PyGreenlet *q = g; q && q->pimpl->parent; q = q->pimpl->parent) {
      cg_impl *qi = q->pimpl, *pi = qi->parent->pimpl;
      if (!qi->core || qi->thread != th || qi->thread_gone)
        continue;
      if (!pi->core && !pi->is_main && !pi->thread_gone &&
          chain_thread(qi->parent) == th && cg_ensure_core(th, qi->parent) < 0)
        PyErr_Clear();
      if (!pi->core || pi->thread != th || greenlet_parent(qi->core) == pi->core)
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
int cg_kill_in_place(cg_thread *th, PyGreenlet *self) {
  cg_impl *i = self->pimpl;
  PyObject *exc_t, *exc_v, *exc_tb;
  PyErr_Fetch(&exc_t, &exc_v, &exc_tb);
  PyGreenlet *old_parent = (PyGreenlet *)Py_XNewRef(i->parent);
  cg_sync_core_chain(th, th->current);
  int rc = greenlet_set_parent(i->core, th->current->pimpl->core);
  if (rc == 0)
    Py_XSETREF(i->parent, (PyGreenlet *)Py_NewRef(th->current));
  slots_clear(th);
  th->xfer_type = Py_NewRef(PyExc_GreenletExit);
  th->xfer_value = PyUnicode_FromString(
      "Killing the greenlet because all references have vanished.");
  PyObject *r = cg_do_switch(th, self, GREENLET_ERROR, NULL);
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

/* switch(*args, **kwargs); takes over args (a tuple) and kwargs (a dict the
 * caller owns, or NULL).  call_end: see cg_do_switch. */
PyObject *cg_switch_owned(PyGreenlet *self, PyObject *args, PyObject *kwargs,
                          PyObject *const *call_end) {
  cg_thread *th = cg_thread_get();
  if (th) {
    cg_process_deleteme(th);
    if (cg_check_thread(th, self) == 0) {
      slots_clear(th);
      th->xfer_args = args;
      th->xfer_kwargs = kwargs;
      return cg_do_switch(th, self, GREENLET_OK, call_end);
    }
  }
  Py_DECREF(args);
  Py_XDECREF(kwargs);
  return NULL;
}

/* switch() as the interpreter calls it: the arguments in place, on top of
 * the calling frame's value stack. */
PyObject *cg_green_switch(PyGreenlet *self, PyObject *const *args,
                          Py_ssize_t nargsf, PyObject *kwnames) {
  Py_ssize_t n = PyVectorcall_NARGS(nargsf);
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  PyObject *tuple = n ? PyTuple_New(n) : Py_NewRef(cg_empty_tuple);
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
  return cg_switch_owned(self, tuple, kwargs, args + n + nkw);
}

/* Normalises throw()'s (typ, val, tb) as greenlet does, into the slots. */
int cg_throw_prepare(cg_thread *th, PyObject *typ, PyObject *val,
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

PyObject *cg_green_throw(PyGreenlet *self, PyObject *args) {
  PyObject *typ = PyExc_GreenletExit, *val = NULL, *tb = NULL;
  if (!PyArg_ParseTuple(args, "|OOO:throw", &typ, &val, &tb))
    return NULL;
  cg_thread *th = cg_thread_get();
  if (!th)
    return NULL;
  cg_process_deleteme(th);
  /* The arguments first, as stock greenlet checks them. */
  if (cg_throw_prepare(th, typ, val, tb) < 0)
    return NULL;
  if (cg_check_thread(th, self) < 0) {
    slots_clear(th);
    return NULL;
  }
  int unstarted = !g_started(self->pimpl);
  if ((unstarted || g_dead(self->pimpl)) &&
      PyErr_GivenExceptionMatches(th->xfer_type, PyExc_GreenletExit)) {
    /* Nothing (left) to exit: it passes on as the greenlet's return value,
     * like a GreenletExit escaping run; an unstarted one dies unrun. */
    if (unstarted) {
      /* It would start in the thread of its parent's chain (which a parent
       * set from another thread may have moved away from its core's). */
      PyGreenlet *p = self->pimpl->parent;
      if (p && check_start_thread(th, p) < 0) {
        slots_clear(th);
        return NULL;
      }
      PyObject *run = PyObject_GetAttr((PyObject *)self, cg_str_run);
      if (!run || cg_ensure_core(th, self) < 0) {
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
    PyObject *r = cg_do_switch(th, self, GREENLET_OK, NULL);
    Py_CLEAR(th->via); /* (left set only if cg_do_switch refused early) */
    return r;
  }
  return cg_do_switch(th, self, GREENLET_ERROR, NULL);
}
