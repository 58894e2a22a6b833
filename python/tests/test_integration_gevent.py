"""gevent against real servers on 127.0.0.1, each in its own child process.

Monkey-patching never happens in the pytest process.  Every child first
checks that gevent runs on the same greenlet module as this session
(IDENTITY-OK lines) and is bounded by timeouts.
"""
import http.client
import json
import re
import shutil
import subprocess
import threading

import pytest

from cgl_support import ScriptServer, check_child, explain, run_script

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


def test_pywsgi_thread_clients_from_another_process_and_wrk():
    # the gevent_wsgi.py serve child
    server = ScriptServer("gevent_wsgi.py", "serve", deadline=25, timeout=10, grace=5)
    try:
        port = server.wait_port(30)
        errors = []
        count = [0]
        lock = threading.Lock()

        def client(t):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                for k in range(13):
                    repeat = 1 + (t * 31 + k * 7) % 400
                    status, body = server.request(
                        "GET", "/hello/t%d-%d/%d/0" % (t, k, repeat), conn=conn)
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
        rc, stdout, stderr = server.stop(15)
    assert rc == 0, (rc, stdout, stderr)
    assert _identity_ok(stdout), stdout
    served = int(re.search(r"SERVED (\d+)", stdout).group(1))
    assert served >= 16 * 13 + wrk_requests, (served, wrk_requests)


def test_monkey_patch_all_stdlib():
    proc = run_script("gevent_patch_all.py", timeout=40)
    check_child(proc, "gevent", ["patched", "threads", "sockets", "subprocess", "queue",
                                 "pool", "timeout", "event", "kill"])


def test_pytest_process_is_not_monkey_patched():
    import socket
    import time as time_module
    assert "gevent" not in repr(socket.socket)
    assert time_module.sleep.__module__ in (None, "time")
