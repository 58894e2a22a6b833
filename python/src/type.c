/*
 * type.c - greenlet.greenlet, the type: making an object, its attributes
 * (run, parent, gr_frame, gr_context, dead ...), repr, and how an object
 * goes: what the collector sees of a suspended greenlet's frames (and
 * when), traverse, clear, finalize and dealloc.
 */
#include "module.h"

/* ---- the greenlet type --------------------------------------------------- */

static void green_finalize(PyGreenlet *self);

PyGreenlet *cg_green_alloc(PyTypeObject *type) {
  /* A class statement clears the tp_finalize a subclass inherits when no
   * __del__ is found on its MRO, and greenlet hides its own __del__ (see
   * cg_green_types_ready): put it back before the first instance. */
  if (!type->tp_finalize)
    type->tp_finalize = (destructor)green_finalize;
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

PyObject *cg_green_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  (void)args;
  (void)kw;
  if (type->tp_flags & Py_TPFLAGS_IS_ABSTRACT) /* object.__new__ says why */
    return PyBaseObject_Type.tp_new(type, cg_empty_tuple, NULL);
  cg_thread *th = cg_thread_get();
  if (!th)
    return NULL;
  cg_process_deleteme(th);
  PyGreenlet *g = cg_green_alloc(type);
  if (!g)
    return NULL;
  cg_impl *i = g->pimpl;
  /* The core greenlet is made when this one is first switched to, in the
   * thread that does it (cg_ensure_core): an unstarted greenlet may be given
   * a parent of another thread and started there (gevent's thread pool). */
  i->parent = (PyGreenlet *)Py_NewRef(th->current);
  cg_impl_link(th, i);
  return (PyObject *)g;
}

static int green_init(PyGreenlet *self, PyObject *args, PyObject *kwargs) {
  static char *kwlist[] = {"run", "parent", NULL};
  PyObject *run = NULL, *parent = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO:green", kwlist, &run,
                                   &parent))
    return -1;
  if (run && cg_green_setrun(self, run, NULL) < 0)
    return -1;
  if (parent && parent != Py_None &&
      cg_green_setparent(self, parent, NULL) < 0)
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
 * collections are told apart by a gc.callbacks entry (cg_gc_callback,
 * module.c): without it (callbacks cleared, or the collection at
 * interpreter exit) frames are not shown, as in stock greenlet.
 */
#define CG_GC_SPREAD 16

/* Whether this collection is one that shows the frames of a greenlet of
 * this thread with record `i` (the schedule above, without the checks of
 * frames_visible). */
static int scheduled_now(const cg_impl *i) {
  unsigned long now = cg_full_gc;
  return now && (i->gc_shown == 0 || i->gc_shown == now ||
                 now % CG_GC_SPREAD == 0);
}

static int frames_shown(PyGreenlet *self) {
  cg_impl *i = self->pimpl;
  if (i->thread_gone)
    return frames_visible(self);
  /* The schedule first: most collections end here for most greenlets,
   * without reading the core's record (frames_visible), a cache miss per
   * parked greenlet. */
  if (!scheduled_now(i) || !frames_visible(self))
    return 0;
  i->gc_shown = cg_full_gc;
  return 1;
}

/*
 * tp_is_gc: whether the collector treats this greenlet as one of its
 * objects.  Not, in a young collection (generation 0 or 1, where frames are
 * never shown), for a suspended greenlet of this thread: it then counts as
 * held from outside, as its frames' objects do, and, as with stock greenlet
 * (which says "not" for every started, unfinished greenlet, always), the
 * collector untracks the tuples that hold nothing else it needs to see:
 * gevent keeps two such tuples per parked greenlet, and every full
 * collection walked them.  The price: a cycle through such a tuple is never
 * collected (stock collects no cycle through a suspended greenlet).  Yes
 * everywhere else: full collections see the greenlet as before, and dicts
 * (untracked only by full collections, or when built) stay tracked, so
 * cycles through them are still found.  The answer stays the same within a
 * collection, and reads no more than frames_shown's schedule does.
 */
