"""Allocation-failure injection over the greenlet module and the core.

For each scenario below, and for k = 0, 1, 2, ...: the k-th allocation of
the scenario (CPython's allocators and the core's calloc/malloc/mmap, in one
sequence: greenlet._greenlet._cgreenlet_fault_arm) fails.  The scenario must
then either give its normal result or raise MemoryError; anything else (a
different exception, a wrong result, a crash) is a failure.  The loop ends
when a run counts at most k allocations: the fault did not fire, so every
allocation of the scenario has been made to fail once.

Leaks: after a warm-up pass, each scenario's whole loop runs twice more;
a pass that ends with more allocated blocks (sys.getallocatedblocks(),
after gc.collect()) than it began with, on both passes, is a leak.

usage: faults_driver.py [SCENARIO...]   (prints one line per scenario)
"""
import contextvars
import gc
import sys
import threading
import weakref

import greenlet
from greenlet import greenlet as Greenlet, getcurrent, GreenletExit

_g = greenlet._greenlet
if not hasattr(_g, "_cgreenlet_fault_arm"):
    raise SystemExit("faults_driver: %s is not cgreenlet's module" % _g.__file__)

VAR = contextvars.ContextVar("VAR", default=0)
# The k of the current run, for a scenario that arms the fault itself
# (SELF_ARMING) once its threads are started.
ARMED = [0]


def s_start_finish():
    g = Greenlet(lambda a, b=0: a + b)
    return g.switch(40, b=2)


def s_ping_pong():
    def run(x):
        for _ in range(3):
            x = getcurrent().parent.switch(x + 1)
        return x
    g = Greenlet(run)
    v = g.switch(0)
    for _ in range(3):
        v = g.switch(v * 2)
    return v, g.dead


def s_throw_caught():
    def run():
        try:
            getcurrent().parent.switch("parked")
        except ValueError as e:
            return "caught %s" % e
    g = Greenlet(run)
    g.switch()
    return g.throw(ValueError("v"))


def s_error_to_parent():
    def run():
        raise KeyError("k")
    try:
        Greenlet(run).switch()
    except KeyError as e:
        return "parent got %r" % e


def s_kill_by_drop():
    # The bookkeeping does not allocate (an item store, a weak reference
    # made before): a failure there would not be the greenlet's.
    log = [None]

    def run():
        try:
            getcurrent().parent.switch()
        finally:
            log[0] = "finally"
    g = Greenlet(run)
    ref = weakref.ref(g)
    g.switch()
    del g
    return log, ref() is None


def s_nested_parents():
    def leaf():
        return getcurrent().parent.parent.switch("up two")

    def mid():
        return Greenlet(leaf).switch()
    g = Greenlet(mid)
    r = g.switch()
    g2 = Greenlet(lambda: "other")
    g2.parent = getcurrent()
    return r, g2.switch()


def s_trace():
    events = []
    old = greenlet.settrace(lambda ev, args: events.append(ev))
    try:
        g = Greenlet(lambda: getcurrent().parent.switch(1))
        g.switch()
        g.switch()
    finally:
        greenlet.settrace(old)
    return events


def s_context():
    def run():
        VAR.set(7)
        getcurrent().parent.switch(VAR.get())
        return VAR.get()
    g = Greenlet(run)
    g.gr_context = contextvars.copy_context()
    a = g.switch()
    b = g.gr_frame is not None
    return a, b, g.switch(), VAR.get()


def s_gc_cycle():
    log = [None]

    class Holder:
        pass

    def run(h):
        try:
            getcurrent().parent.switch()
        finally:
            log[0] = "finally"
    h = Holder()
    h.g = Greenlet(run)
    ref = weakref.ref(h.g)
    h.g.switch(h)
    del h
    # Twice: a failed allocation in gc's callbacks (their info dict) leaves
    # the module's gc.callbacks entry uncalled, and a collection it does not
    # hear of shows no greenlet's frames (python/src/type.c: frames_shown),
    # so the cycle waits for the next one.
    gc.collect()
    gc.collect()
    return log, ref() is None


def s_thread_orphans():
    # CPython's threading does not survive a failed allocation in
    # Thread.start() (it can hang), so the thread is started before the
    # fault is armed: it waits on `go`, then makes and parks a greenlet and
    # exits with it suspended (the module's orphan path), all while armed.
    out = [None, None]
    go = threading.Lock()
    go.acquire()

    def body():
        go.acquire()
        try:
            g = Greenlet(lambda: getcurrent().parent.switch("parked"))
            out[0] = g.switch()
            out[1] = g
        except MemoryError:
            out[0] = "MemoryError"
    t = threading.Thread(target=body)
    t.start()
    try:
        _g._cgreenlet_fault_arm(ARMED[0])
    finally:
        go.release()    # else an error here leaves the thread (and exit) hanging
    t.join()
    if out[0] == "MemoryError":
        raise MemoryError("in the thread")
    g = out[1]
    r = (out[0], g.dead, bool(g))
    out[1] = g = None
    return r


