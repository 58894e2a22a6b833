/*
 * pystate_311.h - CPython 3.11.
 *
 * What a switch must carry (REFERENCE.md section 2): the C-stack-resident
 * _PyCFrame chain (tstate->cframe; the current interpreter frame hangs off
 * it), the recursion depth, the frame data stack (Python frames live in
 * per-thread chunks, so each greenlet has its own chain), the handled
 * exception stack, the contextvars context and the trashcan nesting.
 *
 * Every greenlet runs on a stack of its own, so the _PyCFrame entries of a
 * suspended greenlet stay where they are; saving tstate->cframe is enough.
 */
#ifndef CGREENLET_PYSTATE_311_H
#define CGREENLET_PYSTATE_311_H

/* _PyInterpreterFrame, to release the frames of a greenlet dropped without
 * unwinding (cg_pystate_abandon). */
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <internal/pycore_frame.h>

typedef struct cg_pystate {
  _PyCFrame *cframe;
  int recursion_depth;
  _PyStackChunk *datastack_chunk;
  PyObject **datastack_top;
  PyObject **datastack_limit;
  _PyErr_StackItem *exc_info;
  _PyErr_StackItem exc_state;
  PyObject *context;
  int trash_delete_nesting;
  _PyStackChunk *root; /* root data-stack chunk, from start to finish */
  _PyInterpreterFrame *abandoned; /* top frame of a greenlet dropped mid-run */
  /* End of the live value stack of the top frame, when it is suspended in a
   * switch() called from Python (see cg_pystate_save); else NULL. */
  PyObject **top_sp;
} cg_pystate;

/*
 * What a starting greenlet keeps for its lifetime, on its own C stack (in
 * green_run's frame, at the top of the stack): the root _PyCFrame and a
 * small root data-stack chunk.  CPython never frees a root chunk whose first
 * slot is skipped, and frees the chunks it pushes on top, so a greenlet
 * whose frames fit here needs no 16 KiB chunk of its own; and a parked
 * greenlet's frames share the page its C stack already uses.  A greenlet
 * whose thread dies loses its C stack without unwinding; its frames (which
 * frame objects may point into) are then moved to the heap first
 * (cg_pystate_orphan).
 */
#ifndef CG_ROOT_CHUNK_BYTES
#define CG_ROOT_CHUNK_BYTES (32 * 1024 + 3 * 1024)
#endif
#define CG_PYSTATE_RESERVE CG_ROOT_CHUNK_BYTES
typedef struct cg_start_buffers {
  _PyCFrame cframe;
} cg_start_buffers;

/* Nothing to allocate before a start: the root chunk is on the new stack. */
static inline int cg_pystate_prepare(cg_pystate *st) {
  (void)st;
  return 0;
}

static inline uint8_t cg_pystate_use_tracing(PyThreadState *ts) {
  return ts->cframe->use_tracing;
}

/*
 * The end of the value stack of frame f, if call_end (the end of the
 * arguments of the C call f is making) points into it; else NULL.
 * The interpreter does not store its stack pointer in a frame that calls C
 * (stacktop is -1), but it passes vectorcall arguments in place, on top of
 * that stack: the arguments of switch() end where the live stack ends.
 */
static inline PyObject **cg_frame_call_top(_PyInterpreterFrame *f,
                                           PyObject *const *call_end) {
  if (!f || !call_end || f->stacktop >= 0)
    return NULL;
  PyObject **base = f->localsplus + f->f_code->co_nlocalsplus;
  PyObject **sp = (PyObject **)call_end;
  return sp > base && sp <= base + f->f_code->co_stacksize ? sp : NULL;
}

/* Moves the running greenlet's state into st (references included).
 * call_end: see cg_frame_call_top (NULL when switch() was not called with
 * arguments in place, e.g. from C). */
