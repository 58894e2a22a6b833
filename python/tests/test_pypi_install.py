"""Installing this repository as the `greenlet` distribution, as users
install things, in fresh venvs (build/pypi-install/<interpreter>-<case>).

pip builds the module from this tree with build isolation (setuptools in a
throw-away build environment) and installs it as `greenlet` (setup.py:
version = python/greenlet/__init__.py's __version__, the greenlet API it
provides).  The cases, for each interpreter (Debian's python3, and the
newest pyenv CPython 3.11.x and 3.13.x; CGREENLET_PYPI_INSTALL_PYTHONS
overrides):

  A. `pip install <repo>`, then `pip install gevent==<pin>`: pip reports
     gevent's `greenlet` requirement as already satisfied by this module and
     installs no other greenlet; `pip show` and `pip check` agree.
  B. `pip install gevent==<pin>` (which brings PyPI's greenlet), then
     README's one-liner `pip install --force-reinstall --no-deps <repo>`:
     PyPI's greenlet is uninstalled and none of its files is left.
and, on one interpreter:
  C. one `pip install -r` of a requirements file naming
     `greenlet @ file://<repo>` and gevent (README's form).
  D. an sdist made by setuptools' PEP 517 hook (what `python -m build
     --sdist` calls; MANIFEST.in) installs and imports: the tree pip builds
     from holds everything setup.py needs.

In every case a child process of the venv's python
(scripts/pypi_install_child.py) proves that `import greenlet` is this
module (greenlet._greenlet._cgreenlet_version, which only it has), that it
is the one installed `greenlet` distribution (direct_url: this tree), and
that gevent's classes derive from its type; then it runs a small gevent
program (spawn, sleep, joinall, an echo over a monkey-patched socketpair).

Everything comes from the wheel cache of scripts/pypi-env.sh
(CGREENLET_PYPI_CACHE, default ~/.cache/cgreenlet-pypi) with
PIP_NO_INDEX/PIP_FIND_LINKS, which the isolated build environment honours
too.  What it lacks (PyPI's greenlet wheel, the first time) is fetched once
with `pip download`, unless CGREENLET_PYPI_OFFLINE=1.  A run starts by
removing build/setuptools (where setup.py builds for pip), so the first
install on each interpreter compiles the module.

scripts/test-pypi.sh runs this file once (CGREENLET_PYPI_INSTALL_TEST=1);
elsewhere it skips.  Seconds per step: <logs>/install/timings.txt, pip's
output per venv beside it.
"""
import base64
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from cgl_support import SCRIPTS

if os.environ.get("CGREENLET_PYPI_INSTALL_TEST") != "1":
    pytest.skip("builds fresh venvs with pip: scripts/test-pypi.sh runs it "
                "(CGREENLET_PYPI_INSTALL_TEST=1)", allow_module_level=True)

ROOT = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
REQ = os.path.join(ROOT, "scripts", "pypi-requirements.txt")
CHILD = os.path.join(SCRIPTS, "pypi_install_child.py")
VENVS = os.path.join(ROOT, "build", "pypi-install")
CACHE = os.path.realpath(os.environ.get("CGREENLET_PYPI_CACHE")
                         or os.path.expanduser("~/.cache/cgreenlet-pypi"))
OFFLINE = os.environ.get("CGREENLET_PYPI_OFFLINE") == "1"
LOGS = os.path.join(os.environ.get("CGREENLET_TEST_LOGS")
                    or os.path.join(ROOT, "build", "test-pypi-logs"), "install")
# README's command for the reverse order (the test checks README says it)
ONE_LINER = ["install", "--force-reinstall", "--no-deps"]
ONE_LINER_TEXT = "pip install --force-reinstall --no-deps /path/to/cgreenlet"
STEP_TIMEOUT = 600


def _read(path, pattern):
    with open(path) as f:
        m = re.search(pattern, f.read(), re.M)
    assert m, (path, pattern)
    return m.group(1)


def _pin(name):
    """name's pin in scripts/pypi-requirements.txt (one without a marker)."""
    return _read(REQ, r"^%s==([^\s;#]+)\s*$" % re.escape(name))


