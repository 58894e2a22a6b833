"""eventlet from PyPI (0.41.x) on this greenlet module, in a child process.

usage:
  pypi_eventlet.py serve     green socket servers on 127.0.0.1 (echo and
                             eventlet.wsgi), GreenPool, Timeout, kills; no
                             monkey-patching
  pypi_eventlet.py patched   eventlet.monkey_patch(), then the patched stdlib
Prints "OK <check>" per check and "ALL-OK" at the end; any failure exits
non-zero.  Nothing is timed: every wait is bounded by a generous
eventlet.Timeout (a hang fails, slowness does not).
"""
import os
import warnings

import green_checks


def monkey_patch():
    import eventlet
    eventlet.monkey_patch()


warnings.simplefilter("ignore")       # eventlet's deprecation notice on import
MODE = green_checks.child_start("patched", monkey_patch, "eventlet")

import eventlet  # noqa: E402
import eventlet.event  # noqa: E402
import eventlet.queue  # noqa: E402
import eventlet.semaphore  # noqa: E402
import eventlet.wsgi  # noqa: E402
import greenlet  # noqa: E402
from green_checks import (  # noqa: E402
    HANG, eventlet_echo_server, finally_count, listening_socket, ok, peak_counter,
    queue_between_threads, start_join, thread_locals, thread_per_connection,
    timeout_interrupts_recv, timeout_interrupts_sleep, victims)


def bounded_start_join(threads):
    start_join(threads, eventlet.Timeout(HANG))


class Log:
    """eventlet.wsgi's log: kept, so that errors can be shown."""

    def __init__(self):
        self.lines = []

    def write(self, data):
        self.lines.append(data)

    def flush(self):
        pass


# ---------------------------------------------------------------- serve
def echo_server(clients=150):
    # a backlog for all: the clients connect at once and wait for each other
    most = eventlet_echo_server(clients, 4, lambda i: i * 31 % 2000, together=True,
                                backlog=clients + 50)
    assert most == clients, most
    ok("echo-server", "%d clients connected at once" % clients)


def wsgi_server(clients=40, per_client=10):
    from eventlet.green.http import client as http_client
    served = [0]
    waiting = {"n": 0, "ev": eventlet.event.Event()}

    def app(environ, start_response):
        served[0] += 1
        path = environ["PATH_INFO"]
        if path == "/together":
            # answered once `clients` requests wait here at once
            waiting["n"] += 1
            if waiting["n"] == clients:
                waiting["ev"].send(True)
            waiting["ev"].wait()
            body = b"together"
        elif path == "/echo":
            body = environ["wsgi.input"].read()
        else:
            body = ("hello %s" % path.strip("/")).encode() * 3
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    listener = eventlet.listen(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    log = Log()
    server = eventlet.spawn(eventlet.wsgi.server, listener, app, log=log,
                            custom_pool=eventlet.GreenPool(500))

    def client(i):
        conn = http_client.HTTPConnection("127.0.0.1", port, timeout=HANG)
        try:
            conn.request("GET", "/together")
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"together")
            for k in range(per_client):
                if k % 2:
                    payload = os.urandom(16) * (1 + (i * 7 + k) % 500)
                    conn.request("POST", "/echo", body=payload)
                    r = conn.getresponse()
                    assert (r.status, r.read()) == (200, payload)
                else:
                    conn.request("GET", "/c%d/k%d" % (i, k))
                    r = conn.getresponse()
                    assert (r.status, r.read()) == (200, b"hello c%d/k%d" % (i, k) * 3)
        finally:
            conn.close()
        return i

    with eventlet.Timeout(HANG):
        done = sorted(eventlet.GreenPool(clients).imap(client, range(clients)))
    assert done == list(range(clients))
    assert served[0] == clients * (per_client + 1), served
    server.kill()
    listener.close()
    errors = [line for line in log.lines if "Traceback" in line or " 500 " in line]
    assert not errors, errors
    ok("wsgi-server", "%d requests" % served[0])


