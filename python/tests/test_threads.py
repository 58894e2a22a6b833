"""Greenlets and threads: per-thread trees, thread exit, cross-thread kills."""
import gc
import sys
import threading
import time
import weakref

import pytest

import greenlet
from greenlet import greenlet as Greenlet, getcurrent, GreenletExit

from cgl_support import stock_limitation

WAIT = 10  # seconds; every Event wait is bounded


def _run_threads(target, count):
    errors = []

    def guarded(i):
        try:
            target(i)
        except BaseException as exc:  # reported in the main thread
            errors.append((i, repr(exc)))

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert errors == []


def test_sixteen_threads_each_with_own_greenlets():
    rounds = 2000
    results = {}
    mains = {}

    def thread_body(index):
        tmain = getcurrent()
        mains[index] = tmain
        assert tmain.parent is None

        def producer(n):
            for i in range(n):
                consumer.switch(index * 1_000_000 + i)
            consumer.switch(None)
            return "producer done"

        def consumer():
            total = 0
            value = producer.switch(rounds)
            while value is not None:
                assert value // 1_000_000 == index
                total += value % 1_000_000
                value = producer.switch()
            return total

        producer = Greenlet(producer)
        consumer = Greenlet(consumer)
        assert consumer.switch() == sum(range(rounds))   # consumer's return value
        assert consumer.dead and not producer.dead
        assert producer.switch() == "producer done"
        assert producer.dead
        results[index] = "ok"
        assert getcurrent() is tmain

    def thread_main(index):
        # A second, value-checking ping-pong, plus the producer/consumer.
        tmain = getcurrent()
        g = Greenlet(lambda x: _echo(tmain, x))
        value = g.switch(0)
        for i in range(rounds):
            assert value == i
            value = g.switch(i + 1)
        g.throw()
        thread_body(index)

    _run_threads(thread_main, 16)
    assert results == {i: "ok" for i in range(16)}
    assert len({id(m) for m in mains.values()}) == 16
    assert getcurrent() not in mains.values()


def _echo(target, first):
    value = first
    while True:
        value = target.switch(value)


def test_switch_to_greenlet_of_other_thread_is_error():
    box = {}
    ready, finish = threading.Event(), threading.Event()

    def owner():
        tmain = getcurrent()
        parked = Greenlet(lambda: tmain.switch("parked"))
        parked.switch()
        box.update(tmain=tmain, parked=parked, unstarted_parent=Greenlet())
        ready.set()
        finish.wait(WAIT)
        parked.switch()   # finish it in its own thread

    t = threading.Thread(target=owner)
    t.start()
    try:
        assert ready.wait(WAIT)
        for target in (box["tmain"], box["parked"]):
            with pytest.raises(greenlet.error):
                target.switch()
            with pytest.raises(greenlet.error):
                target.throw(ValueError)
        # A greenlet whose parent lives in another thread cannot start here.
        child = Greenlet(lambda: "ran", parent=box["tmain"])
        with pytest.raises(greenlet.error):
            child.switch()
        assert box["parked"] and not box["parked"].dead
    finally:
        finish.set()
        t.join(WAIT)
    assert box["parked"].dead


def test_thread_exit_with_parked_greenlets():
    parked = []
    finally_ran = []

    def owner():
        tmain = getcurrent()
        for i in range(20):
            def body(i=i):
                try:
                    tmain.switch()
                finally:
                    finally_ran.append(i)
            g = Greenlet(body)
            g.switch()
            parked.append(g)
        # The thread ends with 20 suspended greenlets still referenced.

    t = threading.Thread(target=owner)
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    gc.collect()
    time.sleep(0.05)
    gc.collect()
    assert len(parked) == 20
    for g in parked:
        with pytest.raises(greenlet.error):
            g.switch()
        with pytest.raises(greenlet.error):
            g.throw()
    refs = [weakref.ref(g) for g in parked]
    del parked[:], g
    for _ in range(3):
        gc.collect()
    assert [r() for r in refs] == [None] * 20
    # Code of a dead thread's greenlets is never run after the thread ended.
    assert finally_ran == []
    # The main thread keeps working normally.
    assert Greenlet(lambda: 5).switch() == 5


@stock_limitation("frames of suspended greenlets are not traversed by the GC, "
                  "so a frame->greenlet cycle leaks even after the thread died")
