"""Build the drop-in `greenlet` package (greenlet._greenlet on libcgreenlet).

    pip install --no-build-isolation .          # install it
    make python PYTHON=/usr/bin/python3         # in-tree, into build/python-X.Y

The extension compiles libcgreenlet's sources itself (src/*.c and the
context switch for the target ISA), so it has no run-time dependency.
"""
import os
import platform
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


GDB_SCRIPT = "gdb/cgreenlet-gdb.py"


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


machine = platform.machine()
switch = {"x86_64": "src/context_x86_64.S", "aarch64": "src/context_aarch64.S"}
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
    version="2.0.2",
    description="greenlet 2.0.2 API on cgreenlet (libcgreenlet)",
    packages=["greenlet"],
    package_dir={"": "python"},
    ext_modules=[
        Extension(
            "greenlet._greenlet",
            sources=sources,
            include_dirs=["include", "src", "python/src"],
            depends=["include/cgreenlet.h", "src/context.h", "src/internal.h",
                     "src/sanitizer.h", "src/stack.h", "src/fault.h", "python/src/pystate.h",
                     "python/src/pystate_frames.h", "python/src/pystate_pyframes.h",
                     "python/src/pystate_311.h", "python/src/pystate_39.h",
                     "python/src/pystate_310.h", "python/src/pycompat.h",
                     "python/src/pystate_312.h", "python/src/pystate_313.h",
                     "python/src/module.h"],
            define_macros=macros,
            extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Werror",
                                "-Wno-missing-field-initializers",
                                "-fvisibility=hidden"],
        )
    ],
    cmdclass={"build_ext": BuildExt},
    zip_safe=False,
)
