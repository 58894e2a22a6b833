"""Checks shared by the gevent and eventlet child scripts (pypi_gevent.py,
pypi_eventlet.py, eventlet_server.py).

The scripts run as `python scripts/NAME.py`, so this folder is sys.path[0]
and `import green_checks` finds this module.  It imports no gevent or
eventlet itself: the calls that differ between them (sleep, Timeout, ...)
come in as arguments, and `threading`, `time` and `queue` are imported when
a check runs, after any monkey-patching.  Every wait is bounded (HANG) and
nothing is timed.
"""
import contextlib
import os
import sys

HANG = 60  # seconds: a bound against hangs, not a performance target


def child_start(patch_mode, patch, library):
    """A script's start: its mode (argv[1]); patch() first of all in
    patch_mode; then cgl_support's check that `library` ("gevent" or
    "eventlet") runs on the greenlet module of the test session (exit 3
    otherwise).  Returns the mode."""
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == patch_mode:
        patch()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import cgl_support
    getattr(cgl_support, "check_%s_identity_or_exit" % library)()
    return mode


def ok(name, detail=""):
    print("OK %s %s" % (name, detail), flush=True)


def start_join(threads, bound=None, join_timeout=None):
    """Start every thread, then join them all, inside the context manager
    `bound` (a Timeout) if given, each join bounded by join_timeout."""
    with bound if bound is not None else contextlib.nullcontext():
        for t in threads:
            t.start()
        for t in threads:
            t.join(join_timeout)


def thread_locals(start_join):
    """20 (green) threads each set a threading.local, sleep, and must find
    their own value again."""
    import threading
    import time
    local = threading.local()
    checks = []

    def with_local(i):
        local.v = i
        time.sleep(0.001)
        checks.append(local.v == i)
    start_join([threading.Thread(target=with_local, args=(i,)) for i in range(20)])
    assert checks == [True] * 20


def listening_socket():
    """A (patched) TCP socket listening on 127.0.0.1: (socket, port)."""
    import socket
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(256)
    return srv, srv.getsockname()[1]


def thread_per_connection(srv, handle):
    """An acceptor loop for srv: handle(conn) in a daemon thread each."""
    import threading

    def acceptor():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    return acceptor


def queue_between_threads(count, start_join):
    """queue.Queue(maxsize=4) from a producer thread to a consumer thread."""
    import queue
    import threading
    q = queue.Queue(maxsize=4)
    got = []

    def producer():
        for i in range(count):
            q.put(i)
        q.put(None)

    def consumer():
        while (item := q.get()) is not None:
            got.append(item)
    start_join([threading.Thread(target=producer), threading.Thread(target=consumer)])
    assert got == list(range(count))
    ok("queue")


def timeout_interrupts_sleep(Timeout, failure):
    """A Timeout with an exception class of its own interrupts the patched
    time.sleep (AssertionError(failure) if it does not)."""
    import time

    class Late(Exception):
        pass
    try:
        with Timeout(0.01, Late):
            time.sleep(HANG)
    except Late:
        pass
    else:
        raise AssertionError(failure)


def timeout_interrupts_recv(Timeout, socketpair):
    """A Timeout interrupts a green socket's recv()."""
    a, b = socketpair()
    try:
        with Timeout(0.01):
            a.recv(10)
    except Timeout:
        pass
    else:
        raise AssertionError("Timeout did not interrupt recv")
    a.close()
    b.close()


def peak_counter(sleep, yields, sem=None):
    """(run, counts): run(x) returns x * x after yielding `yields` times,
    holding sem if given; counts is [inside now, most inside at once]."""
    counts = [0, 0]

    def run(x=0):
        with sem if sem is not None else contextlib.nullcontext():
            counts[0] += 1
            counts[1] = max(counts)
            for _ in range(yields):
                sleep(0)
            counts[0] -= 1
        return x * x
    return run, counts


def victims(sleep):
    """(victim, log, Stop): victim(name) sleeps HANG and logs what ends it
    into log: GreenletExit ("exit", raised on), Stop ("stop", returns
    "stopped"), and its finally block ("finally")."""
    import greenlet
    log = []

    class Stop(Exception):
        pass

    def victim(name):
        try:
            sleep(HANG)
        except greenlet.GreenletExit:
            log.append((name, "exit"))
            raise
        except Stop:
            log.append((name, "stop"))
            return "stopped"
        finally:
            log.append((name, "finally"))
    return victim, log, Stop


def finally_count(log, prefix=""):
    return sum(1 for n, w in log if n.startswith(prefix) and w == "finally")


def eventlet_echo_server(clients, rounds, pad, together=False, bound=HANG, poll=0.001,
                         backlog=50):
    """An eventlet green-socket echo server (each line sent back reversed,
    one green thread per connection) and `clients` clients in a GreenPool,
    each sending `rounds` lines padded with pad(i) x's and checking the
    answers.  together: every client connects before any sends, so that all
    are connected at once (a hang otherwise).  Returns the most connections
    handled at once."""
    import eventlet
    import eventlet.event
    listener = eventlet.listen(("127.0.0.1", 0), backlog=backlog)
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
                f.write(line[:-1][::-1] + b"\n")   # reversed, newline kept last
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
            if together:
                all_in.wait()          # every client connected at once first
            for k in range(rounds):
                msg = ("c%d-k%d-" % (i, k) + "x" * pad(i)).encode()
                f.write(msg + b"\n")
                f.flush()
                reply = f.readline()
                assert reply == msg[::-1] + b"\n", (reply, msg)
            f.write(b"bye\n")
            f.flush()
        finally:
            f.close()
            c.close()
        return i

    with eventlet.Timeout(bound):
        done = sorted(eventlet.GreenPool(clients).imap(client, range(clients)))
        while handled[0] < clients:
            eventlet.sleep(poll)
    assert done == list(range(clients))
    server.kill()
    listener.close()
    return inside[1]