static int green_is_gc(PyGreenlet *self) {
  cg_impl *i = self->pimpl;
  if (!cg_young_gc || !i || i->is_main || i->thread_gone || !g_active(i) ||
      !i->thread)
    return 1;
  return i->thread->current == self ||
         i->thread->tstate != PyThreadState_GetUnchecked();
}

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
    Py_CLEAR(i->call_run); /* looked up by a start that did not happen */
    Py_CLEAR(i->parent);
    if (i->thread_gone) /* its frames never run again */
      release_orphan(i);
    cg_pystate_clear(&i->st);
  }
  return 0;
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
      cg_kill_in_place(th, self);
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
    cg_thread *th = cg_thread_get();
    if (!th) {
      PyErr_WriteUnraisable((PyObject *)self);
    } else if (i->thread == th) {
      /* Resurrect for the duration of the kill. */
      Py_SET_REFCNT(self, 1);
      cg_kill_in_place(th, self);
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
    cg_release_core(i);
    cg_impl_unlink(i);
    Py_CLEAR(i->run);
    Py_CLEAR(i->parent);
    release_orphan(i);
    cg_pystate_clear(&i->st);
    PyMem_Free(i);
    self->pimpl = NULL;
  }
  Py_TYPE(self)->tp_free((PyObject *)self);
}

/* (A greenlet suspended when its thread exited stays true for stock
 * greenlet until `dead` or its repr is read: see seen_dead.) */
static int green_bool(PyGreenlet *self) {
  return g_active(self->pimpl) || self->pimpl->orphan == 1;
}

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
  if ((g_started(i) && !forgot_start(i)) || !i->run) {
    PyErr_SetObject(PyExc_AttributeError, cg_str_run);
    return NULL;
  }
  return Py_NewRef(i->run);
}

