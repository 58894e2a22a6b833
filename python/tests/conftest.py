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


@pytest.fixture(autouse=True)
def _greenlet_is_ours():
    cgl_support.assert_identity()
    yield
