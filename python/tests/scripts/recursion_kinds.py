"""Unbounded recursion of one kind inside greenlets; run as a child process.

usage: recursion_kinds.py KIND [START_DEPTH]

KIND is one of: python, map, sorted, getattr, init, repr_objects,
repr_lists, mixed.  START_DEPTH makes the main greenlet recurse that many
Python frames before it starts the greenlets.  Prints one "OK ..." line per
check and "ALL-OK KIND" at the end; any failure exits non-zero (a crash
shows as a negative return code in the parent).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cgl_support  # noqa: E402

cgl_support.check_identity_or_exit()

from greenlet import greenlet as Greenlet, getcurrent  # noqa: E402


def rec_python(n=0):
    return rec_python(n + 1) + 1


def rec_map(n=0):
    return list(map(rec_map, [n + 1]))


def rec_sorted(n=0):
    return sorted([n + 1], key=rec_sorted)


class Attr:
    def __getattr__(self, name):
        return getattr(self, name + "x"[: len(name) < 50])


def rec_getattr():
    return Attr().start


class Init:
    def __init__(self, n=0):
        self.child = Init(n + 1)


def rec_init():
    return Init()


class Node:
    def __init__(self, inner):
        self.inner = inner

    def __repr__(self):
        return "Node(%r)" % (self.inner,)


def rec_repr_objects():
    top = None
    for _ in range(10_000):
        top = Node(top)
    return repr(top)


def rec_repr_lists():
    top = []
    for _ in range(10_000):
        top = [top]
    return repr(top)


def _nested_lists(depth=200_000):
    top = []
    for _ in range(depth):
        top = [top]
    return top


def rec_json():
    import json
    return json.dumps(_nested_lists())   # the C encoder recurses


def rec_pickle():
    import pickle
    return pickle.dumps(_nested_lists())  # the C pickler recurses


def rec_mixed(n=0):
    step = n % 3
    if step == 0:
        return list(map(rec_mixed, [n + 1]))
    if step == 1:
        return sorted([n + 1], key=rec_mixed)
    return getattr(Attr2(n + 1), "x")


class Attr2:
    def __init__(self, n):
        self.n = n

    def __getattr__(self, name):
        return rec_mixed(self.n)


KINDS = {
    "python": rec_python, "map": rec_map, "sorted": rec_sorted,
    "getattr": rec_getattr, "init": rec_init, "repr_objects": rec_repr_objects,
    "repr_lists": rec_repr_lists, "json": rec_json, "pickle": rec_pickle,
    "mixed": rec_mixed,
}


def deep_then(n, fn):
    if n == 0:
        return fn()
    return deep_then(n - 1, fn)


def main(kind, start_depth):
    recurse = KINDS[kind]
    main_g = getcurrent()

    # 1. Caught inside the greenlet, which then keeps switching.
    def catcher():
        caught = 0
        for attempt in range(3):
            try:
                recurse()
            except RecursionError:
                caught += 1
            value = main_g.switch(("caught", attempt))
            assert value == attempt * 10, value
        return ("catcher done", caught)

    g = Greenlet(catcher)
    assert g.switch() == ("caught", 0)
    for attempt in (1, 2):
        assert g.switch((attempt - 1) * 10) == ("caught", attempt)
    assert g.switch(20) == ("catcher done", 3)
    assert g.dead
    print("OK caught-inside-and-switched", kind, flush=True)

    # 2. Not caught: propagates out of run() into the parent.
    g = Greenlet(recurse)
    try:
        g.switch()
    except RecursionError:
        pass
    else:
        raise AssertionError("no RecursionError reached the parent")
    assert g.dead
    print("OK propagated-to-parent", kind, flush=True)

    # 3. Nested greenlets: the innermost recursion propagates through two
    #    parents that are themselves suspended mid-switch.
    def middle():
        inner = Greenlet(recurse)
        try:
            inner.switch()
        except RecursionError:
            return "middle caught"
        return "middle missed"

    outer = Greenlet(lambda: Greenlet(middle).switch())
    assert outer.switch() == "middle caught"
    print("OK nested-parents", kind, flush=True)

    # 4. Interleaved with another suspended greenlet that must be intact.
    def witness():
        total = 0
        while True:
            got = main_g.switch(total)
            if got is None:
                return total
            total += got

    w = Greenlet(witness)
    w.switch()
    for i in range(5):
        w.switch(i)
        try:
            Greenlet(recurse).switch()
        except RecursionError:
            pass
    assert w.switch(None) == 10
    print("OK witness-intact", kind, flush=True)


if __name__ == "__main__":
    kind = sys.argv[1]
    start = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    deep_then(start, lambda: main(kind, start))
    print("ALL-OK", kind, flush=True)
