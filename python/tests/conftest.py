"""Session setup for the cgreenlet Python tests.

The session refuses to run (pytest.exit, return code 4) unless the imported
greenlet is cgreenlet's, or CGREENLET_ALLOW_STOCK=1 says another one is
wanted.  Every test also re-checks the identity through an autouse fixture.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cgl_support  # noqa: E402


def pytest_report_header(config):
    info = cgl_support.describe()
    mode = ("CGREENLET_ALLOW_STOCK=1 (stock greenlet allowed)"
            if cgl_support.allow_stock() else "cgreenlet required")
    return ["greenlet imported from: %s" % info["file"],
            "greenlet._greenlet: %s" % info["impl_file"],
            "greenlet.__version__=%s _cgreenlet_version=%s [%s]"
            % (info["version"], info["cgreenlet_version"], mode)]


def pytest_sessionstart(session):
    problem = cgl_support.identity_problem()
    if problem is not None:
        sys.stderr.write("\n*** cgreenlet identity check failed ***\n%s\n" % problem)
        pytest.exit("cgreenlet identity check failed: " + problem, returncode=4)
    # Child processes must import exactly this greenlet.
    import greenlet
    os.environ["CGREENLET_EXPECT_FILE"] = os.path.abspath(greenlet.__file__)


def _skip_list():
    """CGREENLET_SKIP_LIST names a file of test ids this platform cannot run
    (python/tests/qemu_aarch64_skip.txt under qemu-user), one per line (a
    node id, without parameters for all of them, or a file), then '#' and
    the reason: those tests are skipped with that reason."""
    path = os.environ.get("CGREENLET_SKIP_LIST")
    skips = {}
    if path:
        with open(path) as f:
            for line in f:
                test_id, _, reason = line.partition("#")
                if test_id.strip():
                    skips[test_id.strip()] = reason.strip() or "in " + path
    return skips


def pytest_collection_modifyitems(config, items):
    skips = _skip_list()
    if not skips:
        return
    for item in items:
        # A test, any parametrisation of it, or a whole file.
        for test_id in (item.nodeid, item.nodeid.split("[")[0], item.nodeid.split("::")[0]):
            if test_id in skips:
                # A skipif put first: pytest shows the first skipif that
                # holds, and this reason is the one meant here.
                item.add_marker(pytest.mark.skipif(True, reason=skips[test_id]), append=False)
                break


@pytest.fixture(autouse=True)
def _greenlet_is_ours():
    cgl_support.assert_identity()
    yield
