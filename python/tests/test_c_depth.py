"""Switching while 100+ C-level frames are live on the greenlet's stack.

Each nesting level below goes through a C function that calls back into
Python (sorted's key function, map's function, a __getattr__ hook, ...), so
the interpreter re-enters its C eval loop at every level.  At the bottom the
greenlet switches away many times; the C state of every level (sorted's key
array, map's iterator, locals) must survive those switches, and the whole
tower must unwind normally, by exception, and by GreenletExit.
"""
import functools
import gc
import sys

import pytest

from greenlet import greenlet as Greenlet, getcurrent, GreenletExit


def nest_sorted(depth, bottom, trail):
    if depth == 0:
        return bottom()
    box = []
    marker = [depth] * 3

    def key(x):
        if x == 1:
            box.append(nest_sorted(depth - 1, bottom, trail))
        return -x
    try:
        # sorted keeps the keys of [2, 1, 3] in C while the nested call runs.
        assert sorted([2, 1, 3], key=key) == [3, 2, 1]
        assert marker == [depth] * 3
        return box[0] + 1
    finally:
        trail.append(depth)


def nest_map(depth, bottom, trail):
    if depth == 0:
        return bottom()
    try:
        # list() drives map's C iterator; only the first item goes deeper.
        out = list(map(lambda x: nest_map(depth - 1, bottom, trail) + x if x else -1,
                       [1, 0]))
        assert out[1] == -1
        return out[0]
    finally:
        trail.append(depth)


class _Tower:
    def __init__(self, depth, bottom, trail):
        self.depth, self.bottom, self.trail = depth, bottom, trail

    def __getattr__(self, name):
        if self.depth == 0:
            return self.bottom()
        try:
            return getattr(_Tower(self.depth - 1, self.bottom, self.trail), name) + 1
        finally:
            self.trail.append(self.depth)


def tower(kind, depth, bottom, trail):
    if kind == "sorted":
        return nest_sorted(depth, bottom, trail)
    if kind == "map":
        return nest_map(depth, bottom, trail)
    if kind == "getattr":
        return getattr(_Tower(depth, bottom, trail), "x")
    if kind == "mixed":
        return _mixed(depth, bottom, trail)
    raise AssertionError(kind)


def _mixed(depth, bottom, trail):
    """Rotates through sorted, map, __getattr__ and functools.reduce; +1 per level."""
    if depth == 0:
        return bottom()
    kind = depth % 4
    try:
        if kind == 0:
            box = []

            def key(x):
                box.append(_mixed(depth - 1, bottom, trail))
                return x
            sorted([0], key=key)
            return box[0] + 1
        if kind == 1:
            return next(map(lambda x: _mixed(depth - 1, bottom, trail) + x, [1]))
        if kind == 2:
            class Hook:
                def __getattr__(self, name):
                    return _mixed(depth - 1, bottom, trail) + 1
            return Hook().anything
        return functools.reduce(lambda a, b: a + _mixed(depth - 1, bottom, trail) + b,
                                [0], 1)
    finally:
        trail.append(depth)


KINDS = ["sorted", "map", "getattr", "mixed"]


def _bottom_loop(rounds):
    """At the bottom: switch to the parent `rounds` times, summing what comes back."""
    def bottom():
        parent = getcurrent().parent
        total = 0
        for i in range(rounds):
            total += parent.switch(("at bottom", i))
        return total
    return bottom


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("depth", [120, 300])
def test_switch_at_depth_many_times(kind, depth):
    if kind == "sorted" and depth == 300 and sys.version_info < (3, 11):
        pytest.skip("CPython < 3.11 spends 4 recursion levels per sorted level "
                    "(the frame, sorted, list.sort, the key): 300 levels pass "
                    "the default limit of 1000 even without greenlets "
                    "(test_interp_state.py nests them under a raised limit)")
    rounds = 200
    trail = []
    g = Greenlet(lambda: tower(kind, depth, _bottom_loop(rounds), trail))
    assert g.switch() == ("at bottom", 0)
    assert g._stack_saved > 0
    for i in range(1, rounds):
        assert g.switch(i) == ("at bottom", i)
        assert trail == []
    result = g.switch(rounds)
    assert result == sum(range(1, rounds + 1)) + depth
    assert trail == list(range(1, depth + 1))
    assert g.dead


@pytest.mark.parametrize("kind", KINDS)
def test_two_deep_greenlets_switch_directly(kind):
    """Two greenlets, each 150 C levels deep, hand a counter back and forth."""
    depth, rounds = 150, 300
    main = getcurrent()
    peers = {}
    trails = {"a": [], "b": []}

    def bottom_for(name, other):
        def bottom():
            count = 0
            value = main.switch(name + " ready")
            while value < rounds:
                count += 1
                value = peers[other].switch(value + 1)
            peers[other].switch(value)   # let the peer see the end too
            return count
        return bottom

    peers["a"] = Greenlet(lambda: tower(kind, depth, bottom_for("a", "b"), trails["a"]))
    peers["b"] = Greenlet(lambda: tower(kind, depth, bottom_for("b", "a"), trails["b"]))
    assert peers["a"].switch() == "a ready"
    assert peers["b"].switch() == "b ready"
    # a gets 0 and sends 1 to b, b sends 2 to a, ... until one sees `rounds`;
    # it wakes the other with the final value and finishes; the other then
    # finishes too, and its result arrives here.
    results = [peers["a"].switch(0)]
    for name in "ab":
        if not peers[name].dead:
            results.append(peers[name].switch())
    assert all(p.dead for p in peers.values())
    assert sum(r - depth for r in results) == rounds
    assert trails["a"] == trails["b"] == list(range(1, depth + 1))


@pytest.mark.parametrize("kind", KINDS)
def test_throw_unwinds_deep_tower(kind):
    depth = 200
    trail = []

    def run():
        try:
            tower(kind, depth, _bottom_loop(10 ** 9), trail)
        except ZeroDivisionError as exc:
            return ("caught at top", str(exc), len(trail))

    g = Greenlet(run)
    g.switch()
    for _ in range(50):
        g.switch(0)
    assert g.throw(ZeroDivisionError("deep")) == ("caught at top", "deep", depth)
    assert g.dead


@pytest.mark.parametrize("kind", KINDS)
def test_kill_deep_tower_by_dropping_reference(kind):
    depth = 200
    trail = []
    exits = []

    def run():
        try:
            tower(kind, depth, _bottom_loop(10 ** 9), trail)
        except GreenletExit:
            exits.append(len(trail))
            raise

    g = Greenlet(run)
    g.switch()
    for _ in range(20):
        g.switch(0)
    del g
    gc.collect()
    assert exits == [depth]
    assert trail == list(range(1, depth + 1))


def test_many_deep_greenlets_interleaved():
    """30 greenlets parked at depth 100 (sorted), resumed round-robin."""
    depth, count, rounds = 100, 30, 20
    trails = [[] for _ in range(count)]
    gs = [Greenlet(lambda t=t: nest_sorted(depth, _bottom_loop(rounds), t)) for t in trails]
    for g in gs:
        assert g.switch() == ("at bottom", 0)
    for i in range(1, rounds):
        for g in gs:
            assert g.switch(i) == ("at bottom", i)
    for g in gs:
        assert g.switch(rounds) == sum(range(1, rounds + 1)) + depth
    assert all(t == list(range(1, depth + 1)) for t in trails)
