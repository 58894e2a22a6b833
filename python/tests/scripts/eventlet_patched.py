"""eventlet.monkey_patch() and patched socket/threading/time (child process).

Prints "OK <check>" per check and "ALL-OK" at the end.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import eventlet  # noqa: E402

eventlet.monkey_patch()

import cgl_support  # noqa: E402

cgl_support.check_eventlet_identity_or_exit()

import queue  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import eventlet.patcher  # noqa: E402
import greenlet  # noqa: E402

real_get_ident = eventlet.patcher.original("_thread").get_ident
MAIN_OS_THREAD = real_get_ident()


def ok(name, detail=""):
    print("OK %s %s" % (name, detail), flush=True)


def check_patched():
    for mod in ("socket", "thread", "time", "select"):
        assert eventlet.patcher.is_monkey_patched(mod), mod
    ok("patched")


def check_time_and_threads():
    seen = []
    sleeping = [0, 0]           # now, peak
    lock = threading.Lock()

    def work(i):
        assert isinstance(greenlet.getcurrent(), greenlet.greenlet)
        with lock:
            sleeping[0] += 1
            sleeping[1] = max(sleeping)
        time.sleep(0.05)
        with lock:
            sleeping[0] -= 1
            seen.append((i, real_get_ident()))

    started = time.monotonic()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    [t.start() for t in ts]
    [t.join(5) for t in ts]
    elapsed = time.monotonic() - started
    assert sorted(i for i, _ in seen) == list(range(50))
    assert {ident for _, ident in seen} == {MAIN_OS_THREAD}, "not green threads"
    # The sleeps overlap (green threads), counted rather than timed.
    assert sleeping[1] > 1, sleeping
    ev = threading.Event()
    threading.Thread(target=lambda: (time.sleep(0.01), ev.set())).start()
    assert ev.wait(2)
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(i) for i in range(100)]).start()
    assert [q.get(timeout=2) for _ in range(100)] == list(range(100))
    ok("threads-time", "%.3fs, up to %d asleep at once" % (elapsed, sleeping[1]))


def check_socket():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    port = server.getsockname()[1]

    def handle(conn):
        with conn:
            data = conn.recv(4096)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(data), data))

    def acceptor(n):
        for _ in range(n):
            conn, _ = server.accept()
            threading.Thread(target=handle, args=(conn,)).start()

    n = 60
    acc = threading.Thread(target=acceptor, args=(n,))
    acc.start()
    answers = {}

    def client(i):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"ping %d" % i)
            data = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
        answers[i] = data.endswith(b"ping %d" % i)

    cs = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    [t.start() for t in cs]
    [t.join(5) for t in cs]
    acc.join(5)
    server.close()
    assert len(answers) == n and all(answers.values())
    ok("socket", "%d clients" % n)


def main():
    with eventlet.Timeout(15):
        check_patched()
        check_time_and_threads()
        check_socket()
    print("ALL-OK", flush=True)


if __name__ == "__main__":
    main()