static inline void cg_pystate_save(cg_pystate *st, PyThreadState *ts,
                                   PyObject *const *call_end) {
  st->top_sp = cg_frame_call_top(ts->cframe->current_frame, call_end);
  st->cframe = ts->cframe;
  st->recursion_depth = ts->recursion_limit - ts->recursion_remaining;
  st->datastack_chunk = ts->datastack_chunk;
  st->datastack_top = ts->datastack_top;
  st->datastack_limit = ts->datastack_limit;
  st->exc_info = ts->exc_info;
  st->exc_state = ts->exc_state;
  st->context = ts->context;
  st->trash_delete_nesting = ts->trash_delete_nesting;
  ts->exc_state.exc_value = NULL;
  ts->exc_state.previous_item = NULL;
  ts->context = NULL;
}

/* Moves st back into the thread state.  The tracing flag is the origin's,
 * so that a profiler set while another greenlet ran keeps working here. */
static inline void cg_pystate_restore(cg_pystate *st, PyThreadState *ts,
                                      uint8_t use_tracing) {
  ts->cframe = st->cframe;
  ts->cframe->use_tracing = use_tracing;
  ts->recursion_remaining = ts->recursion_limit - st->recursion_depth;
  ts->datastack_chunk = st->datastack_chunk;
  ts->datastack_top = st->datastack_top;
  ts->datastack_limit = st->datastack_limit;
  ts->exc_state = st->exc_state;
  ts->exc_info = st->exc_info;
  ts->context = st->context;
  ts->context_ver++;
  ts->trash_delete_nesting = st->trash_delete_nesting;
  st->exc_state.exc_value = NULL;
  st->exc_state.previous_item = NULL;
  st->context = NULL;
  st->cframe = NULL;
}

/* The state of a greenlet that starts now, on its own stack.  The context
 * set on it before it started (gr_context) becomes the thread's. */
static inline int cg_pystate_start(cg_pystate *st, PyThreadState *ts,
                                   cg_start_buffers *b, void *reserve,
                                   uint8_t use_tracing) {
  _PyStackChunk *c = reserve;
  st->root = c;
  b->cframe.use_tracing = use_tracing;
  b->cframe.current_frame = NULL;
  b->cframe.previous = &ts->root_cframe;
  ts->cframe = &b->cframe;
  ts->recursion_remaining = ts->recursion_limit;
  c->previous = NULL;
  c->size = CG_ROOT_CHUNK_BYTES;
  c->top = 0;
  ts->datastack_chunk = c;
  ts->datastack_top = &c->data[1]; /* first slot skipped: never popped */
  ts->datastack_limit = (PyObject **)((char *)c + CG_ROOT_CHUNK_BYTES);
  ts->exc_state.exc_value = NULL;
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
 * ran in); the handled-exception state is dropped (that may run finalizers,
 * so first, while its data stack is still valid); then the data-stack chunks
 * CPython pushed above the root are freed, and the root.
 */
static inline void cg_pystate_finish(cg_pystate *st, PyThreadState *ts) {
  Py_XSETREF(st->context, ts->context);
  ts->context = NULL;
  Py_CLEAR(ts->exc_state.exc_value);
  PyObjectArenaAllocator arena;
  PyObject_GetArenaAllocator(&arena);
  _PyStackChunk *c = ts->datastack_chunk;
  while (c && c->previous) {
    _PyStackChunk *prev = c->previous;
    arena.free(arena.ctx, c, c->size);
    c = prev;
  }
  st->root = NULL; /* on the C stack */
  /* The _PyCFrame in use lives on the stack about to be released: whoever
   * resumes next reads the tracing flag (cg_pystate_use_tracing) from the
   * thread's root one instead. */
  ts->root_cframe.use_tracing = ts->cframe->use_tracing;
  ts->cframe = &ts->root_cframe;
  ts->datastack_chunk = NULL;
  ts->datastack_top = NULL;
  ts->datastack_limit = NULL;
}

/*
 * New reference to the top frame object of a suspended greenlet (None if it
 * has none).  CPython makes frame objects only for the thread's current
 * frame chain, so the greenlet's chain is put in place for the call.  The
 * collector is off meanwhile: allocating the frame object must not run a
 * collection (finalizers, switches) under a borrowed frame chain.
 */
