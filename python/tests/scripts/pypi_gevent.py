"""gevent from PyPI (26.x) on this greenlet module, in a child process.

usage:
  pypi_gevent.py serve       pywsgi on 127.0.0.1: prints "PORT n", serves
                             until GET /quit, then "SERVED n" and "ALL-OK"
  pypi_gevent.py patch_all   monkey.patch_all(), then the patched stdlib
  pypi_gevent.py pools       pools, groups, timeouts, kills, events, the
                             thread pool and hubs in native threads (unpatched)
Prints "OK <check>" per check and "ALL-OK" at the end; any failure exits
non-zero.  Nothing is timed: every wait is bounded by a generous
gevent.Timeout (a hang fails, slowness does not).
"""
import os
import sys

import green_checks


def monkey_patch():
    from gevent import monkey
    monkey.patch_all()


MODE = green_checks.child_start("patch_all", monkey_patch, "gevent")

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.lock  # noqa: E402
import gevent.pool  # noqa: E402
import gevent.queue  # noqa: E402
import gevent.socket  # noqa: E402
import greenlet  # noqa: E402
from green_checks import (  # noqa: E402
    HANG, finally_count, listening_socket, ok, peak_counter, queue_between_threads,
    start_join, thread_locals, thread_per_connection, timeout_interrupts_recv,
    timeout_interrupts_sleep, victims)


def bounded_start_join(threads):
    start_join(threads, join_timeout=HANG)


# ---------------------------------------------------------------- serve
def serve():
    from gevent.pywsgi import WSGIServer
    served = [0]
    inside = [0, 0]                  # requests in the app now, most at once
    barrier = {}                     # n -> [requests arrived, Event set at n]
    stop = gevent.event.Event()

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        served[0] += 1
        inside[0] += 1
        inside[1] = max(inside)
        try:
            if path == "/quit":
                gevent.spawn_later(0.05, stop.set)
                body = b"bye"
            elif path == "/echo":
                body = environ["wsgi.input"].read()
            elif path.startswith("/barrier/"):
                # /barrier/N answers once N requests are in here together:
                # the server must run them concurrently (a hang otherwise).
                n = int(path.split("/")[2])
                b = barrier.setdefault(n, [0, gevent.event.Event()])
                b[0] += 1
                if b[0] >= n:
                    b[1].set()
                b[1].wait()
                body = b"together %d" % n
            elif path.startswith("/hello/"):
                # /hello/<ident>/<repeat>: a body built in pieces, yielding
                _, _, ident, repeat = path.split("/")
                gevent.sleep(0)
                body = ("hello %s;" % ident * int(repeat)).encode()
            elif path == "/stats":
                body = ("%d %d" % (served[0], inside[1])).encode()
            else:
                start_response("404 Not Found", [("Content-Length", "0")])
                return [b""]
        finally:
            inside[0] -= 1
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        half = len(body) // 2
        return [body[:half], body[half:]]

    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=sys.stderr,
                        spawn=gevent.pool.Pool(1000))
    server.start()
    print("PORT %d" % server.server_port, flush=True)
    with gevent.Timeout(240):            # the test's own hang bound is shorter
        stop.wait()
    server.stop(timeout=5)
    print("SERVED %d MAXINSIDE %d" % (served[0], inside[1]), flush=True)
    print("ALL-OK", flush=True)


