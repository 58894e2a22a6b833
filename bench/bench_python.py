"""Python-side benchmarks: cgreenlet's greenlet module against Debian's
stock greenlet 2.0.2, in the same run (each figure in a fresh process per
module, median of several runs).

    /usr/bin/python3 bench/bench_python.py [--build-dir build/python-3.11] [--runs 5]
    python3 bench/bench_python.py --python ~/.pyenv/versions/3.12.1/bin/python3

--python picks the interpreter the figures are measured on (any CPython the
module builds for).  The module is looked for in --build-dir, else in
build/python-X.Y (`make python PYTHON=...`), else in build/python-X.Y.Z-<tag>
(`scripts/test-python-versions.sh --build-only PYTHON`).  Where stock greenlet
is not installed for that interpreter (every pyenv one), this module is
measured alone and the stock and ratio columns say n/a.

Figures: switch ping-pong; switch with 100 nested sorted(key=...) frames on
the C stack; create+start+finish; kill a parked greenlet (20,000 parked,
then killed); the same in 20 rounds of 1,000 (the stacks released in one
round are reused in the next: it shows what giving pages back costs the
killing thread); RSS per parked greenlet at 100,000.  Targets (issue 3, stock figures on the reference
machine: 107 ns, 10.8 us, 4.8 us, 7.5 us, 5.9 KB): shallow switch <= 0.7x
stock, deep switch <= 1.2x our shallow switch, create <= 0.25x, kill <= 0.3x,
memory <= 1.0x.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r'''
import gc, json, sys, time
import greenlet
from greenlet import greenlet as G, getcurrent
what = sys.argv[1]
N = int(sys.argv[2])
out = {"impl": getattr(greenlet._greenlet, "_cgreenlet_version", None) or "stock"}

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--build-dir", default=None,
                    help="default: build/python-X.Y, else build/python-X.Y.Z-<tag>")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    build_dir = a.build_dir or build_dir_for(a.python)
    ours = dict(os.environ, PYTHONPATH=os.path.abspath(build_dir))
    stock = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with_stock = has_stock(a.python, stock)
    if not with_stock:
        print("(no stock greenlet for %s: cgreenlet's module alone, from %s)"
              % (a.python, build_dir))
    print("%-34s %12s %12s %8s" % ("figure", "cgreenlet", "stock", "ratio"))
    results = {}
    for name, what, n, scale, unit in FIGS:
        runs = 1 if what == "rss" else a.runs
        o, s = [], []
        for _ in range(runs):  # interleaved: noise hits both
            ro = run(a.python, ours, what, n)
            rs = run(a.python, stock, what, n) if with_stock else {"impl": "stock", "value": 0}
            if ro["impl"] == "stock" or rs["impl"] != "stock":
                sys.exit("bench_python: wrong module loaded (%s / %s)" % (ro["impl"], rs["impl"]))
            o.append(ro["value"] * scale)
            s.append(rs["value"] * scale)
        mo, ms = statistics.median(o), statistics.median(s)
        results[what] = mo
        if with_stock:
            print("%-34s %9.2f %-2s %9.2f %-2s %7.2fx" % (name, mo, unit, ms, unit, mo / ms))
        else:
            print("%-34s %9.2f %-2s %12s %8s" % (name, mo, unit, "n/a", "n/a"))
    print("deep switch / our shallow switch: %.2fx" % (results["deep"] / results["pingpong"]))


if __name__ == "__main__":
    main()
