/*
 * pystate_frames.h - what the 3.11, 3.12 and 3.13 layers share: the root
 * data-stack chunk, the Python frames of suspended greenlets (their frame
 * objects, what the collector sees of them, and what becomes of them when
 * their thread exits and when their object goes), the record's own
 * references, and the end of a greenlet's run.
 *
 * Included by pystate_311.h, pystate_312.h and pystate_313.h once they have
 * defined (the differences between those versions):
 *
 *   cg_pystate                  the record, with at least datastack_chunk,
 *                               datastack_top, datastack_limit, exc_state,
 *                               context, root, abandoned and top_sp
 *   cg_frame_chain              what holds the thread's frame chain, as a
 *   CG_THREAD_CHAIN(ts)           switch carries it, its place in the
 *   CG_SAVED_CHAIN(st)            thread state and in the record (lvalues;
 *                                 the record's is NULL unless suspended)
 *   cg_saved_frame(st)          the top interpreter frame of a suspended
 *                               greenlet (NULL if it has none or runs)
 *   cg_finish_cframe(ts)        what a finished greenlet leaves of the
 *                               thread's _PyCFrame chain (3.13 has none)
 *   cg_frame_is_python(f)       whether f's slots are Python's
 *   cg_frame_code(f)            the code object of such a frame
 *   CG_FRAME_FUNC(f)            the frame's strong references to its
 *   CG_FRAME_EXECUTABLE(f)        function and its code (lvalues)
 *   CG_ENTRY_FRAMES             1 if _PyEval_EvalFrameDefault links an entry
 *                               frame (FRAME_OWNED_BY_CSTACK) into the chain
 *                               (3.12 on), 0 if it marks the frame it
 *                               enters (is_entry: 3.11)
 */
#ifndef CGREENLET_PYSTATE_FRAMES_H
#define CGREENLET_PYSTATE_FRAMES_H

/*
 * What a starting greenlet keeps for its lifetime, on its own C stack (in
 * green_run's frame, at the top of the stack): a small root data-stack
 * chunk (and, before 3.13, the root _PyCFrame: cg_start_buffers).  CPython
 * never frees a root chunk whose first slot is skipped (push_chunk,
 * _PyThreadState_PopFrame: the same in 3.11 to 3.13), and frees the chunks
 * it pushes on top, so a greenlet whose frames fit here needs no 16 KiB
 * chunk of its own; and a parked greenlet's frames share the page its C
 * stack already uses.  A greenlet whose thread dies loses its C stack
 * without unwinding; its frames (which frame objects may point into) are
 * then moved to the heap first (cg_pystate_orphan).
 */
#ifndef CG_ROOT_CHUNK_BYTES
#define CG_ROOT_CHUNK_BYTES (32 * 1024 + 3 * 1024)
#endif
#define CG_PYSTATE_RESERVE CG_ROOT_CHUNK_BYTES

/* The thread's data stack becomes root chunk c, empty, for a greenlet that
 * starts now (its cg_pystate_start). */
static inline void cg_start_root_chunk(PyThreadState *ts, _PyStackChunk *c) {
  c->previous = NULL;
  c->size = CG_ROOT_CHUNK_BYTES;
  c->top = 0;
  ts->datastack_chunk = c;
  ts->datastack_top = &c->data[1]; /* first slot skipped: never popped */
  ts->datastack_limit = (PyObject **)((char *)c + CG_ROOT_CHUNK_BYTES);
}

/* Bytes of the root chunk in use by a suspended greenlet's frames (CPython
 * records the top of a chunk in it when it pushes the next one). */
static inline size_t cg_root_used(const cg_pystate *st) {
  const _PyStackChunk *r = st->root;
  PyObject *const *top =
      st->datastack_chunk == r ? st->datastack_top : &r->data[r->top];
  return (size_t)((const char *)top - (const char *)r);
}

/* Bytes of the root chunk a suspended greenlet uses (the core copies them
 * with its C stack when its shared stack is needed by another greenlet). */
static inline size_t cg_pystate_reserve_in_use(const cg_pystate *st) {
  return st->root ? cg_root_used(st) : 0;
}

/* p moved by d if it points into [lo, hi] (hi included: an end pointer). */
#define CG_MOVE_IF_IN(p, lo, hi, d)                                            \
  do {                                                                         \
    if ((char *)(p) >= (lo) && (char *)(p) <= (hi))                            \
      (p) = (void *)((uintptr_t)(p) + (uintptr_t)(d));                         \
  } while (0)