OURS = _read(os.path.join(ROOT, "python", "greenlet", "__init__.py"), r'^__version__ = "([^"]+)"$')
STOCK = _read(os.path.join(ROOT, "scripts", "pypi-env.sh"), r"^GREENLET_SDIST_VERSION=(\S+)$")
GEVENT = _pin("gevent")
SETUPTOOLS = _pin("setuptools")


# ---------------------------------------------------------------- interpreters
def _pyenv_newest(minor):
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for d in glob.glob(os.path.join(root, "versions", "3.%d.*" % minor)):
        m = re.match(r"^3\.%d\.(\d+)$" % minor, os.path.basename(d))
        if m and os.access(os.path.join(d, "bin", "python3"), os.X_OK):
            found.append((int(m.group(1)), os.path.join(d, "bin", "python3")))
    return max(found)[1] if found else None


def _interpreters():
    given = os.environ.get("CGREENLET_PYPI_INSTALL_PYTHONS")
    if given:
        return [(os.path.basename(os.path.dirname(os.path.dirname(p))) or p, p)
                for p in given.split()]
    return [("debian", "/usr/bin/python3"),
            ("pyenv-3.11", _pyenv_newest(11)),
            ("pyenv-3.13", _pyenv_newest(13))]


def _params():
    out = []
    for name, py in _interpreters():
        if py is None or not os.access(py, os.X_OK):
            out.append(pytest.param(name, py, id=name, marks=pytest.mark.skip(
                reason="%s: no such interpreter here" % name)))
        else:
            out.append(pytest.param(name, py, id=name))
    return out


def _one_interpreter():
    """pyenv's 3.11 if present (any interpreter else), for C and D."""
    usable = [(n, p) for n, p in _interpreters() if p and os.access(p, os.X_OK)]
    usable.sort(key=lambda np: np[0] != "pyenv-3.11")
    return usable[0] if usable else (None, None)


# ---------------------------------------------------------------- venvs
TIMINGS = []      # (venv name, step, seconds)
VENVS_MADE = []


def _base_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in (
               "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CGREENLET_EXPECT_FILE",
               "CGREENLET_ALLOW_STOCK", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", PIP_CONFIG_FILE=os.devnull,
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               # no wheel cache: every install here builds from the tree
               PIP_NO_CACHE_DIR="1")
    return env


def _offline_env():
    env = _base_env()
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=CACHE)
    return env


