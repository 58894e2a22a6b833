"""The benchmark report: runs the benchmarks of the C core and of the drop-in
greenlet module, and writes docs/benchmarks.md with tables and PNG plots
(docs/img/bench-*.png, drawn with Debian's matplotlib).

    /usr/bin/python3 bench/report.py              # about 6 minutes; docs/
    /usr/bin/python3 bench/report.py --quick      # smoke run, about a minute;
                                                  # writes to a temp dir
    /usr/bin/python3 bench/report.py --from-json build/report/results.json

What it measures, each figure the median of several runs, each run a fresh
process, the implementations compared in the same run, interleaved.  Python
figures compare this module with two stock greenlets on the same interpreter
(Debian's python3): Debian's greenlet 2.0.2 and today's from PyPI, 3.5.6
(scripts/bench-env.sh unpacks its pinned wheel, from the cache outside the
clone, into build/; PYTHONPATH chooses the module, and every process checks
which one it imported):

1. Python switch cost against C stack depth: a greenlet parked under D
   nested sorted(key=...) calls (each one a C frame of the interpreter that
   calls back into Python) is switched to and from, for both stock greenlets
   and for this module.  Stock copies the parked greenlet's stack slice out
   and back in on every switch; this module switches stacks.
2. Memory per parked greenlet (RSS delta / count) at several counts, for
   the three Python implementations, and for the C core against
   Boost.Context fibers (fixedsize_stack).
3. The figures of `make bench-python` (bench/bench_python.py --json): switch,
   deep switch, create, kill, RSS at 100,000.
4. The gevent servers of `make bench-gevent` (bench/bench_gevent.py --json):
   pywsgi under wrk and an echo server, Debian's gevent 22.10 on stock 2.0.2
   and on this module, PyPI's gevent 26.9 (build/bench-venv-X.Y) on stock
   3.5.6 and on this module.
5. The C core against Boost.Context: switch (greenlet_switch against a raw
   jump_fcontext ping-pong), create+start+finish, create+park+kill
   (bench/bench_c.c and bench/bench_boost.cpp, as `make bench` runs them).

Everything is built into --build-dir (default build/report): the library
(make lib, also with FPU_SAVE=0), the two C benchmark programs, and the
Python module (setup.py build).  Runs are pinned to the last CPU when
taskset exists (--no-pin to turn that off).  The report states the machine,
the load average at start and end, the date, the commit and the versions.
Speed is not asserted anywhere: a slow or busy machine gives a slow report.
Raw figures go to BUILD_DIR/results.json; --from-json redraws a report from
such a file without running anything.
"""
import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Settings of a full run and of a --quick smoke run.
FULL = {
    "depths": [0, 10, 50, 100, 200, 500, 1000],
    "py_runs": 5,
    "py_target_s": 0.2,         # seconds per timed Python measurement
    "py_counts": [1000, 10000, 100000],
    "c_counts": [1000, 10000, 100000],
    "rss_runs": 3,              # memory runs below 100,000 greenlets
    "rss_runs_large": 1,        # from 100,000 on: deterministic, and slow
    "c_runs": 7,
    "c_switch_rounds": 5000000,
    "c_create_n": 1000000,
    "c_park_n": 200000,
    "bp_runs": 3,               # bench_python.py --runs
    "bp_scale": 1.0,            # bench_python.py --scale
    "gevent_rounds": 3,         # bench_gevent.py --rounds/--duration/--warmup
    "gevent_duration": 5,
    "gevent_warmup": 2,
}
QUICK = {
    "depths": [0, 100, 500],
    "py_runs": 1,
    "py_target_s": 0.03,
    "py_counts": [1000, 4000],
    "c_counts": [1000, 4000],
    "rss_runs": 1,
    "rss_runs_large": 1,
    "c_runs": 1,
    "c_switch_rounds": 200000,
    "c_create_n": 50000,
    "c_park_n": 20000,
    "bp_runs": 1,
    "bp_scale": 0.05,
    "gevent_rounds": 1,
    "gevent_duration": 1,
    "gevent_warmup": 0,
}

# Runs in a fresh interpreter: `switch DEPTH TARGET_S` or `rss N`.  Prints
# one JSON object.  PYTHONPATH chooses the greenlet module.
CHILD = r'''
import gc, json, os, sys, time
sys.setrecursionlimit(100000)
import greenlet
from greenlet import greenlet as G, getcurrent
out = {"impl": getattr(greenlet._greenlet, "_cgreenlet_version", None) and "cgreenlet" or "stock",
       "version": greenlet.__version__,
       "cgreenlet_version": getattr(greenlet._greenlet, "_cgreenlet_version", None),
       "file": os.path.realpath(greenlet.__file__)}
what = sys.argv[1]
main = getcurrent()

def switch(depth, target):
    def down(d):
        if d == 0:
            while True:
                main.switch()
        # sorted() calls the key function from C: one more C-level frame
        # (interpreter loop included) per level.
        return sorted([1, 2], key=lambda x: down(d - 1) if x == 1 else 0)
    g = G(lambda: down(depth))
    g.switch()
    out["stack_saved"] = g._stack_saved
    pc = time.perf_counter
    def batch(n):
        sw = g.switch
        t = pc()
        for _ in range(n):
            sw()
        return pc() - t
    # Warm up and calibrate: double until a batch takes a tenth of the target.
    n = 16
    while True:
        dt = batch(n)
        if dt >= target / 10:
            break
        n *= 2
    n = max(n, int(n * target / dt))
    dt = batch(n)
    out["switches"] = 2 * n
    return dt / (2 * n)

def rss(n):
    page = os.sysconf("SC_PAGE_SIZE")
    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page
    def body():
        main.switch()
    gs = [None] * n     # the list itself is resident before the baseline
    gc.collect()
    r0 = resident()
    for i in range(n):
        g = G(body)
        g.switch()
        gs[i] = g
    return (resident() - r0) / n

if what == "switch":
    out["value"] = switch(int(sys.argv[2]), float(sys.argv[3]))
elif what == "rss":
    out["value"] = rss(int(sys.argv[2]))
print(json.dumps(out))
# Skip the teardown (killing every parked greenlet): not measured, and slow.
sys.stdout.flush()
os._exit(0)
'''


