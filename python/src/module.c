/*
 * module.c - the greenlet._greenlet module: its functions (getcurrent,
 * settrace, gettrace, the counters upstream's tests read), the test hooks
 * (allocation-failure injection), greenlet.introspect's C side, the gc
 * callback that numbers full collections, the _C_API capsule, the core's
 * move hooks, and PyInit__greenlet.
 */
#include "module.h"

#include <time.h>

#include "fault.h"

#define CG_VERSION "0.1.0"

PyObject *PyExc_GreenletError;
PyObject *PyExc_GreenletExit;
PyObject *cg_str_run, *cg_thread_key, *cg_empty_tuple;
/* The number of the full collection under way (0: none), and how many
 * have started (frames_shown, type.c); whether a collection of generation
 * 0 or 1 is under way (green_is_gc, type.c). */
unsigned long cg_full_gc;
int cg_young_gc;
static unsigned long cg_full_count;

/* ---- module functions ------------------------------------------------------ */

/* getcurrent(), greenlet.getcurrent() and the C API's: refused once the
 * interpreter is being finalized (after the atexit callbacks), as greenlet
 * 3.5 does: what a __del__ run by the last collections would get could
 * belong to a thread state being torn down. */
PyObject *cg_mod_getcurrent(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  if (Py_IsFinalizing()) {
    PyErr_SetString(PyExc_RuntimeError, "greenlet is being finalized");
    return NULL;
  }
  cg_thread *th = cg_thread_get();
  if (!th)
    return NULL;
  cg_process_deleteme(th);
  return Py_NewRef(th->current);
}

PyObject *cg_mod_settrace(PyObject *m, PyObject *args) {
  (void)m;
  PyObject *f;
  if (!PyArg_ParseTuple(args, "O:settrace", &f))
    return NULL;
  cg_thread *th = cg_thread_get();
  if (!th)
    return NULL;
  PyObject *prev = th->tracefunc ? th->tracefunc : Py_NewRef(Py_None);
  th->tracefunc = f == Py_None ? NULL : Py_NewRef(f);
  return prev;
}

PyObject *cg_mod_gettrace(PyObject *m, PyObject *unused) {
  (void)m;
  (void)unused;
  cg_thread *th = cg_thread_get();
  if (!th)
    return NULL;
  return Py_NewRef(th->tracefunc ? th->tracefunc : Py_None);
}

static PyObject *mod_get_pending_cleanup_count(PyObject *m, PyObject *u) {
  (void)m;
  (void)u;
  cg_thread *th = cg_thread_get();
  if (!th)
    return NULL;
  return PyLong_FromSsize_t(th->deleteme ? PyList_GET_SIZE(th->deleteme) : 0);
}

static PyObject *mod_get_total_main_greenlets(PyObject *m, PyObject *u) {
  (void)m;
  (void)u;
  return PyLong_FromSsize_t(cg_total_main_greenlets);
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

/* gc.callbacks entry: numbers the full collections (for frames_shown,
 * type.c) and says when a young one is under way (green_is_gc). */
static PyObject *cg_gc_callback(PyObject *mod, PyObject *const *args,
                                Py_ssize_t nargs) {
  (void)mod;
  if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyDict_Check(args[1]))
    Py_RETURN_NONE;
  PyObject *gen = PyDict_GetItemString(args[1], "generation");
  long g = gen && PyLong_Check(gen) ? PyLong_AsLong(gen) : -1;
  if (g < 0 || g > 2) {
    PyErr_Clear();
    Py_RETURN_NONE;
  }
  if (PyUnicode_CompareWithASCIIString(args[0], "start") != 0) {
    cg_full_gc = 0;
    cg_young_gc = 0;
  } else if (g < 2) {
    cg_young_gc = 1;
  } else {
    if (++cg_full_count == 0)
      cg_full_count = 1;
    cg_full_gc = cg_full_count;
  }
  Py_RETURN_NONE;
}

static PyMethodDef cg_gc_callback_def = {
    "_cgreenlet_gc_callback", (PyCFunction)(void (*)(void))cg_gc_callback,
    METH_FASTCALL, "Numbers full collections for the greenlet module."};

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
  cg_thread *th = cg_thread_get();
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
    {"getcurrent", cg_mod_getcurrent, METH_NOARGS,
     "getcurrent() -> greenlet\n\nThe greenlet running in this thread."},
    {"settrace", cg_mod_settrace, METH_VARARGS,
     "settrace(callback) -> previous"},
    {"gettrace", cg_mod_gettrace, METH_NOARGS,
     "gettrace() -> callback or None"},
    {"get_pending_cleanup_count", mod_get_pending_cleanup_count, METH_NOARGS,
     NULL},
    {"get_total_main_greenlets", mod_get_total_main_greenlets, METH_NOARGS,
     NULL},
    {"get_tstate_trash_delete_nesting", mod_get_tstate_trash_delete_nesting,
     METH_NOARGS, NULL},
    {"set_thread_local", mod_set_thread_local, METH_VARARGS, NULL},
    {"enable_optional_cleanup", mod_enable_optional_cleanup, METH_O, NULL},
    {"_fail_orphan_relocations", cg_mod_fail_orphan_relocations, METH_O,
     NULL},
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
      (PyGreenlet *)cg_green_new(&PyGreenlet_Type, cg_empty_tuple, NULL);
  if (!g)
    return NULL;
  if ((run && cg_green_setrun(g, run, NULL) < 0) ||
      (parent && cg_green_setparent(g, (PyObject *)parent, NULL) < 0)) {
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
  return (PyGreenlet *)cg_mod_getcurrent(NULL, NULL);
}

static PyObject *capi_throw(PyGreenlet *g, PyObject *typ, PyObject *val,
                            PyObject *tb) {
  if (capi_bad(g))
    return NULL;
  cg_thread *th = cg_thread_get();
  if (!th)
    return NULL;
  if (cg_check_thread(th, g) < 0 ||
      cg_throw_prepare(th, typ, val ? val : Py_None, tb ? tb : Py_None) <
          0)
    return NULL;
  return cg_do_switch(th, g, GREENLET_ERROR, NULL);
}

static PyObject *capi_switch(PyGreenlet *g, PyObject *args, PyObject *kwargs) {
  if (capi_bad(g))
    return NULL;
  if (!args)
    args = cg_empty_tuple;
  if (kwargs && !PyDict_Check(kwargs))
    kwargs = NULL;
  PyObject *kw = kwargs ? PyDict_Copy(kwargs) : NULL;
  if (kwargs && !kw)
    return NULL;
  return cg_switch_owned(g, Py_NewRef(args), kw, NULL);
}

static int capi_setparent(PyGreenlet *g, PyGreenlet *p) {
  if (capi_bad(g))
    return -1;
  return cg_green_setparent(g, (PyObject *)p, NULL);
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
  if (!cg_str_run && !(cg_str_run = PyUnicode_InternFromString("run")))
    goto fail;
  if (!cg_thread_key && !(cg_thread_key = PyUnicode_InternFromString(
                              "__cgreenlet_thread_state__")))
    goto fail;
  if (!cg_empty_tuple && !(cg_empty_tuple = PyTuple_New(0)))
    goto fail;
  if (cg_green_types_ready() < 0 || PyType_Ready(&cg_thread_Type) < 0)
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
                            (PyObject *)&cg_unswitchable_Type) < 0 ||
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
