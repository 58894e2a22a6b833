"""eventlet 0.41 from PyPI on this greenlet module (the `pypi` stage's venvs).

Each scenario runs in a child process that checks first that eventlet runs
on the same greenlet module as this session (IDENTITY-OK lines); servers
listen on 127.0.0.1 only; monkey_patch() happens in a child only.  Nothing
is timed: the waits are bounded against hangs, generously.  Outside the
venvs of scripts/pypi-env.sh (Debian's eventlet 0.33, or none) these tests
skip.
"""
import warnings

import pytest

from cgl_support import check_child, run_script
from pypi_support import assert_ours, require

with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # eventlet's deprecation notice
    eventlet = require("eventlet", "0.41")

HANG = 120  # seconds: bounds a hang, judges no speed


@pytest.fixture(autouse=True)
def _pypi_greenlet_is_ours():
    assert_ours()
    yield


def _check(proc, checks):
    check_child(proc, "eventlet " + eventlet.__version__, checks)


def test_eventlet_is_from_pypi_and_built_on_this_module():
    import greenlet
    import eventlet.greenthread
    from eventlet.support import greenlets
    assert eventlet.__version__.startswith("0.41."), eventlet.__version__
    assert greenlets.greenlet is greenlet.greenlet
    assert greenlet.greenlet in eventlet.greenthread.GreenThread.__mro__
    assert eventlet.spawn(lambda a, b: a * b, 6, 7).wait() == 42


def test_green_socket_servers_greenpool_timeouts_kills():
    proc = run_script("pypi_eventlet.py", "serve", timeout=HANG * 2)
    _check(proc, ["echo-server", "wsgi-server", "greenpool", "timeout", "kill", "sync-tpool"])


def test_monkey_patch():
    proc = run_script("pypi_eventlet.py", "patched", timeout=HANG * 2)
    _check(proc, ["patched", "threads-time", "socket", "queue", "timeout"])
