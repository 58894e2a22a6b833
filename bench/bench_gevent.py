"""gevent benchmarks: the same gevent servers on cgreenlet's greenlet module
and on stock greenlet, in the same run, on the same interpreter, two pairs:

  - Debian's gevent 22.10 on Debian's stock greenlet 2.0.2 against the same
    gevent on this module (/usr/bin/python3, PYTHONPATH choosing the module);
  - today's gevent from PyPI (26.9.0, pinned in scripts/pypi-requirements.txt)
    on today's stock greenlet from PyPI (3.5.6) against the same gevent on
    this module: build/bench-venv-X.Y, a venv on the same interpreter with
    gevent 26 and no greenlet, PYTHONPATH choosing this module or
    build/bench-greenlet-3.5.6-X.Y (both made, or kept, by
    scripts/bench-env.sh, from the wheel cache outside the clone).

    /usr/bin/python3 bench/bench_gevent.py [--build-dir build/python-3.11]
        [--rounds 5] [--duration 5] [--warmup 2] [--only http|echo]
        [--pairs debian,pypi] [--json FILE]

Figures (issues 3 and 15; target: gevent throughput with cgreenlet >= 1.0x
stock, gevent 22.10 against 2.0.2 and gevent 26.9 against 3.5.6):
  - gevent pywsgi hello-world server under wrk (requests/s, keep-alive;
    the server sets TCP_NODELAY, as pywsgi writes headers and body apart);
  - gevent.server.StreamServer echo server, 100 concurrent clients, each
    sending a 64-byte message and waiting for its echo (round trips/s).

Each measurement starts a fresh server (the server checks which greenlet and
which gevent it imported and that gevent's hub is built on that greenlet,
and refuses to run otherwise).  The load
generator is the same for both: wrk for HTTP; for echo, a plain-Python epoll
client that does not import greenlet or gevent.  Server and client are pinned
to different CPUs (taskset) unless --no-pin.  Each round runs every server
once, a pair's two back to back, the order reversed every other round (ours
22, stock 2.0.2, stock 3.5.6, ours 26, then the reverse).  A line per
measurement (unless -q), then the medians and ours/stock per pair (> 1 means
cgreenlet is faster); also the CPU use
of server and client during the load (a client near 100% would hide
differences), the server's RSS and live greenlets after it, and any errors.

The environment variables BENCH_GEVENT_ROUNDS, BENCH_GEVENT_DURATION and
BENCH_GEVENT_WARMUP set the defaults of --rounds, --duration and --warmup,
e.g. `BENCH_GEVENT_ROUNDS=1 BENCH_GEVENT_DURATION=2 make bench-gevent`.
"""
import argparse
import functools
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from scale_lib import CHILDREN, Lines, popen, run_main
import scale_lib

SERVER = r'''
import gc, json, os, signal, socket, sys
mode, expect, build_dir, stock_dir, stock_version, gevent_version = sys.argv[1:7]
import greenlet
ours = getattr(greenlet._greenlet, "_cgreenlet_version", None)
path = os.path.realpath(greenlet.__file__)
in_build = path.startswith(os.path.realpath(build_dir) + os.sep)
if expect == "ours":
    ok = ours is not None and in_build
elif stock_dir == "-":      # Debian's
    ok = ours is None and not in_build and greenlet.__version__ == stock_version
else:                       # PyPI's, unpacked in stock_dir
    ok = (ours is None and greenlet.__version__ == stock_version and
          path.startswith(os.path.realpath(stock_dir) + os.sep))
import gevent, gevent.event, gevent.hub
ok = ok and issubclass(gevent.hub.Hub, greenlet.greenlet)
ok = ok and gevent_version in ("-", gevent.__version__)
if not ok:
    sys.stderr.write("bench_gevent server: wanted %s greenlet %s and gevent %s, got %s "
                     "(%s, version %s) and gevent %s\n" % (
                         expect, stock_version, gevent_version, ours or "stock", path,
                         greenlet.__version__, gevent.__version__))
    sys.exit(3)

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def greenlets():
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet))

if mode == "http":
    from gevent.pywsgi import WSGIServer
    BODY = b"Hello, world!\n"
    HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
    def app(environ, start_response):
        start_response("200 OK", HEADERS)
        return [BODY]
    class Server(WSGIServer):
        # pywsgi sends the headers and the body in two writes; without
        # TCP_NODELAY, Nagle and delayed ACKs cap each connection at about
        # 25 requests/s, whatever the greenlet module.
        def handle(self, sock, address):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return WSGIServer.handle(self, sock, address)
    server = Server(("127.0.0.1", 0), app, log=None)
else:
    from gevent.server import StreamServer
    def handle(sock, addr):
        recv, sendall = sock.recv, sock.sendall
        while True:
            data = recv(65536)
            if not data:
                break
            sendall(data)
    server = StreamServer(("127.0.0.1", 0), handle, backlog=1024)

stop = gevent.event.Event()
gevent.signal_handler(signal.SIGTERM, stop.set)
server.start()
print(json.dumps({"port": server.address[1], "impl": ours or "stock",
                  "version": greenlet.__version__, "gevent": gevent.__version__,
                  "path": path, "rss": rss(), "greenlets": greenlets()}),
      flush=True)
stop.wait()
server.stop(timeout=2)
gevent.sleep(0.05)
print(json.dumps({"rss": rss(), "greenlets": greenlets()}), flush=True)
'''

