#!/usr/bin/env python3
"""Differential testing: random greenlet programs run under a stock greenlet
(the reference) and under cgreenlet's module, in separate processes, and
their observable traces compared.

    difftest.py batch [--seed 1] [--count 2000] [--ref REFS] [--build-dir DIR] [--out DIR]
    difftest.py soak [--seconds 600] [--ref REFS] [--build-dir DIR] [--out DIR]
    difftest.py replay FILE [--ref REFS] [--build-dir DIR]  (one program, every trace)
    difftest.py refenv [--ref REFS]                  (make the references, print them)
    difftest.py record FILE OUT --note TEXT [--ref REFS]
                     (a fixed divergence into python/difftest/regressions: its
                      steps, the references it must match (default: all),
                      what was wrong, and every trace; fails unless each
                      reference gives ours)

References (--ref, a comma-separated list; "all" is every one):
  2.0.2  Debian's python3-greenlet, in /usr/bin/python3
  3.5.6  greenlet 3.5.6 from PyPI (today's stock), in a venv of
         /usr/bin/python3, build/difftest-ref-3.5.6: made on first use from
         the wheel in the PyPI cache (CGREENLET_PYPI_CACHE, default
         ~/.cache/cgreenlet-pypi; `pip download` fetches it there if it is
         missing, unless CGREENLET_PYPI_OFFLINE=1); kept while its stamp
         matches, so reruns touch no network.
Where the two disagree this module follows 3.x (docs/python.md).  A
program's trace must match each reference asked for, up to a known stock bug
(stock_bug_at) and, against 2.0.2, up to the 3.x behaviours this module
follows where 2.0.2 differs (THREE_X_CHOICES).

`batch` runs a fixed-seed set of programs (the test suite runs it) and exits
1 if any diverges from any reference; `soak` runs fresh seeds until the time
is up.  Both write each diverging program, shrunk to a minimal reproducer,
to --out (build/difftest by default) as JSON, with the reference's trace and
ours; `replay` reruns one against the references the file names ("refs",
else "ref", else 2.0.2) or --ref, and exits 1 if any differs.

A program is a list of steps [thread, op, args...], run in lock step: a step
is executed by whichever greenlet is current in its thread, so switches
happen from inside greenlets, however deep.  Every greenlet runs the same
interpreter loop (`body`); only one thread runs at a time, so traces are
deterministic.  What is compared: each step's outcome (values returned,
exception type and message), greenlets starting and exiting, tracing
events, states seen by queries.  What is not: ids, addresses, _stack_saved,
timings.  Known, documented differences are avoided: programs do build
reference cycles through suspended greenlets, which stock never collects
and cgreenlet does (docs/python.md), so the executor of ours drops the
module's gc.callbacks entry, which gives stock's behaviour.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
STOCK_PYTHON = "/usr/bin/python3"
REFS = ("2.0.2", "3.5.6")   # the references, oldest first
SLOTS = 6          # greenlet table size
THREADS = 3        # thread 0 is the main thread
STEP_TIMEOUT = 5  # seconds per program before the executor gives up

# ---------------------------------------------------------------- generator

VALUES = [0, 1, 7, -3, "s", "", None, (1, 2), [4], {"k": 1}]
THROWS = ["GreenletExit", "ValueError", "UserError", "default", "class",
          "instance_tb", "bad_type", "bad_tb", "KeyboardInterrupt"]
RAISES = ["ValueError", "UserError", "GreenletExit", "KeyError"]


def gen_program(rng):
    """A random program (list of steps) from a random.Random."""
    steps = []
    alive = {0}
    n = rng.randint(4, 60)
    for _ in range(n):
        t = rng.choice(sorted(alive))
        r = rng.random()
        k = rng.randrange(SLOTS)
        j = rng.randrange(SLOTS)
        if r < 0.16:
            steps.append([t, "new", k, rng.choice([None, None, j])])
        elif r < 0.36:
            a = rng.random()
            if a < 0.6:
                args = [rng.choice(VALUES)]
            elif a < 0.75:
                args = []
            else:
                args = [rng.choice(VALUES), rng.choice(VALUES)]
            kw = {"x": rng.choice(VALUES)} if rng.random() < 0.15 else {}
            steps.append([t, "switch", k, args, kw])
        elif r < 0.43:
            steps.append([t, "throw", k, rng.choice(THROWS)])
        elif r < 0.48:
            steps.append([t, "setparent", k, rng.choice([j, j, None, "bad"])])
        elif r < 0.55:
            steps.append([t, "return", rng.choice(VALUES)])
        elif r < 0.59:
            steps.append([t, "raise", rng.choice(RAISES)])
        elif r < 0.64:
            steps.append([t, "drop", k])
        elif r < 0.67:
            steps.append([t, "gc"])
        elif r < 0.70:
            steps.append([t, "trace", rng.random() < 0.6])
        elif r < 0.76:
            steps.append([t, "query", k])
        elif r < 0.79:
            steps.append([t, "grabcur", k])
        elif r < 0.82:
            steps.append([t, "switchparent", rng.choice(VALUES)])
        elif r < 0.84:
            steps.append([t, "setrun", k])
        elif r < 0.86:
            steps.append([t, "grabparent", k, j])
        elif r < 0.92:
            free = [x for x in range(1, THREADS) if x not in alive]
            if free:
                u = rng.choice(free)
                alive.add(u)
                steps.append([t, "tstart", u])
        else:
            live = sorted(alive - {0})
            if live:
                u = rng.choice(live)
                alive.discard(u)
                steps.append([u, "texit"])
    return steps


# ---------------------------------------------------------------- references

def _venv_python(venv):
    return os.path.join(venv, "bin", "python")


def _ref_python_pypi(version, log):
    """The venv of STOCK_PYTHON with greenlet==version from PyPI (pinned),
    made or kept; its python."""
    import fcntl
    import hashlib
    venv = os.path.join(ROOT, "build", "difftest-ref-" + version)
    cache = os.path.realpath(os.environ.get("CGREENLET_PYPI_CACHE")
                             or os.path.expanduser("~/.cache/cgreenlet-pypi"))
    if (cache + os.sep).startswith(ROOT + os.sep):
        raise SystemExit("difftest: the PyPI cache (%s) must be outside the clone" % cache)
    py = _venv_python(venv)
    real = os.path.realpath(STOCK_PYTHON)
    stamp = "greenlet==%s python=%s %s" % (
        version, real, hashlib.sha256(open(real, "rb").read()).hexdigest()[:16])
    stamp_file = os.path.join(venv, ".difftest-stamp")
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    with open(os.path.join(ROOT, "build", ".difftest-ref.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if open(stamp_file).read() == stamp and os.path.exists(py):
                return py
        except OSError:
            pass
        log("difftest: making the %s reference: %s" % (version, os.path.relpath(venv, ROOT)))
        import shutil
        shutil.rmtree(venv, ignore_errors=True)
        env = dict(os.environ)
        for k in ("PYTHONPATH", "PYTHONHOME"):
            env.pop(k, None)
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

        def run(*cmd):
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/")
            return p.returncode == 0, (p.stdout + p.stderr).strip()

        ok, out = run(STOCK_PYTHON, "-m", "venv", venv)
        if not ok:
            raise SystemExit("difftest: python -m venv failed:\n" + out)
        req = "greenlet==" + version
        install = (py, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                   "--only-binary", ":all:", "--find-links", cache, req)
        ok, out = run(*install)
        if ok:
            log("difftest:   cache: complete, nothing downloaded (%s)" % cache)
        else:
            if os.environ.get("CGREENLET_PYPI_OFFLINE") == "1":
                raise SystemExit("difftest: %s is not in %s and CGREENLET_PYPI_OFFLINE=1:\n%s"
                                 % (req, cache, out))
            os.makedirs(cache, exist_ok=True)
            log("difftest:   cache: no wheel, pip download %s into %s" % (req, cache))
            ok, out = run(py, "-m", "pip", "download", "-q", "--no-deps",
                          "--only-binary", ":all:", "-d", cache, req)
            if not ok:
                raise SystemExit("difftest: pip download %s failed:\n%s" % (req, out))
            ok, out = run(*install)
            if not ok:
                raise SystemExit("difftest: installing %s failed:\n%s" % (req, out))
        ok, out = run(py, "-c", "import greenlet, greenlet._greenlet as m; "
                      "print(greenlet.__version__, hasattr(m, '_cgreenlet_version'))")
        if not ok or out.split() != [version, "False"]:
            raise SystemExit("difftest: the %s reference imports the wrong greenlet: %s"
                             % (version, out))
        with open(stamp_file, "w") as f:
            f.write(stamp)
        return py


def ref_python(ref, log=lambda msg: print(msg, file=sys.stderr, flush=True)):
    """The interpreter whose `import greenlet` is reference ref."""
    if ref == "2.0.2":
        if not os.path.isdir("/usr/lib/python3/dist-packages/greenlet"):
            raise SystemExit("difftest: the 2.0.2 reference is Debian's python3-greenlet "
                             "(apt-get install python3-greenlet)")
        return STOCK_PYTHON
    if ref == "3.5.6":
        return _ref_python_pypi(ref, log)
    raise SystemExit("difftest: no reference %r (have %s)" % (ref, ", ".join(REFS)))


def parse_refs(text):
    refs = list(REFS) if text == "all" else [r.strip() for r in text.split(",") if r.strip()]
    for r in refs:
        if r not in REFS:
            raise SystemExit("difftest: no reference %r (have %s, all)" % (r, ", ".join(REFS)))
    return refs


# ---------------------------------------------------------------- executor

EXECUTOR = r'''
import gc, json, os, re, sys, threading, time, faulthandler
impl, build_dir, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
if impl == "ours":
    sys.path.insert(0, build_dir)
import greenlet
from greenlet import greenlet as G, getcurrent, GreenletExit
mine = getattr(greenlet._greenlet, "_cgreenlet_version", None) is not None
if mine != (impl == "ours") or (not mine and greenlet.__version__ != impl):
    sys.stderr.write("difftest: wanted greenlet %s, imported %s %s\n"
                     % (impl, greenlet.__version__, greenlet.__file__))
    sys.exit(3)
if mine:
    # Stock greenlet never collects a cycle through suspended greenlets;
    # this module does, in the full collections that show their frames
    # (docs/python.md), which ones depending on when automatic collections
    # ran: a matter of timing.  Programs do make such cycles (a greenlet
    # suspended in a switch to another one that is suspended in a switch to
    # its parent holds it in a frame), so they get stock's behaviour here:
    # without the module's gc.callbacks entry, the frames are never shown.
    gc.callbacks[:] = [c for c in gc.callbacks
                       if getattr(c, "__name__", "") != "_cgreenlet_gc_callback"]
    assert not any("cgreenlet" in repr(c) for c in gc.callbacks)

class UserError(Exception):
    pass

class ExitThread(BaseException):
    """Unwinds a thread's greenlets up to its main greenlet (texit)."""