class Venv:
    """A fresh venv of `python`, its steps logged to <logs>/install/<name>.log
    and timed into TIMINGS."""

    def __init__(self, name, python):
        self.name, self.base_python = name, python
        self.dir = os.path.join(VENVS, name)
        self.python = os.path.join(self.dir, "bin", "python")
        self.log = os.path.join(LOGS, name + ".log")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(LOGS, exist_ok=True)
        open(self.log, "w").close()
        self.run("venv", [python, "-m", "venv", self.dir], python_prefix=False)
        out = self.run("paths", ["-c", "import json, sys, sysconfig; print(json.dumps("
                                 "[sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib'],"
                                 " '%d.%d.%d' % sys.version_info[:3]]))"]).stdout
        purelib, platlib, self.version = json.loads(out)
        self.sites = {os.path.realpath(purelib), os.path.realpath(platlib)}
        self.pip_version = self.run("pip-version", ["-m", "pip", "--version"]).stdout.split()[1]
        VENVS_MADE.append(self)

    def run(self, step, args, check=True, env=None, python_prefix=True, timeout=STEP_TIMEOUT):
        argv = ([self.python] if python_prefix else []) + list(args)
        t0 = time.monotonic()
        proc = subprocess.run(argv, cwd=self.dir if python_prefix else "/",
                              env=env or _offline_env(), capture_output=True, text=True,
                              timeout=timeout)
        secs = time.monotonic() - t0
        TIMINGS.append((self.name, step, secs))
        with open(self.log, "a") as f:
            f.write("\n$ %s   # %s, %.1fs, rc=%d\n%s%s" % (
                " ".join(argv), step, secs, proc.returncode, proc.stdout,
                ("--- stderr ---\n" + proc.stderr) if proc.stderr else ""))
        if check:
            assert proc.returncode == 0, "%s: %s failed (rc=%d), log %s\n%s\n%s" % (
                self.name, step, proc.returncode, self.log, proc.stdout[-4000:],
                proc.stderr[-4000:])
        return proc

    def pip(self, step, *args, **kw):
        return self.run(step, ["-m", "pip"] + list(args), **kw)

    def child(self, mode):
        proc = self.run("child-" + mode, [CHILD, mode], check=False, timeout=180)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (
            "child %s in %s: rc=%d\n%s\n%s" % (mode, self.name, proc.returncode,
                                               proc.stdout[-4000:], proc.stderr[-4000:]))
        probe = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
        assert len(probe) == 1, proc.stdout
        if mode == "gevent":
            for check in ("spawn-sleep-joinall", "patched-socketpair-echo"):
                assert re.search(r"^OK %s$" % check, proc.stdout, re.M), proc.stdout
            assert proc.stdout.rstrip().endswith("ALL-OK"), proc.stdout
        return json.loads(probe[0][len("PROBE "):])

    def dist_info(self, version):
        d = [os.path.join(s, "greenlet-%s.dist-info" % version) for s in self.sites]
        d = [x for x in d if os.path.isdir(x)]
        assert len(d) == 1, (self.sites, version)
        return d[0]

    def record(self, version):
        """{path relative to site-packages: sha256 as in RECORD} of greenlet."""
        dist = self.dist_info(version)
        out = {}
        with open(os.path.join(dist, "RECORD")) as f:
            for line in f:
                path, digest, _ = line.rstrip("\n").rsplit(",", 2)
                out[path] = digest
        return os.path.dirname(dist), out


_CACHE_READY = set()


def _ensure_cache(venv):
    """The cache holds what the cases install for venv's interpreter
    (gevent and its dependencies at their pins, PyPI's greenlet at STOCK,
    setuptools for the isolated build); `pip download` fills in what it
    lacks (wheels, by this interpreter's pip so that the tags fit)."""
    if venv.version in _CACHE_READY:
        return
    want = ["gevent==" + GEVENT, "greenlet==" + STOCK, "setuptools==" + SETUPTOOLS]
    args = ["download", "-q", "--only-binary", ":all:", "-d", CACHE, "-c", REQ] + want
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # as scripts/pypi-env.sh locks it
        if venv.pip("cache-check", *args, check=False).returncode != 0:
            assert not OFFLINE, ("the cache %s lacks some of %s for %s and "
                                 "CGREENLET_PYPI_OFFLINE=1 (log %s)" % (CACHE, want, venv.version, venv.log))
            env = _base_env()
            env["PIP_FIND_LINKS"] = CACHE
            venv.pip("cache-download", *args, env=env)
            venv.pip("cache-check-again", *args)
    _CACHE_READY.add(venv.version)


@pytest.fixture(scope="module", autouse=True)
def _fresh_build_and_timings():
    """Removes setup.py's in-tree build directory for pip (build/setuptools),
    so that the first install per interpreter compiles; writes the
    timings when the module is done."""
    shutil.rmtree(os.path.join(ROOT, "build", "setuptools"), ignore_errors=True)
    os.makedirs(LOGS, exist_ok=True)
    yield
    with open(os.path.join(LOGS, "timings.txt"), "w") as f:
        # a line per venv: its interpreter and pip, then the main steps
        main = ("venv", "install-ours", "install-gevent", "one-liner", "install-r",
                "install-sdist", "cache-download")
        for v in VENVS_MADE:
            steps = [(st, secs) for n, st, secs in TIMINGS if n == v.name]
            f.write("%-14s python %-7s pip %-7s %5.1fs: %s\n" % (
                v.name, v.version, v.pip_version, sum(x[1] for x in steps),
                ", ".join("%s %.1fs" % x for x in steps if x[0] in main)))
        f.write("total %.1fs\n\nevery step:\n" % sum(t[2] for t in TIMINGS))
        for name, step, secs in TIMINGS:
            f.write("%-14s %-18s %6.1fs\n" % (name, step, secs))


