"""The interpreter state a switch carries, on every supported CPython.

Each version keeps it differently (python/src/pystate_3XX.h): 3.9 has a
per-thread tracing flag and a recursion "overflowed" flag, 3.10 a tracing
flag per C-level CFrame, 3.11 a frame data stack; 3.9 and 3.10 link heap
frame objects (tstate->frame).  These tests check what a program sees:
tracing and profiling keep working across switches, RecursionError stays
recoverable in every greenlet, the handled exception and the frame chain
belong to their greenlet, the collector finds cycles through a suspended
greenlet's stack, and thread exit and interpreter shutdown with suspended
greenlets do not crash.
"""
import gc
import sys
import threading
import weakref

import pytest

from greenlet import greenlet as Greenlet, getcurrent, GreenletExit

from cgl_support import explain, is_cgreenlet, run_code

WAIT = 10


# ------------------------------------------------------------ tracing

def _traced(events, names):
    def tracer(frame, event, arg):
        if frame.f_code.co_name in names:
            events.append((frame.f_code.co_name, event))
        return tracer
    return tracer


def test_settrace_traces_both_greenlets_across_switches():
    main = getcurrent()
    events = []

    def child_body():
        x = 1
        main.switch()
        x += 1
        return x

    def parent_step(g):
        y = g.switch()
        return y

    g = Greenlet(child_body)
    sys.settrace(_traced(events, {"child_body", "parent_step"}))
    try:
        parent_step(g)
        result = parent_step(g)
    finally:
        sys.settrace(None)
    assert result == 2
    assert ("child_body", "call") in events
    assert ("child_body", "return") in events
    assert events.count(("parent_step", "call")) == 2
    assert events.count(("parent_step", "return")) == 2
    # Lines were traced in the child after it was resumed, too.
    after = events[events.index(("parent_step", "call"), 1):]
    assert ("child_body", "line") in after


def test_settrace_set_in_a_child_traces_the_parent_after_the_switch():
    main = getcurrent()
    events = []

    def child():
        sys.settrace(_traced(events, {"in_parent"}))
        main.switch()
        sys.settrace(None)

    def in_parent():
        a = 1
        return a + 1

    g = Greenlet(child)
    try:
        g.switch()            # tracing was turned on while we were parked
        in_parent()           # called from this, untraced, frame
    finally:
        sys.settrace(None)
    g.switch()
    assert g.dead
    assert ("in_parent", "call") in events
    assert ("in_parent", "line") in events


def test_setprofile_set_in_a_child_profiles_the_parent_after_the_switch():
    main = getcurrent()
    events = []

    def profiler(frame, event, arg):
        if event in ("call", "return") and frame.f_code.co_name == "profiled":
            events.append(event)

    def child():
        sys.setprofile(profiler)
        main.switch()
        sys.setprofile(None)

    def profiled():
        return 3

    g = Greenlet(child)
    try:
        g.switch()
        assert profiled() == 3
    finally:
        sys.setprofile(None)
    g.switch()
    assert events == ["call", "return"]


def test_trace_removed_in_a_child_stops_in_the_parent():
    main = getcurrent()
    events = []

    def child():
        sys.settrace(None)
        main.switch()

    def after():
        return 1

    g = Greenlet(child)
    sys.settrace(_traced(events, {"after"}))
    try:
        g.switch()
        after()
    finally:
        sys.settrace(None)
    assert events == []
    g.switch()


# ------------------------------------------------------------ recursion

_RECURSION_AFTER_OVERFLOW = r'''
import sys
from greenlet import greenlet, getcurrent
sys.setrecursionlimit(1000)
main = getcurrent()

def forever(n=0):
    return forever(n + 1) + 1

def fresh():
    try:
        forever()
    except RecursionError:
        return "fresh greenlet: RecursionError"

def deep(n):
    if n:
        return deep(n - 1)
    # Close to the limit.  CPython keeps per-thread state about an overflow
    # (3.9's tstate->overflowed, 3.10's recursion_headroom: while set, 50
    # more calls are let through, then it aborts); a greenlet started here
    # must begin with its own, clear, and at depth 0.
    try:
        forever()
    except RecursionError:
        pass
    # Start another greenlet from here, without returning first.
    return greenlet(fresh).switch()

print(greenlet(deep).switch(sys.getrecursionlimit() - 30))
try:
    forever()
except RecursionError:
    print("main: RecursionError")
'''