def test_many_threads_exit_with_parked_greenlets():
    """Stress: 32 short-lived threads each leave greenlets behind, some in cycles."""
    keep = []

    def owner(index):
        tmain = getcurrent()
        for _ in range(10):
            def body():
                me = getcurrent()          # a cycle through the frame
                tmain.switch()
                return me
            g = Greenlet(body)
            g.switch()
            keep.append(g)

    _run_threads(owner, 32)
    gc.collect()
    refs = [weakref.ref(g) for g in keep]
    del keep[:]
    for _ in range(3):
        gc.collect()
    # Greenlets of dead threads are collectable, cycles or not.
    assert sum(1 for r in refs if r() is not None) == 0
    assert Greenlet(lambda: 6).switch() == 6


def test_last_reference_dropped_in_other_thread_kills_in_owner():
    log = []
    holder = []
    dropped, done = threading.Event(), threading.Event()

    def owner():
        tmain = getcurrent()
        me = threading.get_ident()

        def body():
            try:
                tmain.switch()
            except GreenletExit:
                log.append(("GreenletExit", threading.get_ident() == me))
                raise
            finally:
                log.append(("finally", threading.get_ident() == me))

        g = Greenlet(body)
        g.switch()
        holder.append(g)
        del g
        assert dropped.wait(WAIT)
        log.append("owner wakes")
        getcurrent()                         # the next greenlet call
        Greenlet(lambda: None).switch()      # (and a switch, to be sure)
        log.append("owner continues")
        done.set()

    t = threading.Thread(target=owner)
    t.start()
    try:
        deadline = time.monotonic() + WAIT
        while not holder and time.monotonic() < deadline:
            time.sleep(0.005)
        ref = weakref.ref(holder[0])
        holder.pop()                         # last reference, dropped in main
        assert log == [], "nothing of the greenlet may run in the wrong thread"
        dropped.set()
        assert done.wait(WAIT)
    finally:
        dropped.set()
        t.join(WAIT)
    # Killed in the owner thread, no later than its next greenlet calls.
    assert log[-1] == "owner continues", log
    assert [x for x in log if x != "owner wakes"] == [
        ("GreenletExit", True), ("finally", True), "owner continues"], log
    gc.collect()
    assert ref() is None


def test_many_cross_thread_drops():
    """Owner threads park greenlets; main drops them all; owners kill them."""
    n_threads, per_thread = 8, 50
    ran = []
    handoff = {}
    go = threading.Event()

    def owner(index):
        tmain = getcurrent()
        gs = []
        for k in range(per_thread):
            def body(k=k):
                try:
                    tmain.switch()
                finally:
                    ran.append((index, threading.get_ident()))
            g = Greenlet(body)
            g.switch()
            gs.append(g)
        handoff[index] = (threading.get_ident(), gs)
        del gs, g
        assert go.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while sum(1 for i, _ in ran if i == index) < per_thread:
            getcurrent()
            time.sleep(0.001)
            assert time.monotonic() < deadline, "queued kills never ran"

    threads = [threading.Thread(target=owner, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + WAIT
    while len(handoff) < n_threads and time.monotonic() < deadline:
        time.sleep(0.005)
    idents = {i: ident for i, (ident, _) in handoff.items()}
    handoff.clear()                          # drops every greenlet here, in main
    go.set()
    for t in threads:
        t.join(WAIT)
    assert len(ran) == n_threads * per_thread
    assert all(ident == idents[i] for i, ident in ran)


def test_greenlet_created_in_thread_started_elsewhere_is_error():
    box = []
    t = threading.Thread(target=lambda: box.append(getcurrent()))
    t.start()
    t.join(WAIT)
    # Its parent is the other thread's (now gone) main greenlet.
    child = Greenlet(lambda: 1, parent=box[0])
    with pytest.raises(greenlet.error):
        child.switch()


def test_switch_interval_preemption_does_not_confuse_switching():
    """Threads preempting each other mid-switch-loop keep their own currents."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        def body(index):
            tmain = getcurrent()
            gs = [Greenlet(lambda k=k: _echo(tmain, k)) for k in range(4)]
            values = [g.switch(k) for k, g in enumerate(gs)]
            for i in range(3000):
                k = i % 4
                assert getcurrent() is tmain
                values[k] = gs[k].switch(values[k] + 1)
            assert values == [k + 750 for k in range(4)]
            for g in gs:
                g.throw()
        _run_threads(body, 6)
    finally:
        sys.setswitchinterval(old)