class Prog:
    pass

P = Prog()

def name(g):
    if g is None:
        return None
    try:
        n = g.__dict__.get("name")
    except Exception as e:
        return "?" + type(e).__name__
    if n is None:
        n = "main%d" % P.tindex.get(threading.get_ident(), -1) if g.parent is None else "anon"
        try:
            g.name = n
        except Exception:
            pass
    return n

def fmt(v):
    if isinstance(v, G):
        return "<%s>" % name(v)
    if isinstance(v, tuple):
        return "(" + ",".join(fmt(x) for x in v) + ")"
    if isinstance(v, dict):
        return "{" + ",".join("%s:%s" % (k, fmt(v[k])) for k in sorted(v)) + "}"
    if isinstance(v, BaseException):
        return "%s(%s)" % (type(v).__name__, ",".join(fmt(a) for a in v.args))
    return repr(v)

def err(e):
    # (Addresses, as in a greenlet's repr inside 3.x's cross-thread error,
    # differ from run to run.)
    return "!%s: %s" % (type(e).__name__, re.sub(r"0x[0-9a-fA-F]+", "0x?", str(e)))

def rec(*item):
    P.trace.append([fmt(x) if not isinstance(x, str) else x for x in item])

def tracer(event, args):
    origin, target = args
    rec("trace", event, name(origin), name(target))