# ---------------------------------------------------------------- patch_all
def patch_all():
    from gevent import monkey
    import select
    import socket
    import subprocess
    import threading
    import time

    for mod in ("socket", "threading", "time", "subprocess", "queue", "select", "ssl", "os"):
        assert monkey.is_module_patched(mod), mod
    assert socket.socket is gevent.socket.socket
    assert select.select is not monkey.get_original("select", "select")
    ok("patched")

    real_ident = monkey.get_original("_thread", "get_ident")
    main_os_thread = real_ident()

    # threads are greenlets on the one OS thread; their sleeps overlap
    asleep = [0, 0]
    seen = []
    lock = threading.Lock()
    barrier = threading.Barrier(30, timeout=HANG)

    def worker(i):
        cur = greenlet.getcurrent()
        assert isinstance(cur, greenlet.greenlet) and cur is not gevent.get_hub()
        with lock:
            asleep[0] += 1
            asleep[1] = max(asleep)
        time.sleep(0.01)
        barrier.wait()                        # all 30 are alive at once
        with lock:
            asleep[0] -= 1
        seen.append((i, real_ident()))
    bounded_start_join([threading.Thread(target=worker, args=(i,)) for i in range(30)])
    assert sorted(i for i, _ in seen) == list(range(30)), seen
    assert {x for _, x in seen} == {main_os_thread}
    assert asleep[1] == 30, asleep
    thread_locals(bounded_start_join)
    ok("threads", "30 green threads at once")

    # a socket server in green threads, 100 clients in greenlets
    srv, port = listening_socket()
    handled = []

    def handle(conn):
        with conn:
            f = conn.makefile("rb")
            line = f.readline()
            conn.sendall(line.upper())
            handled.append(len(line))
    acc = gevent.spawn(thread_per_connection(srv, handle))
    replies = {}

    def client(i):
        msg = (("message %d " % i) * (1 + i % 40) + "\n").encode()
        # getaddrinfo of a numeric address goes through gevent's resolver
        family, kind, proto, _, addr = socket.getaddrinfo("127.0.0.1", port, 0,
                                                          socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as c:
            c.settimeout(HANG)
            c.connect(addr)
            c.sendall(msg)
            data = c.makefile("rb").readline()
        replies[i] = data == msg.upper()
    gevent.joinall([gevent.spawn(client, i) for i in range(100)], raise_error=True)
    acc.kill()
    srv.close()
    assert len(replies) == 100 and all(replies.values()), replies
    assert len(handled) == 100
    ok("sockets", "100 clients")

    # subprocess: the hub keeps running while a child is waited for
    out = subprocess.run(["echo", "hello"], capture_output=True, check=True)
    assert out.stdout == b"hello\n"
    ticks = []
    stop = gevent.event.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            gevent.sleep(0.005)
    t = gevent.spawn(ticker)
    # the child exits once the ticker has run a few times: it waits for a
    # line that the ticker's 5th tick sends
    proc = subprocess.Popen(["sh", "-c", "read x; echo got $x"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)

    def feeder():
        while len(ticks) < 5:
            gevent.sleep(0.005)
        proc.stdin.write(b"ticks\n")
        proc.stdin.close()
    gevent.spawn(feeder)
    got = proc.stdout.read()
    proc.wait(timeout=HANG)
    stop.set()
    t.join(HANG)
    assert got == b"got ticks\n" and proc.returncode == 0, (got, proc.returncode)
    ok("subprocess", "ticks=%d" % len(ticks))

    # queue.Queue between green threads
    queue_between_threads(500, bounded_start_join)

    # patched time.sleep under a Timeout, and Event/Condition across green threads
    timeout_interrupts_sleep(gevent.Timeout, "the Timeout did not interrupt time.sleep")
    cond = threading.Condition()
    state = []

    def waiter():
        with cond:
            cond.wait_for(lambda: state, timeout=HANG)
            state.append("woke")
    w = threading.Thread(target=waiter)
    w.start()
    time.sleep(0.001)
    with cond:
        state.append("go")
        cond.notify_all()
    w.join(HANG)
    assert state == ["go", "woke"], state
    ok("timeout-condition")

    # concurrent.futures' thread pool runs green threads under patch_all
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        res = list(ex.map(lambda x: (x * x, real_ident()), range(40)))
    assert [r for r, _ in res] == [x * x for x in range(40)]
    assert {x for _, x in res} == {main_os_thread}
    ok("futures")
    print("ALL-OK", flush=True)


# ---------------------------------------------------------------- pools
def pools():
    import threading

    # Pool: never more than `size` at once, and reaches it
    pool = gevent.pool.Pool(7)
    square, active = peak_counter(gevent.sleep, 2)
    assert pool.map(square, range(100)) == [x * x for x in range(100)]
    assert active[1] == 7, active
    assert sorted(pool.imap_unordered(square, range(60))) == [x * x for x in range(60)]
    assert list(pool.imap(square, range(30), maxsize=3)) == [x * x for x in range(30)]
    assert pool.apply(square, (9,)) == 81
    ar = pool.apply_async(square, (5,))
    assert ar.get(timeout=HANG) == 25
    assert pool.free_count() == 7
    ok("pool", "max concurrency %d" % active[1])

    group = gevent.pool.Group()
    gs = [group.spawn(square, i) for i in range(20)]
    group.join(timeout=HANG, raise_error=True)
    assert [g.value for g in gs] == [i * i for i in range(20)]
    assert len(group) == 0
    ok("group")

    # Timeout: fires in a blocked greenlet; custom exceptions; with_timeout;
    # a Timeout that does not fire leaves no trace
    try:
        with gevent.Timeout(0.01):
            gevent.sleep(HANG)
    except gevent.Timeout as t:
        assert t.seconds == 0.01
    else:
        raise AssertionError("Timeout did not fire")

    class Custom(Exception):
        pass
    try:
        with gevent.Timeout(0.01, Custom("late")):
            gevent.event.Event().wait()
    except Custom as e:
        assert str(e) == "late"
    else:
        raise AssertionError("custom Timeout did not fire")
    assert gevent.with_timeout(0.01, gevent.sleep, HANG, timeout_value="dflt") == "dflt"
    with gevent.Timeout(0.01, False):
        gevent.sleep(HANG)
    with gevent.Timeout(HANG):
        gevent.sleep(0)
    timeout_interrupts_recv(gevent.Timeout, gevent.socket.socketpair)
    ok("timeout")

    # kills: GreenletExit with finally, a custom exception, killall, a
    # greenlet killed while blocked in recv, links, killing an unstarted one
    victim, log, Stop = victims(gevent.sleep)
    g = gevent.spawn(victim, "a")
    gevent.sleep(0)
    g.kill(block=True, timeout=HANG)
    assert g.dead and g.successful() and isinstance(g.value, greenlet.GreenletExit)
    assert log == [("a", "exit"), ("a", "finally")], log
    h = gevent.spawn(victim, "b")
    gevent.sleep(0)
    gevent.kill(h, Stop)
    h.join(HANG)
    assert h.value == "stopped" and log[-2:] == [("b", "stop"), ("b", "finally")]
    many = [gevent.spawn(victim, "m%d" % i) for i in range(200)]
    gevent.sleep(0)
    gevent.killall(many, timeout=HANG)
    assert all(m.dead for m in many)
    assert finally_count(log, "m") == 200
    u = gevent.spawn(victim, "unstarted")
    u.kill()
    assert u.dead and ("unstarted", "finally") not in log
    c, d = gevent.socket.socketpair()
    blocked = gevent.spawn(c.recv, 10)
    gevent.sleep(0)
    blocked.kill(block=True, timeout=HANG)
    assert blocked.dead and isinstance(blocked.value, greenlet.GreenletExit)
    c.close()
    d.close()
    linked = []
    hub = gevent.get_hub()
    stream, hub.exception_stream = hub.exception_stream, None   # an expected error
    try:
        f = gevent.spawn(lambda: 1 / 0)
        f.link_exception(lambda g: linked.append(type(g.exception).__name__))
        f.link_value(lambda g: linked.append("value"))
        f.join(HANG)
        gevent.sleep(0)
    finally:
        hub.exception_stream = stream
    assert linked == ["ZeroDivisionError"], linked
    ok("kill", "%d finally blocks" % finally_count(log))

    # events, AsyncResult, Semaphore, Queue, spawn_later
    ev = gevent.event.Event()
    woke = []
    ws = [gevent.spawn(lambda i=i: (ev.wait(HANG), woke.append(i))) for i in range(50)]
    gevent.sleep(0)
    assert woke == []
    ev.set()
    gevent.joinall(ws, timeout=HANG, raise_error=True)
    assert sorted(woke) == list(range(50))
    res = gevent.event.AsyncResult()
    gevent.spawn_later(0.001, res.set, "value")
    assert res.get(timeout=HANG) == "value"
    hold, holding = peak_counter(gevent.sleep, 1, gevent.lock.BoundedSemaphore(3))
    gevent.joinall([gevent.spawn(hold) for _ in range(20)], timeout=HANG, raise_error=True)
    assert holding[1] == 3, holding
    q = gevent.queue.Queue(maxsize=2)
    gevent.spawn(lambda: [q.put(i) for i in range(100)])
    assert [q.get(timeout=HANG) for _ in range(100)] == list(range(100))
    ok("sync")

    # the thread pool: real threads, results back to the hub
    tp = gevent.get_hub().threadpool
    idents = tp.map(lambda x: (x + 1, threading.get_ident()), range(20))
    assert [v for v, _ in idents] == list(range(1, 21))
    assert all(i != threading.get_ident() for _, i in idents)
    assert tp.spawn(sum, [1, 2, 3]).get(timeout=HANG) == 6
    ok("threadpool")

    # a hub of its own in each of 4 native threads, greenlets switching there
    results = {}
    errors = []

    def in_thread(n):
        try:
            hub = gevent.get_hub()
            assert isinstance(hub, greenlet.greenlet)
            assert hub is not main_hub
            p = gevent.pool.Pool(5)
            results[n] = sum(p.map(lambda x: (gevent.sleep(0), x)[1], range(100)))
            with gevent.Timeout(0.01, False):
                gevent.sleep(HANG)
            hub.destroy(destroy_loop=True)
        except BaseException as e:  # reported below
            errors.append(repr(e))
    main_hub = gevent.get_hub()
    ths = [threading.Thread(target=in_thread, args=(n,)) for n in range(4)]
    [t.start() for t in ths]
    [t.join(HANG) for t in ths]
    assert errors == [] and results == {n: 4950 for n in range(4)}, (errors, results)
    ok("thread-hubs")
    print("ALL-OK", flush=True)


if __name__ == "__main__":
    if MODE == "serve":
        serve()                  # bounded by its own Timeout
        sys.exit(0)
    with gevent.Timeout(HANG * 3):
        if MODE == "patch_all":
            patch_all()
        elif MODE == "pools":
            pools()
        else:
            raise SystemExit("unknown mode %r" % MODE)