/*
 * The suspended greenlet's bytes [lo, hi) (its C stack and its root chunk's
 * frames) were copied to lo + d: out of its shared stack, or back into it.
 * Moves every pointer into them that someone follows while the greenlet is
 * suspended: the record's, the chunk chain's, and along the frame chain
 * each frame's link (root-chunk frames, entry frames and the _PyCFrame are
 * in the copy; generators' frames and upper chunks are not) and its frame
 * object's frame pointer.  The same walk moves them back.  So gr_frame,
 * f_back, the collector and cg_pystate_orphan read the frames wherever they
 * are.  Pointers that only the running greenlet follows (_PyCFrame links,
 * the C frames' own) are left: they are right again once it is back.
 */
static inline void cg_pystate_moved(cg_pystate *st, char *lo, char *hi,
                                    ptrdiff_t d) {
#define M(p) CG_MOVE_IF_IN(p, lo, hi, d)
  M(CG_SAVED_CHAIN(st));
  CG_CHAIN_MOVED(st, M);
  M(st->datastack_chunk);
  M(st->datastack_top);
  M(st->datastack_limit);
  M(st->root);
  M(st->top_sp);
  M(st->exc_info);
  for (_PyStackChunk *c = st->datastack_chunk; c; c = c->previous)
    M(c->previous);
  for (_PyInterpreterFrame *f = cg_saved_frame(st); f; f = f->previous) {
    M(f->previous);
#if CG_ENTRY_FRAMES
    if (f->owner == FRAME_OWNED_BY_CSTACK)
      continue; /* only owner, previous and f_code are set */
#endif
    if (f->frame_obj)
      M(f->frame_obj->f_frame);
  }
#undef M
}

/* Frees the data-stack chunks CPython pushed above the root chunk. */
static inline void cg_free_upper_chunks(_PyStackChunk *c, _PyStackChunk *root) {
  PyObjectArenaAllocator arena;
  PyObject_GetArenaAllocator(&arena); /* _PyObject_VirtualFree's allocator */
  while (c && c != root) {
    _PyStackChunk *prev = c->previous;
    arena.free(arena.ctx, c, c->size);
    c = prev;
  }
}

/*
 * A greenlet's run returned; it will never run Python code again.  Its
 * context stays with it (gr_context of a dead greenlet shows the context it
 * ran in); the handled-exception state is dropped (that may run finalizers,
 * so first, while its data stack is still valid); then the data-stack chunks
 * CPython pushed above the root are freed (the root is on the C stack), and
 * the _PyCFrame in use (3.11, 3.12) is left (cg_finish_cframe).
 */
static inline void cg_pystate_finish(cg_pystate *st, PyThreadState *ts) {
  Py_XSETREF(st->context, ts->context);
  ts->context = NULL;
  Py_CLEAR(ts->exc_state.exc_value);
  cg_free_upper_chunks(ts->datastack_chunk, st->root);
  st->root = NULL;
  cg_finish_cframe(ts);
  ts->datastack_chunk = NULL;
  ts->datastack_top = NULL;
  ts->datastack_limit = NULL;
}

/* What the record itself holds, for the collector (its frames:
 * cg_pystate_traverse_frames). */
static inline int cg_pystate_traverse(cg_pystate *st, visitproc visit,
                                      void *arg) {
  Py_VISIT(st->context);
  Py_VISIT(st->exc_state.exc_value);
  return 0;
}

/* A greenlet that is not running (never started, or finished) is freed.
 * (An orphaned one's frames are cg_pystate_abandon's to free.) */
static inline void cg_pystate_clear(cg_pystate *st) {
  Py_CLEAR(st->context);
  Py_CLEAR(st->exc_state.exc_value);
}

/*
 * The end of the value stack of frame f, if call_end (the end of the
 * arguments of the C call f is making) points into it; else NULL.
 * The interpreter does not store its stack pointer in a frame that calls C
 * (stacktop is -1; from 3.12, _PyFrame_GetStackPointer sets that at frame
 * entry, and it is stored only when the frame pushes a Python frame), but
 * it passes vectorcall arguments in place, on top of that stack: CALL and
 * its specialisations for builtins and method descriptors pass
 * &stack_pointer[-total_args], keyword values included (kwnames is a C
 * variable in 3.11 and 3.12).  So the arguments of switch() end where the
 * live stack ends.  (3.13's CALL_KW leaves its kwnames tuple above them:
 * one slot short, a constant of the code object, which holds it anyway.)
 */