CLIENT = r'''
import json, select, socket, sys, time
port, nconn, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
warmup, duration = float(sys.argv[4]), float(sys.argv[5])
msg = (bytes(range(33, 127)) * (size // 94 + 1))[:size]
socks = []
for _ in range(nconn):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    socks.append(s)
ep = select.epoll()
conns = {}
for s in socks:
    ep.register(s.fileno(), select.EPOLLIN)
    conns[s.fileno()] = [s.recv, s.send, b""]
count = 0
for s in socks:
    s.send(msg)
poll, clock = ep.poll, time.perf_counter
start = clock()
t0, t1, c0 = start + warmup, start + warmup + duration, None
last = start
while True:
    now = clock()
    if c0 is None and now >= t0:
        c0, t0 = count, now
        print("start", flush=True)
    if now >= t1:
        print("stop", flush=True)
        break
    events = poll(0.5)
    if not events:
        if now - last > 10:
            sys.exit("echo client: no echo for 10 s (server stalled)")
        continue
    last = now
    for fd, _ in events:
        c = conns[fd]
        data = c[0](65536)
        if data == msg:
            count += 1
            c[1](msg)
            continue
        if not data:
            sys.exit("echo client: server closed a connection")
        data = c[2] + data
        if len(data) < size:
            c[2] = data
            continue
        if data != msg:
            sys.exit("echo client: wrong echo (%d bytes)" % len(data))
        c[2] = b""
        count += 1
        c[1](msg)
# Every connection has one echo in flight: read it before closing, so that
# the server sees a clean EOF rather than a reset.
for s in socks:
    c = conns[s.fileno()]
    s.settimeout(10)
    got = len(c[2])
    while got < size:
        data = s.recv(65536)
        if not data:
            sys.exit("echo client: server closed a connection")
        got += len(data)
    s.close()
print(json.dumps({"rate": (count - c0) / (now - t0), "n": count - c0}))
'''

PROBLEMS = []   # anything odd, printed at the end (exit status 1)

# Children (scale_lib.popen: a session of their own, so that Ctrl-C reaches
# only us) are stopped with SIGTERM, the process alone, SIGKILL after grace.
reap = functools.partial(scale_lib.reap, sig=signal.SIGTERM, grace=5.0, group=False)


def cleanup():
    for p in list(CHILDREN):
        reap(p, grace=2.0)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Server:
    def __init__(self, a, which, mode):
        self.which, self.mode = which, mode
        impl = a.impls[which]
        self.err = tempfile.TemporaryFile()
        self.p = popen(a.pin_server + [impl["python"], "-c", SERVER, mode, impl["expect"],
                                       a.build_dir, impl["stock_dir"], impl["stock_version"],
                                       impl["gevent"]],
                       env=impl["env"], stdout=subprocess.PIPE, stderr=self.err)
        self.out = Lines(self.p.stdout)
        line = self.out.readline(60)
        if not line:
            reap(self.p)
            sys.exit("bench_gevent: %s server did not start (rc %s):\n%s"
                     % (which, self.p.returncode, self.stderr()))
        self.ready = json.loads(line)
        if (self.ready["impl"] == "stock") != (impl["expect"] == "stock"):
            sys.exit("bench_gevent: wrong greenlet in the %s server: %s" % (which, self.ready))
        self.port = self.ready["port"]

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def check_alive(self, what):
        if self.p.poll() is not None:
            PROBLEMS.append("%s %s server died during %s (rc %s): %s"
                            % (self.which, self.mode, what, self.p.returncode,
                               self.stderr()[-2000:]))
            return False
        return True

    def stop(self):
        """Stop it gracefully; return its after-load stats."""
        stats = None
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            line = self.out.readline(20)
            stats = json.loads(line) if line else None
        reap(self.p, grace=10)
        self.p.stdout.close()
        rc = self.p.returncode
        err = self.stderr().strip()
        if rc != 0 or stats is None:
            PROBLEMS.append("%s %s server exited with rc %s%s" % (
                self.which, self.mode, rc, (": " + err[-2000:]) if err else ""))
        elif err:
            PROBLEMS.append("%s %s server wrote to stderr: %s" % (self.which, self.mode, err[-2000:]))
        self.err.close()
        return stats


