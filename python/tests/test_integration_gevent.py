"""gevent against real servers on 127.0.0.1, each in its own child process.

Monkey-patching never happens in the pytest process.  Every child first
checks that gevent runs on the same greenlet module as this session
(IDENTITY-OK lines) and is bounded by timeouts.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

from cgl_support import SCRIPTS, child_env, explain, run_script

pytest.importorskip("gevent")


def _identity_ok(out):
    return "IDENTITY-OK gevent" in out and "IDENTITY-FAIL" not in out


def test_pywsgi_many_concurrent_greenlet_clients():
    proc = run_script("gevent_wsgi.py", "selftest", "50", "4", timeout=40)
    assert proc.returncode == 0, explain(proc)
    assert _identity_ok(proc.stdout), explain(proc)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, explain(proc)
    result = json.loads(line[0][len("RESULT "):])
    assert result["requests"] == 200 and result["served"] == 200, result
    # 50 clients whose first request sleeps 20 ms: concurrency keeps it short.
    assert result["elapsed"] < 10, result


class _Server:
    """The gevent_wsgi.py serve child, with its stdout read by a thread."""

    def __init__(self):
        self.errfile = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(SCRIPTS, "gevent_wsgi.py"), "serve"],
            stdout=subprocess.PIPE, stderr=self.errfile, text=True,
            env=child_env({"CGL_CHILD_DEADLINE": "25"}))
        self.lines = []
        self.port = None
        self._got_port = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                self._got_port.set()
        self._got_port.set()

    def wait_port(self, timeout=30):
        self._got_port.wait(timeout)
        if self.port is None:
            self.kill()
            raise AssertionError("server did not report a port: %r %r"
                                 % (self.lines, self.stderr()))
        return self.port

    def stop(self, timeout=15):
        if self.port is not None and self.proc.poll() is None:
            try:
                self.request("/quit")
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.lines.append("[killed: did not stop within %ss]" % timeout)
        finally:
            self.kill()
        self._reader.join(5)
        return self.proc.returncode, "\n".join(self.lines), self.stderr()

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read()[-6000:]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def request(self, path, conn=None):
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                conn.close()


def test_pywsgi_thread_clients_from_another_process_and_wrk():
    server = _Server()
    try:
        port = server.wait_port()
        errors = []
        count = [0]
        lock = threading.Lock()

        def client(t):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                for k in range(13):
                    repeat = 1 + (t * 31 + k * 7) % 400
                    status, body = server.request("/hello/t%d-%d/%d/0" % (t, k, repeat),
                                                  conn)
                    if status != 200 or body != ("hello t%d-%d;" % (t, k) * repeat).encode():
                        errors.append((t, k, status, len(body)))
                    with lock:
                        count[0] += 1
            except Exception as exc:  # reported below
                errors.append((t, repr(exc)))
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert count[0] == 16 * 13

        wrk_requests = 0
        if shutil.which("wrk"):
            out = subprocess.run(
                ["wrk", "-t1", "-c32", "-d1s", "--timeout", "2s",
                 "http://127.0.0.1:%d/hello/wrk/8/0" % port],
                capture_output=True, text=True, timeout=20)
            assert out.returncode == 0, out.stderr
            assert "Socket errors" not in out.stdout, out.stdout
            assert "Non-2xx" not in out.stdout, out.stdout
            m = re.search(r"(\d+) requests in", out.stdout)
            assert m, out.stdout
            wrk_requests = int(m.group(1))
            assert wrk_requests > 100, out.stdout
    finally:
        rc, stdout, stderr = server.stop()
    assert rc == 0, (rc, stdout, stderr)
    assert _identity_ok(stdout), stdout
    served = int(re.search(r"SERVED (\d+)", stdout).group(1))
    assert served >= 16 * 13 + wrk_requests, (served, wrk_requests)


def test_monkey_patch_all_stdlib():
    proc = run_script("gevent_patch_all.py", timeout=40)
    assert proc.returncode == 0, explain(proc)
    assert _identity_ok(proc.stdout), explain(proc)
    for check in ("patched", "threads", "sockets", "subprocess", "queue", "pool",
                  "timeout", "event", "kill"):
        assert re.search(r"^OK %s\b" % check, proc.stdout, re.M), explain(proc)
    assert proc.stdout.rstrip().endswith("ALL-OK"), explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)


def test_pytest_process_is_not_monkey_patched():
    import socket
    import time as time_module
    assert "gevent" not in repr(socket.socket)
    assert time_module.sleep.__module__ in (None, "time")