static inline PyObject *cg_pystate_frame(cg_pystate *st, PyThreadState *ts) {
  if (!st->cframe || !st->cframe->current_frame)
    Py_RETURN_NONE;
  int gc_was_on = PyGC_Disable();
  _PyCFrame *mine = ts->cframe;
  ts->cframe = st->cframe;
  PyFrameObject *f = PyThreadState_GetFrame(ts);
  ts->cframe = mine;
  if (gc_was_on)
    PyGC_Enable();
  if (!f) {
    if (PyErr_Occurred())
      return NULL;
    Py_RETURN_NONE;
  }
  return (PyObject *)f;
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
  Py_VISIT(st->exc_state.exc_value);
  return 0;
}

/*
 * How many slots of f's localsplus hold references: the locals, plus the
 * value stack when its extent is known (stacktop, or top_sp for the top
 * frame of a greenlet suspended in switch()).  A frame suspended in a call
 * from C code keeps references in that call's C frame that nobody can see;
 * leaving them out only keeps objects alive (the collector counts an
 * unseen reference as an outside one).
 */
static inline int cg_frame_extent(_PyInterpreterFrame *f, PyObject **top_sp) {
  if (f->stacktop >= 0)
    return f->stacktop;
  if (top_sp)
    return (int)(top_sp - f->localsplus);
  return f->f_code->co_nlocalsplus;
}

/* The top frame of a suspended greenlet (NULL if it has none or runs). */
static inline _PyInterpreterFrame *cg_pystate_top(cg_pystate *st) {
  if (st->cframe)
    return st->cframe->current_frame;
  return st->abandoned;
}

/*
 * Which slots of frame f (of a suspended greenlet's chain) are the
 * greenlet's to visit or release: all a thread-owned frame holds; of a
 * generator's frame, running in the greenlet, the locals and stack only
 * while its generator does not see them (stacktop -1; the generator visits
 * the rest, and all of it when stacktop is set).  -1: none.
 */
static inline int cg_frame_slots(_PyInterpreterFrame *f, PyObject **top_sp) {
  if (f->owner == FRAME_OWNED_BY_THREAD)
    return cg_frame_extent(f, top_sp);
  if (f->owner == FRAME_OWNED_BY_GENERATOR && f->stacktop < 0)
    return cg_frame_extent(f, top_sp);
  return -1;
}

/*
 * Visits what the Python frames of a suspended (or orphaned) greenlet hold,
 * as CPython's _PyFrame_Traverse does for a generator's frame, so that the
 * collector can find cycles through them: of a thread-owned frame f_locals,
 * f_func, f_code (strong; f_globals and f_builtins are borrowed) and its
 * slots.  A frame object is not visited: it must never be cleared while the
 * frame it shows is alive.  Of an orphan, the generators whose frames are in
 * its chain too: it holds them (cg_hold_generators).
 */
static inline int cg_pystate_traverse_frames(cg_pystate *st, visitproc visit,
                                             void *arg) {
  PyObject **sp = st->top_sp;
  int orphan = !st->cframe && st->abandoned;
  for (_PyInterpreterFrame *f = cg_pystate_top(st); f; f = f->previous) {
    int n = cg_frame_slots(f, sp);
    if (orphan && f->owner == FRAME_OWNED_BY_GENERATOR)
      Py_VISIT(_PyFrame_GetGenerator(f));
    if (f->owner == FRAME_OWNED_BY_THREAD) {
      Py_VISIT(f->f_locals);
      Py_VISIT(f->f_func);
      Py_VISIT(f->f_code);
    }
    for (int k = 0; k < n; k++)
      Py_VISIT(f->localsplus[k]);
    sp = NULL;
  }
  return 0;
}

/* A greenlet that is not running (never started, or finished) is freed.
 * (An orphaned one's frames are cg_pystate_abandon's to free.) */
