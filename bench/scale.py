"""Greenlets at scale: stock greenlet 2.0.2 against cgreenlet's module, and
the C core against Boost.Context, in the same run (issue 14).

    /usr/bin/python3 bench/scale.py [--quick] [--parts python,gevent,c]
        [--sizes 100k,500k,1M] [--gevent-sizes 10k,100k] [--wait-sizes 100k]
        [--c-sizes 1M] [--rounds 3] [--collects 3] [--idle 2] [--timeout S]
        [--json FILE] [--build-dir build/python-3.11] [--c-dir build/bench]

Every figure is measured in a fresh process per (implementation, size,
round); the implementations alternate (stock first in odd rounds, here first
in even ones); the table gives medians over the rounds and the ratio
here / stock (below 1 is better for every figure).  A child that runs past
its timeout is killed and reported as a timeout.  Children run one at a
time (a million parked greenlets of the module take about 9 GB).

python  --python (Debian's python3): stock = Debian's python3-greenlet 2.0.2,
        here = PYTHONPATH=--build-dir (`make python`); every child checks
        which greenlet it imported (cgreenlet's has
        greenlet._greenlet._cgreenlet_version) and refuses to run otherwise.
        N greenlets (--sizes, default 100k, 500k, 1M), each parked four
        Python frames deep (run and three nested calls; the last calls
        main.switch()), the cyclic collector left on, as in a server:
          RSS + VmPTE per parked greenlet (/proc/self/status before and
            after parking; RSS and VmPTE are printed apart too);
          one gc.collect() with them parked (median of --collects calls);
          the automatic collections while parking: time spent in them
            (gc.callbacks times each one), how many, the longest;
          park: create + first switch, per greenlet;
          drop: the list holding them is dropped, so each is killed by
            GreenletExit; its finally blocks are counted (all must run).
gevent  a gevent.server.StreamServer echo server on 127.0.0.1 and N idle
        client connections, one echo each (--gevent-sizes, default 10k and
        100k; bench/scale_gevent.py says how): server RSS + VmPTE per
        connection, the longest GC pause in the server with them idle
        (gc.collect() forced a few times, and any automatic one), and the
        automatic collections while the connections came in.  N needs as
        many descriptors in one server process: a size above what this
        machine allows (RLIMIT_NOFILE's hard limit, unless the process may
        raise it) is measured at the largest thousand that fits, and said
        so.  Also (--wait-sizes, default 100k) N greenlets spawned with
        gevent.spawn() and parked in Event.wait(), no sockets: the same
        figures, without targets.
c       N parked C greenlets (--c-sizes, default 1M; bench/scale_c.c, four C
        calls deep) beside N Boost.Context fibers parked the same way
        (bench/scale_boost.cpp), at the library's default stack size
        (GREENLET_DEFAULT_STACK_SIZE) and its smallest
        (GREENLET_MIN_STACK_SIZE), the same size for both: RSS + VmPTE per
        parked greenlet, and create + park time.  Boost's anchor is its
        fixedsize_stack (malloc); a row with one mmap per stack is printed
        too, and, when cgreenlet.h has GREENLET_ATTR_SHARED_STACK, a row for
        cgreenlet's shared stacks.

Targets printed beside the ratios (issue 14): python RSS+VmPTE <= 0.8x,
gc.collect() <= 1.0x, automatic collections <= 1.0x in total, park at 1M
<= 1.0x, drop <= 0.5x; gevent memory per connection <= 0.9x, longest idle
GC pause <= 1.0x.  "ok"/"MISS" says whether the median ratio meets it; the
command's exit status does not depend on it (1 only if a measurement
failed or timed out).

--quick: 10k greenlets, 2,000 connections, 10k C greenlets, one round
(well under a minute).  `make bench-scale` builds the module, the library
and the two C programs first; SCALE_ARGS passes options.
"""
import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time

import scale_lib as L

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
PARTS = ("python", "gevent", "c")
QUICK = {"sizes": "10k", "gevent_sizes": "2000", "wait_sizes": "2000", "c_sizes": "10k",
         "rounds": 1}
FULL = {"sizes": "100k,500k,1M", "gevent_sizes": "10k,100k", "wait_sizes": "100k",
        "c_sizes": "1M", "rounds": 3}
# Rough memory per parked greenlet (bytes), to refuse a child that cannot fit.
NEED = {"here": 10500, "stock": 7000}


# ---------------------------------------------------------------- python child