def new_body(slot):
    def body(*args, **kwargs):
        me = name(getcurrent())
        rec("start", me, fmt(args), fmt(kwargs))
        try:
            return loop()
        except GreenletExit as e:
            rec("exit", me, fmt(e))
            raise
    return body

def pass_baton():
    """Skips steps of threads not running and wakes the waiters (call with
    P.cond held, after giving up the turn)."""
    while P.pc < len(P.steps) and P.steps[P.pc][0] not in P.alive:
        P.trace.append(["skip", P.pc])
        P.pc += 1
    P.cond.notify_all()

def next_step(t):
    """Ends the turn of the calling thread, if it has it, and waits for a
    step of thread t; None at the end of the program.  A thread has the
    turn from taking a step until it comes back here (its greenlets may
    switch, start, finish or die meanwhile): only one thread runs."""
    me = threading.get_ident()
    with P.cond:
        if P.owner == me:
            P.owner = None
            pass_baton()
        while True:
            if P.pc >= len(P.steps):
                return None
            if P.owner is None and P.steps[P.pc][0] == t:
                if P.joinme is not None and P.joinme is not threading.current_thread():
                    P.joinme.join()
                    P.joinme = None
                    settle()
                P.owner = me
                s = P.steps[P.pc]
                P.trace.append(["step", P.pc, name(getcurrent())])
                P.pc += 1
                return s
            P.cond.wait()