static inline PyObject **cg_frame_call_top(_PyInterpreterFrame *f,
                                           PyObject *const *call_end) {
  if (!f || !call_end || !cg_frame_is_python(f) || f->stacktop >= 0)
    return NULL;
  PyCodeObject *code = cg_frame_code(f);
  PyObject **base = f->localsplus + code->co_nlocalsplus;
  PyObject **sp = (PyObject **)call_end;
  return sp > base && sp <= base + code->co_stacksize ? sp : NULL;
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
  return cg_frame_code(f)->co_nlocalsplus;
}

/* The top frame of a suspended greenlet (NULL if it has none or runs);
 * once its thread has exited, the one it was dropped with. */
static inline _PyInterpreterFrame *cg_pystate_top(cg_pystate *st) {
  _PyInterpreterFrame *f = cg_saved_frame(st);
  return f ? f : st->abandoned;
}

/*
 * Which slots of frame f (of a suspended greenlet's chain) are the
 * greenlet's to visit or release: all a thread-owned frame holds; of a
 * generator's frame, running in the greenlet, the locals and stack only
 * while its generator does not see them (stacktop -1: gen_traverse's
 * _PyFrame_Traverse visits localsplus[0:stacktop], and the specials
 * always).  Entry frames hold nothing.  -1: none.
 */
static inline int cg_frame_slots(_PyInterpreterFrame *f, PyObject **top_sp) {
  if (!cg_frame_is_python(f))
    return -1;
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
 * its function and its code (strong; f_globals and f_builtins are
 * borrowed) and its slots.  A frame object is not visited: it must never be
 * cleared while the frame it shows is alive.  (Nothing else visits a
 * thread-owned frame: the frame object of a frame it does not own visits
 * none of it.)  Of an orphan, the generators whose frames are in its chain
 * too: it holds them.
 */
static inline int cg_pystate_traverse_frames(cg_pystate *st, visitproc visit,
                                             void *arg) {
  /* The walk below is a chain of dependent loads through memory nobody
   * touched since the greenlet parked (a heap copy, with shared stacks):
   * ask for the root chunk's frames at once, so that a collection over
   * many parked greenlets waits for one miss each, not one per frame. */
  if (st->root) {
    const char *p = (const char *)st->root;
    const char *e = st->datastack_chunk == st->root
                        ? (const char *)st->datastack_top
                        : p + 1024;
    if (e > p + 4096)
      e = p + 4096;
    for (; p < e; p += 64)
      __builtin_prefetch(p);
  }
  PyObject **sp = st->top_sp;
  int orphan = cg_pystate_top(st) == st->abandoned;
  for (_PyInterpreterFrame *f = cg_pystate_top(st); f; f = f->previous) {
    int n = cg_frame_slots(f, sp);
    if (orphan && f->owner == FRAME_OWNED_BY_GENERATOR)
      Py_VISIT(_PyFrame_GetGenerator(f)); /* see cg_hold_generators */
    if (f->owner == FRAME_OWNED_BY_THREAD) {
      Py_VISIT(f->f_locals);
      Py_VISIT(CG_FRAME_FUNC(f));
      Py_VISIT(CG_FRAME_EXECUTABLE(f));
    }
    for (int k = 0; k < n; k++)
      Py_VISIT(f->localsplus[k]);
    sp = NULL;
  }
  return 0;
}

/*
 * What a version's cg_pystate_frame returns when PyThreadState_GetFrame gave
 * NULL.  That function clears the error of a failed frame-object
 * allocation, so NULL with a complete frame on the chain is MemoryError,
 * not "no frame".
 */
static inline PyObject *cg_no_frame_object(const cg_pystate *st) {
  if (PyErr_Occurred())
    return NULL;
  for (_PyInterpreterFrame *f = cg_saved_frame(st); f; f = f->previous)
    if (!_PyFrame_IsIncomplete(f))
      return PyErr_NoMemory();
  Py_RETURN_NONE;
}

/*
 * New reference to the top frame object of a suspended greenlet (None if it
 * has none).  CPython makes frame objects only for the thread's current
 * frame chain, so the greenlet's chain is put in place for the call
 * (PyThreadState_GetFrame skips the entry frames, which are "incomplete").
 * The collector is off meanwhile: allocating the frame object must not run
 * a collection (finalizers, switches) under a borrowed frame chain.  (From
 * 3.12 on a collection runs only from the eval loop; this costs nothing.)
 */
static inline PyObject *cg_pystate_frame(cg_pystate *st, PyThreadState *ts) {
  if (!CG_SAVED_CHAIN(st) || !cg_saved_frame(st)) /* not suspended, no frame */
    Py_RETURN_NONE;
  int gc_was_on = PyGC_Disable();
  cg_frame_chain *mine = CG_THREAD_CHAIN(ts);
  CG_THREAD_CHAIN(ts) = CG_SAVED_CHAIN(st);
  PyFrameObject *f = PyThreadState_GetFrame(ts);
  CG_THREAD_CHAIN(ts) = mine;
  if (gc_was_on)
    PyGC_Enable();
  return f ? (PyObject *)f : cg_no_frame_object(st);
}

/* Test hook: the next n orphan relocations fail as if out of memory.  (One
 * counter per file that includes this header: the module sets it from
 * thread.c, the file whose thread exit orphans greenlets.) */
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
  int nlocals = cg_frame_code(f)->co_nlocalsplus;
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
#if !CG_ENTRY_FRAMES
  copy->is_entry = false;
#endif
  copy->previous = NULL;
  copy->frame_obj = NULL;
  fo->f_frame = copy;
  if (!PyObject_GC_IsTracked((PyObject *)fo))
    PyObject_GC_Track(fo); /* as CPython does for a frame it owns */
  /* These references moved to the copy. */
  f->frame_obj = NULL;
  CG_FRAME_FUNC(f) = NULL;
  CG_FRAME_EXECUTABLE(f) = NULL;
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
 * (top: its top frame, whose value stack ends at top_sp if known; its entry
 * frames, if the version has them, already unlinked).  Top down, each frame
 * is first cut off from the outside while no Python code can run: a frame
 * object someone else holds takes a copy of its frame (cg_frame_detach;
 * with_slots: with what the frame holds, else empty), and a generator's
 * frame (which lives in its generator object) forgets the chain below it.
 * Then its references go (that may run code, which can then reach only the
 * intact frames below): the locals, the known value stack, the specials,
 * the frame object no one else holds (cg_frame_drop_object).  A frame
 * suspended in a call from C has stacktop -1 and no known stack extent:
 * only its locals are known to be live (the rest leak).  Afterwards the
 * frames' memory can be freed: nothing points into it any more.  The
 * generators whose frames are in the chain are held (cg_hold_generators):
 * each is let go once its frame is done with.
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
               (size_t)cg_frame_code(f)->co_nlocalsplus * sizeof(PyObject *));
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
    Py_CLEAR(CG_FRAME_FUNC(f));
    Py_CLEAR(CG_FRAME_EXECUTABLE(f));
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

