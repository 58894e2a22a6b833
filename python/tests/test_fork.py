"""os.fork() from inside a non-main greenlet.

The child process continues inside the forking greenlet with the whole
greenlet tree copied: it can switch to other suspended greenlets and to the
main greenlet, and it exits with a status the parent checks.  The parent
continues unaffected.  The child always leaves through os._exit, so nothing
of pytest ever runs twice.
"""
import os
import select
import time

import pytest

from greenlet import greenlet as Greenlet, getcurrent

from cgl_support import HERE, explain, run_code

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _wait(pid, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("forked child did not exit in %s s" % timeout)
        time.sleep(0.01)


def _read_all(fd, timeout=20):
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
    os.close(fd)
    return b"".join(chunks).decode()


def test_fork_inside_greenlet():
    main = getcurrent()
    my_pid = os.getpid()
    read_fd, write_fd = os.pipe()

    def helper():
        # A suspended greenlet both processes own a copy of.
        total = 0
        while True:
            total += main.switch(total)

    def sibling(x):
        # Switched to from the forking greenlet in the child, not from main.
        while True:
            x = forker.switch(("sibling saw", x))

    def forker_run():
        pid = os.fork()
        if pid == 0:
            # ---- child, still inside this greenlet ----
            status = 1
            try:
                assert getcurrent() is forker
                assert sib.switch(41) == ("sibling saw", 41)
                assert sib.switch(42) == ("sibling saw", 42)
                got = main.switch(("child in main?", os.getpid()))
                # main switched back to us with its verdict
                assert got == "main ok", got
                depth_result = Greenlet(lambda: sorted([3, 1, 2], key=lambda v: -v)).switch()
                assert depth_result == [3, 2, 1]
                os.write(write_fd, b"child greenlet ok\n")
                status = 7
            except BaseException as exc:  # noqa: B902 - report and leave
                try:
                    os.write(write_fd, ("child failed: %r\n" % (exc,)).encode())
                except OSError:
                    pass
            finally:
                os._exit(status)
        # ---- parent, inside this greenlet ----
        return ("parent", pid)

    helper_g = Greenlet(helper)
    assert helper_g.switch() == 0
    sib = Greenlet(sibling)
    forker = Greenlet(forker_run)
    sib.parent = forker
    try:
        result = forker.switch()
    except BaseException:
        if os.getpid() != my_pid:
            os._exit(2)
        raise
    if os.getpid() != my_pid:
        # ---- child, now in the main greenlet (switched here by forker) ----
        try:
            assert result[0] == "child in main?" and result[1] == os.getpid()
            assert helper_g.switch(5) == 5   # the copied helper, from main
            forker.switch("main ok")         # forker finishes by os._exit
        finally:
            os._exit(3)                   # reached only if forker returned here
    # ---- parent ----
    os.close(write_fd)
    assert result[0] == "parent"
    child_pid = result[1]
    output = _read_all(read_fd)
    status = _wait(child_pid)
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 7, (os.WEXITSTATUS(status), output)
    assert output == "child greenlet ok\n"
    # The parent's greenlets are untouched.
    assert forker.dead and getcurrent() is main
    assert sib.switch(1) == ("sibling saw", 1)   # sib's parent forker is dead -> main
    assert helper_g.switch(10) == 10
    assert helper_g.switch(5) == 15


def test_fork_from_deep_greenlet_in_subprocess():
    """Same idea in a fresh interpreter, forking from 100 C frames deep."""
    code = r'''
import os, sys
sys.path.insert(0, os.environ["CGL_TESTS"])
import cgl_support
cgl_support.check_identity_or_exit()
from greenlet import greenlet, getcurrent
main = getcurrent()

def deep(n):
    if n == 0:
        pid = os.fork()
        back = main.switch(pid)
        return ("deep", pid, back)
    box = []
    sorted([0], key=lambda x: box.append(deep(n - 1)))
    return box[0]

g = greenlet(deep)
pid = g.switch(100)
if pid == 0:
    out = g.switch("child-main")
    ok = out == ("deep", 0, "child-main") and g.dead
    os._exit(11 if ok else 12)
out = g.switch("parent-main")
assert out == ("deep", pid, "parent-main"), out
_, status = os.waitpid(pid, 0)
print("child exit", os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1)
print("parent done", g.dead)
'''
    proc = run_code(code, timeout=30, env={"CGL_TESTS": HERE})
    assert proc.returncode == 0, explain(proc)
    assert "child exit 11" in proc.stdout, explain(proc)
    assert "parent done True" in proc.stdout, explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)
