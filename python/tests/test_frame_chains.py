"""gr_frame and f_back of suspended greenlets, across C boundaries.

From CPython 3.12 on, every C-level entry into the interpreter links an
"entry frame" into the thread's frame chain; it lives on the C stack of the
greenlet that made the call.  f_back must skip it and walk on into the
greenlet's Python frames (greenlet's tracker had this wrong on 3.12: its
suspended stacks are copied away and the entry frames read garbage), and
when the greenlet's thread exits and its C stack goes, its frames must stay
readable.  Each test runs on every supported CPython: before 3.12 there are
no entry frames and the same walks must give the same answers.

Also here: sys.settrace / sys.setprofile (per thread, not per greenlet) and
sys.monitoring (3.12+) across switches, alongside test_interp_state.py.
"""
import gc
import sys
import threading
import weakref

import pytest

from greenlet import greenlet as Greenlet, getcurrent

from cgl_support import explain, is_cgreenlet, run_code, version_limitation

WAIT = 10


def names(frame, stop=None):
    out = []
    while frame is not None and frame is not stop:
        out.append(frame.f_code.co_name)
        frame = frame.f_back
    return out


class Token:
    pass


# Python -> C -> Python chains: each C function below calls back into
# Python, so the interpreter is re-entered (an entry frame on 3.12+).

def via_sorted(next_step):
    box = []

    def key(x):
        if x == 1:
            box.append(next_step())
        return -x
    sorted([2, 1, 3], key=key)
    return box[0]


def via_map(next_step):
    return list(map(lambda _: next_step(), [0]))[0]


class _Attr:
    def __init__(self, next_step):
        self.next_step = next_step

    def __getattr__(self, name):
        return self.next_step()


def via_getattr(next_step):
    return _Attr(next_step).anything


def via_generator(next_step):
    def gen():
        yield next_step()
    return next(gen())          # next() from C: the generator's frame


def via_for_generator(next_step):
    def gen2():
        yield next_step()
    for value in gen2():        # resumed inline by the eval loop
        return value


def via_plain(next_step):
    return next_step()


# What each step adds to the chain, innermost first.
ADDS = {
    via_sorted: ["key", "via_sorted"],
    via_map: ["<lambda>", "via_map"],
    via_getattr: ["__getattr__", "via_getattr"],
    via_generator: ["gen", "via_generator"],
    via_for_generator: ["gen2", "via_for_generator"],
    via_plain: ["via_plain"],
}
STEPS = [via_sorted, via_map, via_getattr, via_generator, via_for_generator,
         via_plain]


def build(steps, bottom):
    """Calls steps[0], which calls steps[1], ..., which calls bottom().
    Returns (callable, expected names from bottom's frame up)."""
    call = bottom
    expected = [bottom.__name__]
    for step in reversed(steps):
        call = (lambda s, c: (lambda: s(c)))(step, call)
        expected += ADDS[step] + ["<lambda>"]
    return call, expected


def run_chain(steps, bottom):
    """A run function for a greenlet, through build(), and the names its
    frame chain shows at bottom."""
    call, expected = build(steps, bottom)

    def run():
        return call()
    return run, expected + ["run"]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.__name__)
def test_f_back_walks_through_a_c_boundary(step):
    main = getcurrent()

    def bottom():
        return main.switch("parked")

    run, expected = run_chain([step], bottom)
    g = Greenlet(run)
    assert g.switch() == "parked"
    assert names(g.gr_frame) == expected
    assert g.switch("done") == "done"
    assert g.dead and g.gr_frame is None


def test_f_back_through_every_kind_of_boundary_nested():
    main = getcurrent()

    def bottom():
        return main.switch("parked")

    steps = STEPS * 3
    run, expected = run_chain(steps, bottom)
    g = Greenlet(run)
    assert g.switch() == "parked"
    first = names(g.gr_frame)
    assert first == expected
    # Stale data on the stacks would show after other code ran: switch into
    # other greenlets (their own C stacks), recurse here, run a collection.
    others = []
    for _ in range(3):
        o, _exp = run_chain(list(reversed(steps)), bottom)
        other = Greenlet(o)
        assert other.switch() == "parked"
        others.append(other)

    def recurse(n):
        return recurse(n - 1) if n else sorted([3, 1, 2], key=lambda x: -x)
    recurse(200)
    gc.collect()
    assert names(g.gr_frame) == first
    for other in others:
        assert names(other.gr_frame)[-2:] == ["<lambda>", "run"]
    assert g.switch("x") == "x"
    for other in others:
        assert other.switch("y") == "y"


