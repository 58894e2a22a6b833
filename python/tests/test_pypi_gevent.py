"""gevent 26 from PyPI on this greenlet module (the `pypi` stage's venvs).

Servers listen on 127.0.0.1 only, in child processes that check first that
gevent runs on the same greenlet module as this session (IDENTITY-OK
lines).  Monkey-patching happens in children only.  Nothing is timed: the
waits are bounded against hangs, generously.  Outside the venvs of
scripts/pypi-env.sh (Debian's gevent 22.10, or none) these tests skip.
"""
import http.client
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest

from cgl_support import ScriptServer, check_child, run_script
from pypi_support import assert_ours, require

gevent = require("gevent", "26.9")

HANG = 120  # seconds: bounds a hang, judges no speed


@pytest.fixture(autouse=True)
def _pypi_greenlet_is_ours():
    assert_ours()
    yield


def _identity_ok(out):
    return ("IDENTITY-OK gevent %s" % gevent.__version__) in out and "IDENTITY-FAIL" not in out


def test_gevent_is_from_pypi_and_built_on_this_module():
    import greenlet
    import gevent.hub
    import gevent._greenlet_primitives as prims
    assert gevent.__version__.startswith("26."), gevent.__version__
    assert os.path.realpath(gevent.__file__).startswith(
        os.path.realpath(sys.prefix) + os.sep), (gevent.__file__, sys.prefix)
    # gevent's compiled classes derive from this module's type, through the
    # 2.0.2-layout _C_API capsule they were compiled against
    assert gevent.hub.RawGreenlet is greenlet.greenlet
    assert greenlet.greenlet in gevent.Greenlet.__mro__
    assert greenlet.greenlet in prims.TrackedRawGreenlet.__mro__
    assert gevent.getcurrent() is greenlet.getcurrent()
    # a round trip without patching anything here
    g = gevent.spawn(lambda a, b: a + b, 2, 3)
    assert g.get(timeout=HANG) == 5
    assert isinstance(g, greenlet.greenlet) and g.dead


def _run_threads(target, n):
    errors = []

    def wrap(i):
        try:
            target(i)
        except BaseException as exc:  # reported by the caller
            errors.append((i, repr(exc)))
    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(HANG)
    assert not any(t.is_alive() for t in ts), "client threads hung"
    return errors


def test_pywsgi_under_concurrent_load():
    # pypi_gevent.py serve in a child
    server = ScriptServer("pypi_gevent.py", "serve", deadline=HANG * 2, timeout=HANG, grace=HANG)
    sent = 0
    try:
        server.wait_port()

        # 40 requests that the app answers only once all 40 are inside it:
        # the server must run them at the same time (a hang otherwise)
        answers = []
        errors = _run_threads(
            lambda i: answers.append(server.request("GET", "/barrier/40")), 40)
        assert errors == [] and answers == [(200, b"together 40")] * 40, (errors, answers)
        sent += 40

        # 16 client threads x 30 requests: keep-alive and not, GET and POST
        # bodies up to ~200 KB, each answer checked
        count = [0]
        lock = threading.Lock()

        def client(t):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=HANG)
            try:
                for k in range(30):
                    if k % 7 == 6:
                        conn.close()      # a new connection now and then
                    repeat = 1 + (t * 37 + k * 11) % 500
                    if k % 3 == 2:
                        payload = os.urandom(64) * (1 + (t * 13 + k) % 3000)
                        status, body = server.request("POST", "/echo", payload, conn)
                        assert (status, body) == (200, payload), (t, k, status, len(body))
                    else:
                        ident = "t%d-%d" % (t, k)
                        status, body = server.request(
                            "GET", "/hello/%s/%d" % (ident, repeat), conn=conn)
                        assert (status, body) == (200, ("hello %s;" % ident * repeat).encode())
                    with lock:
                        count[0] += 1
            finally:
                conn.close()
        errors = _run_threads(client, 16)
        assert errors == [], errors
        assert count[0] == 16 * 30
        sent += count[0]

        # wrk, when installed: 64 connections for 2 s, every answer a 200
        if shutil.which("wrk"):
            out = subprocess.run(
                ["wrk", "-t2", "-c64", "-d2s", "--timeout", "30s",
                 "http://127.0.0.1:%d/hello/wrk/16" % server.port],
                capture_output=True, text=True, timeout=HANG)
            assert out.returncode == 0, out.stderr
            assert "Socket errors" not in out.stdout, out.stdout
            assert "Non-2xx" not in out.stdout, out.stdout
            m = re.search(r"(\d+) requests in", out.stdout)
            assert m and int(m.group(1)) > 0, out.stdout
            sent += int(m.group(1))
        status, stats = server.request("GET", "/stats")
        assert status == 200
        sent += 1
    finally:
        rc, stdout, stderr = server.stop()
    assert rc == 0, (rc, stdout, stderr)
    assert _identity_ok(stdout), stdout
    assert stdout.rstrip().endswith("ALL-OK"), (stdout, stderr)
    served, most = map(int, re.search(r"SERVED (\d+) MAXINSIDE (\d+)", stdout).groups())
    assert served >= sent, (served, sent)
    assert most >= 40, most
    assert "Traceback" not in stderr, stderr


def _check(proc, checks):
    check_child(proc, "gevent " + gevent.__version__, checks)


def test_monkey_patch_all():
    proc = run_script("pypi_gevent.py", "patch_all", timeout=HANG * 2)
    _check(proc, ["patched", "threads", "sockets", "subprocess", "queue",
                  "timeout-condition", "futures"])


def test_pools_timeouts_kills_threadpool_and_thread_hubs():
    proc = run_script("pypi_gevent.py", "pools", timeout=HANG * 2)
    _check(proc, ["pool", "group", "timeout", "kill", "sync", "threadpool", "thread-hubs"])


def test_pytest_process_is_not_monkey_patched():
    import socket
    import time as time_module
    assert "gevent" not in repr(socket.socket)
    assert time_module.sleep.__module__ in (None, "time")
