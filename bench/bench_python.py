"""Python-side benchmarks: cgreenlet's greenlet module against stock
greenlet, in the same run and on the same interpreter: Debian's greenlet
2.0.2 (python3-greenlet) and today's greenlet from PyPI (3.5.6, pinned in
scripts/bench-env.sh, which fetches its wheel into the cache outside the
clone once and unpacks it into build/bench-greenlet-3.5.6-X.Y).  Each figure
is measured in a fresh process per module, the modules interleaved, median
of several runs; PYTHONPATH chooses the module and each process checks
which one it imported.

    /usr/bin/python3 bench/bench_python.py [--build-dir build/python-3.11] [--runs 5]
    python3 bench/bench_python.py --python ~/.pyenv/versions/3.12.1/bin/python3
    ... --json FILE        also write the figures (each run's) to FILE

--python picks the interpreter the figures are measured on (any CPython the
module builds for).  The module is looked for in --build-dir, else in
build/python-X.Y (`make python PYTHON=...`), else in build/python-X.Y.Z-<tag>
(`scripts/test-python-versions.sh --build-only PYTHON`).  Where Debian's
stock greenlet is not installed for that interpreter (every pyenv one), its
columns say n/a; where PyPI has no greenlet 3.5.6 wheel for it (or the cache
lacks it and there is no network), the run stops unless --no-pypi-stock
(then those columns say n/a).

Figures: switch ping-pong; switch with 100 nested sorted(key=...) frames on
the C stack; create+start+finish; kill a parked greenlet (20,000 parked,
then killed); the same in 20 rounds of 1,000 (the stacks released in one
round are reused in the next: it shows what giving pages back costs the
killing thread); RSS per parked greenlet at 100,000.  Targets (issue 3, stock figures on the reference
machine: 107 ns, 10.8 us, 4.8 us, 7.5 us, 5.9 KB): shallow switch <= 0.7x
stock, deep switch <= 1.2x our shallow switch, create <= 0.25x, kill <= 0.3x,
memory <= 1.0x.  A ratio is cgreenlet / stock: below 1 cgreenlet is faster
(or smaller).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from scale_lib import stock_env

CHILD = r'''
import gc, json, sys, time
import greenlet
from greenlet import greenlet as G, getcurrent
what = sys.argv[1]
N = int(sys.argv[2])
out = {"impl": getattr(greenlet._greenlet, "_cgreenlet_version", None) or "stock",
       "version": greenlet.__version__, "file": greenlet.__file__}

def pingpong():
    main = getcurrent()
    def body():
        while True:
            main.switch()
    g = G(body); g.switch()
    t = time.perf_counter()
    for _ in range(N):
        g.switch()
    return (time.perf_counter() - t) / (2 * N)

def deep():
    main = getcurrent()
    def down(d):
        if d == 0:
            while True:
                main.switch()
        return sorted([1, 2], key=lambda x: down(d - 1) if x == 1 else 0)
    g = G(lambda: down(100)); g.switch()
    t = time.perf_counter()
    for _ in range(N):
        g.switch()
    return (time.perf_counter() - t) / (2 * N)

def create():
    f = lambda: None
    t = time.perf_counter()
    for _ in range(N):
        G(f).switch()
    return (time.perf_counter() - t) / N

def park(n):
    """n greenlets, each started and switched back out of: parked."""
    main = getcurrent()
    def body():
        main.switch()
    gs = []
    for _ in range(n):
        g = G(body); g.switch(); gs.append(g)
    return gs

def time_kills(gs):
    t = time.perf_counter()
    for g in gs:
        g.throw()
    return time.perf_counter() - t

def kill():
    return time_kills(park(N)) / N

def killrounds():
    # 20 rounds of N: released stacks come back from the purger each round
    return sum(time_kills(park(N)) for _ in range(20)) / (20 * N)

def rss():
    def rss_now():
        return int(open("/proc/self/statm").read().split()[1]) * 4096
    gc.collect(); r0 = rss_now()
    gs = park(N)
    return (rss_now() - r0) / N

out["value"] = {"pingpong": pingpong, "deep": deep, "create": create,
                "kill": kill, "killrounds": killrounds, "rss": rss}[what]()
print(json.dumps(out))
'''

FIGS = [  # name, what, N, scale, unit
    ("switch ping-pong", "pingpong", 200000, 1e9, "ns"),
    ("switch, 100 sorted() frames deep", "deep", 20000, 1e9, "ns"),
    ("create+start+finish", "create", 50000, 1e6, "us"),
    ("kill a parked greenlet", "kill", 20000, 1e6, "us"),
    ("kill, 20 rounds of 1,000 parked", "killrounds", 1000, 1e6, "us"),
    ("RSS per parked greenlet @100k", "rss", 100000, 1e-3, "KB"),
]


def run(python, env, what, n):
    r = subprocess.run([python, "-c", CHILD, what, str(n)], env=env,
                       capture_output=True, text=True, timeout=600, check=True)
    return json.loads(r.stdout)


def build_dir_for(python):
    """Where `make python` or test-python-versions.sh put the module for python."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    info = subprocess.run([python, "-c", "import platform, sys; print('%d.%d' % "
                           "sys.version_info[:2], platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.split()
    pyenv = os.path.join(os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv"),
                         "versions") + os.sep
    tag = ("debian" if python.startswith("/usr/bin/python3")
           else "pyenv" if python.startswith(pyenv) else "other")
    tried = [os.path.join(root, "build", "python-" + info[0]),
             os.path.join(root, "build", "python-%s-%s" % (info[1], tag))]
    for d in tried:
        if os.path.isdir(os.path.join(d, "greenlet")):
            return d
    sys.exit("bench_python: no greenlet module built for %s in %s.\nBuild it with: "
             "scripts/test-python-versions.sh --build-only %s"
             % (python, " or ".join(tried), python))


def has_stock(python, env):
    """Is another greenlet (stock) importable by python without our module?"""
    r = subprocess.run([python, "-c", "import greenlet._greenlet as g; "
                        "print(getattr(g, '_cgreenlet_version', None) is None)"],
                       env=env, capture_output=True, text=True, cwd="/")
    return r.returncode == 0 and r.stdout.strip() == "True"


def ratio(r):
    """0.23x; two significant digits below 0.1 (0.0047x)."""
    return "%.2fx" % r if r >= 0.1 else "%.2gx" % r


IMPLS = ("ours", "stock", "pypi")   # cgreenlet, Debian's 2.0.2, PyPI's 3.5.6


def check(which, out, build_dir, want):
    """Did PYTHONPATH choose the module wanted?"""
    f = os.path.realpath(out["file"])
    in_build = f.startswith(os.path.realpath(build_dir) + os.sep)
    if which == "ours":
        return out["impl"] != "stock" and in_build
    if which == "stock":
        return out["impl"] == "stock" and not in_build and out["version"] == "2.0.2"
    return (out["impl"] == "stock" and out["version"] == want["version"]
            and f.startswith(os.path.realpath(want["stock_dir"]) + os.sep))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--build-dir", default=None,
                    help="default: build/python-X.Y, else build/python-X.Y.Z-<tag>")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", help="figures to run, comma-separated: " +
                    ",".join(f[1] for f in FIGS))
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every N by this (the report's quick mode: 0.1)")
    ap.add_argument("--no-pypi-stock", action="store_true",
                    help="go on without PyPI's stock greenlet if it cannot be set up")
    ap.add_argument("--no-pypi", action="store_true",
                    help="leave PyPI's stock greenlet out (no venv, no download): "
                    "cgreenlet against Debian's 2.0.2 only, as in the arm64 root "
                    "file system (scripts/test-arm64-module.sh --bench)")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args()
    build_dir = a.build_dir or build_dir_for(a.python)
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    envs = {"ours": dict(base, PYTHONPATH=os.path.abspath(build_dir)), "stock": base}
    have = {"ours": True, "stock": has_stock(a.python, base), "pypi": False}
    pypi = {"version": "3.5.6", "stock_dir": None}
    try:
        if a.no_pypi:
            raise RuntimeError("left out (--no-pypi)")
        pypi = stock_env(a.python, prog="bench_python")
        envs["pypi"] = dict(base, PYTHONPATH=pypi["stock_dir"])
        have["pypi"] = True
    except RuntimeError as e:
        if not (a.no_pypi_stock or a.no_pypi):
            sys.exit("%s\n(--no-pypi-stock goes on without it)" % e)
        print("(no stock greenlet %s from PyPI for %s: %s)"
              % (pypi["version"], a.python, str(e).splitlines()[-1]))
    if not have["stock"]:
        print("(no Debian stock greenlet for %s)" % a.python)
    names = {"ours": "cgreenlet", "stock": "stock 2.0.2", "pypi": "stock " + pypi["version"]}
    print("%s; cgreenlet from %s%s; median of %d run(s), interleaved" % (
        a.python, build_dir,
        "; stock %s from %s" % (pypi["version"], pypi["stock_dir"]) if have["pypi"] else "",
        a.runs))
    print("%-34s %12s %12s %8s %12s %8s" % ("figure", names["ours"], names["stock"], "ratio",
                                           names["pypi"], "ratio"))
    figs = FIGS
    if a.only:
        want = a.only.split(",")
        figs = [f for f in FIGS if f[1] in want]
    results = {}
    for name, what, n, scale, unit in figs:
        n = max(1, int(n * a.scale))
        runs = 1 if what == "rss" else a.runs
        vals = {w: [] for w in IMPLS}
        for r in range(runs):  # interleaved, the order rotated: noise hits all
            order = IMPLS[r % 3:] + IMPLS[:r % 3]
            for which in order:
                if not have[which]:
                    continue
                out = run(a.python, envs[which], what, n)
                if not check(which, out, build_dir, pypi):
                    sys.exit("bench_python: wrong module loaded for %s: %s %s from %s"
                             % (which, out["impl"], out["version"], out["file"]))
                vals[which].append(out["value"] * scale)
        med = {w: statistics.median(v) if v else None for w, v in vals.items()}
        results[what] = {"name": name, "unit": unit, "n": n, "runs": vals, "median": med}
        cells = ["%-34s %9.2f %-2s" % (name, med["ours"], unit)]
        for w in ("stock", "pypi"):
            if med[w]:
                cells.append("%9.2f %-2s %8s" % (med[w], unit, ratio(med["ours"] / med[w])))
            else:
                cells.append("%12s %8s" % ("n/a", "n/a"))
        print(" ".join(cells), flush=True)
    if "deep" in results and "pingpong" in results:
        print("deep switch / our shallow switch: %.2fx" % (
            results["deep"]["median"]["ours"] / results["pingpong"]["median"]["ours"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"python": a.python, "build_dir": os.path.abspath(build_dir),
                       "names": names, "pypi_stock_dir": pypi["stock_dir"],
                       "have": have, "runs": a.runs, "scale": a.scale,
                       "figures": results}, f, indent=1)


if __name__ == "__main__":
    main()
