"""Core semantics of the greenlet API, ABI facts and the C API capsule."""
import contextvars
import copy
import ctypes
import gc
import pickle
import sys
import threading
import weakref

import pytest

import greenlet
from greenlet import greenlet as Greenlet, getcurrent


# ----------------------------------------------------------------- switch values

def _echo_parent():
    """run(): hands every value it receives back to its parent."""
    main = getcurrent().parent
    value = None
    while True:
        value = main.switch(value)


@pytest.mark.parametrize("args, kwargs, expected", [
    ((), {}, ()),
    ((1,), {}, 1),
    ((None,), {}, None),
    (((),), {}, ()),
    ((1, 2), {}, (1, 2)),
    ((), {"a": 1}, {"a": 1}),
    ((1,), {"a": 1}, ((1,), {"a": 1})),
    ((1, 2), {"a": 1, "b": 2}, ((1, 2), {"a": 1, "b": 2})),
])
def test_switch_values_into_suspended(args, kwargs, expected):
    received = []

    def run():
        while True:
            received.append(getcurrent().parent.switch("ready"))

    g = Greenlet(run)
    assert g.switch() == "ready"
    assert g.switch(*args, **kwargs) == "ready"
    assert received == [expected]
    assert type(received[0]) is type(expected)


@pytest.mark.parametrize("args, kwargs, expected", [
    ((), {}, ()),
    ((7,), {}, 7),
    ((), {"k": "v"}, {"k": "v"}),
    ((7, 8), {"k": "v"}, ((7, 8), {"k": "v"})),
])
def test_switch_values_to_parent(args, kwargs, expected):
    def run():
        getcurrent().parent.switch(*args, **kwargs)

    g = Greenlet(run)
    assert g.switch() == expected
    g.switch()
    assert g.dead


def test_run_receives_first_switch_arguments():
    g = Greenlet(lambda *a, **k: (a, k))
    assert g.switch(1, 2, x=3) == ((1, 2), {"x": 3})
    assert g.dead


def test_return_value_goes_to_parent_and_ping_pong():
    def run(n):
        total = 0
        for _ in range(n):
            total += getcurrent().parent.switch(total)
        return ("done", total)

    g = Greenlet(run)
    assert g.switch(100) == 0
    expect = 0
    for i in range(1, 100):
        expect += i
        assert g.switch(i) == expect
    assert g.switch(100) == ("done", expect + 100)
    assert g.dead


def test_switch_to_dead_greenlet_goes_to_parent():
    main = getcurrent()
    seen = []

    def run_p():
        child = Greenlet(lambda: "child-result", parent=getcurrent())
        seen.append(child.switch())        # child finishes -> back here
        seen.append(child)
        got = main.switch("p parked")      # main switches to dead child later
        return ("p resumed with", got)

    p = Greenlet(run_p)
    assert p.switch() == "p parked"
    child = seen[1]
    assert seen[0] == "child-result"
    assert child.dead and child.parent is p
    # The switch is delivered to the first live ancestor: p.
    assert child.switch(42) == ("p resumed with", 42)
    assert p.dead
    # Both dead now: a switch lands in main (the current greenlet) itself.
    assert child.switch(5) == 5


# ----------------------------------------------------------------- throw

def test_throw_into_unstarted_never_runs():
    ran = []
    g = Greenlet(lambda: ran.append(1))
    with pytest.raises(ValueError, match="boom"):
        g.throw(ValueError("boom"))
    assert ran == []
    assert g.dead
    assert not g


def test_throw_greenletexit_into_unstarted_returns_it():
    ran = []
    g = Greenlet(lambda: ran.append(1))
    result = g.throw()
    assert isinstance(result, greenlet.GreenletExit)
    assert ran == []
    assert g.dead


def test_greenletexit_escaping_run_is_the_return_value():
    def run():
        raise greenlet.GreenletExit("bye", 2)

    g = Greenlet(run)
    result = g.switch()
    assert type(result) is greenlet.GreenletExit
    assert result.args == ("bye", 2)
    assert g.dead


def test_throw_forms_into_suspended():
    def run():
        caught = []
        while True:
            try:
                getcurrent().parent.switch(caught[-1] if caught else None)
            except Exception as exc:
                caught.append((type(exc).__name__, str(exc)))

    g = Greenlet(run)
    g.switch()
    assert g.throw(KeyError) == ("KeyError", "")
    assert g.throw(ValueError, "text") == ("ValueError", "text")
    assert g.throw(TypeError("inst")) == ("TypeError", "inst")
    try:
        raise IndexError("with tb")
    except IndexError:
        tb = sys.exc_info()[2]
    assert g.throw(IndexError, IndexError("with tb"), tb) == ("IndexError", "with tb")
    with pytest.raises(TypeError):
        g.throw(TypeError("x"), "second value not allowed with an instance")
    g.throw()   # GreenletExit is a BaseException: not caught by run, ends it
    assert g.dead