def test_recursion_error_near_the_limit_then_a_fresh_greenlet_recurses():
    proc = run_code(_RECURSION_AFTER_OVERFLOW)
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.split("\n")[-3:] == ["fresh greenlet: RecursionError",
                                            "main: RecursionError", ""], explain(proc)


def test_deep_sorted_tower_switches_under_a_raised_limit():
    """300 sorted(key=) levels, each re-entering the eval loop in C: 3.9 and
    3.10 need a limit above 1000 for that (4 levels each), 3.11 does not."""
    from test_c_depth import tower
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 2000))
    try:
        main = getcurrent()
        trail = []

        def bottom():
            total = 0
            for i in range(20):
                total += main.switch(i)
            return total

        g = Greenlet(lambda: tower("sorted", 300, bottom, trail))
        assert g.switch() == 0
        for i in range(1, 20):
            assert g.switch(i) == i
        assert g.switch(20) == sum(range(1, 21)) + 300
        assert trail == list(range(1, 301))
    finally:
        sys.setrecursionlimit(limit)


# ------------------------------------------------------------ exceptions

def test_handled_exception_belongs_to_its_greenlet():
    main = getcurrent()
    seen = []

    def child():
        try:
            raise KeyError("child")
        except KeyError:
            main.switch()
            seen.append(sys.exc_info()[0])
            main.switch()
        seen.append(sys.exc_info()[0])

    g = Greenlet(child)
    g.switch()
    assert sys.exc_info() == (None, None, None)
    try:
        raise ValueError("main")
    except ValueError:
        g.switch()
        assert sys.exc_info()[0] is ValueError
    g.switch()
    assert seen == [KeyError, None]
    assert g.dead


def test_handled_exception_inside_a_generator_survives_switches():
    main = getcurrent()
    seen = []

    def gen():
        try:
            raise KeyError("gen")
        except KeyError:
            yield main.switch()
            seen.append(sys.exc_info()[0])
        yield sys.exc_info()[0]

    def child():
        try:
            raise IndexError("child")
        except IndexError:
            it = gen()
            next(it)                  # switches away inside the generator
            seen.append(sys.exc_info()[0])
            seen.append(next(it))     # after its except block: the caller's
        seen.append(sys.exc_info()[0])

    g = Greenlet(child)
    g.switch()
    assert sys.exc_info() == (None, None, None)
    g.switch()
    assert seen == [IndexError, KeyError, IndexError, None]
    assert g.dead


# ------------------------------------------------------------ frames

def test_gr_frame_chain_ends_at_the_greenlets_first_frame():
    main = getcurrent()

    def inner():
        main.switch()

    def outer():
        inner()

    g = Greenlet(outer)
    g.switch()
    f = g.gr_frame
    names = []
    while f is not None:
        names.append(f.f_code.co_name)
        f = f.f_back
    assert names == ["inner", "outer"]
    g.switch()
    assert g.dead and g.gr_frame is None


@pytest.mark.skipif(not is_cgreenlet(), reason="stock greenlet never collects "
                    "a suspended greenlet")
def test_cycle_through_switch_argument_on_the_value_stack_is_collected():
    """The only reference to the holder is the argument of the switch() the
    greenlet is suspended in: it lives on its frame's value stack."""
    main = getcurrent()
    log = []

    class Holder:
        def __init__(self, g):
            self.g = g

    def run():
        try:
            main.switch(Holder(getcurrent()), None)
        finally:
            log.append("finally")

    g = Greenlet(run)
    assert isinstance(g.switch()[0], Holder)   # not kept here
    ref = weakref.ref(g)
    del g
    gc.collect()
    assert log == ["finally"]
    assert ref() is None


# ------------------------------------------------------------ threads and exit

