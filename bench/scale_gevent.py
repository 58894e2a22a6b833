"""bench/scale.py's gevent part: a gevent echo server holding many idle
connections, on stock greenlet 2.0.2 and on this module, in the same run.

    (driver)  scale_gevent.part_gevent(a, runs), from bench/scale.py
    python bench/scale_gevent.py server IMPL BUILD_DIR NOFILE
    python bench/scale_gevent.py client PORT COUNT IP,IP,... NOFILE

One measurement = a fresh server and fresh clients:
  1. The server (--python, PYTHONPATH choosing the greenlet; it checks which
     greenlet it imported and that gevent's hub is built on it) is a
     gevent.server.StreamServer echo server on 127.0.0.1, one greenlet per
     connection parked in recv().  It times every collection of the cyclic
     collector (gc.callbacks), tagged with the phase it fell in, and answers
     control lines on stdin (status, phase, collect K, gc, spawn N, release,
     quit) with JSON.
  2. Baseline: the server's VmRSS and VmPTE once it listens.
  3. N connections from a few client processes (plain Python, no greenlet):
     each connects, sends 64 bytes and reads the echo, in batches of 250
     (so the listen backlog never overflows), then the connection stays
     idle.  The clients bind their sockets to several loopback sources
     (127.0.0.2, 127.0.0.3, ...; IP_BIND_ADDRESS_NO_PORT) so that N is not
     capped by one (source, destination) pair's ephemeral ports
     (/proc/sys/net/ipv4/ip_local_port_range), and raise RLIMIT_NOFILE
     (soft and hard: these scripts run as root) like the server does.
  4. Idle for a moment, then the server's VmRSS and VmPTE again: memory per
     connection = (after - baseline) / N.  Then gc.collect() --collects
     times: the longest GC pause with the connections idle is the longest
     of those and of any automatic collection while idle.  The automatic
     collections while the connections came in are reported too.
  5. Cleanup: the clients reset every connection (SO_LINGER 0: no
     TIME_WAIT left behind), the server sees each handler finish, stops
     and exits; every process is reaped (killed if it does not finish).
The "wait" measurement is the same without sockets: the server spawns N
greenlets (gevent.spawn) that park in one Event.wait(), then sets the event
and sees all N finish.

Descriptors: N connections need N + 100 in the server (and in each client
process, for its share).  Root normally raises RLIMIT_NOFILE (soft and
hard) up to fs.nr_open; without CAP_SYS_RESOURCE (some containers) the hard
limit stays, and an echo size above it is measured at the largest thousand
that fits, said so in the output.
"""
import json
import math
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

import scale_lib as L

HERE = os.path.abspath(__file__)
MSG = b"0123456789abcdef" * 4          # 64 bytes
BATCH = 250                            # connections in flight per client
PER_CLIENT = 25000                     # connections per client process, at most
SPARE_FDS = 100                        # descriptors a process needs besides its sockets
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


# ---------------------------------------------------------------- server