def test_uncaught_exception_propagates_to_parent():
    def run():
        getcurrent().parent.switch(1)
        raise LookupError("from child")

    g = Greenlet(run)
    assert g.switch() == 1
    with pytest.raises(LookupError, match="from child"):
        g.switch()
    assert g.dead


def test_exception_hierarchy():
    assert issubclass(greenlet.GreenletExit, BaseException)
    assert not issubclass(greenlet.GreenletExit, Exception)
    assert issubclass(greenlet.error, Exception)


# ----------------------------------------------------------------- parent

def test_parent_cycle_is_valueerror():
    g1 = Greenlet()
    g2 = Greenlet(parent=g1)
    with pytest.raises(ValueError, match="cyclic parent chain"):
        g1.parent = g2
    with pytest.raises(ValueError, match="cyclic parent chain"):
        g1.parent = g1
    assert g1.parent is getcurrent()
    assert g2.parent is g1


def test_parent_must_be_greenlet():
    g = Greenlet()
    with pytest.raises(TypeError):
        g.parent = 1
    with pytest.raises(TypeError):
        g.parent = None
    with pytest.raises(TypeError):
        Greenlet(parent="main")
    with pytest.raises(AttributeError):
        del g.parent


def test_parent_on_another_thread_is_valueerror():
    main = getcurrent()
    box = {}
    ready, finish = threading.Event(), threading.Event()

    def thread_main():
        tmain = getcurrent()
        parked = Greenlet(lambda: tmain.switch())
        parked.switch()
        box.update(tmain=tmain, parked=parked)
        ready.set()
        finish.wait(10)
        parked.throw()

    t = threading.Thread(target=thread_main)
    t.start()
    try:
        assert ready.wait(10)
        mine = Greenlet(lambda: main.switch())
        mine.switch()
        for other in (box["tmain"], box["parked"]):
            with pytest.raises(ValueError):
                mine.parent = other
        with pytest.raises(ValueError):
            box["parked"].parent = main
        assert mine.parent is main
        mine.throw()
    finally:
        finish.set()
        t.join(10)


def test_main_greenlet_parent():
    main = getcurrent()
    assert main.parent is None
    with pytest.raises(AttributeError):
        main.parent = Greenlet()


# ----------------------------------------------------------------- state

def test_state_flags_and_gr_frame():
    main = getcurrent()
    inside = {}

    def a_run_function():
        me = getcurrent()
        inside.update(frame=me.gr_frame, bool=bool(me), dead=me.dead)
        main.switch()

    g = Greenlet(a_run_function)
    assert not g.dead and not bool(g) and g.gr_frame is None
    g.switch()
    assert inside == {"frame": None, "bool": True, "dead": False}
    assert bool(g) and not g.dead
    frame = g.gr_frame
    assert frame is not None and frame.f_code.co_name == "a_run_function"
    assert frame.f_back is None
    g.switch()
    assert g.dead and not bool(g) and g.gr_frame is None
    assert bool(main) and not main.dead and main.gr_frame is None


def test_getcurrent_and_main():
    main = getcurrent()
    assert getcurrent() is main
    assert Greenlet.getcurrent() is main    # eventlet calls it through the type
    seen = []
    g = Greenlet(lambda: seen.append((getcurrent(), getcurrent().parent)))
    g.switch()
    assert seen == [(g, main)]
    # A main greenlet per thread.
    other = []
    t = threading.Thread(target=lambda: other.append(getcurrent()))
    t.start()
    t.join()
    assert other[0] is not main and other[0].parent is None


def test_dict_subclass_and_repr():
    class Worker(Greenlet):
        def run(self, x):
            self.note = x * 2
            return self.note

    w = Worker()
    w.extra = "attr"
    assert w.__dict__["extra"] == "attr"
    assert w.switch(21) == 42 and w.note == 42
    assert "Worker" in repr(w) or "greenlet" in repr(w)
    assert isinstance(repr(getcurrent()), str)
    with pytest.raises(AttributeError):
        Greenlet.__dict__["dead"].__set__(w, True)
    assert Greenlet.dead.__get__(w) is True