def greenpool_timeout_kill():
    pool = eventlet.GreenPool(6)
    square, active = peak_counter(eventlet.sleep, 1)
    assert list(pool.imap(square, range(100))) == [x * x for x in range(100)]
    assert active[1] == 6, active
    pile = eventlet.GreenPile(pool)
    for i in range(20):
        pile.spawn(square, i)
    assert list(pile) == [i * i for i in range(20)]
    gts = [pool.spawn(square, i) for i in range(10)]
    pool.waitall()
    assert [g.wait() for g in gts] == [i * i for i in range(10)]
    assert pool.free() == 6
    ok("greenpool", "max concurrency %d" % active[1])

    try:
        with eventlet.Timeout(0.01):
            eventlet.sleep(HANG)
    except eventlet.Timeout:
        pass
    else:
        raise AssertionError("Timeout did not fire")

    class Late(Exception):
        pass
    try:
        with eventlet.Timeout(0.01, Late):
            eventlet.event.Event().wait()
    except Late:
        pass
    else:
        raise AssertionError("custom Timeout did not fire")
    with eventlet.Timeout(0.01, False):
        eventlet.sleep(HANG)
    assert eventlet.with_timeout(0.01, eventlet.sleep, HANG, timeout_value="dflt") == "dflt"
    timeout_interrupts_recv(eventlet.Timeout, eventlet.green.socket.socketpair)
    ok("timeout")

    victim, log, Stop = victims(eventlet.sleep)
    g = eventlet.spawn(victim, "a")
    eventlet.sleep(0)
    g.kill()
    assert g.dead and log == [("a", "exit"), ("a", "finally")], log
    h = eventlet.spawn(victim, "b")
    eventlet.sleep(0)
    h.kill(Stop)
    assert h.dead and log[-2:] == [("b", "stop"), ("b", "finally")]
    many = [eventlet.spawn(victim, "m%d" % i) for i in range(200)]
    eventlet.sleep(0)
    for m in many:
        m.kill()
    assert all(m.dead for m in many)
    assert finally_count(log, "m") == 200
    linked = []
    k = eventlet.spawn(lambda: "done")
    k.link(lambda gt: linked.append(gt.wait()))
    k.wait()
    eventlet.sleep(0)
    assert linked == ["done"], linked
    ok("kill", "%d finally blocks" % finally_count(log))

    ev = eventlet.event.Event()
    woke = []
    ws = [eventlet.spawn(lambda i=i: woke.append((ev.wait(), i))) for i in range(50)]
    eventlet.sleep(0)
    ev.send("go")
    [w.wait() for w in ws]
    assert sorted(woke) == [("go", i) for i in range(50)]
    hold, holding = peak_counter(eventlet.sleep, 1, eventlet.semaphore.BoundedSemaphore(3))
    [g.wait() for g in [eventlet.spawn(hold) for _ in range(20)]]
    assert holding[1] == 3, holding
    q = eventlet.queue.LightQueue(2)
    eventlet.spawn(lambda: [q.put(i) for i in range(100)])
    assert [q.get(timeout=HANG) for _ in range(100)] == list(range(100))
    import threading
    from eventlet import tpool
    here = threading.get_ident()
    idents = [tpool.execute(threading.get_ident) for _ in range(5)]
    assert all(i != here for i in idents), idents
    ok("sync-tpool")


def serve():
    with eventlet.Timeout(HANG * 3):
        echo_server()
        wsgi_server()
        greenpool_timeout_kill()
    print("ALL-OK", flush=True)


# ---------------------------------------------------------------- patched
def patched():
    from eventlet import patcher
    import socket
    import threading
    import time

    for mod in ("socket", "thread", "time", "select"):
        assert patcher.is_monkey_patched(mod), mod
    assert "eventlet" in repr(socket.socket) or socket.socket.__module__.startswith("eventlet")
    real_thread = patcher.original("threading")
    ok("patched")

    main_os_thread = real_thread.get_ident()
    asleep = [0, 0]
    seen = []
    lock = threading.Lock()
    gate = eventlet.event.Event()

    def worker(i):
        assert isinstance(greenlet.getcurrent(), greenlet.greenlet)
        with lock:
            asleep[0] += 1
            asleep[1] = max(asleep)
            if asleep[0] == 30:
                gate.send(True)
        time.sleep(0.001)          # patched: yields to the hub
        gate.wait()                # all 30 alive at once
        seen.append((i, real_thread.get_ident()))
    bounded_start_join([threading.Thread(target=worker, args=(i,)) for i in range(30)])
    assert sorted(i for i, _ in seen) == list(range(30)), seen
    assert {x for _, x in seen} == {main_os_thread}, "not green threads"
    assert asleep[1] == 30, asleep
    thread_locals(bounded_start_join)
    ok("threads-time", "30 green threads at once")

    srv, port = listening_socket()

    def handle(conn):
        with conn:
            line = conn.makefile("rb").readline()
            conn.sendall(line.upper())
    threading.Thread(target=thread_per_connection(srv, handle), daemon=True).start()
    replies = {}

    def client(i):
        msg = (("msg %d " % i) * (1 + i % 40) + "\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=HANG) as c:
            c.sendall(msg)
            replies[i] = c.makefile("rb").readline() == msg.upper()
    bounded_start_join([threading.Thread(target=client, args=(i,)) for i in range(100)])
    srv.close()
    assert len(replies) == 100 and all(replies.values())
    ok("socket", "100 clients")

    queue_between_threads(300, bounded_start_join)
    timeout_interrupts_sleep(eventlet.Timeout,
                             "Timeout did not interrupt the patched time.sleep")
    ok("timeout")
    print("ALL-OK", flush=True)


if __name__ == "__main__":
    if MODE == "serve":
        serve()
    elif MODE == "patched":
        patched()
    else:
        raise SystemExit("unknown mode %r" % MODE)
