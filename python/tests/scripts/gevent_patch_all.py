"""gevent.monkey.patch_all() and the usual stdlib under it (child process).

Prints "OK <check>" per check and "ALL-OK" at the end; any failure exits
non-zero.  Everything is bounded by gevent.Timeout.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gevent import monkey  # noqa: E402

monkey.patch_all()

import cgl_support  # noqa: E402

cgl_support.check_gevent_identity_or_exit()

import queue  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402
import gevent.queue  # noqa: E402
import gevent.socket  # noqa: E402
import greenlet  # noqa: E402

real_get_ident = monkey.get_original("_thread", "get_ident")
MAIN_OS_THREAD = real_get_ident()


def ok(name, detail=""):
    print("OK %s %s" % (name, detail), flush=True)


def check_patched():
    for mod in ("socket", "threading", "time", "subprocess", "queue", "select"):
        assert monkey.is_module_patched(mod), mod
    assert socket.socket is gevent.socket.socket
    ok("patched")


def check_threads():
    seen = []
    sleeping = [0, 0]           # now, peak
    lock = threading.Lock()

    def work(i):
        cur = greenlet.getcurrent()
        assert isinstance(cur, greenlet.greenlet)
        assert cur is not gevent.get_hub()
        with lock:
            sleeping[0] += 1
            sleeping[1] = max(sleeping)
        time.sleep(0.05)                     # patched: yields to the hub
        with lock:
            sleeping[0] -= 1
            seen.append((i, real_get_ident()))

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    elapsed = time.monotonic() - started
    assert sorted(i for i, _ in seen) == list(range(50))
    assert {ident for _, ident in seen} == {MAIN_OS_THREAD}, "not green threads"
    # The sleeps overlap (green threads), counted rather than timed.
    assert sleeping[1] > 1, sleeping
    local = threading.local()
    values = []

    def with_local(i):
        local.v = i
        time.sleep(0.01)
        values.append(local.v == i)
    ts = [threading.Thread(target=with_local, args=(i,)) for i in range(10)]
    [t.start() for t in ts]
    [t.join(5) for t in ts]
    assert values == [True] * 10
    ok("threads", "%.3fs, up to %d asleep at once" % (elapsed, sleeping[1]))


def check_sockets():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    port = server.getsockname()[1]
    handled = []

    def handle(conn):
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(data.upper())
            handled.append(len(data))

    def acceptor():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=handle, args=(conn,)).start()

    acc = gevent.spawn(acceptor)
    replies = {}

    def client(i):
        msg = ("message %d " % i * (1 + i % 50) + "\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(msg)
            data = b""
            while not data.endswith(b"\n"):
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
        replies[i] = data == msg.upper()

    clients = [gevent.spawn(client, i) for i in range(100)]
    gevent.joinall(clients, raise_error=True)
    acc.kill()
    server.close()
    assert len(replies) == 100 and all(replies.values())
    assert len(handled) == 100
    ok("sockets")


def check_subprocess():
    out = subprocess.run(["echo", "hello from echo"], capture_output=True, check=True)
    assert out.stdout == b"hello from echo\n", out.stdout
    ticks = []

    def ticker():
        while True:
            ticks.append(1)
            gevent.sleep(0.01)
    t = gevent.spawn(ticker)
    proc = subprocess.Popen(["sh", "-c", "sleep 0.2; echo late"], stdout=subprocess.PIPE)
    late, _ = proc.communicate(timeout=5)
    t.kill()
    assert late == b"late\n" and proc.returncode == 0
    assert len(ticks) >= 5, "the hub was blocked while waiting for the child"
    ok("subprocess", "ticks=%d" % len(ticks))


def check_queue():
    q = queue.Queue(maxsize=10)
    got = []

    def producer():
        for i in range(1000):
            q.put(i)
        q.put(None)

    def consumer():
        while True:
            item = q.get()
            if item is None:
                return
            got.append(item)
    ts = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    [t.start() for t in ts]
    [t.join(5) for t in ts]
    assert got == list(range(1000))
    gq = gevent.queue.Queue()
    gevent.spawn(lambda: [gq.put(i) for i in range(5)])
    assert [gq.get(timeout=1) for _ in range(5)] == list(range(5))
    ok("queue")


def check_pool():
    pool = gevent.pool.Pool(10)
    active = [0, 0]

    def square(x):
        active[0] += 1
        active[1] = max(active[1], active[0])
        gevent.sleep(0.001)
        active[0] -= 1
        return x * x
    assert pool.map(square, range(200)) == [x * x for x in range(200)]
    assert active[1] == 10, active
    assert sorted(pool.imap_unordered(square, range(50))) == [x * x for x in range(50)]
    ok("pool", "max concurrency %d" % active[1])


def check_timeout():
    try:
        with gevent.Timeout(0.05):
            gevent.sleep(30)
    except gevent.Timeout:
        pass
    else:
        raise AssertionError("Timeout did not fire")

    class Custom(Exception):
        pass
    try:
        with gevent.Timeout(0.02, Custom):
            time.sleep(2)                     # the patched sleep
    except Custom:
        pass
    else:
        raise AssertionError("custom Timeout did not fire")
    assert gevent.with_timeout(0.02, gevent.sleep, 1, timeout_value="dflt") == "dflt"
    with gevent.Timeout(1, False):
        gevent.sleep(0.01)
    ok("timeout")


def check_event():
    ev = gevent.event.Event()
    woke = []

    def waiter(i):
        assert ev.wait(timeout=2)
        woke.append(i)
    ws = [gevent.spawn(waiter, i) for i in range(20)]
    gevent.sleep(0.01)
    assert woke == []
    ev.set()
    gevent.joinall(ws, timeout=2, raise_error=True)
    assert sorted(woke) == list(range(20))
    ar = gevent.event.AsyncResult()
    gevent.spawn_later(0.01, ar.set, "value")
    assert ar.get(timeout=2) == "value"
    tev = threading.Event()
    threading.Timer(0.01, tev.set).start()
    assert tev.wait(2)
    ok("event")


def check_kill():
    log = []

    class Stop(Exception):
        pass

    def victim(name):
        try:
            gevent.sleep(10)
        except greenlet.GreenletExit:
            log.append((name, "GreenletExit"))
            raise
        except Stop:
            log.append((name, "Stop"))
            return "stopped"
        finally:
            log.append((name, "finally"))

    g = gevent.spawn(victim, "a")
    gevent.sleep(0)
    g.kill(block=True, timeout=2)
    assert g.dead and isinstance(g.value, greenlet.GreenletExit)
    assert log == [("a", "GreenletExit"), ("a", "finally")]

    h = gevent.spawn(victim, "b")
    gevent.sleep(0)
    gevent.kill(h, Stop)
    h.join(2)
    assert h.dead and h.value == "stopped"
    assert log[-2:] == [("b", "Stop"), ("b", "finally")]
    many = [gevent.spawn(victim, "m%d" % i) for i in range(100)]
    gevent.sleep(0)
    gevent.killall(many, timeout=2)
    assert all(m.dead for m in many)
    assert sum(1 for n, what in log if n.startswith("m") and what == "finally") == 100
    # A raw greenlet killed by dropping it, while gevent runs.
    raw_log = []
    here = greenlet.getcurrent()

    def raw():
        try:
            here.switch()
        finally:
            raw_log.append("raw finally")
    r = greenlet.greenlet(raw)
    r.switch()
    del r
    assert raw_log == ["raw finally"]
    ok("kill")


def main():
    with gevent.Timeout(15):
        check_patched()
        check_threads()
        check_sockets()
        check_subprocess()
        check_queue()
        check_pool()
        check_timeout()
        check_event()
        check_kill()
    print("ALL-OK", flush=True)


if __name__ == "__main__":
    main()
