"""Differential testing against Debian's stock greenlet 2.0.2
(python/difftest/difftest.py): a fixed-seed batch of random greenlet
programs must give the same observable trace under both; and the one case
where stock greenlet is wrong, pinned here."""
import os
import subprocess
import sys

import pytest

from greenlet import greenlet as Greenlet, GreenletExit

from cgl_support import is_cgreenlet

HERE = os.path.dirname(os.path.abspath(__file__))
DIFFTEST = os.path.join(os.path.dirname(HERE), "difftest", "difftest.py")
STOCK_DIR = "/usr/lib/python3/dist-packages/greenlet"
DEBIAN_PYTHON = "/usr/bin/python3"


def _debian_python():
    return (os.path.realpath(sys.executable) == os.path.realpath(DEBIAN_PYTHON))


@pytest.mark.skipif(not is_cgreenlet(), reason="compares cgreenlet with stock")
@pytest.mark.skipif(not os.path.isdir(STOCK_DIR) or not _debian_python(),
                    reason="needs Debian's python3 and python3-greenlet "
                    "(the module under test built for that interpreter)")
def test_random_programs_match_stock(tmp_path):
    import greenlet
    build_dir = os.path.dirname(os.path.dirname(os.path.abspath(greenlet.__file__)))
    count = os.environ.get("CGREENLET_DIFFTEST_COUNT", "2000")
    p = subprocess.run([DEBIAN_PYTHON, DIFFTEST, "batch", "--seed", "1",
                        "--count", count, "--build-dir", build_dir,
                        "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    sys.stdout.write(p.stdout)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "0 diverging" in p.stdout
    n = int(p.stdout.split("difftest: ")[1].split()[0])
    assert n == int(count)


REGRESSIONS = os.path.join(os.path.dirname(HERE), "difftest", "regressions")


@pytest.mark.skipif(not is_cgreenlet(), reason="compares cgreenlet with stock")
@pytest.mark.skipif(not os.path.isdir(STOCK_DIR) or not _debian_python(),
                    reason="needs Debian's python3 and python3-greenlet")
@pytest.mark.parametrize("name", sorted(
    f for f in os.listdir(REGRESSIONS) if f.endswith(".json")))
def test_fixed_divergence_stays_fixed(name):
    import greenlet
    build_dir = os.path.dirname(os.path.dirname(os.path.abspath(greenlet.__file__)))
    p = subprocess.run([DEBIAN_PYTHON, DIFFTEST, "replay", "--build-dir", build_dir,
                        os.path.join(REGRESSIONS, name)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "same trace" in p.stdout, p.stdout + p.stderr


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
