"""Differential testing against stock greenlet (python/difftest/difftest.py):
Debian's 2.0.2 and PyPI's 3.5.6 (a venv under build/, made by difftest.py
from the PyPI cache).  A fixed-seed batch of random greenlet programs must
give the same observable trace under each and under this module; the shrunk
reproducers of fixed divergences (python/difftest/regressions) must replay
the same against the references each names; and the one case where stock
greenlet is wrong, pinned here."""
import json
import os
import subprocess
import sys
import time

import pytest

from greenlet import greenlet as Greenlet, GreenletExit

from cgl_support import is_cgreenlet

HERE = os.path.dirname(os.path.abspath(__file__))
DIFFTEST = os.path.join(os.path.dirname(HERE), "difftest", "difftest.py")
STOCK_DIR = "/usr/lib/python3/dist-packages/greenlet"
DEBIAN_PYTHON = "/usr/bin/python3"


def _debian_python():
    return (os.path.realpath(sys.executable) == os.path.realpath(DEBIAN_PYTHON))


needs_debian = pytest.mark.skipif(
    not os.path.isdir(STOCK_DIR) or not _debian_python(),
    reason="needs Debian's python3 and python3-greenlet "
    "(the module under test built for that interpreter)")


def _build_dir():
    import greenlet
    return os.path.dirname(os.path.dirname(os.path.abspath(greenlet.__file__)))


@pytest.mark.skipif(not is_cgreenlet(), reason="compares cgreenlet with stock")
@needs_debian
@pytest.mark.parametrize("ref", ["2.0.2", "3.5.6"])
def test_random_programs_match_stock(tmp_path, ref):
    count = os.environ.get("CGREENLET_DIFFTEST_COUNT", "2000")
    p = subprocess.run([DEBIAN_PYTHON, DIFFTEST, "batch", "--seed", "1", "--ref", ref,
                        "--count", count, "--build-dir", _build_dir(),
                        "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    sys.stdout.write(p.stdout)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    line = [x for x in p.stdout.splitlines() if x.startswith("difftest: ")]
    assert len(line) == 1 and ("against stock %s: 0 diverging" % ref) in line[0], p.stdout
    assert int(line[0].split()[1]) == int(count)


REGRESSIONS = os.path.join(os.path.dirname(HERE), "difftest", "regressions")
REGRESSION_FILES = sorted(f for f in os.listdir(REGRESSIONS) if f.endswith(".json"))


@pytest.mark.skipif(not is_cgreenlet(), reason="compares cgreenlet with stock")
@needs_debian
@pytest.mark.parametrize("name", REGRESSION_FILES)
def test_fixed_divergence_stays_fixed(name):
    path = os.path.join(REGRESSIONS, name)
    with open(path) as f:
        refs = json.load(f)["refs"]
    p = subprocess.run([DEBIAN_PYTHON, DIFFTEST, "replay", "--build-dir", _build_dir(),
                        path],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    for r in refs:
        assert "%s: same trace" % r in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("name", REGRESSION_FILES)
def test_regression_file_is_complete(name):
    """Each reproducer names the references it is replayed against (every
    one, unless stock 2.0.2 and 3.x differ there: then 3.x's) and says what
    was wrong."""
    with open(os.path.join(REGRESSIONS, name)) as f:
        d = json.load(f)
    assert d["steps"] and d["refs"] and "3.5.6" in d["refs"], name
    assert set(d["refs"]) <= {"2.0.2", "3.5.6"}
    assert len(d.get("note", "")) > 20, name


def test_greenletexit_result_starts_parent_with_it():
    """A greenlet that ends by GreenletExit hands the exception object on as
    its result; an unstarted parent starts with run(exc).  (Stock 2.0.2
    passes the exception object where the argument tuple belongs, and run
    gets no arguments; see difftest.stock_bug_at.)"""
    seen = []

    def parent_run(*args, **kwargs):
        seen.append((args, kwargs))
        return "done"

    def child_run():
        raise GreenletExit("r")

    parent = Greenlet(parent_run)
    child = Greenlet(child_run, parent=parent)
    assert child.switch() == "done"
    assert len(seen) == 1
    args, kwargs = seen[0]
    assert kwargs == {}
    assert len(args) == 1 and type(args[0]) is GreenletExit
    assert args[0].args == ("r",)
    assert child.dead and parent.dead


def greenlet_module():
    import greenlet
    return greenlet


def _orphan():
    """A greenlet suspended in a thread that has exited."""
    import threading
    from greenlet import getcurrent
    box = {}

    def body():
        g = Greenlet(lambda: getcurrent().parent.switch())
        g.switch()
        box["g"] = g
        box["main"] = getcurrent()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    # Stock greenlet notes the thread's exit in a pending call, a moment
    # after the join (this module at once).
    deadline = time.time() + 5
    while not box["main"].dead and time.time() < deadline:
        time.sleep(0.001)
    return box["g"]


@pytest.mark.parametrize("look", ["dead", "repr"])
def test_orphan_seen_dead_takes_run_and_parent(look):
    """Stock greenlet (2.0.2 and 3.5.6), once asked whether a greenlet left
    suspended by its thread's exit is dead (or for its repr), drops its
    stack state: setting run or parent (to a greenlet of this thread) is
    then accepted, and it stays dead and unswitchable.
    (python/difftest/regressions/orphan-seen-dead-*.json)"""
    from greenlet import getcurrent, error
    g = _orphan()
    # Not yet seen dead: still a started greenlet of another thread.
    with pytest.raises(AttributeError, match="after the start"):
        g.run = lambda: None
    with pytest.raises(ValueError, match="different thread"):
        g.parent = getcurrent()
    assert g
    if look == "dead":
        assert g.dead
    else:
        assert "dead" in repr(g)

    def new_run():
        return "ran"

    g.run = new_run
    assert g.run is new_run
    assert g.dead and not g
    with pytest.raises(error, match="exited"):
        g.switch()
    g.parent = getcurrent()
    assert g.parent is getcurrent()
    assert g.dead and not g
    # (Switching to it now crashes stock greenlet, 2.0.2 and 3.5.6: it
    # starts it anew on this thread; here it stays refused.)
    if hasattr(greenlet_module()._greenlet, "_cgreenlet_version"):
        with pytest.raises(error, match="exited"):
            g.switch()


def test_orphan_not_seen_dead_keeps_refusing():
    """bool(), gr_frame and parent do not make it forget its start; until
    then it is true, as in stock greenlet."""
    from greenlet import getcurrent
    g = _orphan()
    assert g
    g.gr_frame
    g.parent
    assert g
    with pytest.raises(AttributeError, match="after the start"):
        g.run = lambda: None
    with pytest.raises(ValueError, match="different thread"):
        g.parent = getcurrent()
