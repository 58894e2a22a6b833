"""Where greenlet 3.x changed 2.0.2's behaviour on purpose, the module
follows 3.x (docs/python.md, "Where 2.0.2 and 3.x differ").  greenlet
3.5.6's own suite checks these on 3.10+ (the pypi stage); these tests check
them on every supported CPython, Debian's 3.11 and 3.9 included.

Against stock 2.0.2 (CGREENLET_ALLOW_STOCK=1) they are expected failures.
"""
import gc
import sys
import threading
import weakref

import pytest

import greenlet
from greenlet import getcurrent, greenlet as Greenlet

from cgl_support import explain, run_code, stock_limitation

THREE_X = stock_limitation("greenlet 2.0.2 behaviour, changed in 3.x")


# ------------------------------------------------------ UnswitchableGreenlet

@THREE_X
def test_unswitchable_first_switch_fails_and_the_greenlet_stays_unstarted():
    def run():
        raise AssertionError("never runs")
    g = greenlet._greenlet.UnswitchableGreenlet(run)
    assert isinstance(g, Greenlet)
    assert g.force_switch_error is False
    g.force_switch_error = 1
    assert g.force_switch_error is True
    with pytest.raises(SystemError,
                       match=r"^Failed to switch stacks into a greenlet "
                             r"for the first time\.$"):
        g.switch()
    assert not g and not g.dead and g.gr_frame is None
    g.force_switch_error = False
    g.run = lambda: "ran"
    assert g.switch() == "ran"


@THREE_X
def test_unswitchable_running_greenlet_refuses_then_resumes():
    runs = []

    def run():
        runs.append(1)
        getcurrent().parent.switch()
        runs.append(2)
        return "done"

    g = greenlet._greenlet.UnswitchableGreenlet(run)
    g.switch()
    g.force_switch_error = True
    with pytest.raises(SystemError,
                       match=r"^Failed to switch stacks into a running greenlet\.$"):
        g.switch("value")
    with pytest.raises(SystemError):
        g.throw(ValueError)
    assert runs == [1] and g and getcurrent() is not g
    g.force_switch_error = False
    assert g.switch() == "done" and runs == [1, 2]


@THREE_X
def test_unswitchable_flags_cannot_be_deleted_and_take_truth_values():
    g = greenlet._greenlet.UnswitchableGreenlet()
    for name in ("force_switch_error", "force_slp_switch_error"):
        with pytest.raises(AttributeError, match="^Cannot delete %s$" % name):
            delattr(g, name)
        setattr(g, name, [0])
        assert getattr(g, name) is True
        setattr(g, name, "")
        assert getattr(g, name) is False

    class Bad:
        def __bool__(self):
            raise ZeroDivisionError
    with pytest.raises(ZeroDivisionError):
        g.force_switch_error = Bad()
    assert g.force_switch_error is False
    with pytest.raises(AttributeError):
        Greenlet().force_switch_error   # only the subclass has them


@THREE_X
def test_unswitchable_slp_switch_error_is_fatal():
    proc = run_code("""
import greenlet
print('running', flush=True)
def run():
    greenlet.getcurrent().parent.switch()
g = greenlet._greenlet.UnswitchableGreenlet(run)
g.switch()
g.force_slp_switch_error = True
g.switch()
print('not reached', flush=True)
""")
    assert proc.returncode in (-6, 134), explain(proc)
    assert "running" in proc.stdout and "not reached" not in proc.stdout, explain(proc)
    assert "Failed low-level slp_switch(). The stack is probably corrupt." in proc.stderr, \
        explain(proc)


# ------------------------------------------- the run callable, let go late

@THREE_X
def test_run_attribute_released_inside_the_new_greenlet():
    """run's last reference goes in the new greenlet, after it became
    current: a __del__ that switches away leaves it started, and it goes on
    to call what run looked up when resumed."""
    main = getcurrent()
    log = []

    class RunCallable:
        def __del__(self):
            log.append(("__del__ in", getcurrent() is g))
            main.switch("from __del__")

    def run_func():
        log.append("run_func")
        return "finished"

    class G(Greenlet):
        def __getattribute__(self, name):
            if name == "run":
                log.append("lookup")
                return run_func
            return Greenlet.__getattribute__(self, name)

    g = G(RunCallable())
    assert g.switch() == "from __del__"
    assert log == ["lookup", ("__del__ in", True)]
    assert g and not g.dead
    with pytest.raises(AttributeError):
        Greenlet.run.__get__(g)   # started: run is gone
    assert g.switch() == "finished"
    assert log[-1] == "run_func" and g.dead