def test_frames_captured_inside_keep_walking_while_suspended():
    main = getcurrent()
    seen = {}

    def bottom():
        seen["frame"] = sys._getframe()
        seen["caller"] = sys._getframe(1)
        main.switch()
        return 5

    run, expected = run_chain([via_sorted, via_map], bottom)
    g = Greenlet(run)
    g.switch()
    assert names(seen["frame"]) == expected
    assert names(seen["caller"]) == expected[1:]
    assert g.gr_frame is seen["frame"]
    # A walk from main's own frames is unaffected, and never enters g's.
    mine = names(sys._getframe())
    assert mine[0] == "test_frames_captured_inside_keep_walking_while_suspended"
    assert "bottom" not in mine and "run" not in mine
    assert g.switch() == 5
    # Frames that exited while their frame objects lived took their chains
    # with them (CPython's own rule).
    assert names(seen["frame"]) == expected
    del seen["frame"], seen["caller"]


def test_chain_of_a_greenlet_started_from_deep_in_another():
    """A greenlet's chain ends at its own first frame, wherever it was
    started from (here: deep inside C callbacks of another greenlet)."""
    main = getcurrent()
    inner = {}

    def bottom_inner():
        return main.switch("inner parked")

    def bottom_outer():
        run_i, exp_i = run_chain([via_getattr, via_sorted], bottom_inner)
        inner["g"] = Greenlet(run_i)
        inner["expected"] = exp_i
        return inner["g"].switch()

    run_o, exp_o = run_chain([via_map, via_generator], bottom_outer)
    g = Greenlet(run_o)
    assert g.switch() == "inner parked"
    assert names(inner["g"].gr_frame) == inner["expected"]
    assert names(g.gr_frame) == exp_o
    # Resume the inner one: its result goes to its parent, g, which returns
    # it in turn to main.
    assert inner["g"].switch("r") == "r"
    assert inner["g"].dead and g.dead


def test_frame_locals_visible_through_f_back():
    main = getcurrent()

    def bottom():
        main.switch()

    def level(n):
        mark = "level-%d" % n
        if n == 0:
            return sorted([1], key=lambda x: bottom())
        return level(n - 1) or mark

    g = Greenlet(level)
    g.switch(4)
    f = g.gr_frame
    marks = []
    while f is not None:
        if f.f_code.co_name == "level":
            marks.append(f.f_locals["mark"])
        f = f.f_back
    assert marks == ["level-%d" % n for n in range(5)]
    g.switch()


# ------------------------------------------------------------ collector

class Holder:
    def __init__(self, g):
        self.g = g


def _switch_forms():
    import operator

    def positional(main, h):
        return main.switch(h, None)

    def keyword(main, h):
        return main.switch(h, key=None)         # 3.13: CALL_KW, kwnames on top

    def bound(main, h):
        sw = main.switch
        return sw(1, h, 2)

    def nested_expr(main, h):
        return [h, main.switch(h)]              # h below the call, too

    def operator_call(main, h):                 # through C, arguments in place
        return operator.call(main.switch, h)

    forms = [positional, keyword, bound, nested_expr]
    if hasattr(operator, "call"):               # 3.11+
        forms.append(operator_call)
    return forms


@pytest.mark.skipif(not is_cgreenlet(), reason="stock greenlet never collects "
                    "a suspended greenlet")
@version_limitation(
    (3, 11), "run() passes the holder to form() in place, and a caller keeps "
    "the arguments of the call it is suspended in on its value stack (3.11+ "
    "moves them into the callee): only the top frame's stack extent is known "
    "(from switch()'s arguments), so that reference looks external; "
    "test_cycle_through_switch_arguments_in_top_frame covers the top frame")
@pytest.mark.parametrize("form", _switch_forms(), ids=lambda f: f.__name__)
def test_cycle_through_switch_arguments_collected(form):
    """The only reference to the holder (which holds the greenlet) is an
    argument of the switch() the greenlet is suspended in, on its frame's
    value stack: the collector must see it there (and nothing past it)."""
    _assert_collected_through(lambda main: form(main, Holder(getcurrent())))