static inline void cg_pystate_clear(cg_pystate *st) {
  Py_CLEAR(st->context);
  Py_CLEAR(st->exc_state.exc_value);
}

/* Test hook: the next n orphan relocations fail as if out of memory. */
static int cg_fail_relocations;
static inline int cg_pystate_fail_relocations(int n) {
  cg_fail_relocations = n;
  return 0;
}

/*
 * Thread-owned frame f will never run again, and its frame object is held
 * by someone else: the frame object takes a copy of it, as CPython's
 * take_ownership does when a frame exits while its frame object lives on,
 * and owns what the copy holds.  That is its code and function and, if
 * with_slots, its locals dict and first n slots (those known to be live:
 * n from cg_frame_slots).  Otherwise the copy is what frame.clear() leaves
 * (no locals, an empty stack), and f keeps its slots and locals dict for
 * the caller to release.  The locals of an empty copy must read NULL:
 * 3.11's f_locals (_PyFrame_FastToLocalsWithError) reads all of them
 * whatever stacktop says.  f_back of that frame object is None from now on
 * (take_ownership would link it to the frame below, which is going).  No
 * Python code runs here.
 */
static inline void cg_frame_detach(_PyInterpreterFrame *f, int n,
                                   int with_slots) {
  PyFrameObject *fo = f->frame_obj;
  _PyInterpreterFrame *copy = (_PyInterpreterFrame *)fo->_f_frame_data;
  int nlocals = f->f_code->co_nlocalsplus;
  memcpy(copy, f, offsetof(_PyInterpreterFrame, localsplus));
  if (with_slots) {
    memcpy(copy->localsplus, f->localsplus, (size_t)n * sizeof(PyObject *));
    memset(f->localsplus, 0, (size_t)n * sizeof(PyObject *));
    f->stacktop = 0;
    f->f_locals = NULL; /* moved */
    copy->stacktop = n;
  } else {
    memset(copy->localsplus, 0, (size_t)nlocals * sizeof(PyObject *));
    copy->f_locals = NULL;
    copy->stacktop = 0;
  }
  copy->owner = FRAME_OWNED_BY_FRAME_OBJECT;
  copy->is_entry = false;
  copy->previous = NULL;
  copy->frame_obj = NULL;
  fo->f_frame = copy;
  if (!PyObject_GC_IsTracked((PyObject *)fo))
    PyObject_GC_Track(fo); /* as CPython does for a frame it owns */
  /* These references moved to the copy. */
  f->frame_obj = NULL;
  f->f_func = NULL;
  f->f_code = NULL;
  Py_DECREF(fo); /* the frame's own reference (someone else holds one) */
}

/*
 * Drops the frame object only frame f holds, before f's memory is freed.
 * frame_dealloc reads the frame its object shows (f_frame->owner), and the
 * trashcan may defer it past that memory: so the object is first pointed
 * at its own frame data, marked as not its own (that owner field is all
 * frame_dealloc reads of a frame it does not own).
 */
static inline void cg_frame_drop_object(_PyInterpreterFrame *f) {
  PyFrameObject *fo = f->frame_obj;
  if (!fo)
    return;
  f->frame_obj = NULL;
  _PyInterpreterFrame *own = (_PyInterpreterFrame *)fo->_f_frame_data;
  own->owner = FRAME_OWNED_BY_THREAD;
  fo->f_frame = own;
  Py_DECREF(fo);
}

/*
 * Releases what the frames of a greenlet that will never run again hold
 * (top: its top frame, whose value stack ends at top_sp if known).  Top
 * down, each frame is first cut off from the outside while no Python code
 * can run: a frame object someone else holds takes a copy of its frame
 * (cg_frame_detach; with_slots: with what the frame holds, else empty), and
 * a generator's frame (which lives in its generator object) forgets the
 * chain below it.  Then its references go (that may run code, which can
 * then reach only the intact frames below): the locals, the known value
 * stack, the specials, the frame object no one else holds
 * (cg_frame_drop_object).  A frame suspended in a call from C has stacktop
 * -1 and no known stack extent: only its locals are known to be live (the
 * rest leak).  Afterwards the frames' memory can be freed: nothing points
 * into it any more.  The generators whose frames are in the chain are held
 * (cg_hold_generators): each is let go once its frame is done with.
 */