@pytest.fixture
def fresh_venv():
    """fresh_venv(name, python): a new venv build/pypi-install/<name>,
    whose interpreter's files the cache holds."""
    def make(name, python):
        v = Venv(name, python)
        _ensure_cache(v)
        return v
    return make


# ---------------------------------------------------------------- checks
def _installed(pip_out):
    """The name-version list of pip's `Successfully installed` line."""
    m = re.search(r"^Successfully installed (.*)$", pip_out, re.M)
    return m.group(1).split() if m else []


def _assert_ours(v, info, gevent=True):
    """A child's PROBE: this module, the one greenlet distribution, installed
    from this tree into the venv; gevent from the venv, built on it."""
    assert info["cgreenlet_version"], "greenlet in %s is not cgreenlet's: %s" % (v.name, info)
    assert info["version"] == OURS, info
    assert os.path.dirname(os.path.dirname(info["file"])) in v.sites, (info["file"], v.sites)
    assert [d["version"] for d in info["dists"]] == [OURS], info["dists"]
    dist = info["dists"][0]
    assert dist["location"] in v.sites, dist
    assert "cgreenlet" in (dist["summary"] or ""), dist
    assert dist["direct_url"] and dist["direct_url"]["url"].startswith("file://"), dist
    if gevent:
        assert info["gevent"] == GEVENT, info
        assert info["gevent_file"].startswith(v.dir + os.sep), info
        assert info["gevent_on_it"], info


def _assert_pip_agrees(v):
    show = v.pip("pip-show", "show", "greenlet").stdout
    fields = dict(ln.split(": ", 1) for ln in show.splitlines() if ": " in ln)
    assert fields.get("Version") == OURS, show
    assert os.path.realpath(fields.get("Location", "")) in v.sites, show
    assert "cgreenlet" in fields.get("Summary", ""), show
    check = v.pip("pip-check", "check", check=False)
    assert check.returncode == 0 and "No broken requirements found" in check.stdout, check.stdout
    listed = [ln for ln in v.pip("pip-list", "list").stdout.splitlines()
              if ln.lower().startswith("greenlet ")]
    assert len(listed) == 1 and listed[0].split()[1] == OURS, listed


# ---------------------------------------------------------------- A, B
@pytest.mark.parametrize("name,python", _params())
def test_install_then_gevent(name, python, fresh_venv):
    """A: this tree first, then gevent: pip leaves this module in place."""
    v = fresh_venv(name + "-A", python)
    out = v.pip("install-ours", "install", ROOT).stdout
    assert "greenlet-" + OURS in _installed(out), out
    out = v.pip("install-gevent", "install", "gevent==" + GEVENT).stdout
    assert re.search(r"^Requirement already satisfied: greenlet>=\S+ in .* \(%s\)$"
                     % re.escape(OURS), out, re.M), out
    got = _installed(out)
    assert "gevent-" + GEVENT in got, out
    assert not [x for x in got if x.lower().startswith("greenlet-")], out
    assert not re.search(r"^(?:Collecting|Processing|Downloading) (?:\S*/)?greenlet\b",
                         out, re.M | re.I), out
    _assert_pip_agrees(v)
    info = v.child("gevent")
    _assert_ours(v, info)
    assert info["dists"][0]["direct_url"]["url"] == "file://" + ROOT, info


