/*
 * pycompat.h - the C API the module uses that older supported CPythons lack,
 * defined here as they are in newer ones, so that the module can be
 * written against the newest API; each shim applies only below the version
 * that has it.  (PyGC_Enable/PyGC_Disable, 3.10, are not shimmed: only the
 * 3.11+ layers use them.)  Included by pystate.h, after Python.h.
 */
#ifndef CGREENLET_PYCOMPAT_H
#define CGREENLET_PYCOMPAT_H

#include <Python.h>

#if PY_VERSION_HEX < 0x030A0000
/* 3.10: Py_NewRef, Py_XNewRef. */
static inline PyObject *cg_compat_newref(PyObject *o) {
  Py_INCREF(o);
  return o;
}
static inline PyObject *cg_compat_xnewref(PyObject *o) {
  Py_XINCREF(o);
  return o;
}
#define Py_NewRef(o) cg_compat_newref((PyObject *)(o))
#define Py_XNewRef(o) cg_compat_xnewref((PyObject *)(o))

/* 3.10: PyModule_AddObjectRef (does not steal value, unlike
 * PyModule_AddObject). */
static inline int cg_compat_module_add_object_ref(PyObject *m,
                                                  const char *name,
                                                  PyObject *value) {
  if (!value) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_SystemError,
                      "PyModule_AddObjectRef() must be called with an "
                      "exception raised if value is NULL");
    return -1;
  }
  Py_INCREF(value);
  if (PyModule_AddObject(m, name, value) < 0) {
    Py_DECREF(value);
    return -1;
  }
  return 0;
}
#define PyModule_AddObjectRef cg_compat_module_add_object_ref
#endif

#if PY_VERSION_HEX < 0x030D0000
/* 3.13: PyThreadState_GetUnchecked (NULL, not a fatal error, without a
 * thread state); older versions have it under a private name. */
#define PyThreadState_GetUnchecked _PyThreadState_UncheckedGet
/* 3.13: Py_IsFinalizing (the private name since 3.7). */
#define Py_IsFinalizing _Py_IsFinalizing
#endif

#endif
