"""greenlet: stackful micro-threads with explicit switching.

This is cgreenlet's implementation of the greenlet 2.0.2 API: the same
names, the same C API capsule and object layout, on libcgreenlet (every
greenlet runs on a guarded stack of its own, so a switch costs the same at
any C stack depth).
"""
__version__ = "2.0.2"

from ._greenlet import _C_API  # noqa: F401  (compiled users import the capsule)
from ._greenlet import GreenletExit
from ._greenlet import error
from ._greenlet import getcurrent
from ._greenlet import gettrace
from ._greenlet import greenlet
from ._greenlet import settrace
from ._greenlet import GREENLET_USE_CONTEXT_VARS
from ._greenlet import GREENLET_USE_GC
from ._greenlet import GREENLET_USE_TRACING
from ._greenlet import CLOCKS_PER_SEC
from ._greenlet import enable_optional_cleanup
from ._greenlet import get_clocks_used_doing_optional_cleanup

__all__ = [
    "GreenletExit",
    "error",
    "getcurrent",
    "gettrace",
    "greenlet",
    "settrace",
]