def run_client(cmd, timeout):
    """Run a load generator to completion; return (stdout, its CPU seconds)."""
    c0 = children_cpu()
    p = popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        reap(p)
    if p.returncode != 0:
        raise RuntimeError("%s failed (rc %s): %s" % (" ".join(cmd), p.returncode, err.strip()))
    return out, children_cpu() - c0


def wrk(a, port, seconds):
    cmd = a.pin_client + ["wrk", "-t%d" % a.wrk_threads, "-c%d" % a.connections,
                          "-d%ds" % seconds, "http://127.0.0.1:%d/" % port]
    out, cpu = run_client(cmd, seconds + 60)
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m:
        raise RuntimeError("cannot parse wrk output:\n" + out)
    errors = []
    m2 = re.search(r"Socket errors: (.*)", out)
    if m2:
        errors.append("wrk socket errors: " + m2.group(1))
    m3 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m3:
        errors.append("wrk: %s non-2xx responses" % m3.group(1))
    return float(m.group(1)), cpu, errors


def echo(a, port, server_pid):
    """Run the echo client; CPU use is taken over its timed window only."""
    cmd = a.pin_client + [a.python, "-c", CLIENT, str(port), str(a.clients),
                          str(a.msg_size), str(a.warmup), str(a.duration)]
    err = tempfile.TemporaryFile()
    p = popen(cmd, stdout=subprocess.PIPE, stderr=err)
    out = Lines(p.stdout)

    def failed(what):
        p.kill()
        p.wait()
        err.seek(0)
        return RuntimeError("echo client %s (rc %s): %s" % (
            what, p.returncode, err.read().decode(errors="replace").strip()))
    try:
        marks = []
        for tag in ("start", "stop"):
            line = out.readline(a.warmup + a.duration + 60)
            if line is None or line.strip() != tag:
                raise failed("failed" if line is not None else "timed out")
            marks.append((time.monotonic(), cpu_seconds(server_pid), cpu_seconds(p.pid)))
        result = out.rest(60)
        if result is None:
            raise failed("timed out")
        if p.wait(60) != 0:
            raise failed("failed")
    finally:
        reap(p)
        p.stdout.close()
        err.close()
    (w0, s0, c0), (w1, s1, c1) = marks
    return json.loads(result)["rate"], w1 - w0, s1 - s0, c1 - c0


def measure(a, which, mode):
    """One fresh server, warm-up, one timed load: the round's figures."""
    srv = Server(a, which, mode)
    try:
        pid = srv.p.pid
        if mode == "http":
            if a.warmup > 0:
                wrk(a, srv.port, max(1, round(a.warmup)))
            s0, t0 = cpu_seconds(pid), time.monotonic()
            rate, client_cpu, errors = wrk(a, srv.port, a.duration)
            wall = time.monotonic() - t0
            server_cpu = cpu_seconds(pid) - s0
        else:
            rate, wall, server_cpu, client_cpu = echo(a, srv.port, pid)
            errors = []
        srv.check_alive(mode)
    except BaseException:
        srv.check_alive(mode)  # a crashed server: its stderr goes in the report
        reap(srv.p)
        raise
    after = srv.stop()
    for e in errors:
        PROBLEMS.append("%s %s: %s" % (which, mode, e))
    return {"rate": rate, "server_cpu": server_cpu / wall, "client_cpu": client_cpu / wall,
            "per_cpu": rate * wall / server_cpu if server_cpu > 0 else 0.0,
            "rss0": srv.ready["rss"], "g0": srv.ready["greenlets"],
            "rss1": after and after["rss"], "g1": after and after["greenlets"]}


# The servers: Debian's gevent on this module and on Debian's stock greenlet,
# then PyPI's gevent (the bench venv) on PyPI's stock greenlet and on this
# module; a round runs them in this order or its reverse.
ORDER = ("ours", "stock", "pypi", "ours26")
PAIRS = {"debian": ("ours", "stock"), "pypi": ("ours26", "pypi")}  # ours, stock