def server(impl, build_dir, nofile):
    got = L.raise_nofile(nofile)
    module = L.check_greenlet(impl, build_dir, gevent_too=True)
    import gc
    import gevent.event
    import gevent.socket
    from gevent.server import StreamServer

    phase = ["start"]
    log = []                           # (phase, generation, seconds)
    start = [None]

    def on_gc(ph, info):
        if ph == "start":
            start[0] = time.perf_counter()
        elif start[0] is not None:
            log.append((phase[0], info.get("generation"), time.perf_counter() - start[0]))
            start[0] = None
    gc.callbacks.append(on_gc)

    count = {"open": 0, "echoed": 0, "closed": 0, "parked": 0, "done": 0}
    event = gevent.event.Event()

    def waiter():
        count["parked"] += 1
        event.wait()
        count["done"] += 1

    def handle(sock, addr):
        count["open"] += 1
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                sock.sendall(data)
                count["echoed"] += 1
        except OSError:
            pass                       # the clients reset their connections
        finally:
            count["closed"] += 1

    srv = StreamServer(("127.0.0.1", 0), handle, backlog=65535)
    srv.start()
    gc.collect()

    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def summary():
        res = {}
        for ph, gen, dt in log:
            s = res.setdefault(ph, {"n": 0, "s": 0.0, "max": 0.0, "full": 0})
            s["n"] += 1
            s["s"] += dt
            s["max"] = max(s["max"], dt)
            s["full"] += gen == 2
        return res

    reply({"port": srv.address[1], "module": module, "nofile": got})
    buf = b""
    while True:
        gevent.socket.wait_read(0)     # the hub runs the handlers meanwhile
        data = os.read(0, 4096)
        if not data:
            break                      # the driver is gone
        buf += data
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            cmd, *args = line.decode().split()
            if cmd == "status":
                s = L.vm_status()
                reply(dict(count, rss=s["VmRSS"], pte=s["VmPTE"]))
            elif cmd == "phase":
                phase[0] = args[0]
                reply({"phase": phase[0]})
            elif cmd == "collect":
                phase[0], times = "forced", []
                for _ in range(int(args[0])):
                    t = time.perf_counter()
                    gc.collect()
                    times.append(time.perf_counter() - t)
                phase[0] = "idle"
                reply({"times": times})
            elif cmd == "spawn":
                for _ in range(int(args[0])):
                    gevent.spawn(waiter)
                gevent.sleep(0)        # the hub starts them: each parks in wait()
                reply(count)
            elif cmd == "release":
                event.set()
                gevent.sleep(0)
                reply(count)
            elif cmd == "gc":
                reply(summary())
            elif cmd == "quit":
                srv.close()
                reply(count)
                return
            else:
                reply({"error": "unknown command %r" % cmd})


# ---------------------------------------------------------------- client

