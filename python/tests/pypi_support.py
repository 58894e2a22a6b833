"""Helpers of the tests of today's greenlet clients from PyPI (test_pypi_*.py).

Those tests run in the venvs of scripts/pypi-env.sh (build/pypi-venv-X.Y),
where gevent, eventlet and SQLAlchemy come pinned from PyPI and `greenlet`
is this repository's module (PyPI's greenlet is never installed there).
Anywhere else (Debian's python3 with its older gevent 22.10 and eventlet
0.33, the pyenv interpreters without them) they skip: `require()` asks for
at least the version of the venvs.

On top of conftest.py's identity check (greenlet._greenlet._cgreenlet_version,
every test), `pip_view_problem()` checks that no `greenlet` distribution is
installed, so that nothing could have imported PyPI's greenlet instead.
"""
import importlib.metadata
import os
import sys

import pytest


def _older(have, want):
    try:
        from packaging.version import Version
        return Version(have) < Version(want)
    except ImportError:  # pragma: no cover - pytest brings packaging
        def key(v):
            return [int(x) if x.isdigit() else 0 for x in v.split(".")]
        return key(have) < key(want)


def require(module, minversion, dist=None):
    """Import `module`, or skip the test module unless the distribution
    `dist` (default: the module's name) is installed at `minversion` or
    later, as in the venvs of scripts/pypi-env.sh."""
    dist = dist or module
    try:
        have = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        have = None
    if have is None or _older(have, minversion):
        pytest.skip("%s >= %s comes from scripts/pypi-env.sh's venvs (here: %s); "
                    "`scripts/test.sh pypi` runs these tests"
                    % (dist, minversion, have or "not installed"), allow_module_level=True)
    return pytest.importorskip(module)


def pip_view_problem():
    """None when no `greenlet` distribution is installed, else a message."""
    try:
        d = importlib.metadata.distribution("greenlet")
    except importlib.metadata.PackageNotFoundError:
        return None
    return ("a greenlet distribution (%s %s, %s) is installed beside this module"
            % (d.metadata["Name"], d.version, d.locate_file("")))


def assert_ours():
    """The greenlet in use is this module, not a PyPI greenlet."""
    import greenlet
    import greenlet._greenlet as impl
    assert getattr(impl, "_cgreenlet_version", None) is not None, greenlet.__file__
    problem = pip_view_problem()
    assert problem is None, problem
    site = [p for p in sys.path if p.endswith("site-packages")]
    where = os.path.realpath(greenlet.__file__)
    assert not any(where.startswith(os.path.realpath(s) + os.sep) for s in site), where