T0 = time.monotonic()


def log(msg):
    print("[%5.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def die(msg):
    sys.exit("bench/report.py: " + msg)


def sh(cmd, **kw):
    """Output of a command (stripped), or None if it fails."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True,
                              cwd=ROOT, **kw).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def median(xs):
    return statistics.median(xs)


# ---- machine and versions ------------------------------------------------------

def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def read_first(path):
    try:
        with open(path) as f:
            return f.read().split()[0]
    except (OSError, IndexError):
        return None


def machine_info(python):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
    except OSError:
        pass
    commit = sh(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    # Dirty: tracked files differ from the commit, the report's own output
    # (an earlier run's) left aside.
    if commit != "unknown" and sh(["git", "status", "--porcelain", "--untracked-files=no",
                                   "--", ".", ":!docs/benchmarks.md", ":!docs/img"]):
        commit += "-dirty"
    pyver = sh([python, "-c", "import platform; print(platform.python_version())"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "cpu": cpu,
        "cores_online": os.sysconf("SC_NPROCESSORS_ONLN"),
        "cores_configured": os.sysconf("SC_NPROCESSORS_CONF"),
        "memory": mem,
        "kernel": "%s %s %s" % (platform.system(), platform.release(), platform.machine()),
        "virt": sh(["systemd-detect-virt"]) or None,
        "loadavg_start": loadavg(),
        "max_map_count": read_first("/proc/sys/vm/max_map_count"),
        "python": "%s (%s)" % (pyver, python),
        "cc": (sh([os.environ.get("CC", "cc"), "--version"]) or "?").splitlines()[0],
        "cxx": (sh([os.environ.get("CXX", "g++"), "--version"]) or "?").splitlines()[0],
    }


# ---- building ------------------------------------------------------------------

def build(bd, python):
    """Library (two variants), C benchmark programs and the Python module."""
    os.makedirs(bd, exist_ok=True)
    logf = os.path.join(bd, "build.log")
    # Under `make bench-report`, keep the outer make's variables (SAN=...,
    # BUILD=...) and jobserver out of these builds.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    with open(logf, "w") as lf:
        def step(what, cmd, output=None, inputs=()):
            # Skip a compile whose output is newer than all its inputs.
            if output and os.path.exists(output) and all(
                    os.path.getmtime(output) > os.path.getmtime(os.path.join(ROOT, i))
                    for i in inputs):
                return
            lf.write("$ %s\n" % " ".join(cmd))
            lf.flush()
            r = subprocess.run(cmd, cwd=ROOT, stdout=lf, stderr=subprocess.STDOUT, env=env)
            if r.returncode != 0:
                lf.close()
                with open(logf) as f:
                    sys.stderr.write(f.read())
                die("build failed: %s (log: %s)" % (what, logf))
        cc = os.environ.get("CC", "cc")
        cxx = os.environ.get("CXX", "g++")
        step("make lib", ["make", "-s", "lib", "BUILD=%s/native" % bd])
        step("make lib FPU_SAVE=0", ["make", "-s", "lib", "FPU_SAVE=0",
                                     "BUILD=%s/native-nofpu" % bd])
        cflags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Iinclude"]
        for name, lib in (("bench_c", "native"), ("bench_c_nofpu", "native-nofpu")):
            step(name, [cc] + cflags + ["bench/bench_c.c", "%s/%s/libcgreenlet.a" % (bd, lib),
                                        "-pthread", "-o", "%s/%s" % (bd, name)],
                 "%s/%s" % (bd, name),
                 ("bench/bench_c.c", "include/cgreenlet.h", "%s/%s/libcgreenlet.a" % (bd, lib)))
        # Static Boost.Context, like the static cgreenlet: no PLT call either side.
        step("bench_boost", [cxx, "-std=c++14", "-O2", "-DNDEBUG", "-Wall", "-Wextra",
                             "bench/bench_boost.cpp", "-o", bd + "/bench_boost",
                             "-l:libboost_context.a", "-pthread"],
             bd + "/bench_boost", ("bench/bench_boost.cpp",))
        step("python module", [python, "setup.py", "-q", "build", "--build-base",
                               bd + "/python-tmp", "--build-lib", bd + "/python"])


# ---- running -------------------------------------------------------------------

IMPLS = ("cgreenlet", "stock", "pypi")  # this module, Debian's 2.0.2, PyPI's 3.5.6


def rotated(run):
    """The implementations in the order of this run: rotated each run."""
    k = run % len(IMPLS)
    return list(IMPLS[k:] + IMPLS[:k])


class Runner:
    def __init__(self, bd, python, pin, pypi):
        self.bd = bd
        self.python = python
        self.pypi = pypi
        self.pin = []
        self.pin_desc = "not pinned"
        if pin and shutil.which("taskset"):
            cpu = os.sysconf("SC_NPROCESSORS_ONLN") - 1
            self.pin = ["taskset", "-c", str(cpu)]
            self.pin_desc = "each run pinned to CPU %d (taskset)" % cpu
        self.env = {
            "cgreenlet": dict(os.environ, PYTHONPATH=os.path.join(bd, "python")),
            "stock": {k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "pypi": dict(os.environ, PYTHONPATH=pypi["stock_dir"]),
        }
        self.modinfo = {}

    def run(self, cmd, env=None):
        r = subprocess.run(self.pin + cmd, capture_output=True, text=True, env=env,
                           cwd="/", timeout=900)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            die("benchmark failed (exit %d): %s" % (r.returncode, " ".join(cmd)))
        return r.stdout

    def py(self, impl, *args):
        out = json.loads(self.run([self.python, "-c", CHILD] + [str(a) for a in args],
                                  env=self.env[impl]))
        # Make sure PYTHONPATH chose what it should.
        ours_dir = os.path.realpath(os.path.join(self.bd, "python")) + os.sep
        pypi_dir = os.path.realpath(self.pypi["stock_dir"]) + os.sep
        if impl == "cgreenlet":
            ok = out["impl"] == "cgreenlet" and out["file"].startswith(ours_dir)
        elif impl == "stock":   # Debian's
            ok = (out["impl"] == "stock" and not out["file"].startswith(ours_dir)
                  and not out["file"].startswith(pypi_dir))
        else:
            ok = (out["impl"] == "stock" and out["file"].startswith(pypi_dir)
                  and out["version"] == self.pypi["version"])
        if not ok:
            die("wanted %s greenlet, got %s from %s" % (impl, out["impl"], out["file"]))
        self.modinfo[impl] = {k: out[k] for k in ("version", "cgreenlet_version", "file")}
        return out

    def c(self, prog, *args):
        return self.run([os.path.join(self.bd, prog)] + [str(a) for a in args])

    def c_kv(self, prog, *args):
        kv = {}
        for line in self.c(prog, *args).splitlines():
            k, _, v = line.partition(" ")
            kv[k] = v
        return kv


def bench_depth(r, cfg):
    res = {d: {"stock": [], "cgreenlet": [], "pypi": [], "stack_saved": {}}
           for d in cfg["depths"]}
    for run in range(cfg["py_runs"]):
        order = rotated(run)
        for d in cfg["depths"]:
            for impl in order:
                o = r.py(impl, "switch", d, cfg["py_target_s"])
                res[d][impl].append(o["value"] * 1e9)
                res[d]["stack_saved"][impl] = o["stack_saved"]
        log("  run %d/%d: %s" % (run + 1, cfg["py_runs"], "  ".join(
            "%d: %.0f/%.0f/%.0f ns" % (d, res[d]["cgreenlet"][-1], res[d]["stock"][-1],
                                        res[d]["pypi"][-1])
            for d in cfg["depths"])))
    return [{"depth": d, "stock_ns": res[d]["stock"], "cgreenlet_ns": res[d]["cgreenlet"],
             "pypi_ns": res[d]["pypi"], "stack_saved": res[d]["stack_saved"]}
            for d in cfg["depths"]]


def rss_runs(cfg, n):
    return cfg["rss_runs"] if n < 100000 else cfg.get("rss_runs_large", cfg["rss_runs"])


def bench_py_rss(r, cfg):
    out = []
    for n in cfg["py_counts"]:
        row = {"count": n, "stock_kib": [], "cgreenlet_kib": [], "pypi_kib": []}
        for run in range(rss_runs(cfg, n)):
            for impl in rotated(run):
                row[impl + "_kib"].append(r.py(impl, "rss", n)["value"] / 1024)
        log("  %d: cgreenlet %.2f KiB, stock %.2f KiB, stock %s %.2f KiB" % (
            n, median(row["cgreenlet_kib"]), median(row["stock_kib"]), r.pypi["version"],
            median(row["pypi_kib"])))
        out.append(row)
    return out


def bench_c_rss(r, cfg):
    out = []
    for n in cfg["c_counts"]:
        row = {"count": n, "cgreenlet_kib": [], "boost_kib": []}
        for run in range(rss_runs(cfg, n)):
            kv = r.c_kv("bench_c", "rss", n, "exit")
            row["cgreenlet_kib"].append(float(kv["rss_kib"]))
            kv = r.c_kv("bench_boost", "rss", n, "fixed", "exit")
            if int(kv["made"]) != n:
                die("boost made only %s of %d fibers" % (kv["made"], n))
            row["boost_kib"].append(float(kv["rss_kib"]))
        log("  %d: cgreenlet %.2f KiB, boost %.2f KiB" % (
            n, median(row["cgreenlet_kib"]), median(row["boost_kib"])))
        out.append(row)
    return out


def bench_script(r, cfg, name, args, pin):
    """Run bench/NAME.py with --json; its output goes to BD/NAME.log."""
    js = os.path.join(r.bd, name + ".json")
    logf = os.path.join(r.bd, name + ".log")
    if os.path.exists(js):
        os.unlink(js)
    cmd = (r.pin if pin else []) + [r.python, os.path.join(ROOT, "bench", name + ".py"),
                                    "--python", r.python, "--build-dir",
                                    os.path.join(r.bd, "python"), "--json", js] + args
    with open(logf, "w") as lf:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=lf, stderr=subprocess.STDOUT,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                            timeout=3600).returncode
    with open(logf) as lf:
        text = lf.read()
    if rc != 0 or not os.path.exists(js):
        sys.stderr.write(text)
        die("bench/%s.py failed (exit %d; log: %s)" % (name, rc, logf))
    # bench_python's table as it comes; bench_gevent's first line (its
    # figures are in the summary at the end)
    for line in text.splitlines()[:1] if name == "bench_gevent" else text.splitlines():
        log("  " + line)
    with open(js) as f:
        return json.load(f)


def bench_python_figs(r, cfg):
    # Pinned to one CPU, as the other Python figures.
    return bench_script(r, cfg, "bench_python", [
        "--runs", str(cfg["bp_runs"]), "--scale", str(cfg["bp_scale"])], pin=True)


def bench_gevent_figs(r, cfg):
    # bench_gevent.py pins the server and the load generator to CPUs of their own.
    return bench_script(r, cfg, "bench_gevent", [
        "-q", "--rounds", str(cfg["gevent_rounds"]), "--duration", str(cfg["gevent_duration"]),
        "--warmup", str(cfg["gevent_warmup"])], pin=False)


def bench_c_timed(r, cfg):
    figs = [  # key, label, cgreenlet program, mode, count
        ("switch", "switch", "bench_c", "switch", cfg["c_switch_rounds"]),
        ("switch_nofpu", "switch, no MXCSR/x87 save", "bench_c_nofpu", "switch",
         cfg["c_switch_rounds"]),
        ("create", "create+start+finish", "bench_c", "create", cfg["c_create_n"]),
        ("park", "create+park+kill", "bench_c", "park", cfg["c_park_n"]),
    ]
    res = {k: {"label": label, "cgreenlet_ns": [], "boost_ns": []} for k, label, *_ in figs}
    boost_cache = {}
    for run in range(cfg["c_runs"]):
        boost_cache.clear()
        for key, _, prog, mode, n in figs:
            res[key]["cgreenlet_ns"].append(float(r.c(prog, mode, n)))
            # The two switch rows share one Boost run per round.
            if mode not in boost_cache:
                boost_cache[mode] = float(r.c("bench_boost", mode, n))
            res[key]["boost_ns"].append(boost_cache[mode])
    for k in res:
        log("  %-28s cgreenlet %7.2f ns, boost %7.2f ns" % (
            res[k]["label"], median(res[k]["cgreenlet_ns"]), median(res[k]["boost_ns"])))
    return [dict(key=k, **v) for k, v in res.items()]


# ---- the report ----------------------------------------------------------------

def fmt_ns(ns):
    if ns >= 10000:
        return "%.1f us" % (ns / 1000)
    if ns >= 1000:
        return "%.2f us" % (ns / 1000)
    if ns >= 100:
        return "%.0f ns" % ns
    return "%.1f ns" % ns


def fmt_ratio(r):
    """Two significant digits below 1 (0.0004x), two decimals above."""
    if r <= 0 or r >= 1:
        return "%.2fx" % r
    return "%.*fx" % (max(2, 1 - math.floor(math.log10(r))), r)


def fmt_count(n):
    if n >= 1000000 and n % 1000000 == 0:
        return "%dM" % (n // 1000000)
    if n >= 1000 and n % 1000 == 0:
        return "%dk" % (n // 1000)
    return str(n)


def spread(xs):
    return "%s..%s" % (fmt_ns(min(xs)), fmt_ns(max(xs))) if len(xs) > 1 else "(1 run)"


def runs_text(n):
    return "1 run" if n == 1 else "median of %d runs" % n


def plots(data, imgdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(imgdir, exist_ok=True)
    files = {}

    def finish(fig, key, name, title):
        # Every figure ends alike: its title, the layout, the PNG under imgdir
        # (files[key] is the name the markdown links to), and the figure freed.
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        files[key] = name
        fig.savefig(os.path.join(imgdir, name))
        plt.close(fig)

    colors = {"stock": "#d62728", "pypi": "#ff7f0e", "cgreenlet": "#1f77b4", "boost": "#7f7f7f"}

    # 1. switch cost against depth: linear axes (the shape) and log time
    rows = data["depth"]
    depths = [x["depth"] for x in rows]
    series = [("stock", "stock greenlet %s (Debian)" % data["versions"]["stock"])]
    if rows[0].get("pypi_ns"):
        series.append(("pypi", "stock greenlet %s (PyPI)" % data["versions"]["pypi"]))
    series.append(("cgreenlet", "cgreenlet's greenlet module"))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.3), dpi=100)
    for impl, label in series:
        ys = [median(x[impl + "_ns"]) for x in rows]
        a1.plot(depths, [y / 1000 for y in ys], "o-", color=colors[impl], label=label)
        a2.plot(depths, ys, "o-", color=colors[impl], label=label)
        for x, y in ((depths[0], ys[0]), (depths[-1], ys[-1])):
            # PyPI's stock beside Debian's: its labels below its points
            a2.annotate(fmt_ns(y), (x, y), textcoords="offset points",
                        xytext=(0, -13 if impl == "pypi" else 7),
                        ha="right" if x == depths[-1] else "left",
                        fontsize=8, color=colors[impl])
    a1.set_ylabel("time per switch (us)")
    a1.set_ylim(bottom=0)
    a2.set_yscale("log")
    a2.set_ylabel("time per switch (ns, log scale)")
    a2.margins(y=0.15)
    # Top axis: the C stack the parked greenlet holds (stock's _stack_saved),
    # a straight line in the depth: fitted by least squares.
    held = [(x["depth"], x["stack_saved"]["stock"] / 1048576) for x in rows
            if x["stack_saved"].get("stock")]
    slope = None
    if len(held) >= 2:
        mx = sum(d for d, _ in held) / len(held)
        my = sum(h for _, h in held) / len(held)
        sxx = sum((d - mx) ** 2 for d, _ in held)
        if sxx > 0:
            slope = sum((d - mx) * (h - my) for d, h in held) / sxx
            icept = my - slope * mx
    for a in (a1, a2):
        a.set_xlabel("depth: nested sorted(key=...) calls under the parked greenlet")
        a.grid(True, which="both", alpha=0.3)
        if slope:
            top = a.secondary_xaxis("top", functions=(lambda d: icept + slope * d,
                                                      lambda m: (m - icept) / slope))
            top.set_xlabel("C stack held by the parked greenlet (MiB)", fontsize=9)
    a1.legend(loc="upper left", fontsize=9)
    finish(fig, "depth", "bench-switch-depth.png",
           "Python greenlet switch cost against C stack depth (%s)"
           % runs_text(len(rows[0]["stock_ns"])))

    # 2. memory per parked greenlet against count
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4), dpi=100)
    py = data["py_rss"]
    for impl, label in (("stock", "stock greenlet %s" % data["versions"]["stock"]),
                        ("pypi", "stock greenlet %s" % data["versions"].get("pypi")),
                        ("cgreenlet", "cgreenlet module")):
        if not py[0].get(impl + "_kib"):
            continue
        a1.plot([x["count"] for x in py], [median(x[impl + "_kib"]) for x in py], "o-",
                color=colors[impl], label=label)
    a1.set_title("Python: parked greenlets", fontsize=10)
    cr = data["c_rss"]
    for impl, label in (("boost", "Boost.Context fiber\n(fixedsize_stack, no guard)"),
                        ("cgreenlet", "libcgreenlet")):
        a2.plot([x["count"] for x in cr], [median(x[impl + "_kib"]) for x in cr], "o-",
                color=colors[impl], label=label)
    a2.set_title("C: parked greenlets / fibers", fontsize=10)
    for a in (a1, a2):
        a.set_xscale("log")
        a.set_ylim(bottom=0)
        a.set_xlabel("parked at once")
        a.set_ylabel("resident memory each (KiB)")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8, loc="lower left")
    finish(fig, "memory", "bench-memory.png",
           "Memory per parked greenlet (RSS delta / count)")

    # 3. C core against Boost.Context: a panel per figure, each its own scale
    ct = data["c_timed"]
    fig, axs = plt.subplots(1, len(ct), figsize=(10, 3.8), dpi=100)
    for a, x in zip(axs, ct):
        ys = [median(x["cgreenlet_ns"]), median(x["boost_ns"])]
        bars = a.bar([0, 1], ys, 0.6, color=[colors["cgreenlet"], colors["boost"]])
        for b, y in zip(bars, ys):
            a.annotate("%.1f" % y, (b.get_x() + b.get_width() / 2, y),
                       textcoords="offset points", xytext=(0, 2), ha="center", fontsize=8)
        a.set_xticks([0, 1])
        a.set_xticklabels(["libcgreenlet", "Boost"], fontsize=9)
        a.set_title("%s\n%.2fx" % (x["label"].replace(", ", ",\n"), ys[0] / ys[1]),
                    fontsize=9)
        a.margins(y=0.15)
        a.grid(True, axis="y", alpha=0.3)
    axs[0].set_ylabel("ns (lower is better)")
    finish(fig, "c", "bench-c.png",
           "C core against Boost.Context (%s; ratio libcgreenlet / Boost)"
           % runs_text(len(ct[0]["cgreenlet_ns"])))
    return files


def rel(path):
    """A path inside the clone, relative to it."""
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def markdown(data, files, imgrel):
    m, v, cfg = data["machine"], data["versions"], data["config"]
    L = []
    add = L.append
    add("# Benchmarks")
    add("")
    add("Written by `make bench-report` (`bench/report.py`); do not edit by hand,"
        " run it again.%s" % (" **Smoke run (`--quick`): few and short runs, the"
                              " figures are rough.**" if data["quick"] else ""))
    add("")
    add("| | |")
    add("| --- | --- |")
    add("| date | %s |" % m["date"])
    add("| commit | `%s` |" % m["commit"])
    add("| CPU | %s, %d cores online%s |" % (
        m["cpu"], m["cores_online"],
        " (%d configured)" % m["cores_configured"]
        if m["cores_configured"] != m["cores_online"] else ""))
    add("| machine | %s%s%s |" % (m["kernel"], ", %s RAM" % m["memory"] if m["memory"] else "",
                                  ", virtualized (%s)" % m["virt"]
                                  if m["virt"] and m["virt"] != "none" else ""))
    add("| load average | %s at start, %s at end (1, 5, 15 min; other processes add"
        " noise) |" % (m["loadavg_start"], m["loadavg_end"]))
    add("| Python | %s |" % m["python"])
    pypi = bool(v.get("pypi")) and bool(data["depth"][0].get("pypi_ns"))
    add("| greenlet | stock %s (Debian, `%s`)%s; cgreenlet's module %s (greenlet API %s);"
        " `PYTHONPATH` chooses, each process checks what it imported |"
        % (v["stock"], v["stock_path"],
           "; stock %s (PyPI wheel, pinned, `%s`)" % (v["pypi"], rel(v["pypi_path"]))
           if pypi else "", v["cgreenlet"], v["cgreenlet_api"]))
    if data.get("gevent"):
        g = data["gevent"]["impls"]
        add("| gevent | %s (Debian) on stock %s and on cgreenlet's module; %s (PyPI, pinned,"
            " a venv on the same interpreter: `%s`) on stock %s and on cgreenlet's module |"
            % (g["stock"]["gevent"], v["stock"], g["pypi"]["gevent"],
               rel(g["pypi"]["python"]), g["pypi"]["stock_version"]))
    add("| C | libcgreenlet %s, guard mode `%s`, %s, -O2 |" % (
        v["libcgreenlet"], v["guard_mode"], m["cc"]))
    add("| Boost | Boost.Context %s, %s, -O2 -DNDEBUG |" % (v["boost"], m["cxx"]))
    sec = data.get("section_seconds", {})
    mem_runs = "%d" % cfg["rss_runs"]
    if cfg.get("rss_runs_large", cfg["rss_runs"]) != cfg["rss_runs"]:
        mem_runs += ", %d from 100k on" % cfg["rss_runs_large"]
    names = {"depth": "depth sweep", "py_rss": "Python memory",
             "bench_python": "bench_python", "gevent": "gevent", "c_rss": "C memory",
             "c_timed": "C timed"}
    add("| method | the median of the runs of each figure (Python timed: %d, C timed: %d,"
        " memory: %s%s); every run a fresh process; the implementations interleaved;"
        " %s; %.0f s in all%s |" % (
            cfg["py_runs"], cfg["c_runs"], mem_runs,
            "; bench_python: %d, gevent: %d rounds of %d s after %d s of warm-up"
            % (cfg["bp_runs"], cfg["gevent_rounds"], cfg["gevent_duration"],
               cfg["gevent_warmup"]) if "bp_runs" in cfg else "",
            data["pin"], data["seconds"],
            " (%s)" % ", ".join("%s %.0f s" % (names.get(k, k), t) for k, t in sec.items())
            if sec else ""))
    add("")

    # 1. depth
    rows = data["depth"]
    d0 = median(rows[0]["cgreenlet_ns"])
    s0 = median(rows[0]["stock_ns"])
    add("## Switch cost against C stack depth")
    add("")
    add("![Python greenlet switch cost against C stack depth](%s/%s)"
        % (imgrel, files["depth"]))
    add("")
    add("A greenlet parks under D nested `sorted(key=...)` calls: each level is a C"
        " call of the interpreter (`sorted` calling its key function), so the"
        " parked greenlet holds D levels of C stack. The main greenlet then"
        " switches to it and back; the figure is the time per switch. Stock"
        " greenlet copies the parked greenlet's stack slice to the heap and back"
        " on every switch, so its cost grows with the depth. cgreenlet's module"
        " runs greenlets on up to 128 shared stacks per thread (each on one of"
        " its own until there are more) and only switches the stack pointer.")
    add("")
    if pypi:
        add("| depth | C stack held | stock %s | stock %s | cgreenlet | cgreenlet / %s |"
            " cgreenlet / %s | cgreenlet / its depth 0 | stock %s runs | stock %s runs |"
            " cgreenlet runs |" % (v["stock"], v["pypi"], v["stock"], v["pypi"], v["stock"],
                                   v["pypi"]))
        add("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    else:
        add("| depth | C stack held | stock %s | cgreenlet | cgreenlet / stock |"
            " cgreenlet / its depth 0 | stock runs | cgreenlet runs |" % v["stock"])
        add("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for x in rows:
        o, s = median(x["cgreenlet_ns"]), median(x["stock_ns"])
        held = x["stack_saved"].get("stock") or x["stack_saved"].get("cgreenlet") or 0
        if pypi:
            p = median(x["pypi_ns"])
            add("| %d | %.1f KiB | %s | %s | %s | %s | %s | %.2fx | %s | %s | %s |" % (
                x["depth"], held / 1024, fmt_ns(s), fmt_ns(p), fmt_ns(o), fmt_ratio(o / s),
                fmt_ratio(o / p), o / d0, spread(x["stock_ns"]), spread(x["pypi_ns"]),
                spread(x["cgreenlet_ns"])))
        else:
            add("| %d | %.1f KiB | %s | %s | %s | %.2fx | %s | %s |" % (
                x["depth"], held / 1024, fmt_ns(s), fmt_ns(o), fmt_ratio(o / s), o / d0,
                spread(x["stock_ns"]), spread(x["cgreenlet_ns"])))
    last = rows[-1]
    add("")
    if pypi:
        p0, pl = median(rows[0]["pypi_ns"]), median(last["pypi_ns"])
        add("From depth %d to depth %d stock %s's switch went from %s to %s (%.0fx)."
            % (rows[0]["depth"], last["depth"], v["pypi"], fmt_ns(p0), fmt_ns(pl), pl / p0))
    add("From depth %d to depth %d stock's switch went from %s to %s (%.0fx);"
        " cgreenlet's from %s to %s (%.2fx). \"C stack held\" is stock's"
        " `_stack_saved` of the parked greenlet: the bytes stock copies back onto"
        " the C stack when it switches to the greenlet, and out again when it"
        " switches away. The runs columns give the fastest and slowest run."
        % (rows[0]["depth"], last["depth"], fmt_ns(s0), fmt_ns(median(last["stock_ns"])),
           median(last["stock_ns"]) / s0, fmt_ns(d0), fmt_ns(median(last["cgreenlet_ns"])),
           median(last["cgreenlet_ns"]) / d0))
    add("")

    # 2. memory
    add("## Memory per parked greenlet")
    add("")
    add("![Memory per parked greenlet against count](%s/%s)" % (imgrel, files["memory"]))
    add("")
    add("N greenlets are created and each is switched into once, where it parks"
        " (switches back to the main greenlet); the figure is the process's"
        " resident memory after minus before (`/proc/self/statm`), divided by N."
        " Python: a greenlet running `main.switch()`, kept in a list; stock holds"
        " its saved C stack slice on the heap and its Python frames in a data-stack"
        " chunk of its own, cgreenlet both in the touched pages of the"
        " shared stack it runs on, copied to an exact-size heap buffer when"
        " another greenlet takes that stack (the frames in the root chunk at the"
        " stack's top). C: `bench_c rss N` against `bench_boost rss N fixed`"
        " (`boost::context::fiber` on a 256 KiB `fixedsize_stack`: malloc'ed, no"
        " guard page; cgreenlet's stacks are `mmap`s with a guard).")
    add("")
    pcols = [("stock", v["stock"])] + ([("pypi", v["pypi"])] if pypi else [])
    add("| parked | %s | Python: cgreenlet | %s |"
        " C: libcgreenlet | C: Boost.Context | libcgreenlet / Boost |" % (
            " | ".join("Python: stock %s" % ver for _, ver in pcols),
            " | ".join("cgreenlet / %s" % ver for _, ver in pcols)))
    add("| ---: " * (4 + 2 * len(pcols)) + "|")
    counts = sorted({x["count"] for x in data["py_rss"]} | {x["count"] for x in data["c_rss"]})
    py = {x["count"]: x for x in data["py_rss"]}
    cr = {x["count"]: x for x in data["c_rss"]}
    for n in counts:
        cells = [fmt_count(n)]
        if n in py:
            o = median(py[n]["cgreenlet_kib"])
            ss = [median(py[n][k + "_kib"]) for k, _ in pcols]
            cells += ["%.2f KiB" % s for s in ss] + ["%.2f KiB" % o]
            cells += ["%.2fx" % (o / s) if s > 0 else "-" for s in ss]
        else:
            cells += ["-"] * (1 + 2 * len(pcols))
        if n in cr:
            c, b = median(cr[n]["cgreenlet_kib"]), median(cr[n]["boost_kib"])
            cells += ["%.2f KiB" % c, "%.2f KiB" % b, "%.2fx" % (c / b) if b > 0 else "-"]
        else:
            cells += ["-"] * 3
        add("| " + " | ".join(cells) + " |")
    add("")
    add("At small counts the figure includes the allocators' own growth (heap"
        " arenas, free lists), so it is least exact there. Boost's stacks come"
        " from glibc's malloc: each 256 KiB stack is an `mmap` of its own, whose"
        " first page (malloc's chunk header) and last page (the top of the"
        " stack) are touched, 8 KiB a fiber. Past `vm.max_map_count` (%s on this"
        " machine) `mmap` fails and malloc carves the stacks out of the heap,"
        " where a stack's top shares its page with the next chunk's header:"
        " that is why Boost's figure drops at counts above it. Page tables"
        " (VmPTE) are not in RSS, for either." % m.get("max_map_count", "?"))
    add("")

    # 3. bench_python's figures
    bp = data.get("bench_python")
    if bp:
        nm = bp["names"]
        add("## The figures of `make bench-python`")
        add("")
        add("`bench/bench_python.py` (%s, %s): each figure in a fresh process per module,"
            " the modules in turn, the order rotated each run; the ratio is cgreenlet /"
            " stock (below 1: cgreenlet is faster or smaller)."
            % ("%d runs, the median" % bp["runs"] if bp["runs"] > 1 else "1 run",
               "the counts as in `make bench-python`" if bp["scale"] == 1
               else "the counts scaled by %g" % bp["scale"]))
        add("")
        add("| figure | N | cgreenlet | %s | cgreenlet / 2.0.2 | %s | cgreenlet / %s |" % (
            nm["stock"], nm["pypi"], nm["pypi"].split()[-1]))
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for what, f in bp["figures"].items():
            md_, u = f["median"], f["unit"]
            cell = lambda x: (fmt_ns(x) if u == "ns" else "%.2f %s" % (x, u)) if x else "n/a"
            ratio = lambda x: fmt_ratio(md_["ours"] / x) if x else "n/a"
            add("| %s | %s | %s | %s | %s | %s | %s |" % (
                f["name"], fmt_count(f["n"]), cell(md_["ours"]), cell(md_["stock"]),
                ratio(md_["stock"]), cell(md_["pypi"]), ratio(md_["pypi"])))
        add("")

    # 4. gevent
    ge = data.get("gevent")
    if ge:
        im = ge["impls"]
        add("## gevent servers: `make bench-gevent`")
        add("")
        add("`bench/bench_gevent.py`: a fresh server per measurement, %d round%s of %d s"
            " after %d s of warm-up, every server once per round (a pair back to back, the"
            " order reversed each round), the median; server and load generator %s. pywsgi:"
            " a hello-world app under `wrk -t1 -c%d` (keep-alive; the server sets"
            " `TCP_NODELAY`). echo: a `StreamServer`, %d clients of a plain-Python epoll"
            " client (no greenlet) each sending %d bytes and waiting for the echo. The"
            " ratio is a throughput, cgreenlet / stock: above 1 cgreenlet is faster."
            " Debian's gevent runs on `%s`, PyPI's in the venv `%s` on the same"
            " interpreter."
            % (ge["rounds"], "" if ge["rounds"] == 1 else "s", ge["duration"], ge["warmup"],
               "pinned to CPUs of their own (%s)" % ge["pin"] if ge["pin"] else "not pinned",
               ge["connections"], ge["clients"], ge["msg_size"], im["stock"]["python"],
               rel(im["pypi"]["python"])))
        add("")
        add("| figure | gevent | stock greenlet | stock | cgreenlet | cgreenlet / stock |"
            " per server CPU-second: cgreenlet / stock | server CPU: stock, cgreenlet |")
        add("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for f in ge["figures"]:
            for pair, (o, st) in ge["pairs"].items():
                mo, ms = f["median"][o], f["median"][st]
                add("| %s | %s | %s | %.0f %s | %.0f %s | %.2fx | %.2fx | %.0f%%, %.0f%% |" % (
                    f["name"], im[o]["gevent"], im[st]["stock_version"], ms["rate"], f["unit"],
                    mo["rate"], f["unit"], mo["rate"] / ms["rate"],
                    mo["per_cpu"] / ms["per_cpu"] if ms["per_cpu"] else 0,
                    100 * ms["server_cpu"], 100 * mo["server_cpu"]))
        add("")
        add("Each round's figures (%s): %s." % (
            ", ".join("%s %s" % (f["name"].split(",")[0], f["unit"]) for f in ge["figures"]),
            "; ".join("%s on gevent %s: %s" % (
                im[w]["label"], im[w]["gevent"],
                ", ".join(" / ".join("%.0f" % m["rate"] for m in f["runs"][w])
                          for f in ge["figures"]))
                for w in im)))
        add("")

    # 5. C
    add("## C core against Boost.Context")
    add("")
    add("![C switch and create costs against Boost.Context](%s/%s)" % (imgrel, files["c"]))
    add("")
    add("| figure | libcgreenlet | Boost.Context | libcgreenlet / Boost | runs"
        " (cgreenlet) | runs (Boost) |")
    add("| --- | ---: | ---: | ---: | --- | --- |")
    for x in data["c_timed"]:
        c, b = median(x["cgreenlet_ns"]), median(x["boost_ns"])
        add("| %s | %.2f ns | %.2f ns | %.2fx | %s | %s |" % (
            x["label"], c, b, c / b, spread(x["cgreenlet_ns"]), spread(x["boost_ns"])))
    add("")
    add("- switch: main and one greenlet switch back and forth with"
        " `greenlet_switch()` (a value each way), against a raw `jump_fcontext()`"
        " ping-pong on an `mmap`ed 256 KiB stack; both save the MXCSR and x87"
        " control words, except the cgreenlet library built with `FPU_SAVE=0`.")
    add("- create+start+finish: `greenlet_create`, a switch into a function that"
        " returns at once, `greenlet_destroy` (cgreenlet pools stacks itself),"
        " against a `boost::context::fiber` on a `pooled_fixedsize_stack`"
        " resumed to completion.")
    add("- create+park+kill: the greenlet parks, then is killed and destroyed;"
        " Boost destroys the suspended fiber (a `forced_unwind` exception).")
    add("- `make bench` (scripts/bench.sh) measures the same programs with the"
        " 1,000,000-greenlet memory point and teardown times.")
    add("")
    return "\n".join(L)


def summary(data):
    """The main figures on stdout."""
    rows = data["depth"]
    log("switch cost against depth (ns): depth, stock 2.0.2, stock 3.5.6, cgreenlet,"
        " cgreenlet/2.0.2, cgreenlet/3.5.6")
    for x in rows:
        o, s = median(x["cgreenlet_ns"]), median(x["stock_ns"])
        p = median(x["pypi_ns"]) if x.get("pypi_ns") else float("nan")
        log("  %5d %12.1f %12.1f %10.1f %10s %10s" % (x["depth"], s, p, o, fmt_ratio(o / s),
                                                     fmt_ratio(o / p) if p == p else "-"))
    log("memory per parked greenlet (KiB): count, py stock 2.0.2, py stock 3.5.6, py cgreenlet,"
        " C cgreenlet, C boost")
    py = {x["count"]: x for x in data["py_rss"]}
    cr = {x["count"]: x for x in data["c_rss"]}
    for n in sorted(set(py) | set(cr)):
        cells = []
        for src, keys in ((py, ("stock_kib", "pypi_kib", "cgreenlet_kib")),
                          (cr, ("cgreenlet_kib", "boost_kib"))):
            for k in keys:
                cells.append("%10.2f" % median(src[n][k]) if n in src and src[n].get(k)
                             else "%10s" % "-")
        log("  %7s %s" % (fmt_count(n), " ".join(cells)))
    ge = data.get("gevent")
    if ge:
        log("gevent: figure, gevent, stock, cgreenlet, cgreenlet/stock (throughput)")
        for f in ge["figures"]:
            for pair, (o, st) in ge["pairs"].items():
                mo, ms = f["median"][o]["rate"], f["median"][st]["rate"]
                log("  %-26s %-8s %8.0f (%s) %8.0f %6.2fx" % (
                    f["name"], ge["impls"][o]["gevent"], ms, ge["impls"][st]["stock_version"],
                    mo, mo / ms))
    log("C (ns): figure, cgreenlet, boost, ratio")
    for x in data["c_timed"]:
        c, b = median(x["cgreenlet_ns"]), median(x["boost_ns"])
        log("  %-28s %8.2f %8.2f %6.2fx" % (x["label"], c, b, c / b))


def write_report(data, out_md):
    outdir = os.path.dirname(os.path.abspath(out_md))
    imgdir = os.path.join(outdir, "img")
    files = plots(data, imgdir)
    with open(out_md, "w") as f:
        f.write(markdown(data, files, "img"))
    return [out_md] + [os.path.join(imgdir, x) for x in files.values()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (under a minute): few, short runs; writes to a "
                         "temp dir unless --out is given")
    ap.add_argument("--out", help="the report's path (default docs/benchmarks.md; "
                                  "the plots go to img/ beside it)")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter for the Python figures (needs stock greenlet "
                         "installed for it; default /usr/bin/python3)")
    ap.add_argument("--build-dir", help="where to build and keep results.json (default "
                                        "build/report, with --quick build/report-quick)")
    ap.add_argument("--runs", type=int, help="runs per timed figure (Python and C)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin runs to one CPU")
    ap.add_argument("--no-deps", action="store_true",
                    help="do not run scripts/deps.sh build bench python first")
    ap.add_argument("--from-json", metavar="FILE",
                    help="draw the report from a results.json, run nothing")
    a = ap.parse_args()

    if a.out:
        out_md = os.path.abspath(a.out)
    elif a.quick:
        out_md = os.path.join(tempfile.mkdtemp(prefix="cgreenlet-bench-"), "benchmarks.md")
    else:
        out_md = os.path.join(ROOT, "docs", "benchmarks.md")
    os.makedirs(os.path.dirname(out_md), exist_ok=True)

    if not a.from_json and not a.no_deps and subprocess.run(
            [os.path.join(ROOT, "scripts", "deps.sh"), "build", "bench", "python"]).returncode:
        die("missing packages (scripts/deps.sh build bench python)")
    if importlib.util.find_spec("matplotlib") is None:  # fail before minutes of running
        die("needs Debian's matplotlib for the plots: apt-get install python3-matplotlib")

    if a.from_json:
        with open(a.from_json) as f:
            data = json.load(f)
        summary(data)
        for p in write_report(data, out_md):
            log("wrote " + p)
        return

    cfg = dict(QUICK if a.quick else FULL)
    if a.runs is not None and a.runs < 1:
        die("--runs wants a positive number")
    if a.runs:
        cfg["py_runs"] = cfg["c_runs"] = a.runs
    bd = os.path.abspath(a.build_dir or os.path.join(
        ROOT, "build", "report-quick" if a.quick else "report"))
    t0 = time.monotonic()
    machine = machine_info(a.python)
    log("bench/report.py: %s, commit %s, load average %s%s" % (
        machine["date"], machine["commit"], machine["loadavg_start"],
        " (--quick)" if a.quick else ""))
    log("building into %s" % bd)
    build(bd, a.python)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from scale_lib import stock_env
    try:
        pypi = stock_env(a.python, os.path.join(bd, "python"), prog="bench/report.py")
    except RuntimeError as e:
        die(str(e))
    log("stock greenlet %s from PyPI in %s; gevent %s in %s" % (
        pypi["version"], pypi["stock_dir"], pypi["gevent"], pypi["venv_python"]))
    r = Runner(bd, a.python, not a.no_pin, pypi)

    cinfo = r.c_kv("bench_c", "info")
    binfo = r.c_kv("bench_boost", "info")
    data = {"quick": a.quick, "config": cfg, "machine": machine, "pin": r.pin_desc}

    data["section_seconds"] = {}
    for key, title, fn in (
            ("depth", "Python switch cost against C stack depth (cgreenlet/stock per depth)",
             bench_depth),
            ("py_rss", "Python memory per parked greenlet", bench_py_rss),
            ("bench_python", "bench/bench_python.py (make bench-python)", bench_python_figs),
            ("gevent", "bench/bench_gevent.py (make bench-gevent)", bench_gevent_figs),
            ("c_rss", "C memory per parked greenlet", bench_c_rss),
            ("c_timed", "C core against Boost.Context", bench_c_timed)):
        log(title + ":")
        t = time.monotonic()
        data[key] = fn(r, cfg)
        data["section_seconds"][key] = round(time.monotonic() - t, 1)
        log("  (%.0f s, load average %s)" % (data["section_seconds"][key], loadavg()))

    machine["loadavg_end"] = loadavg()
    data["seconds"] = time.monotonic() - t0
    data["versions"] = {
        "stock": r.modinfo["stock"]["version"],
        "stock_path": os.path.dirname(os.path.dirname(r.modinfo["stock"]["file"])),
        "pypi": r.modinfo["pypi"]["version"],
        "pypi_path": os.path.dirname(os.path.dirname(r.modinfo["pypi"]["file"])),
        "gevent": {w: i["gevent"] for w, i in data["gevent"]["impls"].items()},
        "cgreenlet": r.modinfo["cgreenlet"]["cgreenlet_version"],
        "cgreenlet_api": r.modinfo["cgreenlet"]["version"],
        "libcgreenlet": cinfo.get("version", "?"),
        "guard_mode": cinfo.get("guard_mode", "?"),
        "boost": binfo.get("boost_version", "?"),
    }
    with open(os.path.join(bd, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    summary(data)
    for p in write_report(data, out_md):
        log("wrote " + p)
    log("raw figures: %s; %.0f s in all" % (os.path.join(bd, "results.json"), data["seconds"]))


if __name__ == "__main__":
    main()