@THREE_X
def test_run_looked_up_by_a_start_that_failed_is_not_leaked():
    """A refused first switch keeps what it looked up for the start (here a
    bound method: a cycle through the greenlet), and the collector frees it."""
    class U(greenlet._greenlet.UnswitchableGreenlet):
        def run(self):
            return "ran"

    g = U()
    g.force_switch_error = True
    with pytest.raises(SystemError):
        g.switch()
    ref = weakref.ref(g)
    del g
    gc.collect()
    assert ref() is None
    u = U()
    assert u.switch() == "ran"


# ------------------------------------------------- cross-thread message

@THREE_X
def test_cross_thread_switch_names_both_main_greenlets():
    ready = threading.Event()
    done = threading.Event()
    theirs = []

    def worker():
        theirs.append(getcurrent())
        g = Greenlet(lambda: getcurrent().parent.switch())
        g.switch()
        theirs.append(g)
        ready.set()
        done.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert ready.wait(10)
        with pytest.raises(greenlet.error) as exc:
            theirs[1].switch()
        text = str(exc.value)
        assert text.startswith("Cannot switch to a different thread\n\tCurrent:  ")
        assert ("\n\tCurrent:  %r\n\tExpected: %r" % (getcurrent(), theirs[0])) in text
    finally:
        done.set()
        t.join(10)
    # A thread that has exited keeps 2.0.2's words (3.x did not change them).
    with pytest.raises(greenlet.error,
                       match=r"^cannot switch to a different thread \(which "
                             r"happens to have exited\)$"):
        theirs[1].switch()


# ------------------------------------------ getcurrent() at finalization

FINALIZING = """
import atexit, gc, os, sys
import greenlet
gc.disable()

def ask(where):
    try:
        g = greenlet.getcurrent()
    except RuntimeError as e:
        os.write(1, ("%s: RuntimeError: %s\\n" % (where, e)).encode())
    else:
        os.write(1, ("%s: %s\\n" % (where, type(g).__name__)).encode())

class Checker:
    def __del__(self):
        ask("finalizing")
        try:
            greenlet.greenlet.getcurrent()
        except RuntimeError:
            os.write(1, b"static method refused too\\n")

parked = []
for _ in range(5):
    g = greenlet.greenlet(lambda: greenlet.getcurrent().parent.switch())
    g.switch()
    parked.append(g)
a = Checker(); b = {"a": a}; a.cycle = b
del a, b
atexit.register(ask, "atexit")
print("set up", flush=True)
"""


@THREE_X
def test_getcurrent_refused_once_the_interpreter_is_finalizing():
    proc = run_code(FINALIZING)
    assert proc.returncode == 0, explain(proc)
    lines = proc.stdout.splitlines()
    assert lines[0] == "set up", explain(proc)
    assert "atexit: greenlet" in lines, explain(proc)   # still answered
    assert "finalizing: RuntimeError: greenlet is being finalized" in lines, explain(proc)
    assert "static method refused too" in lines, explain(proc)


# ------------------------------------------------------- no __del__ shown

@THREE_X
def test_no_del_attribute_but_subclass_cycles_still_collected():
    assert "__del__" not in dir(Greenlet)
    assert not hasattr(Greenlet(), "__del__")
    main = getcurrent()
    log = []

    class Sub(Greenlet):
        pass

    class SubSub(Sub):
        def __init_subclass__(cls):   # does not chain up
            pass

    for cls in (Sub, SubSub):
        assert "__del__" not in dir(cls)

        def run():
            try:
                main.switch()
            finally:
                log.append(cls.__name__)

        g = cls(run)
        g.switch()
        g.me = g
        ref = weakref.ref(g)
        del g
        gc.collect()
        assert ref() is None
    assert log == ["Sub", "SubSub"]

    class WithDel(Greenlet):
        def __del__(self):
            log.append("own __del__")
    w = WithDel(lambda: None)
    del w
    assert log[-1] == "own __del__"
