"""eventlet against real servers on 127.0.0.1, each in its own child process."""
import re

import pytest

from cgl_support import explain, run_script

pytest.importorskip("eventlet")

# eventlet's green DNS pulls in dnspython (over a second of imports); these
# tests resolve nothing but 127.0.0.1.
NO_GREENDNS = {"EVENTLET_NO_GREENDNS": "yes"}


def _check(proc, checks):
    assert proc.returncode == 0, explain(proc)
    assert "IDENTITY-OK eventlet" in proc.stdout, explain(proc)
    for check in checks:
        assert re.search(r"^OK %s\b" % re.escape(check), proc.stdout, re.M), explain(proc)
    assert proc.stdout.rstrip().endswith("ALL-OK"), explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)


def test_green_socket_servers_greenpool_timeout():
    proc = run_script("eventlet_server.py", timeout=40, env=NO_GREENDNS)
    _check(proc, ["echo-server", "wsgi-server", "timeout", "greenthreads"])


def test_monkey_patch_socket_threading_time():
    proc = run_script("eventlet_patched.py", timeout=40, env=NO_GREENDNS)
    _check(proc, ["patched", "threads-time", "socket"])
