/*
 * thread.c - the per-thread state (cg_thread) of the greenlet module: made
 * with the thread's main greenlet on first use, dropped with the thread's
 * dict when the thread ends (its suspended greenlets become orphans); the
 * list of the thread's greenlet objects; and what other threads leave to
 * it: greenlets to kill (deleteme) and core records to destroy (core_free).
 */
#include "module.h"

Py_ssize_t cg_total_main_greenlets;
__thread cg_thread *cg_tls;

/* ---- per-thread state ---------------------------------------------------- */

static void drain_core_free(cg_thread *th);

/* The calling thread's state, created (with its main greenlet) on first
 * use.  NULL with an exception set on failure. */
cg_thread *cg_thread_get(void) {
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
  th = (cg_thread *)PyDict_GetItemWithError(dict, cg_thread_key);
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
  PyGreenlet *m = th->deleteme ? cg_green_alloc(&PyGreenlet_Type) : NULL;
  if (!m) {
    Py_DECREF(th);
    return NULL;
  }
  cg_impl *mi = m->pimpl;
  mi->core = core_main;
  mi->is_main = 1;
  greenlet_set_userdata(core_main, m);
  cg_impl_link(th, mi);
  th->main = m; /* the reference cg_green_alloc returned */
  Py_INCREF(m);
  th->current = m;
  cg_total_main_greenlets++;
  if (PyDict_SetItem(dict, cg_thread_key, (PyObject *)th) < 0) {
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
     * (release_orphan, type.c), and gr_frame keeps showing the top one. */
    if (g_active(i) && !i->is_main && th->current != i->self) {
      i->dead_frame = cg_pystate_frame(&i->st, th->tstate);
      if (!i->dead_frame)
        PyErr_Clear();
      cg_pystate_orphan(&i->st);
      i->orphan = 1;
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
  cg_total_main_greenlets--;
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

PyTypeObject cg_thread_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "greenlet._greenlet._ThreadState",
    .tp_basicsize = sizeof(cg_thread),
    .tp_dealloc = (destructor)cg_thread_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

void cg_impl_link(cg_thread *th, cg_impl *impl) {
  impl->thread = th;
  impl->prev = NULL;
  impl->next = th->all;
  if (th->all)
    th->all->prev = impl;
  th->all = impl;
}

void cg_impl_unlink(cg_impl *impl) {
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

/* Destroys the core records other threads left to this one (see
 * cg_release_core).  On the owner thread, or once the owner has exited. */
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
void cg_release_core(cg_impl *i) {
  greenlet_t *core = i->core;
  i->core = NULL;
  if (!core || i->is_main)
    return;
  /* Now, even when the owner destroys it later (under the GIL, as every
   * reader of userdata is). */
  greenlet_set_userdata(core, NULL);
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
  greenlet_destroy(core, GREENLET_DESTROY_DISCARD);
}

/* Drops the greenlets other threads queued for this one to kill, in the
 * order they were queued (as stock greenlet does; a list's dealloc would
 * drop them last first), and destroys the core records they left to it. */
void cg_process_deleteme(cg_thread *th) {
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
  /* Each greenlet's dealloc runs here, on its own thread (and may run
   * Python code: the list is ours alone by now). */
  for (Py_ssize_t k = 0; k < PyList_GET_SIZE(list); k++) {
    PyObject *g = PyList_GET_ITEM(list, k);
    PyList_SET_ITEM(list, k, NULL);
    Py_XDECREF(g);
  }
  Py_DECREF(list);
}

/* Test hook (python/tests): makes the next n greenlets orphaned at thread
 * exit take the path of a failed allocation. */
PyObject *cg_mod_fail_orphan_relocations(PyObject *m, PyObject *n) {
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