FIGS = [  # mode, name, unit
    ("http", "gevent pywsgi under wrk", "req/s"),
    ("echo", "gevent echo, %d clients", "rt/s"),
]


def fmt_rate(x):
    return "%.0f" % x


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--build-dir", default="build/python-3.11")
    ap.add_argument("--rounds", type=int, default=int(env("BENCH_GEVENT_ROUNDS", 5)))
    ap.add_argument("--duration", type=int, default=int(env("BENCH_GEVENT_DURATION", 5)),
                    help="seconds of timed load per measurement (default 5)")
    ap.add_argument("--warmup", type=int, default=int(env("BENCH_GEVENT_WARMUP", 2)),
                    help="seconds of untimed load first (default 2)")
    ap.add_argument("--only", choices=["http", "echo"])
    ap.add_argument("--pairs", default="debian,pypi",
                    help="which comparisons, comma-separated: debian (gevent 22.10, stock "
                         "2.0.2), pypi (gevent 26.9, stock 3.5.6); default both")
    ap.add_argument("--json", help="write every measurement and the medians to this file")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--clients", type=int, default=100, help="echo clients (default 100)")
    ap.add_argument("--msg-size", type=int, default=64, help="echo message bytes (default 64)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    ap.add_argument("--server-cpu", type=int)
    ap.add_argument("--client-cpu", type=int)
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="print only the tables, not every measurement")
    a = ap.parse_args()
    if a.rounds < 1 or a.duration < 1 or a.warmup < 0:
        ap.error("--rounds and --duration want >= 1, --warmup >= 0")
    if not shutil.which("wrk") and a.only != "echo":
        sys.exit("bench_gevent: wrk not found (scripts/deps.sh python installs it)")
    a.build_dir = os.path.abspath(a.build_dir)
    if not os.path.isdir(os.path.join(a.build_dir, "greenlet")):
        sys.exit("bench_gevent: no greenlet module in %s (make python)" % a.build_dir)
    a.pairs = [p for p in a.pairs.split(",") if p]
    if not a.pairs or any(p not in PAIRS for p in a.pairs):
        ap.error("--pairs wants debian and/or pypi")
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    a.impls = {}
    if "debian" in a.pairs:
        gv = subprocess.run([a.python, "-c", "import gevent; print(gevent.__version__)"],
                            env=base, capture_output=True, text=True, cwd="/")
        if gv.returncode != 0:
            sys.exit("bench_gevent: no gevent for %s (scripts/deps.sh python installs "
                     "python3-gevent), or --pairs pypi" % a.python)
        gv = gv.stdout.strip()
        a.impls["ours"] = dict(python=a.python, env=dict(base, PYTHONPATH=a.build_dir),
                               expect="ours", stock_dir="-", stock_version="-", gevent=gv,
                               label="cgreenlet")
        a.impls["stock"] = dict(python=a.python, env=base, expect="stock", stock_dir="-",
                                stock_version="2.0.2", gevent=gv, label="stock 2.0.2")
    if "pypi" in a.pairs:
        try:
            st = scale_lib.stock_env(a.python, a.build_dir, prog="bench_gevent")
        except RuntimeError as e:
            sys.exit("%s\n(--pairs debian goes on without it)" % e)
        a.impls["ours26"] = dict(python=st["venv_python"], env=dict(base, PYTHONPATH=a.build_dir),
                                 expect="ours", stock_dir="-", stock_version="-",
                                 gevent=st["gevent"], label="cgreenlet")
        a.impls["pypi"] = dict(python=st["venv_python"], env=dict(base, PYTHONPATH=st["stock_dir"]),
                               expect="stock", stock_dir=st["stock_dir"],
                               stock_version=st["version"], gevent=st["gevent"],
                               label="stock " + st["version"])

    cpus = sorted(os.sched_getaffinity(0))
    a.pin_server = a.pin_client = []
    pinned = ""
    if not a.no_pin and shutil.which("taskset") and len(cpus) >= 2:
        sc = cpus[0] if a.server_cpu is None else a.server_cpu
        cc = [c for c in cpus if c != sc][0] if a.client_cpu is None else a.client_cpu
        a.pin_server, a.pin_client = ["taskset", "-c", str(sc)], ["taskset", "-c", str(cc)]
        pinned = "server on CPU %d, client on CPU %d" % (sc, cc)
    print("bench_gevent: %d round(s) x %d s (+%d s warm-up) per server, fresh server "
          "each time; %s" % (a.rounds, a.duration, a.warmup, pinned or "not pinned"))
    print("  wrk -t%d -c%d; echo: %d clients x %d-byte messages" % (
        a.wrk_threads, a.connections, a.clients, a.msg_size))
    for pair in a.pairs:
        o, s_ = PAIRS[pair]
        print("  %s: gevent %s on %s (%s) against %s (%s)" % (
            pair, a.impls[o]["gevent"], a.impls[o]["label"], a.impls[o]["python"],
            a.impls[s_]["label"], a.impls[s_]["env"].get("PYTHONPATH", "Debian's")))

    figs = [f for f in FIGS if a.only in (None, f[0])]
    try:
        results = run_all(a, figs)
    except RuntimeError as e:
        PROBLEMS.append(str(e))
        report_problems()
    report(a, figs, results)
    if a.json:
        write_json(a, figs, results)
    report_problems()


