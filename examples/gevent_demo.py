"""gevent on cgreenlet's greenlet module: a pywsgi server on 127.0.0.1 and
concurrent clients, each request answered by its own greenlet.

Run: PYTHONPATH=build/python-3.11 /usr/bin/python3 examples/gevent_demo.py
"""
import sys

import greenlet
import gevent
from gevent import socket
from gevent.pywsgi import WSGIServer

impl = getattr(greenlet._greenlet, "_cgreenlet_version", None)
print("greenlet module: %s (%s)" % (greenlet.__file__,
      "cgreenlet %s" % impl if impl else "NOT cgreenlet: stock greenlet"))


def app(environ, start_response):
    me = greenlet.getcurrent()
    gevent.sleep(0.01)  # yield to the hub: the other requests run meanwhile
    body = ("path %s answered by greenlet %#x; its parent, the hub %#x, is "
            "suspended on its own stack (%d bytes in use)\n" % (
                environ["PATH_INFO"], id(me), id(me.parent),
                me.parent._stack_saved))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]


def fetch(port, path):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("GET %s HTTP/1.0\r\nHost: demo\r\n\r\n" % path).encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.split(b"\r\n\r\n", 1)[1].decode()


server = WSGIServer(("127.0.0.1", 0), app, log=None)
server.start()
port = server.server_port
print("pywsgi server on 127.0.0.1:%d; 8 clients at once" % port)
clients = [gevent.spawn(fetch, port, "/request-%d" % i) for i in range(8)]
gevent.joinall(clients, timeout=10)
ok = 0
for c in clients:
    if c.successful() and c.value.startswith("path /request-"):
        ok += 1
        sys.stdout.write("  " + c.value)
server.stop()
print("%d of %d requests answered" % (ok, len(clients)))
sys.exit(0 if ok == len(clients) and impl else 1)
