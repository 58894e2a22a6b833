"""greenlet: stackful micro-threads with explicit switching.

This is cgreenlet's implementation of greenlet: it provides greenlet 3.5's
Python API (its version below is the greenlet version it stands in for, so
that pip counts it as the `greenlet` gevent requires) and is compatible with
greenlet 2.0.2's ABI (the same C API capsule and object layout, which
compiled users such as gevent use), on libcgreenlet (greenlets
run on guarded stacks a thread keeps for them, one each while there are
few, so a switch costs the same at any C stack depth; a parked greenlet
beyond that costs the bytes it uses, copied aside).
"""
__version__ = "3.5.6"

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

# As stock greenlet (2.0.2 and 3.x) lists them.
__all__ = [
    "__version__",
    "_C_API",
    "GreenletExit",
    "error",
    "getcurrent",
    "gettrace",
    "greenlet",
    "settrace",
]
