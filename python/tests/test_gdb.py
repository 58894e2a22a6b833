"""The gdb extension (gdb/cgreenlet-gdb.py) on the Python module: `info
greenlets`, `greenlet py-bt` and the Python frames in `greenlet bt`, on a
live process, a gcore file, a kernel core and through auto-load.

scripts/gdb_target.py parks greenlets at lines marked `# PARK <name>`; each
check finds those lines in gdb's output, in order.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

import greenlet
from cgl_support import HERE, SCRIPTS, child_env

ROOT = os.path.dirname(os.path.dirname(HERE))
EXT = os.path.join(ROOT, "gdb", "cgreenlet-gdb.py")
TARGET = os.path.join(SCRIPTS, "gdb_target.py")

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None,
                                reason="needs gdb (Debian package gdb)")

COMMANDS = ["info greenlets", "greenlet py-bt all", "greenlet bt 2",
            "greenlet bt 3", "greenlet py-bt {alpha}", "greenlet bt 4"]


def _park_lines():
    """name -> line number of the `# PARK name` comments of the target."""
    lines = {}
    with open(TARGET) as fh:
        for n, text in enumerate(fh, 1):
            m = re.search(r"# PARK (\w+)", text)
            if m:
                lines.setdefault(m.group(1), []).append(n)
    return lines


PARK = _park_lines()


def _gdb(args, timeout=120, env=None):
    scale = float(os.environ.get("CGREENLET_TEST_TIMEOUT_SCALE", "1"))
    proc = subprocess.run(["gdb", "-q", "-batch", "-nx"] + args,
                          capture_output=True, text=True, cwd=HERE,
                          timeout=timeout * scale, env=env or child_env())
    return proc.stdout + proc.stderr


def _commands(alpha="2"):
    """gdb -ex arguments: each command after an @@ marker line."""
    out = []
    for k, cmd in enumerate(COMMANDS):
        out += ["-ex", "echo @@%d\\n" % k, "-ex", cmd.format(alpha=alpha)]
    return out + ["-ex", "echo @@end\\n"]


def _sections(text):
    """The output of each of COMMANDS, by index."""
    parts = re.split(r"^@@(\w+)\n", text, flags=re.M)
    got = dict(zip(parts[1::2], parts[2::2]))
    return [got.get(str(k), "") for k in range(len(COMMANDS))]


def _py_blocks(text):
    """[(header, [(function, line) ...])] of each greenlet's py-bt block,
    frames of the target only, innermost first."""
    blocks = re.split(r"^(Greenlet \d+ .*):$", text, flags=re.M)
    return [(head, [(fn, int(line)) for line, fn in re.findall(
        r'File "[^"]*gdb_target\.py", line (\d+), in (\S+)', body)])
        for head, body in zip(blocks[1::2], blocks[2::2])]


def _frames_of(text, state):
    """The py-bt frames of the greenlets in `state` (e.g. "(suspended")."""
    return [frames for head, frames in _py_blocks(text) if state in head]


def _want(*names):
    return [("<module>" if name == "main" else name, PARK[name][0])
            for name in names]


def _check(text):
    info, pybt, bt2, bt3, pybt_alpha, bt4 = _sections(text)
    assert info and pybt and bt2 and bt3 and pybt_alpha and bt4, text
    # info greenlets: 5 greenlets of the main thread (main, alpha, beta,
    # delta, one finished), 2 of the worker (its main greenlet and gamma).
    rows = [r for r in info.splitlines()[1:] if r.strip()]
    states = [re.split(r"\s{2,}", r.strip(" *"))[2] for r in rows]
    assert sorted(states) == sorted(["running", "suspended", "suspended",
                                     "suspended", "dead", "running",
                                     "suspended"]), info
    assert sum("green_run" in r for r in rows) == 5, info
    # Name: the type of each greenlet object.
    assert all(r.rstrip().endswith("  greenlet.greenlet") for r in rows), info
    # py-bt of every live greenlet, innermost first: the main thread's
    # main greenlet stopped in stop() (one of its two lines: kill or
    # abort), the worker thread's waiting in worker().
    running = _frames_of(pybt, "(running")
    assert len(running) == 2, pybt
    assert running[0] in ([("stop", line)] + _want("main")
                          for line in PARK["stop"]), pybt
    assert running[1] == _want("worker"), pybt
    assert _frames_of(pybt, "(suspended") == [
        _want("alpha_leaf", "alpha_mid", "alpha_run"),
        _want("beta_key", "beta_run"), _want("delta_gen", "delta_run"),
        _want("gamma_run")], pybt
    # Source lines, as py-bt prints them.
    assert "\n    main.switch(x)  # PARK alpha_leaf\n" in pybt, pybt
    # greenlet bt: C frames with each evaluation's Python frames after it.
    for bt, names in ((bt2, ["alpha_leaf", "alpha_mid", "alpha_run"]),
                      (bt3, ["beta_key", "beta_run"]),
                      (bt4, ["delta_gen", "delta_run"])):
        py = re.findall(r"^    py: File \"[^\"]*\", line (\d+), in (\S+)$",
                        bt, re.M)
        assert [(fn, int(ln)) for ln, fn in py] == _want(*names), bt
        lines = bt.splitlines()
        for k, line in enumerate(lines):
            if line.startswith("    py: "):
                assert ("_PyEval_EvalFrameDefault" in lines[k - 1]
                        or lines[k - 1].startswith("    py: ")), bt
        assert "green_run" in bt and "greenlet__context_trampoline" in bt, bt
    # beta is parked inside sorted(key=): its two Python frames belong to
    # two C calls of the evaluator, with sorted's C frames between them.
    assert len(re.findall(r"^#\d+ .*\b_PyEval_EvalFrameDefault \(", bt3,
                          re.M)) == 2, bt3
    # alpha again, named by its Python object's address (id(g)) where the
    # test knows it, else by id.
    assert _frames_of(pybt_alpha, "(suspended") == [
        _want("alpha_leaf", "alpha_mid", "alpha_run")], pybt_alpha


def _ids(text):
    m = re.search(r"IDS alpha=(0x[0-9a-f]+)", text)
    assert m, text
    return m.group(1)


def _live_args(alpha):
    return (["-ex", "run"] + _commands(alpha)
            + ["-ex", "kill", "--args", sys.executable, TARGET])


def test_live_process_python_frames():
    out = _gdb(["-iex", "source " + EXT] + _live_args("2"))
    assert "SIGTRAP" in out, out
    _check(out)
    assert "Python object %s)" % _ids(out) in out, out


def test_core_files_python_frames(tmp_path):
    gcore = str(tmp_path / "gcore")
    # gdb's gcore cannot save stacks among MADV_GUARD_INSTALL guards
    # (docs/debugging.md): mprotect guards for this one.
    env = child_env({"CGREENLET_GUARD": "mprotect"})
    out = _gdb(["-iex", "source " + EXT, "-ex", "run", "-ex", "gcore " + gcore,
                "-ex", "kill", "--args", sys.executable, TARGET], env=env)
    assert os.path.exists(gcore), out
    # alpha named by id(alpha), which the target printed.
    out = _gdb(["-iex", "source " + EXT] + _commands(_ids(out))
               + [sys.executable, gcore])
    _check(out)


def test_kernel_core_python_frames(tmp_path):
    pattern = open("/proc/sys/kernel/core_pattern").read().strip()
    if pattern.startswith("|"):
        pytest.skip("core_pattern pipes cores to %s" % pattern.split()[0])
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
    except (ValueError, OSError) as e:
        pytest.skip("cannot raise the core size limit: %s" % e)
    proc = subprocess.run([sys.executable, TARGET, "abort"], cwd=str(tmp_path),
                          capture_output=True, text=True, env=child_env(),
                          timeout=60)
    cores = glob.glob(str(tmp_path / "core*"))
    if not cores:
        pytest.skip("no core file (core_pattern %r): rc %s" % (pattern, proc.returncode))
    out = _gdb(["-iex", "source " + EXT] + _commands("2")
               + [sys.executable, cores[0]])
    _check(out)


def test_auto_loaded_next_to_the_module():
    # The build puts the extension next to the module as <module>-gdb.py;
    # gdb loads it from there once the directory is trusted (README).
    so = greenlet._greenlet.__file__
    script = so + "-gdb.py"
    assert os.path.exists(script), "the build did not install " + script
    with open(script) as a, open(EXT) as b:
        assert a.read() == b.read(), script + " is not gdb/cgreenlet-gdb.py"
    out = _gdb(["-iex", "add-auto-load-safe-path " + os.path.dirname(so)]
               + _live_args("2"))
    _check(out)
