"""Frames of greenlets whose thread exited while they were suspended.

Their C stacks go with the thread; their Python frames stay readable through
frame objects held elsewhere (gr_frame, tracebacks), and what the frames hold
is released when the greenlet goes.  In cgreenlet a greenlet's first frames
live on its own C stack, so at thread exit they are moved to the heap; the
private hook _fail_orphan_relocations makes that move fail as if out of
memory, to test the fallback (frame objects keep copies of their frames).
"""
import gc
import threading
import weakref

import pytest

import greenlet
from greenlet import greenlet as Greenlet, getcurrent

from cgl_support import is_cgreenlet, version_limitation

# Frames that called the next one keep its arguments on their value stack
# while the call runs (3.11 moves them into the callee); only the top
# frame's stack extent is recorded, so those references are not released.
CALLERS_KEEP_ARGUMENTS = version_limitation(
    (3, 11), "a caller's value stack, which holds the arguments of the call it "
    "is suspended in (here the token), has no known extent once its C frame "
    "is gone: those references are leaked")

WAIT = 10


class Token:
    pass


def _orphans(count, depth):
    """Runs a thread that parks `count` greenlets, each `depth` Python calls
    deep, and exits.  Returns (greenlets, frames held, weakrefs to locals)."""
    out = {"greenlets": [], "frames": [], "tokens": []}

    def owner():
        tmain = getcurrent()

        def level(n, token):
            mark = "level-%d" % n
            if n == 0:
                tmain.switch()
                return mark
            return level(n - 1, token), mark

        for i in range(count):
            token = Token()
            out["tokens"].append(weakref.ref(token))
            g = Greenlet(level)
            g.switch(depth, token)
            del token
            out["frames"].append(g.gr_frame)   # a frame object held outside
            out["greenlets"].append(g)

    t = threading.Thread(target=owner)
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    return out["greenlets"], out["frames"], out["tokens"]


def _walk(frame):
    names = []
    while frame is not None:
        names.append((frame.f_code.co_name, frame.f_locals.get("mark")))
        frame = frame.f_back
    return names


@pytest.mark.skipif(not is_cgreenlet(), reason="stock greenlet 2.0.2 crashes "
                    "(SIGSEGV) reading frames of greenlets whose thread exited")
@pytest.mark.parametrize("depth", [0, pytest.param(3, marks=CALLERS_KEEP_ARGUMENTS),
                                   pytest.param(60, marks=CALLERS_KEEP_ARGUMENTS)])
def test_orphaned_frames_stay_readable_then_are_released(depth):
    gs, frames, tokens = _orphans(5, depth)
    gc.collect()
    for g, f in zip(gs, frames):
        top = _walk(f)
        assert top[0] == ("level", "level-0")
        assert len([n for n in top if n[0] == "level"]) == depth + 1
        assert g.gr_frame is not None
    # Its locals are alive while the greenlet is.
    assert all(t() is not None for t in tokens)
    del g, f
    refs = [weakref.ref(g) for g in gs]
    del gs[:]
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    # The frame objects we still hold keep working (their locals went with
    # the greenlet, as if frame.clear() had been called).
    for f in frames:
        assert f.f_code.co_name == "level"
        f.f_lineno
    # What the frames held was released with the greenlets.
    assert [t() for t in tokens] == [None] * len(tokens)
    del frames[:]
    gc.collect()


@pytest.mark.skipif(not is_cgreenlet(), reason="cgreenlet's private test hook")
@pytest.mark.parametrize("depth", [0, 3, 60])
def test_orphan_relocation_failure_keeps_frame_objects_valid(depth):
    try:
        greenlet._greenlet._fail_orphan_relocations(3)
    except NotImplementedError as e:
        pytest.skip(str(e))
    try:
        gs, frames, tokens = _orphans(5, depth)
    finally:
        greenlet._greenlet._fail_orphan_relocations(0)
    gc.collect()
    # Three could not move (which three depends on the order the thread's
    # greenlets are visited): their frame objects took copies of their
    # frames, losing only f_back; the others keep their whole chains.
    for f in frames:
        assert f.f_code.co_name == "level"
        assert f.f_locals["mark"] == "level-0"
        f.f_lineno
    chains = sorted(len(_walk(f)) for f in frames)
    assert chains == [1] * 3 + [depth + 1] * 2
    refs = [weakref.ref(g) for g in gs]
    del gs[:]
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    # The copies own their locals; the others' went with their greenlets.
    kept = [f for f in frames if "mark" in f.f_locals]
    assert len(kept) == 3 and all(f.f_back is None for f in kept)
    del frames[:], kept, f
    gc.collect()
    assert [t() for t in tokens] == [None] * len(tokens)
    assert Greenlet(lambda: 7).switch() == 7