def _assert_collected_through(body):
    """Runs body(main) in a greenlet that it leaves suspended, drops the
    greenlet, and checks that gc.collect() killed (finally ran) and freed
    it."""
    main = getcurrent()
    log = []

    def run():
        try:
            body(main)
        finally:
            log.append("finally")

    g = Greenlet(run)
    g.switch()
    ref = weakref.ref(g)
    del g
    gc.collect()
    assert log == ["finally"]
    assert ref() is None


def _top_frame_forms():
    """The forms of _switch_forms, making the holder in the switching frame."""
    def positional(main, make):
        return main.switch(make(), None)        # only the stack holds it

    def keyword(main, make):
        return main.switch(make(), key=None)

    def bound(main, make):
        sw = main.switch
        return sw(1, make(), 2)

    def nested_expr(main, make):
        h = make()
        return [h, main.switch(h)]

    return [positional, keyword, bound, nested_expr]


@pytest.mark.skipif(not is_cgreenlet(), reason="stock greenlet never collects "
                    "a suspended greenlet")
@pytest.mark.parametrize("form", _top_frame_forms(), ids=lambda f: f.__name__)
def test_cycle_through_switch_arguments_in_top_frame(form):
    """As above, but the holder is made in the frame that calls switch(), so
    that no caller holds it: on every version the collector must find it on
    the top frame's value stack (3.9/3.10 included)."""
    _assert_collected_through(
        lambda main: form(main, lambda: Holder(getcurrent())))


def test_switch_with_unpacked_arguments_is_not_collected_but_killable():
    """f(*args): the arguments come from a tuple, not in place, so their
    extent is unknown and the value stack is not shown: the greenlet is
    kept, and still killed normally."""
    main = getcurrent()
    log = []

    def run():
        try:
            main.switch(*[Holder(getcurrent())])
        finally:
            log.append("finally")

    g = Greenlet(run)
    holder = g.switch()
    assert isinstance(holder, Holder)
    del holder
    ref = weakref.ref(g)
    del g
    gc.collect()
    g = ref()
    if g is not None:          # kept: the tuple on the stack holds it
        g.throw()
        assert g.dead
    assert log == ["finally"]


# ------------------------------------------------------------ thread exit

def _park_in_thread(count, steps):
    out = {"greenlets": [], "frames": [], "tokens": []}

    def owner():
        tmain = getcurrent()

        def bottom():
            tmain.switch()

        for i in range(count):
            token = Token()
            out["tokens"].append(weakref.ref(token))
            run, expected = run_chain(steps, bottom)

            def holder(run=run, token=token):
                return run()
            g = Greenlet(holder)
            g.switch()
            del token
            out["frames"].append(g.gr_frame)
            out["greenlets"].append(g)
        out["expected"] = expected + ["holder"]

    t = threading.Thread(target=owner)
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    return out


@pytest.mark.skipif(not is_cgreenlet(), reason="stock greenlet 2.0.2 crashes "
                    "(SIGSEGV) reading frames of greenlets whose thread exited")
def test_f_back_of_greenlets_orphaned_in_c_calls():
    """Their entry frames went with their C stacks: the Python frames left
    must still link up (and no pointer into the lost stack remains)."""
    out = _park_in_thread(4, STEPS)
    gc.collect()
    # Reuse the memory the thread's stacks had.
    junk = [bytearray(4096) for _ in range(2000)]
    for g, f in zip(out["greenlets"], out["frames"]):
        assert g.dead
        assert names(f) == out["expected"]
        assert g.gr_frame is f
        f.f_lineno
    del junk
    refs = [weakref.ref(g) for g in out["greenlets"]]
    del out["greenlets"][:], g, f
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    # Frame objects held here keep working once the greenlets are gone
    # (walking their f_back: test_walking_frames_of_freed_orphans).
    for f in out["frames"]:
        assert f.f_code.co_name == "bottom"
        f.f_lineno
    del out["frames"][:], f
    gc.collect()
    # The holder frames' locals were released with their greenlets.
    assert [t() for t in out["tokens"]] == [None] * len(out["tokens"])


