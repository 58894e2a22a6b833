"""gevent pywsgi server on 127.0.0.1 under concurrent clients (child process).

usage:
  gevent_wsgi.py selftest CLIENTS REQUESTS_PER_CLIENT
      server and client greenlets in this process; prints a RESULT line.
  gevent_wsgi.py serve
      prints "PORT n", serves until GET /quit, then prints "SERVED n".
Everything is bounded by gevent.Timeout; any failure exits non-zero.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cgl_support  # noqa: E402

cgl_support.check_gevent_identity_or_exit()

import json  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402
import gevent.socket  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

served = [0]
stop_event = gevent.event.Event()


def body_for(ident, repeat):
    return ("hello %s;" % ident * repeat).encode()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    served[0] += 1
    if path == "/quit":
        start_response("200 OK", [("Content-Type", "text/plain")])
        gevent.spawn_later(0.05, stop_event.set)
        return [b"bye"]
    if path.startswith("/echo"):
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(data)))])
        return [data]
    # /hello/<ident>/<repeat>/<sleep-ms>
    _, _, ident, repeat, sleep_ms = path.split("/")
    if int(sleep_ms):
        gevent.sleep(int(sleep_ms) / 1000.0)
    body = body_for(ident, int(repeat))
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    # A chunked-looking iterable of pieces, switching between them.
    half = len(body) // 2
    return [body[:half], body[half:]]


def read_response(sock_file):
    status = sock_file.readline()
    if not status:
        raise ConnectionError("connection closed before the status line")
    code = int(status.split()[1])
    length = None
    while True:
        line = sock_file.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    assert length is not None, "no Content-Length"
    return code, sock_file.read(length)


def client(port, ident, count, keep_alive, results):
    sock = None
    f = None
    for k in range(count):
        if sock is None:
            sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=10)
            f = sock.makefile("rb")
        repeat = 1 + (ident * 7 + k * 13) % 300
        if k % 3 == 2:
            payload = body_for("post-%d-%d" % (ident, k), repeat)
            request = ("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n"
                       % (len(payload), "" if keep_alive else "Connection: close\r\n")
                       ).encode() + payload
            expect = payload
        else:
            request = ("GET /hello/%d-%d/%d/%d HTTP/1.1\r\nHost: t\r\n%s\r\n"
                       % (ident, k, repeat, 20 if k == 0 else 0,
                          "" if keep_alive else "Connection: close\r\n")).encode()
            expect = body_for("%d-%d" % (ident, k), repeat)
        sock.sendall(request)
        code, body = read_response(f)
        assert code == 200, code
        assert body == expect, (ident, k, len(body), len(expect))
        results.append((ident, k))
        if not keep_alive:
            f.close()
            sock.close()
            sock = None
    if sock is not None:
        f.close()
        sock.close()


def selftest(clients, per_client):
    server = WSGIServer(("127.0.0.1", 0), app, log=None, spawn=gevent.pool.Pool(200))
    server.start()
    port = server.server_port
    results = []
    started = time.monotonic()
    with gevent.Timeout(15):
        jobs = [gevent.spawn(client, port, i, per_client, i % 2 == 0, results)
                for i in range(clients)]
        gevent.joinall(jobs, raise_error=True)
    elapsed = time.monotonic() - started
    server.stop(timeout=2)
    expected = {(i, k) for i in range(clients) for k in range(per_client)}
    assert len(results) == len(expected) and set(results) == expected
    print("RESULT " + json.dumps({"requests": len(results), "served": served[0],
                                  "elapsed": round(elapsed, 3)}), flush=True)


def serve():
    server = WSGIServer(("127.0.0.1", 0), app, log=None, spawn=gevent.pool.Pool(500))
    server.start()
    print("PORT %d" % server.server_port, flush=True)
    with gevent.Timeout(30):
        stop_event.wait()
    server.stop(timeout=2)
    print("SERVED %d" % served[0], flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "selftest":
        selftest(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "serve":
        serve()
    else:
        raise SystemExit("unknown mode " + sys.argv[1])
