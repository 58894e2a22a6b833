"""RecursionError inside greenlets, through Python and through C.

Pure-Python recursion is checked in-process.  Recursion through C functions
(map, sorted's key, __getattr__, __init__, __repr__ of nested objects and
lists) can crash the interpreter if a greenlet's C stack is too small for
the recursion limit, so those run in a child process
(scripts/recursion_kinds.py) whose return code and output are checked.
"""
import sys

import pytest

from greenlet import greenlet as Greenlet, getcurrent

from cgl_support import explain, run_script


def _recurse(n=0):
    return _recurse(n + 1) + 1


def test_python_recursion_caught_inside_then_switching_continues():
    main = getcurrent()

    def run():
        results = []
        for i in range(3):
            try:
                _recurse()
            except RecursionError as exc:
                results.append(type(exc).__name__)
            results.append(main.switch(i))
        return results

    g = Greenlet(run)
    assert g.switch() == 0
    assert g.switch("a") == 1
    assert g.switch("b") == 2
    assert g.switch("c") == ["RecursionError", "a", "RecursionError", "b",
                             "RecursionError", "c"]


def test_python_recursion_propagates_to_parent():
    g = Greenlet(_recurse)
    with pytest.raises(RecursionError):
        g.switch()
    assert g.dead
    # The parent (main) is fine afterwards and can still recurse normally.
    assert Greenlet(lambda: sum(range(10))).switch() == 45


def test_recursion_limit_applies_per_greenlet_and_is_restored():
    main = getcurrent()
    limit = sys.getrecursionlimit()

    def depth_reached():
        count = [0]

        def down():
            count[0] += 1
            down()
        try:
            down()
        except RecursionError:
            pass
        return count[0]

    def run():
        first = depth_reached()
        main.switch(first)
        return depth_reached()

    g = Greenlet(run)
    first = g.switch()
    assert 0 < first <= limit
    here = depth_reached()
    assert 0 < here <= limit
    second = g.switch()
    assert abs(second - first) <= 5, (first, second)
    assert sys.getrecursionlimit() == limit


KINDS = ["python", "map", "sorted", "getattr", "init", "repr_objects",
         "repr_lists", "json", "pickle", "mixed"]


@pytest.mark.parametrize("start_depth", [0, 700])
@pytest.mark.parametrize("kind", KINDS)
def test_unbounded_recursion_in_child(kind, start_depth):
    proc = run_script("recursion_kinds.py", kind, str(start_depth), timeout=40)
    assert proc.returncode == 0, explain(proc)
    out = proc.stdout
    assert "IDENTITY-OK" in out, explain(proc)
    for check in ("caught-inside-and-switched", "propagated-to-parent",
                  "nested-parents", "witness-intact"):
        assert "OK %s %s" % (check, kind) in out, explain(proc)
    assert "ALL-OK %s" % kind in out, explain(proc)
    assert "Fatal Python error" not in proc.stderr, explain(proc)