class GcClock:
    """The automatic collections, timed through gc.callbacks."""

    def __init__(self):
        self.reset()
        self._t0 = None
        gc.callbacks.append(self._cb)

    def reset(self):
        self.seconds, self.count, self.full, self.longest = 0.0, 0, 0, 0.0

    def _cb(self, phase, info):
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            dt = time.perf_counter() - self._t0
            self.seconds += dt
            self.count += 1
            self.full += info.get("generation") == 2
            self.longest = max(self.longest, dt)
            self._t0 = None

    def figures(self, prefix):
        return {prefix + "_s": self.seconds, prefix + "_n": self.count,
                prefix + "_full": self.full, prefix + "_max_s": self.longest}


def child_python(a):
    module = L.check_greenlet(a.impl, a.build_dir)
    from greenlet import greenlet, getcurrent, GreenletExit
    n = a.size
    main = getcurrent()
    finals, exits = [0], [0]

    def level3():
        main.switch()                    # parked here until the drop kills it

    def level2():
        level3()

    def level1():
        level2()

    def run():
        try:
            level1()
        except GreenletExit:
            exits[0] += 1
            raise
        finally:
            finals[0] += 1

    gs = [None] * n                      # resident before the baseline
    clock = GcClock()
    gc.collect()
    s0 = L.vm_status()
    clock.reset()
    t0 = time.perf_counter()
    for i in range(n):
        g = greenlet(run)
        g.switch()
        gs[i] = g
    t1 = time.perf_counter()
    res = clock.figures("auto_gc")
    del g
    s1 = L.vm_status()
    collects = []
    for _ in range(a.collects):
        t = time.perf_counter()
        gc.collect()
        collects.append(time.perf_counter() - t)
    alive = sum(1 for g in gs if g and not g.dead)
    clock.reset()
    t2 = time.perf_counter()
    del gs                               # each greenlet is killed as it is freed
    t3 = time.perf_counter()
    res.update(clock.figures("drop_gc"))
    rss, pte = s1["VmRSS"] - s0["VmRSS"], s1["VmPTE"] - s0["VmPTE"]
    res.update(module=module, size=n, alive=alive, finals=finals[0], exits=exits[0],
               rss_b=rss / n, pte_b=pte / n, mem_b=(rss + pte) / n,
               rss_total=rss, pte_total=pte, gc_s=L.median(collects), gc_all=collects,
               park_us=(t1 - t0) / n * 1e6, drop_us=(t3 - t2) / n * 1e6)
    L.result(res)
    if alive != n or finals[0] != n or exits[0] != n:
        sys.exit("scale: %s parked of %s; after the drop %s finally blocks and %s "
                 "GreenletExit ran" % (L.num(alive), L.num(n), L.num(finals[0]),
                                       L.num(exits[0])))


# ---------------------------------------------------------------- drivers

def order(r, impls):
    """Round r's order: the first implementation first in odd rounds."""
    return list(impls) if r % 2 == 0 else list(reversed(impls))


def mem_ok(need, what):
    avail = L.meminfo("MemAvailable")
    if avail and need > 0.85 * avail:
        return "skipped: %s needs about %.1f GB, MemAvailable is %.1f GB" % (
            what, need / 1e9, avail / 1e9)
    return None


def timeout_for(a, base, per_item, n):
    return a.timeout if a.timeout else base + per_item * n


def part_python(a, runs):
    L.out("\npython: %s, each greenlet parked 4 frames deep, gc on; sizes %s; %d round(s)"
          % (a.python, ", ".join(L.size_label(n) for n in a.sizes), a.rounds))
    for r in range(a.rounds):
        for n in a.sizes:
            for impl in order(r, ("stock", "here")):
                rec = {"part": "python", "impl": impl, "size": n, "round": r + 1}
                skip = mem_ok(NEED[impl] * n, "%s parked greenlets" % L.num(n))
                t = time.monotonic()
                if skip:
                    res = {"error": skip}
                else:
                    cmd = [a.python, HERE, "--child", "python", "--impl", impl,
                           "--size", str(n), "--collects", str(a.collects),
                           "--build-dir", a.build_dir]
                    res = L.run_child(cmd, a.envs[impl], timeout_for(a, 120, 600e-6, n),
                                      echo=lambda s: L.out("    " + s))
                rec.update(res, wall_s=time.monotonic() - t)
                runs.append(rec)
                tag = "  %-6s %5s round %d %-5s" % ("python", L.size_label(n), r + 1, impl)
                if "error" in res:
                    L.out("%s %s: %s" % (tag, "TIMEOUT" if res.get("timeout") else "FAILED",
                                         res["error"]))
                    continue
                L.out("%s RSS+PTE %s B (RSS %s + PTE %s); gc.collect %.3f s; auto gc %.3f s "
                      "(%d, longest %.3f s); park %.2f us; drop %.2f us; finally %s/%s "
                      "(%.1f s)" % (tag, L.num(round(res["mem_b"])), L.num(round(res["rss_b"])),
                                    L.num(round(res["pte_b"])), res["gc_s"], res["auto_gc_s"],
                                    res["auto_gc_n"], res["auto_gc_max_s"], res["park_us"],
                                    res["drop_us"], L.num(res["finals"]), L.num(n),
                                    rec["wall_s"]))
                if res.get("stderr"):
                    L.out("    (stderr) " + res["stderr"][-500:])


