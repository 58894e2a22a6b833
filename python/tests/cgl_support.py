"""Helpers shared by the cgreenlet Python tests and the scripts they run.

The identity rule: every test runs against this project's `greenlet`
module, recognised by `greenlet._greenlet._cgreenlet_version`.  Setting
CGREENLET_ALLOW_STOCK=1 lets the suite run against another build of
greenlet (Debian's stock 2.0.2), which is how the tests were developed.

CGREENLET_EXPECT_FILE, when set, names the `greenlet/__init__.py` that must
be the one imported; the test session sets it for every child process it
starts so that a subprocess cannot silently pick up another greenlet.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "scripts")


def allow_stock():
    return os.environ.get("CGREENLET_ALLOW_STOCK") == "1"


def is_cgreenlet():
    import greenlet
    return getattr(getattr(greenlet, "_greenlet", None), "_cgreenlet_version", None) is not None


def stock_limitation(reason):
    """Mark a test that stock greenlet 2.0.2 is known to fail, by design or bug.

    Against cgreenlet the test is an ordinary test.  Against another
    greenlet (CGREENLET_ALLOW_STOCK=1) it is a strict xfail: if it starts to
    pass there, the mark is wrong and the run says so.
    """
    import pytest
    return pytest.mark.xfail(not is_cgreenlet(), strict=True,
                             reason="stock greenlet limitation: " + reason)


def version_limitation(before, reason):
    """Mark a test that cgreenlet cannot pass on CPython older than `before`
    (a (major, minor) tuple), because of how those versions work.

    There it is a strict xfail (if it starts to pass, the mark is wrong);
    on newer versions, and against another greenlet, an ordinary test.
    """
    import pytest
    return pytest.mark.xfail(is_cgreenlet() and sys.version_info[:2] < before,
                             strict=True,
                             reason="CPython < %d.%d: %s" % (before + (reason,)))


def describe():
    """Import greenlet and say which one it is (never raises on a mismatch)."""
    import greenlet
    impl = getattr(greenlet, "_greenlet", None)
    version = getattr(impl, "_cgreenlet_version", None)
    return {
        "file": getattr(greenlet, "__file__", None),
        "impl_file": getattr(impl, "__file__", None),
        "version": getattr(greenlet, "__version__", None),
        "cgreenlet_version": version,
    }


def identity_problem():
    """Return None when the greenlet in use is acceptable, else a message."""
    try:
        import greenlet
    except Exception as exc:  # pragma: no cover - reported loudly by callers
        return "cannot import greenlet: %r" % (exc,)
    if sys.modules.get("greenlet") is not greenlet:
        return "sys.modules['greenlet'] is not the imported greenlet module"
    impl = getattr(greenlet, "_greenlet", None)
    if impl is None or sys.modules.get("greenlet._greenlet") is not impl:
        return "greenlet._greenlet is missing or not the module in sys.modules"
    expected = os.environ.get("CGREENLET_EXPECT_FILE")
    if expected and os.path.realpath(greenlet.__file__) != os.path.realpath(expected):
        return "imported greenlet from %s, expected %s" % (greenlet.__file__, expected)
    if getattr(impl, "_cgreenlet_version", None) is None and not allow_stock():
        return ("the greenlet module in use (%s) is not cgreenlet's: "
                "greenlet._greenlet._cgreenlet_version is missing. Put the "
                "built module first on PYTHONPATH (scripts/test-python.sh does), "
                "or set CGREENLET_ALLOW_STOCK=1 to test another greenlet on purpose."
                % (greenlet.__file__,))
    return None


def assert_identity():
    problem = identity_problem()
    assert problem is None, problem


def check_identity_or_exit():
    """For child scripts: print the identity line, exit 3 on a mismatch.

    Also arms faulthandler so that a child that hangs dumps every thread's
    stack and exits before the parent's timeout kills it silently.
    """
    import faulthandler
    faulthandler.enable()
    deadline = os.environ.get("CGL_CHILD_DEADLINE")
    if deadline:
        faulthandler.dump_traceback_later(float(deadline), exit=True)
    problem = identity_problem()
    if problem is not None:
        print("IDENTITY-FAIL " + problem, flush=True)
        sys.stderr.write("identity check failed: %s\n" % problem)
        sys.exit(3)
    info = describe()
    print("IDENTITY-OK %s cgreenlet=%s" % (info["file"], info["cgreenlet_version"]),
          flush=True)


def child_env(extra=None):
    """Environment for a child Python that must import the same greenlet."""
    import greenlet
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(greenlet.__file__)))
    parts = [pkg_parent, HERE]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["CGREENLET_EXPECT_FILE"] = os.path.abspath(greenlet.__file__)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("PYTHONSTARTUP", None)
    if extra:
        env.update(extra)
    return env


def run_python(args, timeout=30, input=None, env=None):
    """Run sys.executable with args (a list) in a child; return CompletedProcess.

    The child gets child_env(), so it imports the same greenlet, and is
    killed when it outlives timeout (subprocess.TimeoutExpired is raised).
    CGREENLET_TEST_TIMEOUT_SCALE (a number, default 1) multiplies timeout:
    the Valgrind run sets it (everything runs many times slower there).
    """
    timeout = timeout * float(os.environ.get("CGREENLET_TEST_TIMEOUT_SCALE", "1"))
    extra = {"CGL_CHILD_DEADLINE": str(max(1, timeout - 5))}
    extra.update(env or {})
    argv = [sys.executable] + list(args)
    try:
        return subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout, env=child_env(extra), cwd=HERE)
    except subprocess.TimeoutExpired as exc:
        def text(data):
            if isinstance(data, bytes):
                return data.decode("utf-8", "replace")
            return data or ""
        return subprocess.CompletedProcess(
            argv, "killed after %ss timeout" % timeout, text(exc.stdout),
            text(exc.stderr) + "\n[killed after %ss timeout]" % timeout)


def run_script(name, *args, timeout=30, env=None):
    return run_python([os.path.join(SCRIPTS, name)] + list(args),
                      timeout=timeout, env=env)


def run_code(code, timeout=30, env=None):
    return run_python(["-c", code], timeout=timeout, env=env)


def explain(proc):
    """Text for an assertion message about a finished child."""
    return "returncode=%r\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        proc.returncode, proc.stdout[-6000:], proc.stderr[-6000:])


def check_gevent_identity_or_exit():
    """In a gevent child: gevent must be built on the same greenlet module."""
    check_identity_or_exit()
    import greenlet
    import gevent
    import gevent.hub
    import gevent._greenlet_primitives as prims
    problems = []
    if sys.modules.get("greenlet") is not greenlet:
        problems.append("sys.modules['greenlet'] changed")
    if gevent.hub.RawGreenlet is not greenlet.greenlet:
        problems.append("gevent.hub.RawGreenlet is not greenlet.greenlet")
    if gevent.getcurrent() is not greenlet.getcurrent():
        problems.append("gevent.getcurrent() answers another greenlet")
    if gevent.hub.GreenletExit is not greenlet.GreenletExit:
        problems.append("gevent's GreenletExit differs")
    if greenlet.greenlet not in gevent.Greenlet.__mro__:
        problems.append("gevent.Greenlet does not derive from greenlet.greenlet")
    if greenlet.greenlet not in prims.TrackedRawGreenlet.__mro__:
        problems.append("gevent's compiled TrackedRawGreenlet has another base")
    if not isinstance(gevent.get_hub(), greenlet.greenlet):
        problems.append("the gevent hub is not a greenlet.greenlet")
    if problems:
        print("IDENTITY-FAIL gevent: " + "; ".join(problems), flush=True)
        sys.exit(3)
    print("IDENTITY-OK gevent %s on %s" % (gevent.__version__, greenlet.__file__), flush=True)


def check_eventlet_identity_or_exit():
    """In an eventlet child: eventlet must use the same greenlet module."""
    check_identity_or_exit()
    import greenlet
    import eventlet
    import eventlet.greenthread
    import eventlet.hubs
    from eventlet.support import greenlets
    problems = []
    if sys.modules.get("greenlet") is not greenlet:
        problems.append("sys.modules['greenlet'] changed")
    if greenlets.greenlet is not greenlet.greenlet:
        problems.append("eventlet.support.greenlets.greenlet is not greenlet.greenlet")
    if greenlets.getcurrent() is not greenlet.getcurrent():
        problems.append("eventlet's getcurrent() answers another greenlet")
    if greenlet.greenlet not in eventlet.greenthread.GreenThread.__mro__:
        problems.append("GreenThread does not derive from greenlet.greenlet")
    if not isinstance(eventlet.hubs.get_hub().greenlet, greenlet.greenlet):
        problems.append("the eventlet hub greenlet is not a greenlet.greenlet")
    if problems:
        print("IDENTITY-FAIL eventlet: " + "; ".join(problems), flush=True)
        sys.exit(3)
    print("IDENTITY-OK eventlet %s on %s" % (eventlet.__version__, greenlet.__file__),
          flush=True)


def check_child(proc, identity, checks):
    """Assert that a child script ran through: exit 0, an `IDENTITY-OK
    <identity>` line and no IDENTITY-FAIL, an `OK <check>` line for each
    of checks, ALL-OK last and no traceback on stderr."""
    import re
    assert proc.returncode == 0, explain(proc)
    assert ("IDENTITY-OK " + identity) in proc.stdout, explain(proc)
    assert "IDENTITY-FAIL" not in proc.stdout, explain(proc)
    for check in checks:
        assert re.search(r"^OK %s\b" % re.escape(check), proc.stdout, re.M), explain(proc)
    assert proc.stdout.rstrip().endswith("ALL-OK"), explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)


class ScriptServer:
    """A server script from scripts/ in a child (child_env(), killed by its
    own faulthandler after `deadline` seconds): its stdout read by a
    thread, its port from its `PORT n` line, its stderr in a file.
    `timeout` bounds each request and, unless wait_port() and stop() are
    given another, the waits for the port and for the exit after GET /quit;
    `grace` bounds the reader's end and the wait after a kill."""

    def __init__(self, name, *args, deadline, timeout, grace):
        import tempfile
        import threading
        self.timeout, self.grace = timeout, grace
        self.errfile = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(SCRIPTS, name)] + list(args),
            stdout=subprocess.PIPE, stderr=self.errfile, text=True,
            env=child_env({"CGL_CHILD_DEADLINE": str(deadline)}))
        self.lines = []
        self.port = None
        self._got_port = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                self._got_port.set()
        self._got_port.set()

    def wait_port(self, timeout=None):
        self._got_port.wait(timeout or self.timeout)
        if self.port is None:
            self.kill()
            raise AssertionError("server did not report a port: %r %r"
                                 % (self.lines, self.stderr()))
        return self.port

    def request(self, method, path, body=None, conn=None):
        """(status, body) of one request, on conn if given (kept open),
        else on a connection of its own."""
        import http.client
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port,
                                                  timeout=self.timeout)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                conn.close()

    def stop(self, timeout=None):
        """GET /quit, wait for the exit: (returncode, stdout, stderr)."""
        timeout = timeout or self.timeout
        if self.port is not None and self.proc.poll() is None:
            try:
                self.request("GET", "/quit")
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.lines.append("[killed: did not stop within %ss]" % timeout)
        finally:
            self.kill()
        self._reader.join(self.grace)
        return self.proc.returncode, "\n".join(self.lines), self.stderr()

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read()[-6000:]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(self.grace)