def test_run_attribute():
    def f():
        return 1

    g = Greenlet(f)
    assert g.run is f
    g.run = lambda: 2
    assert g.switch() == 2
    with pytest.raises(AttributeError):
        g.run   # noqa: B018 - run is cleared once started


def test_stack_saved():
    main = getcurrent()
    assert main._stack_saved == 0

    def deep(n):
        if n == 0:
            return main.switch(getcurrent()._stack_saved)
        return deep(n - 1)

    g = Greenlet(deep)
    g.switch(50)
    saved = g._stack_saved
    assert isinstance(saved, int) and saved > 0
    g.switch()
    assert g.dead and g._stack_saved == 0


def test_weakrefs():
    g = Greenlet(lambda: getcurrent().parent.switch())
    called = []
    ref = weakref.ref(g, lambda r: called.append(r))
    assert ref() is g
    g.switch()
    del g
    gc.collect()
    assert ref() is None and len(called) == 1
    proxy_target = Greenlet()
    proxy = weakref.proxy(proxy_target)
    assert proxy.dead is False


def test_no_pickle_or_copy():
    g = Greenlet()
    with pytest.raises(TypeError):
        g.__getstate__()
    with pytest.raises(TypeError):
        pickle.dumps(g)
    with pytest.raises(TypeError):
        copy.copy(g)
    with pytest.raises(TypeError):
        copy.deepcopy(g)


# ----------------------------------------------------------------- tracing

def _names(events, main, g):
    def n(x):
        return "main" if x is main else "g" if x is g else repr(x)
    return [(e, tuple(n(x) for x in pair)) for e, pair in events]


def test_settrace_switch_and_throw_events():
    main = getcurrent()
    events = []

    def tracer(event, args):
        events.append((event, args))

    g = Greenlet(lambda: main.switch(1))
    previous = greenlet.settrace(tracer)
    try:
        assert greenlet.gettrace() is tracer
        g.switch()
        with pytest.raises(ValueError):
            g.throw(ValueError)
    finally:
        assert greenlet.settrace(previous) is tracer
    assert greenlet.gettrace() is previous
    assert _names(events, main, g) == [
        ("switch", ("main", "g")),
        ("switch", ("g", "main")),
        ("throw", ("main", "g")),
        ("throw", ("g", "main")),
    ]


def test_raising_tracer_is_removed_and_raises_in_target():
    main = getcurrent()

    def run():
        try:
            main.switch("parked")
        except KeyError as exc:
            return ("caught in g", exc.args[0])

    def bad(event, args):
        raise KeyError("from tracer")

    g = Greenlet(run)
    assert g.switch() == "parked"
    old = greenlet.settrace(bad)
    try:
        assert g.switch() == ("caught in g", "from tracer")
        assert greenlet.gettrace() is None
    finally:
        greenlet.settrace(old)


# ----------------------------------------------------------------- contextvars

VAR = contextvars.ContextVar("cgreenlet_test_var", default="default")


def test_contextvars_are_per_greenlet():
    main = getcurrent()
    token = VAR.set("main value")
    try:
        seen = []

        def run():
            seen.append(VAR.get())
            VAR.set("g value")
            main.switch()
            seen.append(VAR.get())

        g = Greenlet(run)
        g.switch()
        assert seen == ["default"]          # a new greenlet starts empty
        assert VAR.get() == "main value"
        assert g.gr_context[VAR] == "g value"
        g.switch()
        assert seen == ["default", "g value"]
        assert VAR.get() == "main value"

        ctx = contextvars.copy_context()
        ctx.run(VAR.set, "preset")
        h = Greenlet(VAR.get)
        h.gr_context = ctx
        assert h.gr_context is ctx
        assert h.switch() == "preset"
        with pytest.raises(TypeError):
            Greenlet().gr_context = "not a context"
    finally:
        VAR.reset(token)


# ----------------------------------------------------------------- ABI and module surface