def c_info(a):
    info = {}
    for prog in ("scale_c", "scale_boost"):
        text = subprocess.run([os.path.join(a.c_dir, prog), "info"], capture_output=True,
                              text=True, check=True).stdout
        info.update(line.split(None, 1) for line in text.splitlines() if " " in line)
    return info


def part_c(a, runs, info):
    stacks = [int(info["default_stack"]), int(info["min_stack"])]
    impls = [("boost", "scale_boost", ["malloc"]), ("here", "scale_c", [])]
    extra = [("boost-mmap", "scale_boost", ["mmap"])]
    if info.get("shared_stack") == "1":
        extra.append(("here-shared", "scale_c", ["shared"]))
    L.out("\nc: cgreenlet %s (guard %s) and Boost.Context %s, parked 4 C calls deep; "
          "sizes %s; stacks %s; %d round(s)" % (
              info["version"], info["guard_mode"], info["boost_version"],
              ", ".join(L.size_label(n) for n in a.c_sizes),
              " and ".join("%d KiB" % (s // 1024) for s in stacks), a.rounds))
    for r in range(a.rounds):
        for n in a.c_sizes:
            for stack in stacks:
                for impl, prog, args in order(r, impls + extra):
                    rec = {"part": "c", "impl": impl, "size": n, "stack": stack,
                           "round": r + 1}
                    t = time.monotonic()
                    res = run_kv([os.path.join(a.c_dir, prog), "park", str(n), str(stack)]
                                 + args, timeout_for(a, 60, 300e-6, n))
                    rec.update(res, wall_s=time.monotonic() - t)
                    runs.append(rec)
                    tag = "  c %5s %3d KiB round %d %-11s" % (L.size_label(n), stack // 1024,
                                                             r + 1, impl)
                    if "error" in res:
                        L.out("%s %s: %s" % (tag, "TIMEOUT" if res.get("timeout")
                                             else "FAILED", res["error"]))
                        continue
                    L.out("%s RSS+PTE %s B (RSS %s + PTE %s); create+park %.2f us (%.1f s)" % (
                        tag, L.num(round(res["mem_b"])), L.num(round(res["rss_b"])),
                        L.num(round(res["pte_b"])), res["park_us"], rec["wall_s"]))
                    if res.get("stderr"):
                        L.out("    (stderr) " + res["stderr"][-500:])


def run_kv(cmd, timeout):
    """Run a C program that prints "key value" lines."""
    p = L.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        L.reap(p)
        return {"error": "timed out after %d s" % timeout, "timeout": True}
    L.reap(p)
    if p.returncode != 0:
        return {"error": "exited with %s: %s" % (p.returncode, stderr.strip()[-2000:])}
    kv = dict(line.split(None, 1) for line in stdout.splitlines() if " " in line)
    try:
        res = {k: float(v) for k, v in kv.items()}
        res["mem_b"] = res["rss_b"] + res["pte_b"]
    except (KeyError, ValueError):
        return {"error": "unexpected output: %s" % stdout.strip()[-500:]}
    if stderr.strip():
        res["stderr"] = stderr.strip()[-2000:]
    return res


# ---------------------------------------------------------------- main

def preflight(a):
    """Which greenlet each side imports, before any long run."""
    code = ("import greenlet, greenlet._greenlet as g; "
            "print(getattr(g, '_cgreenlet_version', None) or 'stock', greenlet.__version__, "
            "g.__file__)")
    found = {}
    for impl in ("stock", "here"):
        r = subprocess.run([a.python, "-c", code], env=a.envs[impl], capture_output=True,
                           text=True, cwd="/")
        if r.returncode != 0:
            sys.exit("scale: %s greenlet does not import: %s" % (impl, r.stderr.strip()))
        found[impl] = r.stdout.split()
    if found["here"][0] == "stock":
        sys.exit("scale: no cgreenlet module in %s (make python)" % a.build_dir)
    if found["stock"][0] != "stock" or found["stock"][1] != "2.0.2":
        sys.exit("scale: stock greenlet 2.0.2 wanted (Debian's python3-greenlet), found %s"
                 % " ".join(found["stock"]))
    return {"stock": "greenlet %s (%s)" % (found["stock"][1], found["stock"][2]),
            "here": "cgreenlet %s (%s)" % (found["here"][0], found["here"][2])}


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain"],
                           capture_output=True, text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "cpu": "%s (%d online)" % (cpu, os.cpu_count()),
            "memory": "%.1f GB" % (L.meminfo("MemTotal") / 1e9),
            "kernel": "%s %s" % (platform.system(), platform.release()),
            "load": " ".join("%.2f" % x for x in os.getloadavg()),
            "commit": commit + (" (working tree has changes)" if dirty else "")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, one round")
    ap.add_argument("--parts", default=",".join(PARTS), help="python,gevent,c (default all)")
    ap.add_argument("--sizes", help="python part: parked greenlets (default 100k,500k,1M)")
    ap.add_argument("--gevent-sizes", help="gevent part: connections (default 10k,100k)")
    ap.add_argument("--wait-sizes", help="gevent part: greenlets parked in Event.wait() "
                    "(default 100k; 0 for none)")
    ap.add_argument("--c-sizes", help="c part: parked greenlets (default 1M)")
    ap.add_argument("--rounds", type=int, help="rounds per figure (default 3)")
    ap.add_argument("--collects", type=int, default=3,
                    help="gc.collect() calls per python child (default 3; median)")
    ap.add_argument("--idle", type=float,
                    help="gevent part: seconds the connections sit idle before the server's "
                    "memory is read (default 2; --quick 0.5)")
    ap.add_argument("--timeout", type=float,
                    help="seconds per child (default: by size, e.g. 720 s at 1M)")
    ap.add_argument("--json", help="also write every measurement and the table here")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "python-3.11"))
    ap.add_argument("--c-dir", default=os.path.join(ROOT, "build", "bench"),
                    help="where scale_c and scale_boost are (make bench-scale builds them)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.build_dir = os.path.abspath(a.build_dir)
    if a.child == "python":
        child_python(a)
        return 0
    defaults = QUICK if a.quick else FULL
    try:
        a.sizes = L.parse_sizes(a.sizes or defaults["sizes"])
        a.gevent_sizes = L.parse_sizes(a.gevent_sizes or defaults["gevent_sizes"])
        a.c_sizes = L.parse_sizes(a.c_sizes or defaults["c_sizes"])
        a.wait_sizes = ([] if a.wait_sizes in ("0", "") else
                        L.parse_sizes(a.wait_sizes or defaults["wait_sizes"]))
    except ValueError as e:
        ap.error("bad size: %s (want e.g. 100k,1M)" % e)
    a.rounds = a.rounds or defaults["rounds"]
    a.idle = a.idle if a.idle is not None else 0.5 if a.quick else 2.0
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts) or a.rounds < 1 or a.collects < 1:
        ap.error("--parts wants python, gevent and/or c; --rounds, --collects >= 1")
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    a.envs = {"stock": base, "here": dict(base, PYTHONPATH=a.build_dir)}
    meta = machine()
    meta["python"] = "%s (%s)" % (a.python, subprocess.run(
        [a.python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True).stdout.strip())
    if "python" in parts or "gevent" in parts:
        meta.update(preflight(a))
    info = {}
    if "c" in parts:
        try:
            info = c_info(a)
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit("scale: cannot run %s/scale_c and scale_boost (make bench-scale builds "
                     "them): %s" % (a.c_dir, e))
        meta["c"] = "cgreenlet %s (guard %s), Boost.Context %s" % (
            info["version"], info["guard_mode"], info["boost_version"])
    meta["method"] = ("median of %d round(s); a fresh process per (impl, size, round), "
                      "impls alternating; %s" % (a.rounds, "--quick" if a.quick else "full"))
    L.out("scale: greenlets at scale, stock against this module")
    for k, v in meta.items():
        L.out("  %-8s %s" % (k, v))
    runs = []
    t0 = time.monotonic()
    for part in parts:
        if part == "python":
            part_python(a, runs)
        elif part == "gevent":
            import scale_gevent
            scale_gevent.part_gevent(a, runs)
        else:
            part_c(a, runs, info)
    import scale_table
    rows = scale_table.print_table(a, parts, runs, info)
    L.out("\n(total %.0f s; load average at the end %s)" % (
        time.monotonic() - t0, " ".join("%.2f" % x for x in os.getloadavg())))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "runs": runs, "table": rows}, f, indent=1)
        L.out("results written to %s" % a.json)
    failed = [r for r in runs if "error" in r and not r["error"].startswith("skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    L.run_main(main, "scale", 130)