def slot(k):
    g = P.tbl[k]
    if g is None:
        rec("noslot", k)
    return g

def loop():
    t = P.tindex[threading.get_ident()]
    while True:
        s = next_step(t)
        if s is None:
            if getcurrent().parent is None:
                return "end"
            return "end"
        r = do(t, s)
        if r is not None:
            return r[0]

def resume(op, done, call):
    """Records how call() (a switch or throw) came back: as done with its
    value or the error it raised.  A GreenletExit is recorded under op and,
    outside the main greenlet, re-raised so that the greenlet dies (a
    greenlet refusing to die is not modelled)."""
    try:
        r = call()
    except ExitThread:
        raise
    except GreenletExit as e:
        rec(op, err(e))
        if getcurrent().parent is not None:
            raise
    except BaseException as e:
        rec(done, err(e))
    else:
        rec(done, fmt(r))

def do(t, s):
    op, a = s[1], s[2:]
    if op == "new":
        k, p = a
        kw = {}
        if p is not None:
            pg = P.tbl[p]
            if pg is None:
                rec("noslot", p)
                return None
            kw["parent"] = pg
        try:
            g = G(new_body(k), **kw)
        except Exception as e:
            rec("new", k, err(e))
            return None
        P.count += 1
        g.name = "g%d" % P.count
        P.tbl[k] = g
        rec("new", k, name(g), name(g.parent))
    elif op == "switch":
        k, args, kw = a
        g = slot(k)
        if g is None:
            return None
        resume(op, "switched", lambda: g.switch(*args, **kw))
    elif op == "switchparent":
        p = getcurrent().parent
        if p is None:
            rec("noparent")
            return None
        resume(op, "switched", lambda: p.switch(a[0]))
    elif op == "throw":
        k, kind = a
        g = slot(k)
        if g is None:
            return None
        def throw():
            if kind == "default":
                return g.throw()
            elif kind == "class":
                return g.throw(ValueError, "v")
            elif kind == "instance_tb":
                return g.throw(UserError("u"), None, None)
            elif kind == "bad_type":
                return g.throw(1)
            elif kind == "bad_tb":
                return g.throw(ValueError, "v", 5)
            elif kind == "GreenletExit":
                return g.throw(GreenletExit("bye"))
            elif kind == "KeyboardInterrupt":
                return g.throw(KeyboardInterrupt)
            else:
                return g.throw({"ValueError": ValueError, "UserError": UserError}[kind]("t"))
        resume(op, "thrown", throw)
    elif op == "setparent":
        k, p = a
        g = slot(k)
        if g is None:
            return None
        if p == "bad":
            v = 42
        elif p is None:
            v = None
        else:
            v = P.tbl[p]
            if v is None:
                rec("noslot", p)
                return None
        try:
            if v is None:
                del g.parent
            else:
                g.parent = v
        except Exception as e:
            rec("setparent", err(e))
        else:
            rec("setparent", name(g.parent))
    elif op == "return":
        if getcurrent().parent is None:
            rec("cantreturn")
            return None
        rec("return", fmt(a[0]))
        return (a[0],)
    elif op == "raise":
        if getcurrent().parent is None:
            rec("cantraise")
            return None
        rec("raise", a[0])
        raise {"ValueError": ValueError, "UserError": UserError,
               "GreenletExit": GreenletExit, "KeyError": KeyError}[a[0]]("r")
    elif op == "drop":
        k = a[0]
        rec("drop", k, name(P.tbl[k]))
        P.tbl[k] = None
    elif op == "gc":
        gc.collect()
        rec("gc")
    elif op == "trace":
        prev = greenlet.settrace(tracer if a[0] else None)
        rec("settrace", a[0], prev is not None)
    elif op == "query":
        g = slot(a[0])
        if g is None:
            return None
        # (bool first: reading dead changes it for a greenlet left
        # suspended by its thread's exit, in stock greenlet and here.)
        b = bool(g)
        # (A greenlet whose thread exited keeps showing its frames here;
        # stock greenlet shows None: docs/python.md.)
        try:
            fr = g.gr_frame is None if not g.dead else "-"
        except Exception as e:
            fr = err(e)
        try:
            cx = g.gr_context is None
        except Exception as e:
            cx = err(e)
        rec("query", name(g), b, g.dead, name(g.parent), fr,
            g is getcurrent(), cx)
    elif op == "grabcur":
        P.tbl[a[0]] = getcurrent()
        rec("grabcur", a[0], name(getcurrent()))
    elif op == "grabparent":
        k, j = a
        g = slot(j)
        if g is None:
            return None
        P.tbl[k] = g.parent
        rec("grabparent", k, name(g.parent))
    elif op == "setrun":
        g = slot(a[0])
        if g is None:
            return None
        try:
            g.run = new_body(a[0])
        except Exception as e:
            rec("setrun", err(e))
        else:
            rec("setrun", "ok")
    elif op == "tstart":
        u = a[0]
        if u in P.alive:
            rec("tstart", u, "running")
            return None
        th = threading.Thread(target=thread_main, args=(u,))
        P.alive.add(u)
        P.threads[u] = th
        rec("tstart", u)
        th.start()
    elif op == "texit":
        rec("texit", t)
        raise ExitThread()
    else:
        rec("badop", op)
    return None