@pytest.mark.parametrize("name,python", _params())
def test_gevent_then_install(name, python, fresh_venv):
    """B: gevent first (it brings PyPI's greenlet), then README's one-liner:
    PyPI's greenlet is gone, file for file, and this module is used."""
    with open(os.path.join(ROOT, "README.md")) as f:
        assert ONE_LINER_TEXT in f.read(), "README.md lost the one-liner " + ONE_LINER_TEXT
    v = fresh_venv(name + "-B", python)
    out = v.pip("install-gevent", "install", "gevent==" + GEVENT).stdout
    assert "greenlet-" + STOCK in _installed(out), out
    stock = v.child("probe")
    assert stock["cgreenlet_version"] is None, stock          # PyPI's greenlet
    assert [d["version"] for d in stock["dists"]] == [STOCK], stock
    site, stock_record = v.record(STOCK)
    assert any(p.startswith("greenlet/tests/") for p in stock_record), stock_record

    out = v.pip("one-liner", *(ONE_LINER + [ROOT])).stdout
    assert re.search(r"^\s*Successfully uninstalled greenlet-%s$" % re.escape(STOCK), out, re.M), out
    assert "greenlet-" + OURS in _installed(out), out
    site2, our_record = v.record(OURS)
    assert site2 == site
    left = [p for p in stock_record if p not in our_record and not p.startswith("../")
            and os.path.exists(os.path.join(site, p))]
    assert not left, "PyPI's greenlet files left behind: %s" % left[:20]
    # files of both (the package's __init__.py, the extension): ours now
    for p, digest in stock_record.items():
        if p in our_record and digest and not p.endswith(("RECORD", "INSTALLER", "REQUESTED")):
            with open(os.path.join(site, p), "rb") as f:
                now = "sha256=" + base64.urlsafe_b64encode(
                    hashlib.sha256(f.read()).digest()).rstrip(b"=").decode()
            if p.startswith("greenlet/"):
                assert now != digest, "%s is still PyPI's" % p
                assert now == our_record[p], p
    _assert_pip_agrees(v)
    info = v.child("gevent")
    _assert_ours(v, info)
    assert info["dists"][0]["direct_url"]["url"] == "file://" + ROOT, info


# ---------------------------------------------------------------- C, D
def test_requirements_file(fresh_venv, tmp_path):
    """C: one pip install -r of README's requirements form."""
    name, python = _one_interpreter()
    if python is None:
        pytest.skip("no interpreter")
    req = tmp_path / "requirements.txt"
    req.write_text("greenlet @ file://%s\ngevent==%s\n" % (ROOT, GEVENT))
    v = fresh_venv(name + "-C", python)
    out = v.pip("install-r", "install", "-r", str(req)).stdout
    got = _installed(out)
    assert "greenlet-" + OURS in got and "gevent-" + GEVENT in got, out
    _assert_pip_agrees(v)
    info = v.child("gevent")
    _assert_ours(v, info)
    assert info["dists"][0]["direct_url"]["url"] == "file://" + ROOT, info


def test_sdist_installs(fresh_venv, tmp_path):
    """D: the sdist setuptools makes (MANIFEST.in) holds what the build
    needs: installed into a fresh venv, it imports as this module."""
    pytest.importorskip("setuptools")
    name, python = _one_interpreter()
    if python is None:
        pytest.skip("no interpreter")
    dist = tmp_path / "dist"
    dist.mkdir()
    code = ("import sys; from setuptools import build_meta; "
            "print('SDIST ' + build_meta.build_sdist(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", code, str(dist)], cwd=ROOT, env=_base_env(),
                          capture_output=True, text=True, timeout=STEP_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sdist = dist / re.search(r"^SDIST (\S+)$", proc.stdout, re.M).group(1)
    import tarfile
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in ["setup.py", "pyproject.toml", "gdb/cgreenlet-gdb.py", "include/cgreenlet.h",
                   "src/context_x86_64.S", "src/context_aarch64.S", "python/greenlet/__init__.py"]:
        assert needed in names, (needed, sorted(names))
    for pattern in ("src/*.[chS]", "python/src/*.[ch]"):
        for f in glob.glob(os.path.join(ROOT, pattern)):
            assert os.path.relpath(f, ROOT) in names, (f, sorted(names))
    assert not [n for n in names if n.startswith("build/")], sorted(names)
    v = fresh_venv(name + "-D", python)
    out = v.pip("install-sdist", "install", str(sdist)).stdout
    assert "greenlet-" + OURS in _installed(out), out
    info = v.child("probe")
    _assert_ours(v, info, gevent=False)
    assert info["dists"][0]["direct_url"]["url"] == sdist.as_uri(), info
