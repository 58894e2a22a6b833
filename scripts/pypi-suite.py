"""greenlet 3.5.x's own test suite (from its PyPI sdist) against this module.

    python scripts/pypi-suite.py build-ext --sdist SDIST_DIR --out LIB_DIR --tmp TMP_DIR
    PYTHONPATH=TREE python -X faulthandler scripts/pypi-suite.py run \
        --tree TREE --known FILE [--pyver X.Y]

build-ext builds upstream's two C test extensions, greenlet.tests._test_extension
(C) and greenlet.tests._test_extension_cpp (C++), from SDIST_DIR/src/greenlet/tests
against the sdist's own greenlet.h (byte-identical to greenlet 2.0.2's, the
API this module provides), with setuptools' build_ext, into
LIB_DIR/greenlet/tests.  Nothing is installed: greenlet itself is not built.

run runs every test of TREE/greenlet/tests (upstream's tests, unmodified,
copied next to a copy of this module's package by scripts/test-pypi.sh), as
`python -m unittest discover` would, then compares what failed with FILE:

    <unittest id> [X.Y ...]   # reason

one test per line; without versions a line holds on every interpreter, with
them only on those.  A listed test that fails is a known failure (printed,
not counted as failed); a test that fails and is not listed for this
version is a NEW failure; a listed test that passes is reported ("now
passes: remove it from FILE") and does not fail the run, unless
CGREENLET_PYPI_STRICT=1.  The greenlet imported must be the module in TREE
(greenlet._greenlet._cgreenlet_version), or nothing runs (exit 3).

Prints unittest's verbose output, the lists, and last a line
    PYPI-SUITE-COUNTS <passed> <new failures> <known failures> <skipped> <stale>
Exit status 0 when there is no new failure and something passed.
"""
import argparse
import os
import sys
import time
import unittest


def build_ext(args):
    from setuptools import Distribution, Extension
    src = os.path.join(os.path.abspath(args.sdist), "src", "greenlet")
    tests = os.path.join(src, "tests")
    exts = [
        Extension("greenlet.tests._test_extension",
                  sources=[os.path.join(tests, "_test_extension.c")],
                  include_dirs=[src]),
        Extension("greenlet.tests._test_extension_cpp",
                  sources=[os.path.join(tests, "_test_extension_cpp.cpp")],
                  include_dirs=[src], language="c++"),
    ]
    dist = Distribution({"name": "greenlet-upstream-test-extensions", "ext_modules": exts})
    dist.script_name = "pypi-suite.py"
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = os.path.abspath(args.out)
    cmd.build_temp = os.path.abspath(args.tmp)
    cmd.inplace = False
    dist.run_command("build_ext")
    for e in exts:
        path = os.path.join(cmd.build_lib, cmd.get_ext_filename(e.name))
        if not os.path.exists(path):
            sys.exit("build-ext: %s was not built" % path)
        print("built %s" % os.path.relpath(path, cmd.build_lib))


def read_known(path, pyver):
    """{test id: reason} of the lines of `path` that hold for `pyver`."""
    known = {}
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line, _, reason = raw.partition("#")
            words = line.split()
            if not words:
                continue
            tid, versions = words[0], words[1:]
            for v in versions:
                parts = v.split(".")
                if len(parts) != 2 or not all(p.isdigit() for p in parts):
                    sys.exit("%s:%d: %r is not a version X.Y" % (path, n, v))
            if versions and pyver not in versions:
                continue
            known[tid] = reason.strip()
    return known


class Result(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.outcome = {}
        self.started = {}
        self.durations = []

    def startTest(self, test):
        self.started[test.id()] = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        t0 = self.started.pop(test.id(), None)
        if t0 is not None:
            self.durations.append((time.monotonic() - t0, test.id()))
        super().stopTest(test)

    def _set(self, test, what):
        tid = test.id()
        # a failure in tearDown after a pass, or several errors: the worst wins
        order = ["pass", "skip", "xfail", "fail", "error", "xpass"]
        old = self.outcome.get(tid)
        if old is None or order.index(what) > order.index(old):
            self.outcome[tid] = what

    def addSuccess(self, test):
        super().addSuccess(test)
        self._set(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, "fail")

    def addError(self, test, err):
        super().addError(test, err)
        self._set(test, "error")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set(test, "skip")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, "xpass")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._set(test, "fail" if issubclass(err[0], test.failureException) else "error")