def settle():
    """Stock greenlet cleans up after a dead thread in a pending call, a
    moment after the join (cgreenlet at once): wait until it has."""
    t0 = time.time()
    while any(not m.dead for m in P.tmains) and time.time() - t0 < 2:
        time.sleep(0.0002)
    P.tmains = [m for m in P.tmains if not m.dead]

def thread_main(u):
    P.tindex[threading.get_ident()] = u
    me = getcurrent()
    try:
        loop()
    except ExitThread:
        pass
    except BaseException as e:
        rec("thread-escaped", u, err(e))
    P.tmains.append(me)
    del me
    with P.cond:
        P.alive.discard(u)
        P.joinme = threading.current_thread()
        if P.owner == threading.get_ident():
            P.owner = None
        pass_baton()

def run_program(steps):
    P.steps = [list(s) for s in steps]
    # Threads still running at the end exit, in order, one at a time.
    P.steps += [[u, "texit"] for u in range(1, 8)]
    P.pc = 0
    P.trace = []
    P.tbl = [None] * 8
    P.count = 0
    P.alive = {0}
    P.threads = {}
    P.joinme = None
    P.owner = None
    P.tmains = []
    P.cond = threading.Condition()
    P.tindex = {threading.get_ident(): 0}
    with P.cond:
        pass_baton()
    r = loop()
    with P.cond:
        P.owner = None
    rec("mainend", fmt(r))
    for th in P.threads.values():
        th.join()
    settle()
    greenlet.settrace(None)
    for k in range(len(P.tbl)):
        if P.tbl[k] is not None:
            rec("final", k, name(P.tbl[k]), P.tbl[k].dead)
            P.tbl[k] = None
    gc.collect()
    rec("collected")
    return P.trace

def watchdog():
    """A program that hangs (waiting for a step nobody will run) ends the
    process with its trace so far; faulthandler is the backstop."""
    while True:
        ev.wait()
        ev.clear()
        if not done.wait(timeout):
            sys.stderr.write("HANG " + json.dumps(P.trace[-12:]) + "\n")
            sys.stderr.flush()
            os._exit(4)