def test_throw_into_a_greenlet_of_an_exited_thread():
    """Upstream's test_throw_to_dead_thread_doesnt_crash without its
    frame.f_locals.clear(), which CPython 3.13's FrameLocalsProxy (PEP 667)
    does not have: so that its scenario runs on every version."""
    import greenlet
    result = []

    def worker():
        getcurrent().parent.switch()

    def creator():
        g = Greenlet(worker)
        g.switch()
        result.append(g)

    t = threading.Thread(target=creator)
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    with pytest.raises(greenlet.error) as exc:
        result[0].throw(ValueError)
    assert str(exc.value) in (
        "cannot switch to a different thread (which happens to have exited)",
        "cannot switch to a different thread")
    frame = result[0].gr_frame
    if frame is not None:       # stock greenlet may have dropped it
        assert frame.f_code.co_name == "worker"
        with pytest.raises(RuntimeError):
            frame.clear()       # it still looks like it is executing
        assert dict(frame.f_locals) == {}
    del frame, result[:]
    gc.collect()


_WALK_AFTER_FREE = r'''
import gc, sys
sys.path.insert(0, %(here)r)
import test_frame_chains as T
out = T._park_in_thread(3, T.STEPS)
gc.collect()
frames = out["frames"]
# Frame objects of lower frames too, held here.
lower = [f.f_back.f_back.f_back for f in frames]
for f, expected in zip(lower, [out["expected"][3:]] * 3):
    assert T.names(f) == expected, (T.names(f), expected)
del out["greenlets"][:]
gc.collect()
junk = [bytearray(4096) for _ in range(2000)]
for f in frames + lower:
    f.f_code.co_name, f.f_lineno, f.f_locals
    T.names(f)          # what is left of the chain: must not crash
print("walked", len(frames + lower))
'''


@pytest.mark.skipif(not is_cgreenlet(), reason="stock greenlet 2.0.2 crashes "
                    "(SIGSEGV) reading frames of greenlets whose thread exited")
def test_walking_frames_of_freed_orphans():
    """After the greenlets whose thread exited are freed, frame objects of
    theirs held elsewhere keep working, f_back included (in a child: a
    failure here is a crash)."""
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    proc = run_code(_WALK_AFTER_FREE % {"here": here})
    assert proc.returncode == 0, explain(proc)
    assert "walked 6" in proc.stdout, explain(proc)


@pytest.mark.skipif(not is_cgreenlet(), reason="stock greenlet 2.0.2 never "
                    "releases the frames of greenlets whose thread exited")
def test_generator_running_in_an_orphan_is_released_quietly():
    """A generator whose frame was running in a greenlet when its thread
    exited can never run again.  Once that greenlet goes, the generator is
    a finished one: freeing it must not try to close it (which would only
    report "generator already executing" as an unraisable exception)."""
    box = {}

    def owner():
        tmain = getcurrent()

        def gen(park):
            if park:
                yield tmain.switch()
            yield 1

        def drive(it):
            for x in it:      # 3.12+: the generator runs inline (FOR_ITER_GEN)
                return x
        for _ in range(10):   # warm the specialisation up
            drive(gen(False))

        def run():
            it = gen(True)
            box["gen"] = weakref.ref(it)
            return drive(it)
        g = Greenlet(run)
        g.switch()
        box["g"] = g

    t = threading.Thread(target=owner)
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    reported = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = reported.append
    try:
        del box["g"]
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert [str(r.exc_value) for r in reported] == []
    it = box["gen"]()
    if sys.version_info >= (3, 12):
        assert it is None   # released with the greenlet's frames
    elif it is not None:
        # Kept alive by a reference in a C frame that went with the thread
        # (CPython < 3.12 calls the generator from C here): leaked, and
        # never runs again.
        with pytest.raises((StopIteration, ValueError)):
            next(it)


_ORPHAN_SHUTDOWN = r'''
import sys, threading
sys.path.insert(0, %(here)r)
import test_frame_chains as T
from greenlet import greenlet, getcurrent

keep = []
def owner():
    tmain = getcurrent()
    def bottom():
        tmain.switch()
    for steps in (T.STEPS, list(reversed(T.STEPS)), [T.via_sorted] * 40):
        run, expected = T.run_chain(steps, bottom)
        g = greenlet(run)
        g.switch()
        keep.append((g, g.gr_frame, expected))
t = threading.Thread(target=owner)
t.start()
t.join()
for g, f, expected in keep:
    assert T.names(f) == expected, (T.names(f), expected)
# And greenlets of the main thread, parked the same ways, at shutdown.
main = getcurrent()
def bottom():
    main.switch()
for steps in (T.STEPS, [T.via_map] * 40):
    run, expected = T.run_chain(steps, bottom)
    g = greenlet(run)
    g.switch()
    keep.append((g, g.gr_frame, expected))
print("exiting", len(keep))
'''