def _c_api_extension():
    """Debian's compiled test extension of greenlet 2.0.2, which reaches the
    module through its C API capsule (None if python3-greenlet's tests are
    not installed)."""
    import importlib.util
    import os
    import sysconfig
    # (EXT_SUFFIX names the architecture: the ports run this too.)
    path = os.path.join(
        "/usr/lib/python3/dist-packages/greenlet/tests",
        "_test_extension" + sysconfig.get_config_var("EXT_SUFFIX"))
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location("_test_extension", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CAPI = _c_api_extension()
THROWN = ValueError("thrown through the C API")


def s_c_api():
    seen = [None]

    def foo():
        try:
            getcurrent().parent.switch()
        except ValueError:
            seen[0] = "ValueError"
    g = Greenlet(foo)
    g.switch()
    # (test_throw would Py_DECREF a NULL message; test_switch and
    # test_new_greenlet keep a reference to their result, a cached small
    # int here, so that costs no block.)
    CAPI.test_throw_exact(g, ValueError, THROWN, None)
    return (CAPI.test_switch(Greenlet(lambda: 50)),
            CAPI.test_switch_kwargs(Greenlet(lambda x, y: x * y), x=3, y=2),
            CAPI.test_new_greenlet(lambda: -15),
            CAPI.test_getcurrent(), seen[0], g.dead)


class Sub(Greenlet):
    def __init__(self, *args, **kw):
        Greenlet.__init__(self, *args, **kw)
        self.extra = [1, 2]


def s_subclass():
    g = Sub(lambda: "sub")
    return g.switch(), g.extra


SCENARIOS = {name[2:]: fn for name, fn in sorted(globals().items())
             if name.startswith("s_") and (fn is not s_c_api or CAPI)}
SELF_ARMING = {s_thread_orphans}


def one_pass(fn, expected):
    """Returns (faults injected, MemoryErrors, problems)."""
    k = fired_n = merr = 0
    problems = []
    while True:
        gc.collect()
        ARMED[0] = k
        if fn not in SELF_ARMING:
            _g._cgreenlet_fault_arm(k)
        try:
            r, exc = fn(), None
        except BaseException as e:  # noqa: B902 - judged below
            r, exc = None, e
        finally:
            seen, fired = _g._cgreenlet_fault_disarm()
        if exc is not None:
            if isinstance(exc, MemoryError) and fired:
                merr += 1
            else:
                problems.append("k=%d: %r (fault fired: %s)" % (k, exc, fired))
        elif r != expected:
            problems.append("k=%d: result %r, expected %r" % (k, r, expected))
        del r, exc
        if not fired:
            return k, merr, problems
        fired_n += 1
        k += 1
        if k > 100000:
            problems.append("more than 100000 allocations")
            return k, merr, problems


def main(names):
    unraisable = []
    thread_errors = []
    sys.unraisablehook = lambda u: unraisable.append(u.exc_type)
    # CPython's threading itself fails in places when an allocation does
    # (its bookkeeping at thread exit): shown, not judged.
    threading.excepthook = lambda a: thread_errors.append(a.exc_type)
    bad = 0
    for name in names or SCENARIOS:
        fn = SCENARIOS[name]
        # A self-arming one never fires (sys.maxsize: the module takes a C
        # long, 32 bits on i386 and armhf).
        ARMED[0] = sys.maxsize
        try:
            expected = fn()
        finally:
            _g._cgreenlet_fault_disarm()
        one_pass(fn, expected)              # warms caches and free lists
        unraisable.clear()
        leaks = []
        for _ in range(2):
            unraisable.clear()
            gc.collect()
            before = sys.getallocatedblocks()
            n, merr, problems = one_pass(fn, expected)
            nraise = len(unraisable)
            odd = [t for t in unraisable if t is not MemoryError]
            unraisable.clear()  # its storage is not the module's
            gc.collect()
            leaks.append(sys.getallocatedblocks() - before)
            if problems:
                break
        # A leak repeats on every pass; a one-off is a cache filling up.
        leaked = min(leaks)
        status = "ok" if not problems and leaked <= 0 and not odd else "FAIL"
        print("%-16s %4d allocations failed one at a time: %4d MemoryError, "
              "%4d normal result, %2d unraisable; blocks leaked per pass %s  %s"
              % (name, n, merr, n - merr, nraise, leaks, status), flush=True)
        for p in problems[:10]:
            print("   ", p)
        if odd:
            print("    unraisable of other types:", sorted({t.__name__ for t in odd}))
        if thread_errors:
            print("    CPython's threading raised (not judged):",
                  sorted({t.__name__ for t in thread_errors}))
        thread_errors.clear()
        bad += status != "ok"
    print("faults: %d scenario(s), %d failed" % (len(names or SCENARIOS), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
