"""What the greenlets of this process are doing (cgreenlet only).

New names, not part of greenlet 2.0.2's API; nothing here changes a
greenlet.  The counters are the core's (libcgreenlet's greenlet_*_stats):
kept on every switch at the cost of one per-thread increment, so they can
stay on in production.

    greenlets()        this thread's greenlet objects, oldest first (the main
                       greenlet, unstarted, running, suspended, and dead ones
                       still referenced)
    stats()            this thread's counters (see below)
    stats("process")   the same summed over every thread (stack_in_use and
                       records 0)
    stack(g)           g's stack: size, in_use, high_water, reserve (bytes)

stats() keys: threads, created (greenlets that got a stack-capable core
record: a Python greenlet gets one when first switched to), switches,
live (not dead: main, unstarted, suspended, running), stacks (greenlets
holding a stack), stack_reserved (their usable bytes, address space),
stack_in_use (bytes in use on them), records (the core's greenlet
records not yet freed: a greenlet object's record goes with the object,
later if its last reference went on another thread).  stack(g)'s high_water is the depth
of the deepest page of g's C stack that is resident (a page-granular
high-water mark; a recycled stack may report what an earlier greenlet
reached on it).
"""
from . import _greenlet

__all__ = ["greenlets", "stats", "stack"]


def greenlets():
    """This thread's greenlet objects, oldest first."""
    return _greenlet._cgreenlet_greenlets()


def stats(scope="thread"):
    """The core's counters for this thread, or ("process") for all."""
    if scope not in ("thread", "process"):
        raise ValueError("scope must be 'thread' or 'process'")
    return _greenlet._cgreenlet_stats(scope == "process")


def stack(g):
    """g's stack in bytes: size, in_use, high_water, reserve (all 0 when g
    has no stack: unstarted, dead, a main greenlet, or of another thread)."""
    return _greenlet._cgreenlet_stack(g)