ev, done = threading.Event(), threading.Event()
threading.Thread(target=watchdog, daemon=True).start()
for line in sys.stdin:
    req = json.loads(line)
    done.clear()
    ev.set()
    faulthandler.dump_traceback_later(timeout + 10, exit=True)
    try:
        trace = run_program(req["steps"])
    except BaseException as e:
        # Threads of this program may still wait: start a fresh process.
        trace = P.trace + [["executor-error", err(e)]]
        sys.stdout.write(json.dumps({"id": req["id"], "trace": trace}) + "\n")
        sys.stdout.flush()
        os._exit(5)
    faulthandler.cancel_dump_traceback_later()
    done.set()
    sys.stdout.write(json.dumps({"id": req["id"], "trace": trace}) + "\n")
    sys.stdout.flush()
'''


def executor_cmd(impl, build_dir):
    """impl: "ours" or a reference."""
    py = STOCK_PYTHON if impl == "ours" else ref_python(impl)
    return [py, "-X", "faulthandler", "-c", EXECUTOR, impl, build_dir or "",
            str(STEP_TIMEOUT)]


def run_batch(impl, build_dir, programs):
    """Traces of programs (list of (id, steps)) under impl ("ours" or a
    reference): {id: trace}.
    A crash or hang ends its process; the program it was in gets a CRASH
    trace and the rest go on in a fresh process."""
    out = {}
    todo = list(programs)
    while todo:
        inp = "".join(json.dumps({"id": i, "steps": s}) + "\n" for i, s in todo)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        p = subprocess.run(executor_cmd(impl, build_dir), input=inp, text=True,
                           capture_output=True, env=env)
        got = 0
        for line in p.stdout.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                break
            out[rec["id"]] = rec["trace"]
            got += 1
        if got == len(todo):
            break
        if p.returncode == 3:
            raise SystemExit(p.stderr)
        if p.returncode == 5 and got:  # asked for a fresh process
            todo = todo[got:]
            continue
        i, _ = todo[got]
        tail = p.stderr.strip().splitlines()[-6:]
        out[i] = [["CRASH", p.returncode] + tail]
        todo = todo[got + 1:]
    return out


# Where stock greenlet is the one that is wrong, the traces are compared up
# to that point; each such case has a test pinning this module's behaviour.
def stock_bug_at(trace):
    """Index of the first trace item of ours that shows where stock greenlet
    is wrong, else None.

    A greenlet that ends by GreenletExit passes the exception object on as
    its result; an unstarted parent starts with it.  Stock greenlet (2.0.2
    and 3.5.6 alike) hands the exception object itself to run(*args) as if
    it were the argument tuple, reading its fields as a tuple's (undefined
    behaviour: run gets no arguments, and reference counts go wrong after).
    Here run gets (exc,).  Pinned by python/tests/test_differential.py."""
    for k, item in enumerate(trace):
        if (item[0] == "start" and item[2].startswith("(GreenletExit(")
                and item[2].endswith("))")):
            return k
    return None


# Where 2.0.2 and 3.x disagree this module follows 3.x (docs/python.md,
# "Where 2.0.2 and 3.x differ"): against the 2.0.2 reference, a trace item
# of 2.0.2 matching the first pattern and ours matching the second count as
# the same.  (Against 3.5.6 nothing is excused.)
THREE_X_CHOICES = {
    "2.0.2": [
        # The error for a switch to a greenlet of another live thread: 3.x
        # names the current greenlet and the expected one.
        (r"!error: cannot switch to a different thread",
         r"!error: Cannot switch to a different thread\n\tCurrent:  <.*>\n\tExpected: <.*>"),
    ],
}


def _items_equal(a, b, pending):
    if a == b:
        return True
    if not pending or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x != y and not any(re.fullmatch(p, str(x), re.S) and re.fullmatch(q, str(y), re.S)
                              for p, q in pending):
            return False
    return True


def _traces_equal(a, b, pending):
    return len(a) == len(b) and all(_items_equal(x, y, pending) for x, y in zip(a, b))


def same(a, b, ref):
    """Whether reference ref's trace a and ours b agree (THREE_X_CHOICES
    aside); from a known stock bug on, they are not compared (its item
    itself must match what stock shows)."""
    pending = THREE_X_CHOICES.get(ref)
    if a and a[-1][0] == "CRASH" and not (b and b[-1][0] == "CRASH"):
        # Stock greenlet crashed (it has bugs this module does not); what
        # came before must agree.
        k = len(a) - 1
        return _traces_equal(a[:k], b[:k], pending)
    k = stock_bug_at(b)
    if k is None:
        return _traces_equal(a, b, pending)
    return (_traces_equal(a[:k], b[:k], pending) and len(a) > k
            and a[k][:2] == b[k][:2] and a[k][2] == "()")


def run_all(progs, build_dir, refs):
    """Traces under ours and under each reference, all run at once:
    {impl: {id: trace}}."""
    box = {}
    threads = [threading.Thread(target=lambda r=r: box.update({r: run_batch(r, None, progs)}))
               for r in refs]
    for t in threads:
        t.start()
    box["ours"] = run_batch("ours", build_dir, progs)
    for t in threads:
        t.join()
    for r in refs:
        if r not in box:
            raise SystemExit("difftest: the %s reference did not run" % r)
    return box


def diverges(steps, build_dir, ref):
    t = run_all([(0, steps)], build_dir, [ref])
    a, b = t[ref][0], t["ours"][0]
    return not same(a, b, ref), a, b


def shrink(steps, build_dir, ref, budget=300):
    """Delta debugging over the steps: a smallest program that still
    diverges from ref (within budget tries)."""
    tries = 0
    n = 2
    while len(steps) >= 2 and tries < budget:
        chunk = max(1, len(steps) // n)
        reduced = False
        for start in range(0, len(steps), chunk):
            cand = steps[:start] + steps[start + chunk:]
            tries += 1
            if cand and diverges(cand, build_dir, ref)[0]:
                steps = cand
                n = max(n - 1, 2)
                reduced = True
                break
            if tries >= budget:
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(steps), n * 2)
    # Single steps, once more.
    i = 0
    while i < len(steps) and tries < budget:
        cand = steps[:i] + steps[i + 1:]
        tries += 1
        if cand and diverges(cand, build_dir, ref)[0]:
            steps = cand
        else:
            i += 1
    return steps


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def report(out_dir, name, steps, build_dir, ref, do_shrink=True, seen=None):
    """Writes a diverging program (shrunk) to out_dir.  seen: the traces
    (reference's, ours) of the run that diverged: kept in the file, and
    what it shows, if a rerun no longer diverges (a flaky divergence)."""
    rerun = diverges(steps, build_dir, ref)[0]
    small = shrink(steps, build_dir, ref) if do_shrink and rerun else steps
    d, a, b = diverges(small, build_dir, ref)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name + ".json")
    data = {"steps": small, "original_steps": len(steps), "ref": ref,
            "stock": a, "ours": b}
    if seen is not None:
        data["seen"] = {"stock": seen[0], "ours": seen[1]}
        if not rerun:
            a, b = seen
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    i = first_difference(a, b)
    print("DIVERGES from %s: %s (%d steps, shrunk from %d)%s -> %s"
          % (ref, name, len(small), len(steps),
             "" if rerun else " NOT REPRODUCED on a rerun (flaky; the traces seen are in the file)",
             path))
    print("  first difference at trace item %d:" % i)
    print("    stock: %s" % (a[i] if i < len(a) else "<end>"))
    print("    ours : %s" % (b[i] if i < len(b) else "<end>"))
    return path


def default_build_dir():
    v = "%d.%d" % tuple(int(x) for x in subprocess.check_output(
        [STOCK_PYTHON, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
        text=True).split())
    return os.path.join(ROOT, "build", "python-" + v)


def compare(seed_base, count, build_dir, refs, out_dir, shrink_max, chunk=250):
    """Runs count programs from seed_base under ours and each reference;
    returns the diverging (ref, id) and the statistics."""
    bad = []
    stats = {"programs": 0, "steps": 0, "trace_items": 0}
    for lo in range(0, count, chunk):
        progs = [(i, gen_program(random.Random("%s-%d" % (seed_base, i))))
                 for i in range(lo, min(count, lo + chunk))]
        t = run_all(progs, build_dir, refs)
        for i, steps in progs:
            stats["programs"] += 1
            stats["steps"] += len(steps)
            stats["trace_items"] += len(t["ours"][i])
            for r in refs:
                if not same(t[r][i], t["ours"][i], r):
                    bad.append((r, i, steps, (t[r][i], t["ours"][i])))
    for n, (r, i, steps, seen) in enumerate(bad):
        report(out_dir, "seed-%s-%d-vs%s" % (seed_base, i, r), steps, build_dir, r,
               do_shrink=n < shrink_max, seen=seen)
    return bad, stats


def file_refs(data):
    """The references a reproducer file is replayed against."""
    if "refs" in data:
        return list(data["refs"])
    return [data.get("ref", "2.0.2")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("batch", "soak", "replay", "refenv", "record"):
        s = sub.add_parser(name)
        s.add_argument("--ref", default=None,
                       help="references, comma-separated, or all (%s); default: %s"
                       % (", ".join(REFS), {"batch": "all", "soak": REFS[-1],
                                            "replay": "those the file names",
                                            "refenv": "all", "record": "all"}[name]))
        if name == "refenv":
            continue
        if name == "record":
            s.add_argument("file")
            s.add_argument("out")
            s.add_argument("--note", required=True)
        s.add_argument("--build-dir", default=None)
        s.add_argument("--out", default=os.path.join(ROOT, "build", "difftest"))
        if name == "batch":
            s.add_argument("--seed", default="1")
            s.add_argument("--count", type=int, default=2000)
            s.add_argument("--shrink-max", type=int, default=5,
                           help="shrink at most this many divergences")
        if name == "soak":
            s.add_argument("--seconds", type=float, default=600)
        if name == "replay":
            s.add_argument("file")
    args = ap.parse_args()
    if args.cmd == "refenv":
        for r in parse_refs(args.ref or "all"):
            print("%s %s" % (r, ref_python(r)))
        return 0
    build_dir = os.path.abspath(args.build_dir or default_build_dir())
    if not os.path.isdir(os.path.join(build_dir, "greenlet")):
        raise SystemExit("difftest: no greenlet module in %s (make python)" % build_dir)
    t0 = time.time()
    if args.cmd == "replay":
        with open(args.file) as f:
            data = json.load(f)
        refs = parse_refs(args.ref) if args.ref else file_refs(data)
        t = run_all([(0, data["steps"])], build_dir, refs)
        ours = t["ours"][0]
        differ = []
        for r in refs:
            if not same(t[r][0], ours, r):
                differ.append(r)
        for label in refs + ["ours"]:
            print("== %s%s" % (label if label == "ours" else "stock " + label,
                               " (differs from ours)" if label in differ else ""))
            for item in t[label][0]:
                print("  ", item)
        for r in refs:
            print("%s: %s" % (r, "DIVERGES" if r in differ else "same trace"))
        return 1 if differ else 0
    if args.cmd == "record":
        with open(args.file) as f:
            data = json.load(f)
        refs = parse_refs(args.ref or "all")
        t = run_all([(0, data["steps"])], build_dir, list(REFS))
        differ = [r for r in refs if not same(t[r][0], t["ours"][0], r)]
        if differ:
            raise SystemExit("difftest: %s still differs from %s" % (args.file, ", ".join(differ)))
        out = {"note": args.note, "refs": refs, "steps": data["steps"],
               "original_steps": data.get("original_steps", len(data["steps"])),
               "traces": {k: v[0] for k, v in t.items()}}
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        print("recorded %s: same trace as %s%s" % (
            args.out, ", ".join(refs),
            "".join("; differs from %s" % r for r in REFS
                    if r not in refs and not same(t[r][0], t["ours"][0], r))))
        return 0
    refs = parse_refs(args.ref or ("all" if args.cmd == "batch" else REFS[-1]))
    for r in refs:
        ref_python(r)      # made before the clock matters
    if args.cmd == "batch":
        bad, st = compare(args.seed, args.count, build_dir, refs, args.out, args.shrink_max)
        for r in refs:
            print("difftest: %d programs (%d steps, %d trace items), seed %s, against "
                  "stock %s: %d diverging, %.1fs"
                  % (st["programs"], st["steps"], st["trace_items"], args.seed, r,
                     sum(1 for x in bad if x[0] == r), time.time() - t0))
        return 1 if bad else 0
    # soak
    total = nbad = 0
    seed = int(time.time())
    while time.time() - t0 < args.seconds:
        bad, st = compare("soak%d" % seed, 500, build_dir, refs, args.out, shrink_max=3)
        total += st["programs"]
        nbad += len(bad)
        seed += 1
        print("soak: %d programs against stock %s, %d diverging, %.0fs"
              % (total, ",".join(refs), nbad, time.time() - t0), flush=True)
    return 1 if nbad else 0


if __name__ == "__main__":
    sys.exit(main())
