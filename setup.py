"""Build the drop-in `greenlet` package (greenlet._greenlet on libcgreenlet).

    pip install /path/to/cgreenlet              # install it (README: "Install
                                                # it in place of greenlet")
    make python PYTHON=/usr/bin/python3         # in-tree, into build/python-X.Y

The distribution is named `greenlet` and its version is the greenlet API
version the module provides (`__version__` in python/greenlet/__init__.py,
read here: one source), so that pip counts it as the `greenlet` that gevent,
eventlet and SQLAlchemy require.

The extension compiles libcgreenlet's sources itself (src/*.c and the
context switch for the target ISA), so it has no run-time dependency.
"""
import glob
import hashlib
import os
import platform
import re
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


HERE = os.path.dirname(os.path.abspath(__file__))
GDB_SCRIPT = "gdb/cgreenlet-gdb.py"


def read_version():
    with open(os.path.join(HERE, "python", "greenlet", "__init__.py")) as f:
        m = re.search(r'^__version__ = "([^"]+)"$', f.read(), re.M)
    if m is None:
        raise SystemExit("setup.py: no __version__ in python/greenlet/__init__.py")
    return m.group(1)


def default_build_base():
    """build/setuptools/<tag>-<key>: where `pip install .` (an in-tree
    build, pip >= 21.3) and a bare `setup.py build` build.  The key names
    the interpreter (its version, headers and prefix) and the compiler
    settings from the environment, so that a build for another interpreter
    of the same ABI tag (Debian's 3.11 and pyenv's) or with other CFLAGS
    never reuses these objects; within one key, `depends` below rebuilds
    on any header change.  make python and the test scripts give
    --build-base themselves."""
    key = "\0".join([sys.version, sys.base_prefix, sysconfig.get_paths()["include"]] +
                     ["%s=%s" % (v, os.environ.get(v, "")) for v in
                      ("CC", "CFLAGS", "CPPFLAGS", "LDFLAGS", "LDSHARED")])
    return os.path.join("build", "setuptools", "%s-%s" % (
        sys.implementation.cache_tag, hashlib.sha256(key.encode()).hexdigest()[:12]))


class BuildExt(build_ext):
    """Lets the compiler take the assembly (.S) context switch, and puts
    the gdb extension next to the module as <module file>-gdb.py, the name
    gdb auto-loads it by (docs/debugging.md)."""

    def build_extensions(self):
        self.compiler.src_extensions.append(".S")
        build_ext.build_extensions(self)
        for ext in self.extensions:
            self.copy_file(GDB_SCRIPT, self._gdb_script(ext))

    def _gdb_script(self, ext):
        return self.get_ext_fullpath(ext.name) + "-gdb.py"

    def get_outputs(self):
        return build_ext.get_outputs(self) + [
            self._gdb_script(ext) for ext in self.extensions]


# The context switch: the ISA's src/context_<isa>.S, chosen by
# platform.machine() (the kernel's name, from uname) and the interpreter's
# pointer size, since a 32-bit Python may run on a 64-bit kernel (i386 on
# x86_64, armhf on aarch64).  Each .S assembles only where its ISA and ABI
# hold (armhf: the hard-float ABI), and src/context.h falls back to
# ucontext where none does, so an armel build on armv7l still works.
machine = platform.machine()
bits64 = sys.maxsize > 2**32
switch = {
    "x86_64": "src/context_x86_64.S" if bits64 else "src/context_i386.S",
    "amd64": "src/context_x86_64.S" if bits64 else "src/context_i386.S",
    "aarch64": "src/context_aarch64.S" if bits64 else "src/context_arm.S",
    "arm64": "src/context_aarch64.S" if bits64 else "src/context_arm.S",
    "ppc64le": "src/context_ppc64le.S",
    "s390x": "src/context_s390x.S",
}
for name in ("i386", "i486", "i586", "i686"):
    switch[name] = "src/context_i386.S"
for name in ("armv7l", "armv8l"):
    switch[name] = "src/context_arm.S"
sources = ["python/src/type.c", "python/src/switch.c", "python/src/thread.c",
           "python/src/module.c", "src/greenlet.c", "src/shared.c",
           "src/stack.c",
           "src/overflow.c", "src/fault.c"]
macros = []
# Valgrind stack registration (a few instructions per stack outside
# Valgrind), where its header is installed: Valgrind then knows each
# greenlet's stack and reports no false stack errors.
if sysconfig.get_config_var("INCLUDEDIR") and os.path.exists(
        os.path.join(sysconfig.get_config_var("INCLUDEDIR"), "valgrind", "valgrind.h")):
    macros.append(("GREENLET_VALGRIND", "1"))
if machine in switch:
    sources.append(switch[machine])
else:
    macros.append(("GREENLET_CONTEXT_UCONTEXT", "1"))

setup(
    name="greenlet",
    version=read_version(),
    description="greenlet 3.5's API (2.0.2's ABI) on cgreenlet (libcgreenlet)",
    python_requires=">=3.9",
    packages=["greenlet"],
    package_dir={"": "python"},
    ext_modules=[
        Extension(
            "greenlet._greenlet",
            sources=sources,
            include_dirs=["include", "src", "python/src"],
            depends=(["include/cgreenlet.h"] + sorted(glob.glob("src/*.h")) +
                     sorted(glob.glob("python/src/*.h"))),
            define_macros=macros,
            extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Werror",
                                "-Wno-missing-field-initializers",
                                "-fvisibility=hidden"],
        )
    ],
    cmdclass={"build_ext": BuildExt},
    options={"build": {"build_base": default_build_base()}},
    zip_safe=False,
)