def test_thread_exit_with_greenlets_parked_in_generators_and_handlers():
    box = {}

    def gen(tmain):
        try:
            raise KeyError("in generator")
        except KeyError:
            yield tmain.switch()

    def in_generator(tmain):
        for _ in gen(tmain):
            pass

    def in_handler(tmain):
        try:
            raise ValueError("in handler")
        except ValueError:
            tmain.switch()

    def owner():
        tmain = getcurrent()
        gs = []
        for body in (in_generator, in_handler):
            g = Greenlet(body)
            g.switch(tmain)
            gs.append(g)
        it = gen(tmain)
        g = Greenlet(lambda: next(it))
        g.switch()
        gs.append(g)
        box.update(greenlets=gs, frames=[g.gr_frame for g in gs], gen=it)

    t = threading.Thread(target=owner)
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    gc.collect()
    for g, f in zip(box["greenlets"], box["frames"]):
        assert g.dead
        assert f.f_code.co_name in ("gen", "in_handler", "<lambda>")
        f.f_lineno
    # A generator whose frame was running there can never run again.
    with pytest.raises((ValueError, StopIteration)):
        next(box["gen"])
    del box["greenlets"][:]
    gc.collect()
    with pytest.raises((ValueError, StopIteration)):
        next(box["gen"])
    box.clear()
    gc.collect()


_SHUTDOWN = r'''
import sys, threading
from greenlet import greenlet, getcurrent
main = getcurrent()

def gen():
    try:
        raise KeyError
    except KeyError:
        yield main.switch()

def parked_in_generator():
    for _ in gen():
        pass

def parked(n):
    if n:
        return parked(n - 1)
    main.switch()

keep = []
for body, args in ((parked_in_generator, ()), (parked, (50,))):
    g = greenlet(body)
    g.switch(*args)
    keep.append(g)
keep.append(g.gr_frame)

# A thread that exits with parked greenlets, whose objects outlive it.
def owner():
    tmain = getcurrent()
    def park():
        tmain.switch()
    for i in range(5):
        g = greenlet(park)
        g.switch()
        keep.append(g)
t = threading.Thread(target=owner)
t.start()
t.join()
sys.settrace(lambda *a: None)
print("exiting", len(keep))
'''


def test_interpreter_shutdown_with_suspended_greenlets():
    proc = run_code(_SHUTDOWN)
    assert proc.returncode == 0, explain(proc)
    assert "exiting 8" in proc.stdout, explain(proc)
    assert "Fatal" not in proc.stderr and "Segmentation" not in proc.stderr, explain(proc)


_ORPHAN_TOP_GENERATOR = r'''
import functools, gc, threading
from greenlet import greenlet, getcurrent
box = {}

def owner():
    tmain = getcurrent()
    def gen():
        local = [1, 2, 3]
        yield tmain.switch("parked")
    gs = []
    g = greenlet(gen().__next__)          # only run holds the generator
    assert g.switch() == "parked"
    gs.append(g)
    g = greenlet(next)                    # only run's arguments hold it
    assert g.switch(gen()) == "parked"
    gs.append(g)
    p = functools.partial(next, gen())    # only p, in a cycle with g
    g = greenlet(p)
    assert g.switch() == "parked"
    p.keep = g
    del p
    gs.append(g)
    box["gs"] = gs

for i in range(20):
    t = threading.Thread(target=owner)
    t.start()
    t.join()
    gs = box.pop("gs")
    f = gs[0].gr_frame
    del gs
    gc.collect()                          # the greenlets go, then their frames
    assert f.f_code.co_name == "gen" and f.f_locals == {}, f.f_locals
    del f
    gc.collect()
print("done")
'''


@pytest.mark.skipif(not is_cgreenlet(), reason="stock greenlet 2.0.2 crashes "
                    "reading frames of greenlets whose thread exited")
def test_orphan_whose_top_frame_is_a_generator_held_only_by_heap_memory():
    """A greenlet parked inside a generator that only heap memory holds (its
    run method or arguments, or an object of a garbage cycle) loses its
    thread; when the greenlet goes, the generator may go first."""
    proc = run_code(_ORPHAN_TOP_GENERATOR, timeout=60)
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.strip().endswith("done"), explain(proc)


@pytest.mark.skipif(not is_cgreenlet(), reason="cgreenlet's private test hook")
def test_orphan_whose_top_frame_is_a_generator_when_relocation_fails():
    """The same, when the orphans' frames cannot be moved off their stacks
    (as if out of memory): they are released as the thread exits, while
    their generators are alive, and each generator's frame must be left
    fit for the generator to free later, its frame object still readable."""
    import greenlet
    try:
        greenlet._greenlet._fail_orphan_relocations(0)
    except NotImplementedError as e:
        pytest.skip(str(e))
    code = ("import greenlet\n"
            "greenlet._greenlet._fail_orphan_relocations(3 * 20)\n"
            + _ORPHAN_TOP_GENERATOR)
    proc = run_code(code, timeout=60)
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.strip().endswith("done"), explain(proc)