def test_module_surface():
    for name in ("__version__", "greenlet", "getcurrent", "GreenletExit", "error",
                 "settrace", "gettrace", "GREENLET_USE_GC", "GREENLET_USE_TRACING",
                 "GREENLET_USE_CONTEXT_VARS", "CLOCKS_PER_SEC", "enable_optional_cleanup",
                 "get_clocks_used_doing_optional_cleanup", "_C_API"):
        assert hasattr(greenlet, name), name
    assert greenlet.GREENLET_USE_GC and greenlet.GREENLET_USE_TRACING
    assert greenlet.GREENLET_USE_CONTEXT_VARS
    assert tuple(int(x) for x in greenlet.__version__.split(".")[:2]) >= (2, 0)
    # Also reachable through the type (eventlet uses greenlet.greenlet.getcurrent).
    for name in ("error", "GreenletExit"):
        assert getattr(Greenlet, name) is getattr(greenlet, name), name
    assert Greenlet.getcurrent() is greenlet.getcurrent()
    assert Greenlet.gettrace() is greenlet.gettrace()
    tracer = lambda event, args: None  # noqa: E731
    assert Greenlet.settrace(tracer) is None
    try:
        assert greenlet.gettrace() is tracer
    finally:
        assert greenlet.settrace(None) is tracer
    impl = greenlet._greenlet
    for name in ("get_pending_cleanup_count", "get_total_main_greenlets",
                 "get_tstate_trash_delete_nesting", "set_thread_local",
                 "GREENLET_USE_STANDARD_THREADING"):
        assert hasattr(impl, name), name
    assert impl._C_API is greenlet._C_API


def test_type_layout():
    Py_TPFLAGS_HEAPTYPE = 1 << 9
    Py_TPFLAGS_BASETYPE = 1 << 10
    Py_TPFLAGS_HAVE_GC = 1 << 14
    assert Greenlet.__basicsize__ == 5 * ctypes.sizeof(ctypes.c_void_p)
    assert Greenlet.__weakrefoffset__ == 2 * ctypes.sizeof(ctypes.c_void_p)
    assert Greenlet.__dictoffset__ == 3 * ctypes.sizeof(ctypes.c_void_p)
    assert not Greenlet.__flags__ & Py_TPFLAGS_HEAPTYPE
    assert Greenlet.__flags__ & Py_TPFLAGS_BASETYPE
    assert Greenlet.__flags__ & Py_TPFLAGS_HAVE_GC
    assert type(Greenlet.__dict__["dead"]).__name__ == "getset_descriptor"


def _capi():
    api = ctypes.pythonapi
    api.PyCapsule_IsValid.restype = ctypes.c_int
    api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api


def test_capsule_is_valid_and_ordered():
    api = _capi()
    cap = greenlet._C_API
    assert type(cap).__name__ == "PyCapsule"
    assert api.PyCapsule_IsValid(cap, b"greenlet._C_API") == 1
    assert api.PyCapsule_IsValid(cap, b"greenlet.other") == 0
    table = ctypes.cast(api.PyCapsule_GetPointer(cap, b"greenlet._C_API"),
                        ctypes.POINTER(ctypes.c_void_p))
    assert table[0] == id(Greenlet)
    assert table[1] == id(greenlet.error)
    assert table[2] == id(greenlet.GreenletExit)
    assert all(table[i] for i in range(12))


def test_capsule_functions():
    api = _capi()
    table = ctypes.cast(api.PyCapsule_GetPointer(greenlet._C_API, b"greenlet._C_API"),
                        ctypes.POINTER(ctypes.c_void_p))
    P = ctypes.py_object
    get_current = ctypes.PYFUNCTYPE(P)(table[4])
    is_main = ctypes.PYFUNCTYPE(ctypes.c_int, P)(table[8])
    started = ctypes.PYFUNCTYPE(ctypes.c_int, P)(table[9])
    active = ctypes.PYFUNCTYPE(ctypes.c_int, P)(table[10])
    get_parent = ctypes.PYFUNCTYPE(ctypes.c_void_p, P)(table[11])

    main = getcurrent()
    assert get_current() is main
    g = Greenlet(lambda: main.switch())
    assert (is_main(main), started(main), active(main)) == (1, 1, 1)
    assert (is_main(g), started(g), active(g)) == (0, 0, 0)
    g.switch()
    assert (started(g), active(g)) == (1, 1)
    assert get_parent(g) == id(main)
    ctypes.pythonapi.Py_DecRef(ctypes.py_object(main))   # GetParent gave a new ref
    assert get_parent(main) is None and not sys.exc_info()[0]
    g.switch()
    assert (started(g), active(g)) == (1, 0)
    for fn in (is_main, started, active):
        with pytest.raises(TypeError):
            fn(object())


def test_star_import_gives_stock_names():
    """__all__ as stock greenlet (2.0.2 and 3.x) has it: __version__ and
    _C_API first."""
    ns = {}
    exec("from greenlet import *", ns)
    for name in ("__version__", "_C_API", "GreenletExit", "error",
                 "getcurrent", "greenlet", "gettrace", "settrace"):
        assert name in ns, name
    assert ns["_C_API"] is greenlet._C_API
    assert greenlet.__all__[:2] == ["__version__", "_C_API"]