int cg_green_setrun(PyGreenlet *self, PyObject *value, void *c) {
  (void)c;
  cg_impl *i = self->pimpl;
  if (i->is_main) {
    PyErr_SetString(PyExc_AttributeError,
                    "Main greenlets do not have a run attribute.");
    return -1;
  }
  if (g_started(i) && !forgot_start(i)) {
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

int cg_green_setparent(PyGreenlet *self, PyObject *value, void *c) {
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
  /* Same thread, as stock greenlet decides it: p's chain ends in the main
   * greenlet of the thread a started greenlet runs in (its own chain may
   * lead elsewhere: a parent set from another thread), or, unstarted, in
   * the same main greenlet as its chain (p may not have started; the
   * thread may have exited). */
  PyGreenlet *rp = p, *rs = self;
  while (rp->pimpl->parent)
    rp = rp->pimpl->parent;
  if (g_started(i) && i->thread && !i->thread_gone)
    rs = i->thread->main;
  else
    while (rs->pimpl->parent)
      rs = rs->pimpl->parent;
  int same_thread = rp == rs;
  if (!same_thread && g_started(i) && !forgot_start(i)) {
    PyErr_SetString(PyExc_ValueError, "parent cannot be on a different thread");
    return -1;
  }
  /* An unstarted greenlet may name a parent of another thread: switching
   * to it then fails (cg_do_switch); the core parent follows at start. */
  if (same_thread && i->core && i->thread == cg_tls) {
    if (cg_ensure_core(cg_tls, p) < 0)
      return -1;
    /* p's own core chain may be stale (reparented from another thread):
     * the core would then see a cycle the Python links do not have. */
    cg_sync_core_chain(cg_tls, p);
    int rc = greenlet_set_parent(i->core, p->pimpl->core);
    if (rc == GREENLET_ECYCLE) {
      PyErr_SetString(PyExc_ValueError, "cyclic parent chain");
      return -1;
    }
    if (rc != 0) {
      cg_core_error(rc);
      return -1;
    }
  }
  Py_XSETREF(i->parent, (PyGreenlet *)Py_NewRef(p));
  return 0;
}

static PyObject *green_getcontext(PyGreenlet *self, void *c) {
  (void)c;
  cg_impl *i = self->pimpl;
  cg_thread *th = cg_thread_get();
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
  cg_thread *th = cg_thread_get();
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

/* Stock greenlet, asked whether a greenlet suspended in a thread that has
 * exited is dead (or for its repr), throws that greenlet's stack state
 * away: from then on it counts as never started when run or parent is set
 * (and as dead otherwise).  So does this module. */
static void seen_dead(cg_impl *i) {
  if (i->orphan == 1)
    i->orphan = 2;
}

static PyObject *green_getdead(PyGreenlet *self, void *c) {
  (void)c;
  seen_dead(self->pimpl);
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
  seen_dead(i);
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

static PyMethodDef green_methods[] = {
    {"switch", (PyCFunction)(void (*)(void))cg_green_switch,
     METH_FASTCALL | METH_KEYWORDS,
     "switch(*args, **kwargs)\n\nSwitch execution to this greenlet."},
    {"throw", (PyCFunction)cg_green_throw, METH_VARARGS,
     "throw(typ=GreenletExit, val=None, tb=None)\n\nRaise an exception in this "
     "greenlet."},
    {"__getstate__", (PyCFunction)green_getstate, METH_NOARGS, NULL},
    {"getcurrent", cg_mod_getcurrent, METH_NOARGS | METH_STATIC, NULL},
    {"settrace", cg_mod_settrace, METH_VARARGS | METH_STATIC, NULL},
    {"gettrace", cg_mod_gettrace, METH_NOARGS | METH_STATIC, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef green_getsets[] = {
    {"__dict__", (getter)green_getdict, (setter)green_setdict, NULL, NULL},
    {"run", (getter)green_getrun, (setter)cg_green_setrun, NULL, NULL},
    {"parent", (getter)green_getparent, (setter)cg_green_setparent, NULL,
     NULL},
    {"gr_frame", (getter)green_getframe, NULL, NULL, NULL},
    {"gr_context", (getter)green_getcontext, (setter)green_setcontext, NULL,
     NULL},
    {"dead", (getter)green_getdead, NULL, NULL, NULL},
    {"_stack_saved", (getter)green_get_stack_saved, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyNumberMethods green_as_number = {.nb_bool = (inquiry)green_bool};

PyTypeObject PyGreenlet_Type = {
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
    .tp_is_gc = (inquiry)green_is_gc,
    .tp_finalize = (destructor)green_finalize,
    .tp_weaklistoffset = offsetof(PyGreenlet, weakreflist),
    .tp_methods = green_methods,
    .tp_getset = green_getsets,
    .tp_dictoffset = offsetof(PyGreenlet, dict),
    .tp_init = (initproc)green_init,
    .tp_new = cg_green_new,
};

/* ---- UnswitchableGreenlet --------------------------------------------------- */

/* force_switch_error (closure NULL) and force_slp_switch_error: a switch
 * into the greenlet fails (cg_do_switch, switch.c). */
static PyObject *unswitchable_get(PyGreenlet *self, void *slp) {
  cg_impl *i = self->pimpl;
  return PyBool_FromLong(slp ? i->force_slp_switch_error
                             : i->force_switch_error);
}

static int unswitchable_set(PyGreenlet *self, PyObject *value, void *slp) {
  if (!value) {
    PyErr_Format(PyExc_AttributeError, "Cannot delete %s",
                 slp ? "force_slp_switch_error" : "force_switch_error");
    return -1;
  }
  int on = PyObject_IsTrue(value);
  if (on < 0)
    return -1;
  if (slp)
    self->pimpl->force_slp_switch_error = (uint8_t)on;
  else
    self->pimpl->force_switch_error = (uint8_t)on;
  return 0;
}

static PyGetSetDef unswitchable_getsets[] = {
    {"force_switch_error", (getter)unswitchable_get,
     (setter)unswitchable_set, NULL, NULL},
    {"force_slp_switch_error", (getter)unswitchable_get,
     (setter)unswitchable_set, NULL, (void *)1},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject cg_unswitchable_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name =
        "greenlet._greenlet.UnswitchableGreenlet",
    .tp_basicsize = sizeof(PyGreenlet),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Undocumented internal class for testing error conditions",
    .tp_traverse = (traverseproc)green_traverse,
    .tp_clear = (inquiry)green_clear,
    .tp_getset = unswitchable_getsets,
    .tp_base = &PyGreenlet_Type,
};

/*
 * Readies both types.  The collector's kill of a suspended greenlet found
 * in a garbage cycle is a tp_finalize (green_finalize), which CPython shows
 * as a __del__ attribute that stock greenlet's objects do not have: it is
 * taken out of the type's dict (cg_green_alloc gives subclasses the slot
 * back).
 */
int cg_green_types_ready(void) {
  if (PyType_Ready(&PyGreenlet_Type) < 0)
    return -1;
  PyObject *dict = PyGreenlet_Type.tp_dict;
  if (PyDict_GetItemString(dict, "__del__") &&
      PyDict_DelItemString(dict, "__del__") < 0)
    return -1;
  PyType_Modified(&PyGreenlet_Type);
  return PyType_Ready(&cg_unswitchable_Type);
}