def test_shutdown_with_greenlets_parked_in_c_calls():
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    proc = run_code(_ORPHAN_SHUTDOWN % {"here": here})
    assert proc.returncode == 0, explain(proc)
    assert "exiting 5" in proc.stdout, explain(proc)
    assert "Fatal" not in proc.stderr and "Segmentation" not in proc.stderr, explain(proc)


# ------------------------------------------------------------ tracing

def test_setprofile_sees_calls_in_every_greenlet():
    """sys.setprofile is the thread's: set in main, it reports the calls of
    greenlets started before and after, Python and C, across switches.

    (Not checked: the rest of a frame that was already suspended in a
    greenlet when profiling began.  From 3.12 on, profiling instruments the
    code objects of the frames on each thread's current chain; a suspended
    greenlet's frames are on none, so theirs is instrumented only when it
    runs again from its start, and until then that frame reports nothing.
    See docs/python.md.)"""
    main = getcurrent()
    events = []

    def profiler(frame, event, arg):
        if event in ("call", "return"):
            events.append((frame.f_code.co_name, event))
        elif event == "c_call" and getattr(arg, "__name__", None) == "sorted":
            events.append(("sorted", event))

    def inner():
        return sorted([2, 1])

    def early_body():
        main.switch()
        inner()
        return "early"

    def late_body():
        main.switch()
        return "late"

    early = Greenlet(early_body)
    early.switch()
    sys.setprofile(profiler)
    try:
        late = Greenlet(late_body)
        late.switch()
        assert early.switch() == "early"
        assert late.switch() == "late"
    finally:
        sys.setprofile(None)
    assert ("late_body", "call") in events
    assert ("late_body", "return") in events
    assert ("inner", "call") in events and ("inner", "return") in events
    assert ("sorted", "c_call") in events


def test_settrace_line_events_continue_in_a_resumed_greenlet():
    """A trace function set before a greenlet starts traces its lines, and
    keeps doing so after it is resumed from a switch."""
    main = getcurrent()
    lines = []

    def tracer(frame, event, arg):
        if frame.f_code.co_name == "body" and event == "line":
            lines.append(frame.f_lineno - body.__code__.co_firstlineno)
        return tracer

    def body():
        a = 1
        main.switch()
        a += 1
        main.switch()
        return a

    g = Greenlet(body)
    sys.settrace(tracer)
    try:
        g.switch()
        g.switch()
        assert g.switch() == 2
    finally:
        sys.settrace(None)
    assert lines == [1, 2, 3, 4, 5]


def test_trace_function_survives_greenlets_finishing_inside_it():
    """A trace function that itself switches: the per-thread 'tracing'
    state is not carried per greenlet, and tracing resumes afterwards."""
    events = []
    helpers = []

    def helper():
        return 1

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "traced":
            # Runs (untraced, as any code inside a trace function) a whole
            # greenlet from inside the trace function.
            helpers.append(Greenlet(helper).switch())
            events.append("traced")
        return None

    def traced():
        return 2

    sys.settrace(tracer)
    try:
        assert traced() == 2
        assert traced() == 2
    finally:
        sys.settrace(None)
    assert events == ["traced", "traced"]
    assert helpers == [1, 1]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_sys_monitoring_events_across_switches():
    mon = sys.monitoring
    tool = mon.PROFILER_ID
    main = getcurrent()
    started = []

    def on_start(code, offset):
        if code.co_name in ("child", "in_main"):
            started.append(code.co_name)

    def child():
        main.switch()

    def in_main():
        return 1

    mon.use_tool_id(tool, "cgreenlet-test")
    try:
        mon.register_callback(tool, mon.events.PY_START, on_start)
        mon.set_events(tool, mon.events.PY_START)
        g = Greenlet(child)
        g.switch()
        in_main()
        g.switch()
    finally:
        mon.set_events(tool, 0)
        mon.register_callback(tool, mon.events.PY_START, None)
        mon.free_tool_id(tool)
    assert started == ["child", "in_main"]
    assert g.dead