#if CG_ENTRY_FRAMES
/* Links each frame of the chain from top to the next one that is not an
 * entry frame (those live on the C stack); returns the new top. */
static inline _PyInterpreterFrame *
cg_unlink_entry_frames(_PyInterpreterFrame *top) {
  while (top && top->owner == FRAME_OWNED_BY_CSTACK)
    top = top->previous;
  for (_PyInterpreterFrame *f = top; f; f = f->previous) {
    _PyInterpreterFrame *p = f->previous;
    while (p && p->owner == FRAME_OWNED_BY_CSTACK)
      p = p->previous;
    f->previous = p;
  }
  return top;
}
#endif

/*
 * The greenlet's thread is exiting while it is suspended: its C stack is
 * about to go, and with it its root data-stack chunk, its _PyCFrame entries
 * (3.11, 3.12) and the entry frames in its frame chain (3.12 on: unlinked
 * here, while they can still be read; 3.11's interpreter frames link
 * straight through `previous`).  Its frames stay (cg_pystate_abandon
 * releases them when the greenlet object goes; gr_frame keeps showing the
 * top one): the root chunk is moved to the heap, and every pointer into it
 * is adjusted (the frames' links, the frame objects' frame pointers, the
 * chunk above it), and the generators running in it are held
 * (cg_hold_generators).  Without memory for that, what the frames hold is
 * released now (frame objects held elsewhere take copies of their frames:
 * only f_back is lost).
 */
static inline void cg_pystate_orphan(cg_pystate *st) {
  _PyInterpreterFrame *top = cg_saved_frame(st);
  CG_SAVED_CHAIN(st) = NULL;
#if CG_ENTRY_FRAMES
  if (top && top->owner == FRAME_OWNED_BY_CSTACK)
    st->top_sp = NULL; /* (was NULL: cg_frame_call_top) */
  top = cg_unlink_entry_frames(top);
#endif
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