def client(port, count, ips, nofile):
    L.raise_nofile(nofile)
    socks = []
    t0 = time.monotonic()
    for first in range(0, count, BATCH):
        batch = []
        for i in range(first, min(count, first + BATCH)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(60)
            s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((ips[i % len(ips)], 0))
            s.connect(("127.0.0.1", port))
            s.sendall(MSG)
            batch.append(s)
        for s in batch:
            got = b""
            while len(got) < len(MSG):
                data = s.recv(len(MSG) - len(got))
                if not data:
                    sys.exit("scale client: the server closed a connection")
                got += data
            if got != MSG:
                sys.exit("scale client: wrong echo")
        socks.extend(batch)
    print("ready %d %.3f" % (len(socks), time.monotonic() - t0), flush=True)
    sys.stdin.readline()               # "close", or EOF: the driver is gone
    linger = struct.pack("ii", 1, 0)   # reset: no TIME_WAIT left behind
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.close()
    print("closed", flush=True)


# ---------------------------------------------------------------- driver

class Failed(Exception):
    def __init__(self, why, timeout=False):
        Exception.__init__(self, why)
        self.timeout = timeout


class Proc:
    """A child with a stdin pipe, a line reader on its stdout, stderr in a file."""

    def __init__(self, name, cmd, env):
        self.name, self.err = name, tempfile.TemporaryFile()
        self.p = L.popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=self.err)
        self.lines = L.Lines(self.p.stdout)

    def send(self, text):
        try:
            self.p.stdin.write((text + "\n").encode())
            self.p.stdin.flush()
        except OSError:
            raise Failed("%s exited (rc %s): %s" % (self.name, self.p.poll(), self.stderr()))

    def line(self, deadline, what):
        line = self.lines.readline(max(0.5, deadline - time.monotonic()))
        if line is None:
            raise Failed("%s: no %s before the timeout" % (self.name, what), timeout=True)
        if not line:
            self.p.wait()
            raise Failed("%s exited (rc %s) before %s: %s" % (
                self.name, self.p.returncode, what, self.stderr()))
        return line.strip()

    def ask(self, cmd, deadline):
        self.send(cmd)
        return json.loads(self.line(deadline, "answer to %r" % cmd))

    def stderr(self):
        return L.stderr_text(self.err, 1500)

    def close(self):
        L.reap(self.p)
        for f in (self.p.stdin, self.p.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.err.close()


def plan(n):
    """(source addresses, client processes) for n connections."""
    lo, hi = L.port_range()
    per_ip = max(1000, (hi - lo + 1) // 2)     # fill at most half of each range
    ips = ["127.0.0.%d" % (2 + k) for k in range(min(250, math.ceil(n / per_ip)))]
    per_client = min(PER_CLIENT, L.fd_ceiling()[0] - SPARE_FDS)
    return ips, max(1, math.ceil(n / per_client))


def fill_echo(a, srv, hello, n, deadline, clients):
    """N client connections, one echo each; returns when all are idle."""
    ips, nclients = plan(n)
    shares = [n // nclients + (k < n % nclients) for k in range(nclients)]
    for k, share in enumerate(shares):
        clients.append(Proc("client %d" % (k + 1), [
            a.python, HERE, "client", str(hello["port"]), str(share), ",".join(ips),
            str(share + SPARE_FDS)], a.envs["stock"]))
    for c, share in zip(clients, shares):
        got = c.line(deadline, "ready line").split()
        if got[:2] != ["ready", str(share)]:
            raise Failed("%s: %s" % (c.name, " ".join(got)))
    st = srv.ask("status", deadline)
    if st["open"] != n or st["echoed"] != n:
        raise Failed("server saw %d connections and %d echoes, %d expected"
                     % (st["open"], st["echoed"], n))
    return {"sources": len(ips), "clients": nclients}


def empty_echo(srv, n, deadline, clients):
    for c in clients:
        c.send("close")
    for c in clients:
        if c.line(deadline, "closed line") != "closed":
            raise Failed("%s did not close" % c.name)
    wait_for(srv, "closed", n, deadline)


def wait_for(srv, key, n, deadline):
    while True:                        # every handler/waiter must finish
        st = srv.ask("status", deadline)
        if st[key] == n:
            return
        if time.monotonic() > deadline:
            raise Failed("server: %s %d of %d before the timeout" % (key, st[key], n),
                         timeout=True)
        time.sleep(0.2)


def measure(a, mode, impl, n, timeout):
    """One fresh server; mode "echo" (n idle connections) or "wait" (n
    greenlets parked in Event.wait()).  Returns the figures or an error."""
    deadline = time.monotonic() + timeout
    srv, clients, extra = None, [], {}
    try:
        srv = Proc("%s server" % impl, [a.python, HERE, "server", impl, a.build_dir,
                                        str(n + SPARE_FDS)], a.envs[impl])
        hello = json.loads(srv.line(min(deadline, time.monotonic() + 60), "start line"))
        if mode == "echo" and hello["nofile"] < n + SPARE_FDS:
            raise Failed("server: RLIMIT_NOFILE is %d, %d wanted" % (hello["nofile"],
                                                                     n + SPARE_FDS))
        base = srv.ask("status", deadline)
        srv.ask("phase connect", deadline)
        t0 = time.monotonic()
        if mode == "echo":
            extra = fill_echo(a, srv, hello, n, deadline, clients)
        else:
            srv.ask("spawn %d" % n, deadline)
            wait_for(srv, "parked", n, deadline)
        setup = time.monotonic() - t0
        srv.ask("phase idle", deadline)
        time.sleep(a.idle)
        st = srv.ask("status", deadline)
        forced = srv.ask("collect %d" % a.collects, deadline)["times"]
        gcs = srv.ask("gc", deadline)
        if mode == "echo":
            empty_echo(srv, n, deadline, clients)
        else:
            srv.ask("release", deadline)
            wait_for(srv, "done", n, deadline)
        srv.ask("quit", deadline)
        for proc in [srv] + clients:
            if proc.p.wait(max(1, deadline - time.monotonic())) != 0:
                raise Failed("%s exited with %s: %s" % (proc.name, proc.p.returncode,
                                                       proc.stderr()))
            if proc.stderr():
                extra["stderr"] = (extra.get("stderr", "") + "%s: %s\n" % (
                    proc.name, proc.stderr()))[-2000:]
    except Failed as e:
        return {"error": str(e), "timeout": e.timeout}
    except subprocess.TimeoutExpired as e:
        return {"error": "timed out waiting for %s" % e.cmd, "timeout": True}
    finally:
        for proc in clients + ([srv] if srv else []):
            proc.close()
    rss, pte = st["rss"] - base["rss"], st["pte"] - base["pte"]
    idle, conn = gcs.get("idle", {}), gcs.get("connect", {})
    return dict(extra, module=hello["module"], rss_b=rss / n, pte_b=pte / n,
                mem_b=(rss + pte) / n, rss_total=rss, pte_total=pte,
                forced_gc_s=L.median(forced), forced_all=forced,
                pause_idle_s=max(forced + [idle.get("max", 0.0)]),
                idle_gc_n=idle.get("n", 0), connect_gc_n=conn.get("n", 0),
                connect_gc_s=conn.get("s", 0.0), connect_gc_max_s=conn.get("max", 0.0),
                connect_gc_full=conn.get("full", 0), setup_us=setup / n * 1e6)


def sockstat():
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def fit_sizes(a):
    """Sizes the server's descriptor ceiling allows: a size above it is
    replaced by the largest thousand below it, and said so."""
    ceiling, why = L.fd_ceiling()
    most = (ceiling - SPARE_FDS) // 1000 * 1000
    sizes = []
    for n in a.gevent_sizes:
        if n + SPARE_FDS > ceiling:
            L.out("  !! %s connections need %s descriptors in the server; the ceiling here "
                  "is %s (%s): measured at %s connections instead" % (
                      L.num(n), L.num(n + SPARE_FDS), L.num(ceiling), why, L.num(most)))
            n = most
        if n > 0 and n not in sizes:
            sizes.append(n)
    a.gevent_sizes = sizes


def report(rec, mode):
    tag = "  %s %5s round %d %-5s" % (mode, L.size_label(rec["size"]), rec["round"],
                                      rec["impl"])
    if "error" in rec:
        L.out("%s %s: %s" % (tag, "TIMEOUT" if rec["timeout"] else "FAILED", rec["error"]))
        return
    L.out("%s RSS+PTE %s B each (RSS %s + PTE %s); idle GC pause %.1f ms (forced median "
          "%.1f ms, %d automatic); while %s %d automatic, %.1f ms, longest %.1f ms; "
          "%.1f us each (%.1f s)" % (
              tag, L.num(round(rec["mem_b"])), L.num(round(rec["rss_b"])),
              L.num(round(rec["pte_b"])), rec["pause_idle_s"] * 1e3,
              rec["forced_gc_s"] * 1e3, rec["idle_gc_n"],
              "connecting" if mode == "echo" else "spawning", rec["connect_gc_n"],
              rec["connect_gc_s"] * 1e3, rec["connect_gc_max_s"] * 1e3, rec["setup_us"],
              rec["wall_s"]))
    if rec.get("stderr"):
        L.out("    (stderr) " + rec["stderr"][-500:])


def part_gevent(a, runs):
    lo, hi = L.port_range()
    ceiling, why = L.fd_ceiling()
    L.out("\ngevent: echo server with %s idle connections, and %s greenlets parked in "
          "Event.wait(); %d round(s); ephemeral ports %d-%d; descriptors per process up to "
          "%s (%s)" % (", ".join(L.size_label(n) for n in a.gevent_sizes),
                       ", ".join(L.size_label(n) for n in a.wait_sizes), a.rounds, lo, hi,
                       L.num(ceiling), why))
    fit_sizes(a)
    if a.gevent_sizes:
        biggest = max(a.gevent_sizes)
        ips, nclients = plan(biggest)
        L.out("  echo at %s: %d source address(es) (127.0.0.2-%s), %d client process(es)" % (
            L.size_label(biggest), len(ips), ips[-1], nclients))
    L.out("  TCP sockets before: %s" % sockstat())
    for r in range(a.rounds):
        for part, mode, sizes in (("gevent", "echo", a.gevent_sizes),
                                  ("gevent-wait", "wait", a.wait_sizes)):
            for n in sizes:
                for impl in (("stock", "here") if r % 2 == 0 else ("here", "stock")):
                    t = time.monotonic()
                    res = measure(a, mode, impl, n, a.timeout or 120 + 2e-3 * n)
                    rec = dict(res, part=part, impl=impl, size=n, round=r + 1,
                               wall_s=time.monotonic() - t)
                    runs.append(rec)
                    report(rec, mode)
    L.out("  TCP sockets after: %s" % sockstat())


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "server" and len(sys.argv) == 5:
        server(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif role == "client" and len(sys.argv) == 6:
        client(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(","), int(sys.argv[5]))
    else:
        sys.exit("usage: scale_gevent.py server IMPL BUILD_DIR NOFILE | "
                 "client PORT COUNT IPS NOFILE (bench/scale.py runs these)")
