"""Helpers shared by bench/scale.py and bench/scale_gevent.py, and used by
bench/stress.py and bench/bench_gevent.py too: /proc figures, the greenlet
check every child makes, child processes with timeouts, the
file-descriptor limit, formatting.  They all run as `python3 bench/NAME.py`
(their children too), so bench/ is sys.path[0] and `import scale_lib`
finds this module."""
import json
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

CHILDREN = []   # every process started and not yet reaped (killed on exit)


# ---------------------------------------------------------------- /proc

def vm_status(pid="self"):
    """VmRSS, VmPTE, VmHWM, VmSize of a process, in bytes (from
    /proc/PID/status; {} if it cannot be read)."""
    res = {}
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmPTE", "VmHWM", "VmSize"):
                    res[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return res


def meminfo(key):
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def read_int(path, default=None):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def port_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


# ---------------------------------------------------------------- in children

def out(*a):
    print(*a, flush=True)


def result(obj):
    """A child's figures, for the driver: one line starting with @@."""
    print("@@" + json.dumps(obj), flush=True)


def check_greenlet(impl, build_dir, gevent_too=False, here="here", prog="scale"):
    """Exit 3 unless the imported greenlet is the one asked for: cgreenlet's
    module (greenlet._greenlet._cgreenlet_version, loaded from build_dir)
    when impl is `here` (the caller's name for it), else Debian's stock
    greenlet 2.0.2; prog names the command in the message.  Returns a
    description."""
    import greenlet
    ours = getattr(greenlet._greenlet, "_cgreenlet_version", None)
    path = os.path.realpath(greenlet._greenlet.__file__)
    in_build = path.startswith(os.path.realpath(build_dir) + os.sep)
    if impl == here:
        ok = ours is not None and in_build
    else:
        ok = ours is None and not in_build and greenlet.__version__ == "2.0.2"
    if ok and gevent_too:
        import gevent.hub
        ok = issubclass(gevent.hub.Hub, greenlet.greenlet)
    if not ok:
        sys.stderr.write("%s: wanted %s greenlet, got %s from %s (version %s)\n"
                         % (prog, "cgreenlet's" if impl == here else "stock",
                            "cgreenlet " + ours if ours else "stock", path,
                            greenlet.__version__))
        sys.exit(3)
    return "cgreenlet %s" % ours if ours else "greenlet %s (stock)" % greenlet.__version__


def stock_env(python, module_dir=None, prog="bench"):
    """Today's stock greenlet from PyPI beside this module, for python:
    scripts/bench-env.sh makes (or keeps) build/bench-greenlet-VERSION-X.Y,
    stock greenlet's wheel unpacked (PYTHONPATH chooses it, on python
    itself), and build/bench-venv-X.Y, a venv on python with gevent 26 and
    no greenlet (PYTHONPATH chooses this module or that stock one).  Returns
    {"venv_python", "stock_dir", "version", "gevent"}; raises RuntimeError with the
    script's output if it cannot (no wheel for python, offline and not
    cached, ...)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [os.path.join(root, "scripts", "bench-env.sh"), "--quiet", python]
    if module_dir:
        cmd[2:2] = ["--module-dir", module_dir]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    last = (r.stdout.strip().splitlines() or [""])[-1].split()
    if r.returncode != 0 or len(last) != 5 or last[0] != "bench-env:":
        raise RuntimeError("%s: scripts/bench-env.sh %s failed (rc %d):\n%s" % (
            prog, python, r.returncode, (r.stdout + r.stderr).strip()))
    return {"venv_python": last[1], "stock_dir": last[2], "version": last[3],
            "gevent": last[4]}


CAP_SYS_RESOURCE = 24


def fd_ceiling():
    """The most file descriptors a child of this process can open: fs.nr_open
    with CAP_SYS_RESOURCE (root, normally), else the hard RLIMIT_NOFILE,
    which only that capability may raise.  Returns (ceiling, why)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nr_open = read_int("/proc/sys/fs/nr_open", 1048576)
    cap = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                cap = int(line.split()[1], 16)
    if cap & (1 << CAP_SYS_RESOURCE):
        return nr_open, "fs.nr_open"
    if hard == resource.RLIM_INFINITY:
        return nr_open, "fs.nr_open"
    return min(hard, nr_open), ("the hard RLIMIT_NOFILE, which this process may not raise "
                                "(no CAP_SYS_RESOURCE)")


def raise_nofile(want):
    """Raise RLIMIT_NOFILE (soft and, as root, hard) to at least want; return
    the soft limit reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- in the driver

class Lines:
    """Lines from a child's stdout pipe, with timeouts (unbuffered reads, so
    nothing waits in a buffer that select() cannot see)."""

    def __init__(self, pipe):
        self.fd, self.buf, self.eof = pipe.fileno(), b"", False

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.fd], [], [], left)[0]:
            return False
        data = os.read(self.fd, 65536)
        self.eof = not data
        self.buf += data
        return True

    def readline(self, timeout):
        """The next line (with its newline), "" at EOF, None on timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf and not self.eof:
            if not self._fill(deadline):
                return None
        line, sep, self.buf = self.buf.partition(b"\n")
        return (line + sep).decode(errors="replace")

    def rest(self, timeout):
        """Everything up to EOF (None after timeout seconds)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._fill(deadline):
                return None
        out, self.buf = self.buf, b""
        return out.decode(errors="replace")


def popen(cmd, **kw):
    """A child in a session of its own (Ctrl-C reaches only the driver, which
    stops the children)."""
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    CHILDREN.append(p)
    return p


def reap(p, sig=signal.SIGKILL, grace=10.0, group=True):
    """Stop p (and, with group, its process group) if it still runs: sig,
    then SIGKILL after grace seconds; wait for it."""
    def send(s):
        try:
            if group:
                os.killpg(p.pid, s)
            else:
                p.send_signal(s)
        except OSError:
            pass
    if p.poll() is None:
        send(sig)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            p.wait()
    if p in CHILDREN:
        CHILDREN.remove(p)


def kill_children():
    for p in list(CHILDREN):
        reap(p, grace=5.0)


def run_main(main, prog, interrupted, cleanup=kill_children):
    """Exit with main()'s return value; SIGTERM acts as Ctrl-C, which exits
    with status `interrupted` after "PROG: interrupted" on stderr; cleanup()
    (by default: kill every child left) runs on every way out."""
    def on_sigterm(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        rc = main()
    except KeyboardInterrupt:
        rc = interrupted
        print("%s: interrupted" % prog, file=sys.stderr)
    finally:
        cleanup()
    sys.exit(rc)


def stderr_text(f, limit=3000):
    f.seek(0)
    return f.read().decode(errors="replace").strip()[-limit:]


def run_child(cmd, env, timeout, echo=None):
    """Run cmd; return its @@ result (a dict; "stderr" holds anything it wrote
    there), or {"error": why} if it timed out or failed (no result, or a
    non-zero exit).  Lines it prints are passed to echo."""
    err = tempfile.TemporaryFile()      # a file: it never fills up
    p = popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err)
    lines = Lines(p.stdout)
    res, why = None, None
    deadline = time.monotonic() + timeout
    while True:
        line = lines.readline(max(0.0, deadline - time.monotonic()))
        if line is None:
            why = "timed out after %d s" % timeout
            break
        if line == "":
            break
        line = line.rstrip("\n")
        if line.startswith("@@"):
            res = json.loads(line[2:])
        elif echo:
            echo(line)
    reap(p)
    p.stdout.close()
    text = stderr_text(err)
    err.close()
    if why is None and (res is None or p.returncode != 0):
        why = "exited with %s" % p.returncode
        if p.returncode == -signal.SIGKILL:
            why += " (SIGKILL: out of memory?)"
    if why:
        return {"error": why + (": " + text if text else ""),
                "timeout": why.startswith("timed out")}
    if text:
        res["stderr"] = text            # reported, the figures stand
    return res


# ---------------------------------------------------------------- numbers

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def num(n):
    return "{:,}".format(n)


def size_label(n):
    if n >= 1000000 and n % 1000000 == 0:
        return "%dM" % (n // 1000000)
    if n >= 1000 and n % 1000 == 0:
        return "%dk" % (n // 1000)
    return str(n)


def parse_sizes(text):
    """"100k,1M,5000" -> [100000, 1000000, 5000]."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        mult = {"k": 1000, "m": 1000000}.get(part[-1], 1)
        value = int(float(part[:-1] if mult > 1 else part) * mult)
        if value < 1:
            raise ValueError(part)
        sizes.append(value)
    if not sizes:
        raise ValueError(text)
    return sizes