def report_problems():
    if PROBLEMS:
        print("\nproblems:")
        for p in PROBLEMS:
            print("  - " + p)
        sys.exit(1)


def run_all(a, figs):
    results = {}
    base_order = [w for w in ORDER if w in a.impls]
    for mode, name, unit in figs:
        res = {w: [] for w in base_order}
        for r in range(a.rounds):
            order = base_order if r % 2 == 0 else base_order[::-1]
            for which in order:  # alternated: drift and noise hit both
                m = measure(a, which, mode)
                res[which].append(m)
                if not a.quiet:
                    print("  %s round %d %-6s %8s %s  server CPU %3.0f%%  client CPU %3.0f%%  "
                          "RSS %.1f->%.1f MB  greenlets %s->%s" % (
                              mode, r + 1, which, fmt_rate(m["rate"]), unit,
                              100 * m["server_cpu"], 100 * m["client_cpu"],
                              m["rss0"] / 2**20, (m["rss1"] or 0) / 2**20, m["g0"], m["g1"]),
                          flush=True)
        results[mode] = res
    return results


def med(ms, k):
    return statistics.median(m[k] or 0 for m in ms)


def report(a, figs, results):
    print()
    print("%-28s %-8s %14s %20s %8s" % ("figure", "gevent", "cgreenlet", "stock", "ratio"))
    for mode, name, unit in figs:
        res = results[mode]
        label = name % a.clients if "%d" in name else name
        for pair in a.pairs:
            o, s = PAIRS[pair]
            mo, ms = med(res[o], "rate"), med(res[s], "rate")
            co, cs = med(res[o], "per_cpu"), med(res[s], "per_cpu")
            print("%-28s %-8s %8s %-5s %8s %-5s %-5s %7.2fx" % (
                label, a.impls[o]["gevent"], fmt_rate(mo), unit, fmt_rate(ms), unit,
                a.impls[s]["stock_version"], mo / ms))
            print("%-28s %-8s %8s %-5s %8s %-5s %-5s %7.2fx" % (
                "  per server CPU-second", "", fmt_rate(co), "", fmt_rate(cs), "", "",
                co / cs))
            label = ""
    print()
    print("medians of %d round(s)   server CPU   client CPU   server RSS after   "
          "greenlets before->after" % a.rounds)
    for mode, name, unit in figs:
        for which in results[mode]:
            ms = results[mode][which]
            print("  %-4s %-6s %18.0f%% %11.0f%% %14.1f MB %14s" % (
                mode, which, 100 * med(ms, "server_cpu"), 100 * med(ms, "client_cpu"),
                med(ms, "rss1") / 2**20, "%d->%d" % (med(ms, "g0"), med(ms, "g1"))))


def write_json(a, figs, results):
    out = {"rounds": a.rounds, "duration": a.duration, "warmup": a.warmup,
           "connections": a.connections, "clients": a.clients, "msg_size": a.msg_size,
           "pin": " ".join(a.pin_server + ["/"] + a.pin_client) if a.pin_server else None,
           "impls": {w: {k: v for k, v in i.items() if k != "env"} | {
               "pythonpath": i["env"].get("PYTHONPATH")} for w, i in a.impls.items()},
           "pairs": {p: PAIRS[p] for p in a.pairs}, "figures": []}
    for mode, name, unit in figs:
        out["figures"].append({
            "mode": mode, "name": name % a.clients if "%d" in name else name, "unit": unit,
            "runs": results[mode],
            "median": {w: {k: med(ms, k) for k in ("rate", "per_cpu", "server_cpu",
                                                   "client_cpu")}
                       for w, ms in results[mode].items()}})
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    run_main(main, "bench_gevent", 1, cleanup)