static inline void cg_release_frames(_PyInterpreterFrame *top,
                                     PyObject **top_sp, int with_slots) {
  PyObject **sp = top_sp;
  _PyInterpreterFrame *next;
  for (_PyInterpreterFrame *f = top; f; f = next, sp = NULL) {
    next = f->previous;
    int n = cg_frame_slots(f, sp);
    if (f->owner == FRAME_OWNED_BY_GENERATOR) {
      f->previous = NULL; /* as in a finished generator */
      if (n >= 0 && f->frame_obj) {
        /* Should its frame object outlive the generator, it takes the frame
         * over (take_ownership) with its first stacktop slots, 0 below, and
         * reads its locals whatever stacktop says: they must read NULL. */
        _PyInterpreterFrame *own =
            (_PyInterpreterFrame *)f->frame_obj->_f_frame_data;
        memset(own->localsplus, 0,
               (size_t)f->f_code->co_nlocalsplus * sizeof(PyObject *));
      }
    } else if (f->owner == FRAME_OWNED_BY_THREAD && n >= 0 && f->frame_obj &&
               Py_REFCNT(f->frame_obj) > 1) {
      cg_frame_detach(f, n, with_slots);
      if (with_slots)
        n = 0;
    }
    for (int k = 0; k < n; k++)
      Py_CLEAR(f->localsplus[k]);
    if (n >= 0)
      f->stacktop = 0; /* (a generator's: as frame.clear() leaves it) */
    if (f->owner == FRAME_OWNED_BY_GENERATOR) {
      /* The rest of its frame is its generator's, which may now go (with
       * f: not read again). */
      Py_DECREF(_PyFrame_GetGenerator(f));
      continue;
    }
    if (f->owner != FRAME_OWNED_BY_THREAD)
      continue;
    Py_CLEAR(f->f_locals);
    cg_frame_drop_object(f);
    Py_CLEAR(f->f_func);
    Py_CLEAR(f->f_code);
  }
}

/*
 * The frames of generators running in an orphan's chain live in their
 * generator objects, which anything may free (a run method, or a garbage
 * cycle cleared before the greenlet): the orphan holds a reference to each
 * until cg_release_frames is done with its frame.  Such a generator can
 * never run again: it becomes a finished one (FRAME_COMPLETED: its frame
 * stays until the generator goes), so that a collection or its deallocation
 * does not try to close it (_PyGen_Finalize skips finished ones), which
 * would only report "generator already executing"; next() raises
 * StopIteration.
 */
static inline void cg_hold_generators(_PyInterpreterFrame *top) {
  for (_PyInterpreterFrame *f = top; f; f = f->previous)
    if (f->owner == FRAME_OWNED_BY_GENERATOR) {
      PyGenObject *gen = _PyFrame_GetGenerator(f);
      Py_INCREF(gen);
      gen->gi_frame_state = FRAME_COMPLETED;
    }
}

/* Bytes of the root chunk in use by a suspended greenlet's frames (CPython
 * records the top of a chunk in it when it pushes the next one). */
static inline size_t cg_root_used(const cg_pystate *st) {
  const _PyStackChunk *r = st->root;
  PyObject *const *top =
      st->datastack_chunk == r ? st->datastack_top : &r->data[r->top];
  return (size_t)((const char *)top - (const char *)r);
}

/* Frees the data-stack chunks CPython pushed above the root chunk. */
static inline void cg_free_upper_chunks(_PyStackChunk *c, _PyStackChunk *root) {
  PyObjectArenaAllocator arena;
  PyObject_GetArenaAllocator(&arena);
  while (c && c != root) {
    _PyStackChunk *prev = c->previous;
    arena.free(arena.ctx, c, c->size);
    c = prev;
  }
}

