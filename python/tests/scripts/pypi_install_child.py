"""Child of test_pypi_install.py, run by the python of a fresh venv into
which pip installed the `greenlet` distribution and gevent.

usage: python pypi_install_child.py probe     # which greenlet; no gevent run
       python pypi_install_child.py gevent    # that, then a small gevent program

Self-contained (the venv has nothing of this repository but what pip put
there).  Prints one line `PROBE <json>`: where greenlet comes from, whether
it is cgreenlet's module (greenlet._greenlet._cgreenlet_version exists only
there), the installed `greenlet` distributions, and for `gevent` whether
gevent's greenlet classes derive from that module's type.  Then, for
`gevent`, after monkey.patch_all(): spawn/sleep/joinall, and an echo over a
patched socketpair whose server greenlet blocks in recv() first (if
patching did not take, that recv() would block the whole process and the
parent's timeout fails the test); `OK <check>` per check and ALL-OK last.
"""
import sys

mode = sys.argv[1]
if mode == "gevent":
    from gevent import monkey
    monkey.patch_all()

import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import greenlet  # noqa: E402
import greenlet._greenlet as impl  # noqa: E402

dists = []
for d in md.distributions():
    if (d.metadata["Name"] or "").lower() == "greenlet":
        try:
            direct = json.loads(d.read_text("direct_url.json") or "null")
        except ValueError:
            direct = None
        dists.append({"version": d.version, "summary": d.metadata["Summary"],
                      "location": os.path.realpath(str(d.locate_file(""))),
                      "direct_url": direct})
info = {
    "executable": sys.executable,
    "prefix": os.path.realpath(sys.prefix),
    "file": os.path.realpath(greenlet.__file__),
    "impl_file": os.path.realpath(impl.__file__),
    "cgreenlet_version": getattr(impl, "_cgreenlet_version", None),
    "version": greenlet.__version__,
    "dists": dists,
}
if mode == "gevent":
    import gevent
    import gevent.hub
    info["gevent"] = gevent.__version__
    info["gevent_file"] = os.path.realpath(gevent.__file__)
    info["gevent_on_it"] = (gevent.hub.RawGreenlet is greenlet.greenlet
                            and issubclass(gevent.Greenlet, greenlet.greenlet)
                            and gevent.getcurrent() is greenlet.getcurrent())
print("PROBE " + json.dumps(info), flush=True)
if mode != "gevent":
    sys.exit(0)

import socket  # noqa: E402

# spawn, sleep, joinall: three greenlets that finish in reverse order
order = []


def worker(i):
    gevent.sleep(0.02 * (3 - i))
    order.append(i)
    return i * i


gs = [gevent.spawn(worker, i) for i in range(3)]
done = gevent.joinall(gs, timeout=60)
assert len(done) == 3 and all(g.successful() for g in gs), gs
assert [g.value for g in gs] == [0, 1, 4], [g.value for g in gs]
assert order == [2, 1, 0], order
print("OK spawn-sleep-joinall", flush=True)

# a monkey-patched socketpair: the echo greenlet waits in recv() before the
# main greenlet sends anything
a, b = socket.socketpair()
assert type(a).__module__.startswith("gevent"), type(a)
waiting = []


def echo():
    waiting.append(True)
    data = b.recv(64)
    b.sendall(data.upper())
    return len(data)


g = gevent.spawn(echo)
gevent.sleep(0)              # echo runs up to its recv() and parks
assert waiting == [True] and not g.dead
a.sendall(b"ping from the main greenlet")
reply = a.recv(64)
assert reply == b"PING FROM THE MAIN GREENLET", reply
assert g.get(timeout=60) == len(reply)
a.close()
b.close()
print("OK patched-socketpair-echo", flush=True)
print("ALL-OK", flush=True)
