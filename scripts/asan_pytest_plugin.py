"""pytest plugin of scripts/test-python-asan.sh: sanitizer reports per test.

Loaded with `-p asan_pytest_plugin` (scripts/ on PYTHONPATH).  Child
processes read ASAN_OPTIONS/UBSAN_OPTIONS when they start, so while a test
runs their log_path points into a directory of its own:

    $CGL_SAN_DIR/tests/<test id, made a file name>/asan.<pid>, ubsan.<pid>

At the end $CGL_SAN_DIR/tests/outcomes.txt lists, for each directory that
holds a report, the test's id and outcome (passed, failed, xfailed, ...), so
that the script can tell a report from the deliberate crash of a strict
xfail test (its reason names the bug) from a new finding.  Reports of the
pytest process itself still go to the run's own log_path.
"""
import os
import re

import pytest

_BASE = os.path.join(os.environ["CGL_SAN_DIR"], "tests")
_outcomes = {}   # nodeid -> outcome
_dirs = {}       # nodeid -> directory


def _dirname(nodeid):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")
    return os.path.join(_BASE, name[-180:])


def _with_log_path(options, path):
    kept = [o for o in (options or "").split(":") if o and not o.startswith("log_path=")]
    return ":".join(kept + ["log_path=" + path])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    d = _dirname(item.nodeid)
    os.makedirs(d, exist_ok=True)
    _dirs[item.nodeid] = d
    saved = {k: os.environ.get(k) for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS")}
    os.environ["ASAN_OPTIONS"] = _with_log_path(saved["ASAN_OPTIONS"], d + "/asan")
    os.environ["UBSAN_OPTIONS"] = _with_log_path(saved["UBSAN_OPTIONS"], d + "/ubsan")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            os.rmdir(d)          # only if empty: no report
        except OSError:
            pass


def pytest_runtest_logreport(report):
    prev = _outcomes.get(report.nodeid)
    if hasattr(report, "wasxfail"):
        outcome = "xpassed" if report.passed else "xfailed"
    else:
        outcome = report.outcome
    # The worst phase wins (a failed teardown after a passed call is failed).
    order = ["passed", "skipped", "xfailed", "xpassed", "failed"]
    if prev is None or order.index(outcome) > order.index(prev):
        _outcomes[report.nodeid] = outcome


def pytest_sessionfinish(session, exitstatus):
    os.makedirs(_BASE, exist_ok=True)
    with open(os.path.join(_BASE, "outcomes.txt"), "w") as f:
        for nodeid, d in _dirs.items():
            if os.path.isdir(d):
                f.write("%s %s %s\n" % (os.path.basename(d),
                                        _outcomes.get(nodeid, "unknown"), nodeid))
