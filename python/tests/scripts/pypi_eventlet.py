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
import sys
import warnings

warnings.simplefilter("ignore")       # eventlet's deprecation notice on import
MODE = sys.argv[1] if len(sys.argv) > 1 else ""
if MODE == "patched":
    import eventlet
    eventlet.monkey_patch()

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cgl_support  # noqa: E402

cgl_support.check_eventlet_identity_or_exit()

import eventlet  # noqa: E402
import eventlet.event  # noqa: E402
import eventlet.queue  # noqa: E402
import eventlet.semaphore  # noqa: E402
import eventlet.wsgi  # noqa: E402
import greenlet  # noqa: E402

HANG = 60  # seconds: a bound against hangs, not a performance target


def ok(name, detail=""):
    print("OK %s %s" % (name, detail), flush=True)


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
    listener = eventlet.listen(("127.0.0.1", 0), backlog=clients + 50)
    port = listener.getsockname()[1]
    pool = eventlet.GreenPool(1000)
    handled = [0]
    inside = [0, 0]
    all_in = eventlet.event.Event()

    def handle(conn):
        inside[0] += 1
        inside[1] = max(inside)
        if inside[0] == clients:
            all_in.send(True)
        f = conn.makefile("rwb")
        try:
            while True:
                line = f.readline()
                if not line or line == b"bye\n":
                    break
                f.write(line[:-1][::-1] + b"\n")
                f.flush()
        finally:
            f.close()
            conn.close()
            inside[0] -= 1
            handled[0] += 1

    def acceptor():
        while True:
            conn, _ = listener.accept()
            pool.spawn_n(handle, conn)
    server = eventlet.spawn(acceptor)

    def client(i):
        c = eventlet.connect(("127.0.0.1", port))
        f = c.makefile("rwb")
        try:
            all_in.wait()          # every client connected at once first
            for k in range(4):
                msg = ("c%d-k%d-" % (i, k) + "x" * (i * 31 % 2000)).encode()
                f.write(msg + b"\n")
                f.flush()
                assert f.readline() == msg[::-1] + b"\n"
            f.write(b"bye\n")
            f.flush()
        finally:
            f.close()
            c.close()
        return i

    with eventlet.Timeout(HANG):
        done = sorted(eventlet.GreenPool(clients).imap(client, range(clients)))
        while handled[0] < clients:
            eventlet.sleep(0.001)
    assert done == list(range(clients))
    assert inside[1] == clients, inside
    server.kill()
    listener.close()
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
    active = [0, 0]

    def square(x):
        active[0] += 1
        active[1] = max(active)
        eventlet.sleep(0)
        active[0] -= 1
        return x * x
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
    a, b = eventlet.green.socket.socketpair()
    try:
        with eventlet.Timeout(0.01):
            a.recv(10)
    except eventlet.Timeout:
        pass
    else:
        raise AssertionError("Timeout did not interrupt recv")
    a.close()
    b.close()
    ok("timeout")

    log = []

    class Stop(Exception):
        pass

    def victim(name):
        try:
            eventlet.sleep(HANG)
        except greenlet.GreenletExit:
            log.append((name, "exit"))
            raise
        except Stop:
            log.append((name, "stop"))
            return "stopped"
        finally:
            log.append((name, "finally"))
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
    assert sum(1 for n, w in log if n.startswith("m") and w == "finally") == 200
    linked = []
    k = eventlet.spawn(lambda: "done")
    k.link(lambda gt: linked.append(gt.wait()))
    k.wait()
    eventlet.sleep(0)
    assert linked == ["done"], linked
    ok("kill", "%d finally blocks" % sum(1 for _, w in log if w == "finally"))

    ev = eventlet.event.Event()
    woke = []
    ws = [eventlet.spawn(lambda i=i: woke.append((ev.wait(), i))) for i in range(50)]
    eventlet.sleep(0)
    ev.send("go")
    [w.wait() for w in ws]
    assert sorted(woke) == [("go", i) for i in range(50)]
    sem = eventlet.semaphore.BoundedSemaphore(3)
    holding = [0, 0]

    def hold():
        with sem:
            holding[0] += 1
            holding[1] = max(holding)
            eventlet.sleep(0)
            holding[0] -= 1
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
    import queue
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
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(30)]
    with eventlet.Timeout(HANG):
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert sorted(i for i, _ in seen) == list(range(30)), seen
    assert {x for _, x in seen} == {main_os_thread}, "not green threads"
    assert asleep[1] == 30, asleep
    local = threading.local()
    checks = []

    def with_local(i):
        local.v = i
        time.sleep(0.001)
        checks.append(local.v == i)
    ts = [threading.Thread(target=with_local, args=(i,)) for i in range(20)]
    with eventlet.Timeout(HANG):
        [t.start() for t in ts]
        [t.join() for t in ts]
    assert checks == [True] * 20
    ok("threads-time", "30 green threads at once")

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(256)
    port = srv.getsockname()[1]

    def handle(conn):
        with conn:
            line = conn.makefile("rb").readline()
            conn.sendall(line.upper())

    def acceptor():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    threading.Thread(target=acceptor, daemon=True).start()
    replies = {}

    def client(i):
        msg = (("msg %d " % i) * (1 + i % 40) + "\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=HANG) as c:
            c.sendall(msg)
            replies[i] = c.makefile("rb").readline() == msg.upper()
    ts = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    with eventlet.Timeout(HANG):
        [t.start() for t in ts]
        [t.join() for t in ts]
    srv.close()
    assert len(replies) == 100 and all(replies.values())
    ok("socket", "100 clients")

    q = queue.Queue(maxsize=4)
    got = []

    def producer():
        for i in range(300):
            q.put(i)
        q.put(None)

    def consumer():
        while (item := q.get()) is not None:
            got.append(item)
    ts = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    with eventlet.Timeout(HANG):
        [t.start() for t in ts]
        [t.join() for t in ts]
    assert got == list(range(300))
    ok("queue")

    class Late(Exception):
        pass
    try:
        with eventlet.Timeout(0.01, Late):
            time.sleep(HANG)
    except Late:
        pass
    else:
        raise AssertionError("Timeout did not interrupt the patched time.sleep")
    ok("timeout")
    print("ALL-OK", flush=True)


if __name__ == "__main__":
    if MODE == "serve":
        serve()
    elif MODE == "patched":
        patched()
    else:
        raise SystemExit("unknown mode %r" % MODE)