def run(args):
    tree = os.path.realpath(args.tree)
    pyver = args.pyver or "%d.%d" % sys.version_info[:2]
    if sys.path[0] != tree:
        sys.path.insert(0, tree)
    import greenlet
    import greenlet._greenlet as impl
    where = os.path.realpath(greenlet.__file__)
    cgl = getattr(impl, "_cgreenlet_version", None)
    print("== greenlet imported from %s (greenlet.__version__ %s, _cgreenlet_version %s)"
          % (where, greenlet.__version__, cgl))
    if not where.startswith(tree + os.sep) or cgl is None:
        print("FATAL: the greenlet imported is not this module's copy in %s" % tree)
        print("PYPI-SUITE-COUNTS 0 1 0 0 0")
        return 3
    import greenlet.tests
    print("== greenlet.tests from %s" % os.path.dirname(os.path.realpath(greenlet.tests.__file__)))
    for name in ("_test_extension", "_test_extension_cpp"):
        mod = __import__("greenlet.tests." + name, fromlist=["x"])
        print("== %s: %s" % (name, os.path.relpath(mod.__file__, tree)))
    leak_vars = " ".join("%s=%s" % (k, os.environ[k]) for k in (
        "GREENLET_SKIP_LEAKCHECKS", "GREENLET_SKIP_FAILING_LEAKCHECKS",
        "GREENLET_ONLY_FAILING_LEAKCHECKS") if k in os.environ)
    print("== leak checks: %s" % (leak_vars or "on, every test"))
    known = read_known(args.known, pyver)

    suite = unittest.defaultTestLoader.discover(
        os.path.join(tree, "greenlet", "tests"), top_level_dir=tree)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=Result)
    sys.stdout.flush()
    result = runner.run(suite)
    sys.stdout.flush()

    out = result.outcome
    failed = sorted(t for t, o in out.items() if o in ("fail", "error", "xpass"))
    new = [t for t in failed if t not in known]
    known_failed = [t for t in failed if t in known]
    stale = sorted(t for t in known if out.get(t) not in ("fail", "error", "xpass"))
    passed = sum(1 for o in out.values() if o == "pass")
    skipped = sum(1 for o in out.values() if o in ("skip", "xfail"))

    print()
    print("== slowest tests")
    for secs, tid in sorted(result.durations, reverse=True)[:6]:
        print("   %6.2fs %s" % (secs, tid))
    print("== known failures on %s (%s): %d listed, %d failed as listed"
          % (pyver, args.known, len(known), len(known_failed)))
    for t in known_failed:
        print("   known  %s  # %s" % (t, known[t]))
    if stale:
        print("== listed as known failures on %s but did not fail (remove them from %s):"
              % (pyver, args.known))
        for t in stale:
            print("   %-6s %s" % (out.get(t, "absent"), t))
    if new:
        print("== NEW failures (not in %s for %s):" % (args.known, pyver))
        for t in new:
            print("   NEW    %s (%s)" % (t, out[t]))
        texts = {}
        for test, text in result.failures + result.errors:
            texts.setdefault(test.id(), text)
        for t in new:
            lines = texts.get(t, "(unexpected success)").rstrip().splitlines()
            print("-- %s" % t)
            for line in lines[:12] + (["   ..."] if len(lines) > 30 else []) + lines[max(12, len(lines) - 18):]:
                print("   | " + line)
    strict = os.environ.get("CGREENLET_PYPI_STRICT") == "1"
    print("PYPI-SUITE-COUNTS %d %d %d %d %d" % (passed, len(new), len(known_failed),
                                               skipped, len(stale)))
    return 0 if (not new and passed > 0 and not (strict and stale)) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-ext")
    b.add_argument("--sdist", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--tmp", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tree", required=True)
    r.add_argument("--known", required=True)
    r.add_argument("--pyver")
    args = ap.parse_args()
    if args.cmd == "build-ext":
        build_ext(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