/*
 * The greenlet's thread is exiting while it is suspended: its C stack is
 * about to go, and with it its _PyCFrame entries and its root data-stack
 * chunk.  (3.11 has no entry frames: the interpreter frames link straight
 * through `previous`, so the chain needs no unlinking.)  Its frames stay
 * (cg_pystate_abandon releases them when the greenlet object goes; gr_frame
 * keeps showing the top one): the root chunk is moved to the heap, and
 * every pointer into it is adjusted (the frames' links, the frame objects'
 * frame pointers, the chunk above it), and the generators running in it are
 * held (cg_hold_generators).  Without memory for that, what the frames hold
 * is released now (frame objects held elsewhere take copies of their
 * frames: only f_back is lost).
 */
static inline void cg_pystate_orphan(cg_pystate *st) {
  _PyInterpreterFrame *top = st->cframe ? st->cframe->current_frame : NULL;
  st->cframe = NULL;
  cg_hold_generators(top);
  st->abandoned = top;
  if (!st->root)
    return;
  char *old = (char *)st->root;
  size_t used = cg_root_used(st);
  char *mem = NULL;
  if (cg_fail_relocations > 0)
    cg_fail_relocations--;
  else
    mem = PyMem_RawMalloc(used);
  if (!mem) {
    cg_release_frames(top, st->top_sp, 1);
    cg_free_upper_chunks(st->datastack_chunk, st->root);
    st->abandoned = NULL;
    st->root = NULL;
    st->datastack_chunk = NULL;
    st->top_sp = NULL;
    return;
  }
  memcpy(mem, old, used);
  ((_PyStackChunk *)mem)->size = used; /* (it never grows again) */
  ptrdiff_t d = mem - old;
  /* (<=: the chunk's limit points just past it.) */
#define CG_MOVED(p)                                                            \
  ((char *)(p) >= old && (char *)(p) <= old + CG_ROOT_CHUNK_BYTES              \
       ? (void *)((char *)(p) + d)                                             \
       : (void *)(p))
  top = CG_MOVED(top);
  for (_PyInterpreterFrame *f = top; f; f = f->previous) {
    /* (A generator's frame object points into its generator: unmoved.) */
    if (f->frame_obj)
      f->frame_obj->f_frame = CG_MOVED(f->frame_obj->f_frame);
    f->previous = CG_MOVED(f->previous);
  }
  for (_PyStackChunk *c = st->datastack_chunk; c; c = c->previous)
    c->previous = CG_MOVED(c->previous);
  st->datastack_chunk = CG_MOVED(st->datastack_chunk);
  st->datastack_top = CG_MOVED(st->datastack_top);
  st->datastack_limit = CG_MOVED(st->datastack_limit);
  st->top_sp = CG_MOVED(st->top_sp);
  if (st->datastack_chunk == (_PyStackChunk *)mem)
    st->datastack_limit = (PyObject **)(mem + used);
#undef CG_MOVED
  st->root = (_PyStackChunk *)mem;
  st->abandoned = top;
}

/*
 * The object of a greenlet dropped without unwinding (its thread exited) is
 * freed: what its frames hold is released (cg_release_frames), then their
 * memory, the data-stack chunks.  A frame object someone still holds keeps
 * working on an empty copy of its frame, as frame.clear() leaves one.
 * Frames owned by generators stay with their generators, cut off from the
 * chain.
 */
static inline void cg_pystate_abandon(cg_pystate *st) {
  _PyInterpreterFrame *top = st->abandoned;
  PyObject **sp = st->top_sp;
  st->abandoned = NULL;
  st->top_sp = NULL;
  cg_release_frames(top, sp, 0);
  if (st->root) {
    cg_free_upper_chunks(st->datastack_chunk, st->root);
    PyMem_RawFree(st->root); /* moved to the heap by cg_pystate_orphan */
  }
  st->root = NULL;
  st->datastack_chunk = NULL;
}

#endif
