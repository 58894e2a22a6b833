"""Greenlets taking turns on one stack (CGREENLET_SHARED_STACKS=1): every
switch into a parked greenlet copies its C stack and root-chunk frames back
from the heap, and the greenlet it displaces out.  Each scenario runs in a
child with that setting and checks that frames, f_back chains, the
collector, tracing and recursion see the same as with a stack each.
(With the default of 128 stacks per thread few tests ever copy.)"""
import pytest

from cgl_support import explain, run_code

_SCENARIOS = r'''
import gc, sys, greenlet
from greenlet import greenlet as G, getcurrent
from cgl_support import check_identity_or_exit
check_identity_or_exit()
main = getcurrent()

# 1. Frames of parked greenlets, at different depths, survive each other.
def deep(n, tag):
    if n:
        return deep(n - 1, tag) + 1
    local = [tag] * 3
    for i in range(5):
        v = main.switch((tag, i))
        assert v == tag * 10 + i and local == [tag] * 3, (v, local)
    return 0
gs = [G(deep) for _ in range(12)]
for t, g in enumerate(gs):
    assert g.switch(t * 7 % 40, t) == (t, 0)
for i in range(1, 5):
    for t, g in enumerate(gs):
        assert g.switch(t * 10 + i - 1) == (t, i)
for t, g in enumerate(gs):
    assert g.switch(t * 10 + 4) == t * 7 % 40 and g.dead

# 2. gr_frame / f_back of greenlets whose bytes are copied out, and of
#    C-level entries (sorted(key=)) in between.
def inner(x):
    main.switch("parked")
    return x
def via_sorted(tag):
    return sorted([1, 2], key=lambda k: inner(k))[0] + tag
parked = [G(via_sorted) for _ in range(4)]
for t, g in enumerate(parked):
    assert g.switch(t) == "parked"
for g in parked:
    names = []
    f = g.gr_frame
    while f is not None:
        names.append(f.f_code.co_name)
        f = f.f_back
    assert names[0] == "inner" and names[-1] == "via_sorted", names
for t, g in enumerate(parked):
    assert g.switch() == "parked"      # the second key call
    assert g.switch() == 1 + t and g.dead

# 3. The collector walks parked greenlets' frames (copied out): a cycle
#    through a suspended greenlet is collected, its finally runs.
ran = []
def cyclic():
    me = getcurrent()
    try:
        main.switch(me)
    finally:
        ran.append(1)
for _ in range(20):
    G(cyclic).switch()
gc.collect()
assert len(ran) == 20, ran

# 4. Tracing across copies; exceptions through several greenlets.
events = []
greenlet.settrace(lambda ev, args: events.append(ev))
def raiser(n):
    main.switch()
    raise KeyError(n)
rs = [G(raiser) for _ in range(6)]
for n, g in enumerate(rs):
    g.switch(n)
for n, g in enumerate(rs):
    try:
        g.switch()
    except KeyError as e:
        assert e.args == (n,)
    else:
        raise AssertionError("no KeyError")
greenlet.settrace(None)
assert events.count("throw") == 6 and events.count("switch") >= 12, events

# 5. Deep recursion in one greenlet while others are parked: RecursionError
#    as on the main thread, then the others resume intact.
def rec(n):
    return rec(n + 1)
def recurse_then_park():
    try:
        rec(0)
    except RecursionError:
        pass
    return main.switch("rec done") + 1
others = [G(deep) for _ in range(3)]
for t, g in enumerate(others):
    g.switch(3, t + 100)
r = G(recurse_then_park)
assert r.switch() == "rec done"
for t, g in enumerate(others):
    for i in range(1, 5):
        assert g.switch((t + 100) * 10 + i - 1) == (t + 100, i)
    assert g.switch((t + 100) * 10 + 4) == 3
assert r.switch(1) == 2
print("ok")
'''

_GEVENT = r'''
import gevent, gevent.event, gevent.queue
from cgl_support import check_gevent_identity_or_exit
check_gevent_identity_or_exit()
q = gevent.queue.Queue()
ev = gevent.event.Event()
def worker(n):
    ev.wait()
    for i in range(3):
        q.put((n, i))
        gevent.sleep(0)
    return n
jobs = [gevent.spawn(worker, n) for n in range(300)]
gevent.sleep(0.01)
ev.set()
gevent.joinall(jobs, timeout=60)
assert [j.value for j in jobs] == list(range(300))
got = sorted(q.get() for _ in range(900))
assert got == sorted((n, i) for n in range(300) for i in range(3))
print("ok")
'''


@pytest.mark.parametrize("stacks", ["1", "3"])
def test_greenlets_taking_turns_on_shared_stacks(stacks):
    proc = run_code(_SCENARIOS, timeout=120,
                    env={"CGREENLET_SHARED_STACKS": stacks})
    assert proc.returncode == 0 and "ok" in proc.stdout, explain(proc)


def test_gevent_on_one_shared_stack():
    pytest.importorskip("gevent")
    proc = run_code(_GEVENT, timeout=120, env={"CGREENLET_SHARED_STACKS": "1"})
    assert proc.returncode == 0 and "ok" in proc.stdout, explain(proc)
