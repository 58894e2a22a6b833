"""eventlet green-socket servers on 127.0.0.1 with many clients (child process).

No monkey-patching here (see eventlet_patched.py).  Prints "OK <check>" per
check and "ALL-OK" at the end; any failure exits non-zero.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cgl_support  # noqa: E402

cgl_support.check_eventlet_identity_or_exit()

import time  # noqa: E402

import eventlet  # noqa: E402
import eventlet.wsgi  # noqa: E402
from eventlet.green.http import client as green_http  # noqa: E402
import greenlet  # noqa: E402
from green_checks import eventlet_echo_server, ok  # noqa: E402


def check_echo_server(clients=200):
    eventlet_echo_server(clients, 5, lambda i: i % 97, bound=15, poll=0.01)
    ok("echo-server", "%d clients" % clients)


def check_wsgi_server(clients=50, per_client=4):
    in_flight = [0, 0]          # now, peak

    def app(environ, start_response):
        _, ident, repeat = environ["PATH_INFO"].split("/")
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        try:
            eventlet.sleep(0.01)
        finally:
            in_flight[0] -= 1
        body = ("eventlet %s;" % ident * int(repeat)).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    sock = eventlet.listen(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    devnull = open(os.devnull, "w")
    server = eventlet.spawn(eventlet.wsgi.server, sock, app, log=devnull,
                            log_output=False, custom_pool=eventlet.GreenPool(500))

    def client(i):
        conn = green_http.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for k in range(per_client):
                repeat = 1 + (i * 11 + k) % 200
                conn.request("GET", "/%d-%d/%d" % (i, k, repeat))
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 200
                assert body == ("eventlet %d-%d;" % (i, k) * repeat).encode()
        finally:
            conn.close()
        return per_client

    started = time.monotonic()
    with eventlet.Timeout(15):
        total = sum(eventlet.GreenPool(clients).imap(client, range(clients)))
    elapsed = time.monotonic() - started
    assert total == clients * per_client
    # Requests overlap: several sleep in the server at once (a count, not a
    # wall-clock bound, so that it holds under Valgrind too).
    assert in_flight[1] > 1, in_flight
    server.kill()
    sock.close()
    devnull.close()
    ok("wsgi-server", "%d requests in %.3fs, up to %d at once" % (total, elapsed, in_flight[1]))


def check_timeout():
    # Each sleep is far longer than its timeout; `woke` says whether a sleep
    # ran to its end (which a timeout that fired prevents).
    woke = []
    try:
        with eventlet.Timeout(0.05):
            eventlet.sleep(30)
            woke.append(1)
    except eventlet.Timeout:
        pass
    else:
        raise AssertionError("eventlet.Timeout did not fire")
    with eventlet.Timeout(0.02, False):
        eventlet.sleep(30)
        woke.append(2)
    assert woke == [], woke

    class Custom(Exception):
        pass
    try:
        with eventlet.Timeout(0.02, Custom("late")):
            eventlet.sleep(2)
    except Custom as exc:
        assert str(exc) == "late"
    ok("timeout")


def check_greenthreads():
    log = []

    def victim():
        try:
            eventlet.sleep(10)
        except greenlet.GreenletExit:
            log.append("exit")
            raise
        finally:
            log.append("finally")
    gt = eventlet.spawn(victim)
    eventlet.sleep(0)
    gt.kill()
    assert log == ["exit", "finally"] and gt.dead
    results = [eventlet.spawn(lambda x: x * 2, i) for i in range(100)]
    assert [r.wait() for r in results] == [i * 2 for i in range(100)]
    ok("greenthreads")


def main():
    check_echo_server()
    check_wsgi_server()
    check_timeout()
    check_greenthreads()
    print("ALL-OK", flush=True)


if __name__ == "__main__":
    main()
