"""greenlet.introspect: this thread's greenlets, the core's counters, and
each greenlet's stack figures (cgreenlet only: new names)."""
import threading

import pytest

from greenlet import greenlet as Greenlet, getcurrent

from cgl_support import is_cgreenlet

pytestmark = pytest.mark.skipif(not is_cgreenlet(), reason="cgreenlet's own API")


def _park_deep_in_c(n):
    # Each level is a C call of the interpreter (sorted calling its key).
    if n == 0:
        getcurrent().parent.switch("parked")
        return [0]
    return sorted([1], key=lambda x: _park_deep_in_c(n - 1))


def test_greenlets_lists_this_threads_greenlets_oldest_first():
    from greenlet import introspect
    before = introspect.greenlets()
    assert before[0] is getcurrent() or getcurrent() in before
    a = Greenlet(lambda: getcurrent().parent.switch())
    b = Greenlet(lambda: None)
    a.switch()
    b.switch()                       # b is dead, still referenced
    now = introspect.greenlets()
    assert now[-2:] == [a, b]
    assert set(now) - set(before) == {a, b}
    seen_in_thread = []
    t = threading.Thread(target=lambda: seen_in_thread.extend(introspect.greenlets()))
    t.start()
    t.join()
    assert a not in seen_in_thread and len(seen_in_thread) == 1  # its main
    del a, b, now
    assert len(introspect.greenlets()) == len(before)


def test_stats_count_creations_switches_and_stacks():
    from greenlet import introspect
    s0 = introspect.stats()
    gs = [Greenlet(lambda: getcurrent().parent.switch()) for _ in range(10)]
    for g in gs:
        g.switch()
    s1 = introspect.stats()
    assert s1["created"] - s0["created"] == 10
    assert s1["switches"] - s0["switches"] == 20      # into each and back
    assert s1["live"] - s0["live"] == 10
    # Every Python greenlet runs on a shared stack; below the thread's limit
    # (128) each parked one has one to itself, taken from the free ones the
    # thread keeps (up to 8) or newly mapped.
    assert s1["stacks"] >= 10 and s1["stacks"] - s0["stacks"] <= 10
    assert s1["stack_reserved"] >= 10 * 256 * 1024
    assert s1["stack_in_use"] > s0["stack_in_use"]
    p = introspect.stats("process")
    assert p["threads"] >= 1 and p["created"] >= s1["created"]
    del gs, g
    s2 = introspect.stats()
    # The freed ones' stacks: up to 8 kept free, one more until the core's
    # next call (the last greenlet killed gives it back then).
    assert s2["live"] == s0["live"]
    assert s2["stacks"] <= max(s0["stacks"], 8) + 1
    with pytest.raises(ValueError):
        introspect.stats("nonsense")


def test_stack_figures_of_a_deep_greenlet():
    from greenlet import introspect
    shallow = Greenlet(lambda: getcurrent().parent.switch())
    shallow.switch()
    deep = Greenlet(_park_deep_in_c)
    assert deep.switch(100) == "parked"
    s, d = introspect.stack(shallow), introspect.stack(deep)
    assert s["size"] == d["size"] > 0
    # 100 C-level calls take well over 100 KiB of C stack.
    assert d["in_use"] > 100 * 1024 > s["in_use"] > 0
    assert d["high_water"] >= d["in_use"]
    assert s["high_water"] >= s["in_use"]
    # No stack: the main greenlet, an unstarted and a dead greenlet.
    dead = Greenlet(lambda: None)
    dead.switch()
    for g in (getcurrent(), Greenlet(lambda: None), dead):
        assert introspect.stack(g) == dict(size=0, in_use=0, high_water=0,
                                           reserve=introspect.stack(g)["reserve"])
        assert introspect.stack(g)["size"] == 0
    with pytest.raises(TypeError):
        introspect.stack(object())
    deep.throw()
    shallow.throw()


def test_records_of_greenlets_freed_on_another_thread_go_back():
    # Greenlets of a worker thread that finish there and are dropped on the
    # main thread while the worker lives: the core refuses a cross-thread
    # free, so each record waits for the worker's next greenlet call.
    # 'records' counts the worker's records before, while they wait, and
    # after that call: back to where it started (it leaked before).
    from greenlet import introspect
    handoff, counts = [], {}
    go_drop, dropped, done = threading.Event(), threading.Event(), threading.Event()

    def worker():
        Greenlet(lambda: None).switch()        # set the thread up
        counts["before"] = introspect.stats()["records"]
        gs = [Greenlet(lambda: None) for _ in range(200)]
        for g in gs:
            g.switch()                         # each one finishes
        handoff.extend(gs)
        del gs, g
        counts["held"] = introspect.stats()["records"]
        go_drop.set()
        dropped.wait(30)
        counts["waiting"] = introspect.stats()["records"]
        Greenlet(lambda: None).switch()        # a greenlet call
        counts["after"] = introspect.stats()["records"]
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    assert go_drop.wait(30)
    del handoff[:]                             # freed here, on the main thread
    dropped.set()
    t.join(30)
    assert done.is_set()
    assert counts["held"] - counts["before"] == 200, counts
    assert counts["waiting"] == counts["held"], counts
    assert counts["after"] == counts["before"], counts
