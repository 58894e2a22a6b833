"""Run Debian's copy of the upstream greenlet 2.0.2 suite on any interpreter.

    cd BUILD_DIR && PYTHONPATH=BUILD_DIR python -X faulthandler \
        /path/to/scripts/upstream-suite.py [--expect-dir BUILD_DIR]

BUILD_DIR holds our greenlet/ package with the upstream tests copied, as they
are, into greenlet/tests (scripts/test-python-versions.sh does that; Debian's
files are never touched).  scripts/test-python.sh runs the same suite on
Debian's python3 with plain `python -m unittest`.

Some upstream test modules import things that exist for CPython 3.11 only on
this machine: the compiled helpers greenlet.tests._test_extension and
_test_extension_cpp (Debian ships them as *.cpython-311-*.so only), and
psutil (python3-psutil is compiled for Debian's python3).  When one of them
cannot be imported here, a placeholder module stands in for it so that the
test module still loads, and every test that uses the missing module
(directly, or through a helper function or method of its module, found from
the source) is skipped with the reason; the tests that do not use it run.
Should a test reach the placeholder all the same, it is skipped at that
point (unittest.SkipTest).  Any other import error is a failure.

KNOWN_IDS="id ..." (upstream ids from python/tests/known_failures.txt) are
reported as skipped, as known failures.

Tests that cannot run on newer CPythons as written (VERSION_SKIPS: the test
itself is incompatible, not the module; stock greenlet 2.0.2 predates those
versions) are skipped there, with the reason printed.

CGL_UPSTREAM_MISSING="psutil greenlet.tests._test_extension ..." treats those
modules as missing even where they exist (to try this out on CPython 3.11).

Prints unittest's verbose output, the slowest tests, and last a line
    UPSTREAM-COUNTS <passed> <failed> <skipped>
Exit status 0 when nothing failed and something ran.
"""
import argparse
import ast
import glob
import importlib
import importlib.util
import os
import sys
import sysconfig
import time
import types
import unittest

TESTS_PKG = "greenlet.tests"
# module that may be missing -> what it is
OPTIONAL = {
    TESTS_PKG + "._test_extension": "upstream's compiled C test helper",
    TESTS_PKG + "._test_extension_cpp": "upstream's compiled C++ test helper",
    "psutil": "psutil (Debian's python3-psutil is compiled for Debian's python3 only)",
}

# upstream test id -> (first CPython version it cannot run on, why)
VERSION_SKIPS = {
    TESTS_PKG + ".test_greenlet.TestGreenlet.test_throw_to_dead_thread_doesnt_crash": (
        (3, 13), "calls frame.f_locals.clear(), which 3.13's FrameLocalsProxy "
        "(PEP 667) does not have (a test incompatibility: stock greenlet 2.0.2 "
        "does not support 3.13); the rest of its scenario runs in python/tests/"
        "test_frame_chains.py::test_throw_into_a_greenlet_of_an_exited_thread"),
}


def missing_reason(name, tests_dir):
    """None if `name` can be imported here, else why it cannot.

    A compiled helper built for this interpreter counts as present even if
    it then fails to import: its tests must fail, not skip.
    """
    soabi = sysconfig.get_config_var("SOABI")
    forced = name in os.environ.get("CGL_UPSTREAM_MISSING", "").split()
    if name.startswith(TESTS_PKG + "."):
        if not forced and importlib.util.find_spec(name) is not None:
            return None
        base = name.rsplit(".", 1)[1]
        built = sorted(os.path.basename(p)
                       for p in glob.glob(os.path.join(tests_dir, base + ".*.so")))
        return ("needs %s %s, built only as %s (this interpreter: %s)"
                % (OPTIONAL[name], name.rsplit(".", 1)[1], ", ".join(built) or "nothing",
                   soabi)) + (" [CGL_UPSTREAM_MISSING]" if forced else "")
    if not forced:
        try:
            importlib.import_module(name)
            return None
        except ImportError as exc:
            return "needs %s; not importable here (%s): %s" % (OPTIONAL[name], soabi, exc)
    return "needs %s [CGL_UPSTREAM_MISSING]" % OPTIONAL[name]


class Placeholder(types.ModuleType):
    """Stands in for a missing module; using it skips the test that does."""

    def __init__(self, name, reason):
        super().__init__(name)
        self._reason = reason

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise unittest.SkipTest(self._reason)


def bound_names(tree, missing):
    """{local name a module binds -> missing module} for its imports of them."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in missing:
                    out[a.asname or a.name.split(".")[0]] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = TESTS_PKG + ("." + base if base else "")
            for a in node.names:
                full = base + "." + a.name
                if full in missing:
                    out[a.asname or a.name] = full
                elif base in missing:
                    out[a.asname or a.name] = base
    return out


def tainted_functions(tree, names):
    """Names of the functions and methods of a module that use `names`.

    A function uses a name if it mentions it, or calls a function, or a
    method of self/cls, of the same module that does.  Methods of all classes
    share one namespace: that can only skip more, never less.
    """
    funcs = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            refs = set()
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name):
                    refs.add(sub.id)
                elif (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name)
                      and sub.value.id in ("self", "cls")):
                    refs.add(sub.attr)
            funcs.setdefault(node.name, set()).update(refs)
    tainted = {f for f, refs in funcs.items() if refs & set(names)}
    grew = True
    while grew:
        grew = False
        for f, refs in funcs.items():
            if f not in tainted and refs & tainted:
                tainted.add(f)
                grew = True
    return tainted


def walk(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from walk(t)
        else:
            yield t


class TimedResult(unittest.TextTestResult):
    durations_seen = []
    passed = 0   # counted here: testsRun leaves out skipped tests from 3.12 on

    def addSuccess(self, test):
        TimedResult.passed += 1
        super().addSuccess(test)

    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        TimedResult.durations_seen.append((time.monotonic() - self._t0, test.id()))
        super().stopTest(test)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--expect-dir", help="greenlet must be imported from here")
    a = ap.parse_args()

    import greenlet
    impl = greenlet._greenlet
    cg = getattr(impl, "_cgreenlet_version", None)
    print("== greenlet %s from %s (_cgreenlet_version=%s)"
          % (greenlet.__version__, greenlet.__file__, cg), flush=True)
    if a.expect_dir:
        real = os.path.realpath(greenlet.__file__)
        if not real.startswith(os.path.realpath(a.expect_dir) + os.sep):
            sys.exit("FATAL: greenlet is imported from %s, not from %s" % (real, a.expect_dir))
    if cg is None and os.environ.get("CGREENLET_ALLOW_STOCK") != "1":
        sys.exit("FATAL: %s is not cgreenlet's module (no _cgreenlet_version)"
                 % greenlet.__file__)
    tests_dir = os.path.join("greenlet", "tests")
    import greenlet.tests
    if os.path.realpath(os.path.dirname(greenlet.tests.__file__)) != os.path.realpath(tests_dir):
        sys.exit("FATAL: greenlet.tests is %s, not ./%s" % (greenlet.tests.__file__, tests_dir))
    if os.environ.get("GREENLET_SKIP_LEAKCHECKS"):
        print("== leak checks: off (GREENLET_SKIP_LEAKCHECKS=1)", flush=True)
    elif os.environ.get("GREENLET_SKIP_FAILING_LEAKCHECKS"):
        print("== leak checks: on, the known failing ones skipped "
              "(GREENLET_SKIP_FAILING_LEAKCHECKS=1)", flush=True)
    else:
        print("== leak checks: on", flush=True)

    missing = {}
    for name in OPTIONAL:
        why = missing_reason(name, tests_dir)
        if why:
            missing[name] = why
            sys.modules[name] = Placeholder(name, why)
            print("== missing %s: placeholder in place; the tests using it skip" % name,
                  flush=True)

    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite()
    for path in sorted(glob.glob(os.path.join(tests_dir, "test_*.py"))):
        modname = TESTS_PKG + "." + os.path.basename(path)[:-3]
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        uses = bound_names(tree, missing)
        # Any import error shows as a failed test (unittest's _FailedTest).
        tests = loader.loadTestsFromName(modname)
        if uses:
            reason = "; ".join(sorted({missing[m] for m in uses.values()}))
            tainted = tainted_functions(tree, uses)
            n = 0
            for t in walk(tests):
                name = getattr(t, "_testMethodName", None)
                if name in tainted:
                    meth = getattr(type(t), name)
                    if not getattr(meth, "__unittest_skip__", False):
                        setattr(type(t), name, unittest.skip(reason)(meth))
                    n += 1
            print("== SKIP %d of %d tests of %s: %s"
                  % (n, tests.countTestCases(), modname, reason), flush=True)
        suite.addTest(tests)

    known = set(os.environ.get("KNOWN_IDS", "").split())
    for t in walk(suite):
        if t.id() in known:
            meth = getattr(type(t), t._testMethodName)
            setattr(type(t), t._testMethodName, unittest.skip(
                "known failure, listed in python/tests/known_failures.txt")(meth))
            print("== known failure, skipped: %s" % t.id(), flush=True)
        elif t.id() in VERSION_SKIPS and sys.version_info[:2] >= VERSION_SKIPS[t.id()][0]:
            since, why = VERSION_SKIPS[t.id()]
            reason = "CPython %d.%d+: %s" % (since + (why,))
            meth = getattr(type(t), t._testMethodName)
            setattr(type(t), t._testMethodName, unittest.skip(reason)(meth))
            print("== SKIP %s: %s" % (t.id(), reason), flush=True)

    runner = unittest.TextTestRunner(verbosity=2, resultclass=TimedResult, stream=sys.stdout)
    result = runner.run(suite)
    slow = sorted(TimedResult.durations_seen, reverse=True)[:6]
    print("== slowest: " + ", ".join("%s %.1fs" % (t.rsplit(".", 1)[-1], d) for d, t in slow))
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped) + len(result.expectedFailures)
    passed = TimedResult.passed
    print("UPSTREAM-COUNTS %d %d %d" % (passed, failed, skipped), flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
