"""Load and memory stress for the greenlet module (issue 5, part 4).

    /usr/bin/python3 bench/stress.py [--impl ours|stock|both] [--parts LIST]
        [--count N] [--threads N] [--seconds S] [--gevent-seconds S]
        [--warmup S] [--quick] [--build-dir build/python-3.11]

Three parts, each in a fresh process of --python (Debian's python3 by
default), with PYTHONPATH choosing the module.  Every process checks that it
imported the module it was meant to: cgreenlet's (greenlet._greenlet has
_cgreenlet_version, loaded from --build-dir) or, with --impl stock, Debian's
greenlet 2.0.2; it refuses to run otherwise.

parked   --count greenlets (default 1,000,000), each started and suspended
         in a call four levels deep (every 16th through sorted(key=), so
         that a C frame sits under the switch); one resume pass (a switch
         into each, which parks again); then cleanup: the list holding them
         is dropped, so each greenlet is killed by GreenletExit as it is
         freed.  Checks that every greenlet saw GreenletExit and ran its
         finally block, and that no greenlet object is left.  Prints the
         create/park, resume and cleanup times (and the part of them spent
         in the cyclic collector), one full gc.collect() with all of them
         parked, peak RSS, RSS per greenlet, the page tables (VmPTE, not
         part of RSS) and mappings (VMAs) at the peak, and RSS and page
         tables right after cleanup and once RSS has settled (cgreenlet
         gives stack pages back from a purger thread).  Switches: 2 to park,
         2 to resume, 2 to kill, per greenlet.

         vm.max_map_count: each stack of cgreenlet's module is an mmap with
         a guard region.  With MADV_GUARD_INSTALL (Linux 6.13+) the guard
         adds no mapping and neighbouring stacks merge: a million parked
         greenlets use about 1,200 mappings, far under the default limit of
         65,530, and nothing needs raising.  With the mprotect fallback
         (older kernels, or CGREENLET_GUARD=mprotect) each stack costs two:
         the default limit allows about 32,700.  The command never changes
         the limit itself (it is machine-wide, and only root may): it
         measures the mappings per greenlet on the first 10,000, and if the
         count needs more than the limit it says so with the
         `sysctl -w vm.max_map_count=N` that would do, then parks until the
         module refuses a stack (MemoryError "... vm.max_map_count
         reached", as documented), kills the newest 2% (at least 1,000) to
         give the process mappings back, and goes on with the rest: the
         count is reported as capped, not failed.  Stock greenlet copies
         stacks to the heap and maps nothing per greenlet.

threads  --threads threads (default 32) for --seconds (default 20).  Each
         thread lives 1-4 s, then a new one takes its slot.  A thread loops:
         create, switch through and finish greenlets (a small ping-pong in
         a nested call); park greenlets; kill some of its own with throw();
         hand some to an outbox from which other threads take them, try
         switch()/throw() on them (refused: greenlet.error, they belong to
         another thread), and drop the last reference, so that the kill is
         deferred to the owner thread (greenlet 2.0.2 semantics) and runs at
         its next greenlet call; park greenlets that refer to themselves and
         drop them (a cycle only the owner's collector may kill; stock
         greenlet leaks these, documented); gc.collect() now and then.
         Before it exits, a thread takes back what is left in its outbox,
         waits until every greenlet it handed out has been killed in it,
         and leaves up to 3 parked greenlets behind (orphans: their thread
         is gone, so their finally must never run; they must still be
         freed).  Checks: every finally ran in its owner thread, none ran
         twice or for an orphan, every cross-thread switch/throw was
         refused, every churned greenlet returned the right value, no
         greenlet object is left after the last gc, no unexpected
         exception.  Prints threads started, greenlets created, switches
         (transfers of control), kills (own thread, deferred cross-thread,
         by the collector), errors, RSS at start, after the first quarter,
         at the end, peak.

gevent   a gevent pywsgi hello-world server on 127.0.0.1 under wrk for
         --gevent-seconds (default 60): one wrk with keep-alive (-c50) and
         one with "Connection: close" (-c8, so that every request is a new
         connection and a new server greenlet), run together.  The server's
         RSS is sampled every second from /proc.  RSS after --warmup
         (default 10 s) against RSS at the end: the drift, in KB and %, and
         the slope of a least-squares line through the samples after
         warm-up.  Flat means drift < FLAT_KB (1 MiB) or < FLAT_PCT (2 %)
         of the warm RSS, whichever is larger (see below).  Also
         requests/s, bytes of drift per request, wrk errors, the greenlets
         alive in the server after the load.

Options: --parts parked,threads,gevent (default: all three); --impl both
runs every part on each module, cgreenlet's first.  --quick: 10,000
parked greenlets, 32 threads for 3 s, gevent for 6 s (2 s warm-up): under
30 s, for the test suite; it checks correctness only, never speed, and
reports the drift without judging it (too short a window).

Exit status 0 when every check of cgreenlet's module passed, 1 otherwise
(the problems are listed at the end), 2 on bad arguments.  Stock
greenlet's problems (--impl stock/both) are listed for comparison but do
not count: greenlet 2.0.2 fails the threads part (a kill deferred to its
thread can deliver GreenletExit as the result of an unrelated switch there)
and never collects cycles through suspended greenlets.

Why the flatness threshold: the server holds about 20-30 MB.  After warm-up
its pools (pymalloc arenas, gevent's and the module's free lists, the
per-thread stack pool) are full, and what is left is allocator noise of a
few hundred KB (arenas of 256 KiB, malloc trimming).  Any real leak is far
above 1 MiB over 50 s: one greenlet per request (>= 4 KB) at ~1,000
requests/s is 200 MB; even 20 bytes per request at ~10,000 requests/s is
10 MB.  2 % covers a larger warm RSS (other Pythons, other loads).  Measured
here (2026-11-26, 60 s, 5,500 requests/s): +8 KB from 10 s to 60 s.
"""
import argparse
import collections
import ctypes
import gc
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from scale_lib import CHILDREN, Lines, check_greenlet, meminfo, num, out, popen, result, \
    run_main, stderr_text, vm_status

FLAT_KB = 1024      # drift below this (or below FLAT_PCT) is flat
FLAT_PCT = 2.0
PAGE = os.sysconf("SC_PAGE_SIZE")
HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))


# ---------------------------------------------------------------- helpers

def rss(pid="self"):
    with open("/proc/%s/statm" % pid) as f:
        return int(f.read().split()[1]) * PAGE


def maps_count():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def max_map_count():
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except OSError:
        return 65530


def mb(n):
    return "%.1f MB" % (n / 2**20)


def kb(n):
    return "%.2f KB" % (n / 1024)


def check_module(impl, build_dir, gevent_too=False):
    """Exit 3 unless the imported greenlet is the one asked for."""
    return check_greenlet(impl, build_dir, gevent_too, here="ours", prog="stress")


class GcClock:
    """Time spent in the cyclic collector (gc.callbacks): seconds,
    collections, full (generation 2) collections."""

    def __init__(self):
        self.seconds, self.runs, self.full, self._t0 = 0.0, 0, 0, None
        gc.callbacks.append(self._cb)

    def _cb(self, phase, info):
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self.runs += 1
            self.full += info.get("generation") == 2
            self._t0 = None

    def mark(self):
        return (self.seconds, self.runs, self.full)

    def since(self, m):
        return "%.1f s in the collector (%s collections, %s full)" % (
            self.seconds - m[0], num(self.runs - m[1]), num(self.full - m[2]))


def count_greenlets():
    from greenlet import greenlet as G
    return sum(1 for o in gc.get_objects() if isinstance(o, G))


def guard_probe():
    """The guard kind the core picks: MADV_GUARD_INSTALL (Linux 6.13+) adds
    no mapping per stack; the mprotect fallback costs two (the core's own
    probe, src/stack.c, does the same madvise; CGREENLET_GUARD=mprotect
    forces the fallback)."""
    if os.environ.get("CGREENLET_GUARD") == "mprotect":
        return "mprotect (forced by CGREENLET_GUARD)"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        p = libc.mmap(None, 2 * PAGE, 3, 0x22 | 0x4000, -1, 0)  # RW, PRIVATE|ANON|NORESERVE
        if p in (None, ctypes.c_void_p(-1).value):
            return "unknown"
        rc = libc.madvise(p, PAGE, 102)                         # MADV_GUARD_INSTALL
        libc.munmap(p, 2 * PAGE)
        return "MADV_GUARD_INSTALL" if rc == 0 else "mprotect (no MADV_GUARD_INSTALL)"
    except (OSError, AttributeError):
        return "unknown"


# ---------------------------------------------------------------- part 1

def child_parked(a):
    impl = check_module(a.impl, a.build_dir)
    import greenlet
    from greenlet import greenlet as G, getcurrent, GreenletExit
    ours = a.impl == "ours"
    n = a.count
    problems = []
    main = getcurrent()
    # Plain list counters: a subscript of a dict subclass (Counter) reaches
    # one C call deeper and, on a resumed greenlet, touches a second page of
    # its stack, which stays resident while the greenlet lives.
    resumed, exits, finals = [0], [0], [0]

    def leaf(i):
        got = main.switch(i)                   # park (first switch back)
        resumed[0] += 1
        if got != i * 2:
            problems.append("greenlet %d resumed with %r" % (i, got))
        main.switch(-i)                        # park again, until killed
        problems.append("greenlet %d resumed after its kill" % i)

    def nested(i, depth):
        if depth:
            return nested(i, depth - 1)
        if i % 16 == 0:                        # a C frame under the switch
            return sorted([1, 0], key=lambda x: leaf(i) if x else 0)
        return leaf(i)

    def body(i):
        try:
            nested(i, 3)
        except GreenletExit:
            exits[0] += 1
            raise
        finally:
            finals[0] += 1

    out("parked [%s]: %s greenlets, each suspended 4 calls deep" % (impl, num(n)))
    limit = max_map_count()
    guard = guard_probe() if ours else "none (stock copies stacks to the heap)"
    out("  vm.max_map_count %s; guard: %s" % (num(limit), guard))
    # Measured: about 5.3 KB of RSS plus a 4 KiB page-table page per parked
    # greenlet here, 6.5 KB with stock greenlet.
    need = n * (9.5 if ours else 6.5) * 1024
    avail = meminfo("MemAvailable")
    if avail and need > 0.9 * avail:
        out("  !! %s parked greenlets need about %s, and MemAvailable is %s: the run "
            "may be killed for memory" % (num(n), mb(need), mb(avail)))
    gc.collect()
    base_greenlets = count_greenlets()
    s0, maps0 = vm_status(), maps_count()
    clock = GcClock()
    m_park = clock.mark()
    t0 = time.perf_counter()
    gs = []
    append = gs.append
    per_vma = None
    capped = None
    step = max(1, n // 10)
    probe_at = min(n, 10000)
    last = t0
    for i in range(n):
        g = G(body)
        try:
            v = g.switch(i)
        except MemoryError as e:
            # The core reports vm.max_map_count as MemoryError (EMAPLIMIT);
            # the greenlet stays unstarted.
            if ours and "max_map_count" in str(e) and not g and not g.dead:
                capped = (i, str(e))
                break
            raise
        if v != i:
            problems.append("greenlet %d parked with %r" % (i, v))
        append(g)
        if i + 1 == probe_at:
            per_vma = (maps_count() - maps0) / probe_at
            need = maps0 + per_vma * n + 64
            out("  mappings: %.3f per parked greenlet (measured on the first %s); "
                "%s greenlets need about %s of %s" % (per_vma, num(probe_at), num(n),
                                                      num(int(need)), num(limit)))
            if need > limit:
                out("  !! vm.max_map_count is too low for %s parked greenlets: each "
                    "stack costs %.1f mappings here (guard: %s). Raise it as root with "
                    "`sysctl -w vm.max_map_count=%d`, or use a kernel with "
                    "MADV_GUARD_INSTALL (Linux 6.13+). This run goes on until the "
                    "module refuses a stack (MemoryError) and cleans up what it parked."
                    % (num(n), per_vma, guard, int(need * 1.05)))
        if (i + 1) % step == 0 and i + 1 < n:
            now = time.perf_counter()
            out("  %9s parked  %6.1f s  %5.1f us each (last %s)  RSS %s" % (
                num(i + 1), now - t0, (now - last) / step * 1e6, num(step),
                mb(rss())))
            last = now
    g = append = None
    started = len(gs)
    t_park = time.perf_counter() - t0
    s1, maps1 = vm_status(), maps_count()
    released = 0
    if capped:
        # At the limit, every allocation that wants a new mapping fails
        # (Python's arenas, malloc's fallback), each with a system call:
        # the process crawls.  Kill the newest greenlets to give mappings
        # back (their stacks are unmapped beyond the 64 a thread keeps).
        released = min(started, max(1000, started // 50))
        for g in gs[started - released:]:
            if not isinstance(g.throw(), GreenletExit):
                problems.append("a released greenlet did not exit")
        del gs[started - released:]
        g = None
        out("  !! stopped at %s parked: %s; killed the newest %s to give the process "
            "mappings back (at the limit, every allocation that wants a new mapping "
            "fails, and the process crawls)" % (num(started), capped[1], num(released)))
    parked = len(gs)
    gc_park = clock.since(m_park)
    out("  create+park  %s greenlets in %.1f s (%.1f us each); %s" % (
        num(started), t_park, t_park / max(started, 1) * 1e6, gc_park))

    # One resume pass: a switch into every parked greenlet (it parks again).
    t0 = time.perf_counter()
    for i, g in enumerate(gs):
        if g.switch(i * 2) != -i:
            problems.append("greenlet %d parked again with the wrong value" % i)
    g = None
    t_resume = time.perf_counter() - t0
    s_res = vm_status()
    out("  resume pass  %s switches in and back in %.1f s (%.2f us per round trip); "
        "RSS %+.2f KB per greenlet" % (
            num(parked), t_resume, t_resume / max(parked, 1) * 1e6,
            (s_res["VmRSS"] - s1["VmRSS"]) / max(parked, 1) / 1024))
    alive = sum(1 for g in gs if g and not g.dead)
    if alive != parked:
        problems.append("%d of %d parked greenlets alive" % (alive, parked))
    live = count_greenlets() - base_greenlets
    s2 = vm_status()
    hwm = s2.get("VmHWM", 0)
    grew = s1["VmRSS"] - s0["VmRSS"]
    pte = s1.get("VmPTE", 0) - s0.get("VmPTE", 0)
    out("  peak RSS %s (VmHWM); parked: RSS +%s = %s per greenlet; page tables "
        "+%s = %s per greenlet; mappings %s -> %s" % (
            mb(hwm), mb(grew), kb(grew / max(started, 1)), mb(pte),
            kb(pte / max(started, 1)), num(maps0), num(maps1)))

    # One full collection with every greenlet parked: the collector visits
    # what each suspended greenlet's frames hold (cgreenlet; stock greenlet
    # shows the collector nothing of a started greenlet).
    t0 = time.perf_counter()
    gc.collect()
    t_fullgc = time.perf_counter() - t0
    out("  gc.collect() with %s parked: %.2f s (%.2f us per greenlet)" % (
        num(parked), t_fullgc, t_fullgc / max(parked, 1) * 1e6))

    # Cleanup: drop every reference; each greenlet is killed as it is freed.
    m_clean = clock.mark()
    t0 = time.perf_counter()
    del gs
    gc.collect()
    t_clean = time.perf_counter() - t0
    gc_clean = clock.since(m_clean)
    s3 = vm_status()
    pending = greenlet._greenlet.get_pending_cleanup_count()
    left = count_greenlets() - base_greenlets
    out("  cleanup      %s greenlets dropped and killed in %.1f s (%.1f us each; %s); "
        "GreenletExit seen %s, finally ran %s; greenlets left %d" % (
            num(parked), t_clean, t_clean / max(parked, 1) * 1e6, gc_clean, num(exits[0]),
            num(finals[0]), left))
    if resumed[0] != parked:
        problems.append("resumed %d of %d" % (resumed[0], parked))
    if finals[0] != started or exits[0] != started:
        problems.append("finally ran %d times, GreenletExit seen %d times, for %d greenlets"
                        % (finals[0], exits[0], started))
    if left != 0 or live < parked:
        problems.append("greenlet objects: %d while parked (want >= %d), %d left after cleanup"
                        % (live, parked, left))
    if pending:
        problems.append("get_pending_cleanup_count() = %d after cleanup" % pending)
    if getcurrent() is not main:
        problems.append("getcurrent() is not main after cleanup")

    # Stack pages may be given back off-thread (cgreenlet's purger): wait,
    # bounded, until RSS stops falling.
    t0 = time.perf_counter()
    prev, settled = s3["VmRSS"], s3["VmRSS"]
    while time.perf_counter() - t0 < a.settle:
        time.sleep(1.0)
        settled = rss()
        if prev - settled < 1 << 20:
            break
        prev = settled
    t_settle = time.perf_counter() - t0
    s4 = vm_status()
    out("  RSS after cleanup %s, settled %s after %.0f s (start %s; %s of the "
        "parked growth kept); page tables %s (start %s)" % (
            mb(s3["VmRSS"]), mb(settled), t_settle, mb(s0["VmRSS"]),
            "%.1f%%" % (100.0 * (settled - s0["VmRSS"]) / grew) if grew > 0 else "n/a",
            mb(s4.get("VmPTE", 0)), mb(s0.get("VmPTE", 0))))
    for p in problems[:20]:
        out("  PROBLEM: " + p)
    result({"part": "parked", "impl": a.impl, "module": impl, "requested": n,
            "greenlets": started, "capped": capped and capped[1],
            "switches": 4 * started + 2 * parked, "t_park": t_park, "t_resume": t_resume,
            "gc_park": gc_park, "gc_cleanup": gc_clean, "t_fullgc": t_fullgc,
            "t_cleanup": t_clean, "peak_rss": hwm, "rss0": s0["VmRSS"],
            "rss_parked": s1["VmRSS"], "rss_per": grew / max(started, 1),
            "pte_per": pte / max(started, 1), "pte_parked": s1.get("VmPTE", 0),
            "pte_after": s4.get("VmPTE", 0), "maps": maps1, "max_map_count": limit,
            "rss_after": s3["VmRSS"], "rss_settled": settled, "t_settle": t_settle,
            "finally": finals[0], "exits": exits[0],
            "problems": problems})


# ---------------------------------------------------------------- part 2

def child_threads(a):
    impl = check_module(a.impl, a.build_dir)
    import greenlet
    from greenlet import greenlet as G, getcurrent, GreenletExit
    ours = a.impl == "ours"
    deadline = time.monotonic() + a.seconds
    lock = threading.Lock()
    totals = collections.Counter()
    errors = []
    outboxes = {}            # slot -> deque of parked greenlets others may take
    orphans = []             # (greenlet, flag) left by exited threads
    orphan_flags = []        # flag[0] set if an orphan's finally ran (must not)

    def error(msg):
        with lock:
            errors.append(msg)

    def worker(slot, gen, lifetime):
        rng = random.Random(slot * 100003 + gen)
        tmain = getcurrent()
        me = threading.get_ident()
        c = collections.Counter()
        box = collections.deque()
        with lock:
            outboxes[slot] = box
        mine = []                              # parked, only this thread refers to them
        fin = [0, 0, 0]                        # finally ran: victims, cycles; victims' GreenletExit

        def victim_body():
            try:
                tmain.switch("parked")
                error("victim resumed after park")
            except GreenletExit:
                fin[2] += 1
                raise
            finally:
                fin[0] += 1
                if threading.get_ident() != me:
                    error("a victim's finally ran in another thread")

        def cycle_body():
            me_g = getcurrent()                # the frame refers to the greenlet
            try:
                tmain.switch(me_g is not None)
            finally:
                fin[1] += 1
                if threading.get_ident() != me:
                    error("a cycle's finally ran in another thread")

        def pingpong(n, depth):
            if depth:
                return pingpong(n, depth - 1)
            total = 0
            for k in range(n):
                total += tmain.switch(k)
            return total

        end = min(deadline, time.monotonic() + lifetime)
        made = 0                               # victims parked
        cycles = 0
        try:
            while time.monotonic() < end:
                for _ in range(50):
                    op = rng.random()
                    if op < 0.55:              # churn: create, ping-pong, finish
                        n = rng.randrange(0, 6)
                        g = G(pingpong)
                        v = g.switch(n, 2)
                        k = 0
                        while not g.dead:
                            if v != k:
                                error("pingpong sent %r, want %r" % (v, k))
                            v = g.switch(k)
                            k += 1
                        if v != n * (n - 1) // 2 or k != n:
                            error("pingpong returned %r after %d switches" % (v, k))
                        c["created"] += 1
                        c["switches"] += 2 * n + 2
                        del g, v
                    elif op < 0.72:            # park one
                        g = G(victim_body)
                        if g.switch() != "parked":
                            error("victim did not park")
                        mine.append(g)
                        del g
                        made += 1
                        c["created"] += 1
                        c["switches"] += 2
                    elif op < 0.80:            # kill one of ours here
                        if mine:
                            g = mine.pop(rng.randrange(len(mine)))
                            r = g.throw()
                            if not isinstance(r, GreenletExit) or not g.dead:
                                error("throw() returned %r, dead %s" % (r, g.dead))
                            del g, r
                            c["kill_local"] += 1
                            c["switches"] += 2
                    elif op < 0.90:            # hand one to the other threads
                        if mine:
                            box.append(mine.pop(rng.randrange(len(mine))))
                            c["handed"] += 1
                    elif op < 0.98:            # take one from another thread, drop it
                        with lock:
                            others = [b for s, b in outboxes.items() if s != slot and b]
                        if others:
                            try:
                                g = rng.choice(others).popleft()
                            except IndexError:
                                continue
                            try:
                                if rng.random() < 0.5:
                                    g.switch()
                                else:
                                    g.throw()
                                error("a cross-thread switch/throw was not refused")
                            except greenlet.error:
                                c["refused"] += 1
                            del g                  # the last reference: deferred kill
                            c["dropped_foreign"] += 1
                    elif op < 0.995:           # a cycle through a suspended frame
                        g = G(cycle_body)
                        if g.switch() is not True:
                            error("cycle greenlet did not park")
                        del g
                        cycles += 1
                        c["created"] += 1
                        c["switches"] += 2
                    else:
                        gc.collect()
                        c["gc"] += 1
            # End of life: take back what nobody took, wait for the rest.
            while True:
                try:
                    g = box.popleft()
                except IndexError:
                    break
                del g
                c["dropped_own"] += 1
            left = rng.randrange(0, 4)
            while len(mine) > left:
                g = mine.pop()
                g.throw()
                del g
                c["kill_local"] += 1
            want = made - len(mine)
            t_wait = time.monotonic() + 20
            while fin[0] < want or (ours and fin[1] < cycles):
                getcurrent()                   # runs deferred kills
                if ours and fin[1] < cycles:
                    gc.collect()
                if time.monotonic() > t_wait:
                    error("thread %d: %d of %d victims, %d of %d cycles killed after 20 s"
                          % (slot, fin[0], want, fin[1], cycles))
                    break
                time.sleep(0.002)
            if fin[0] > want or fin[2] != fin[0]:
                error("thread %d: %d finally blocks, %d GreenletExit, for %d victims"
                      % (slot, fin[0], fin[2], want))
            c["victims"] += made
            c["victim_finally"] += fin[0]
            c["cycles"] += cycles
            c["cycle_finally"] += fin[1]
            c["orphans"] += len(mine)
            with lock:
                del outboxes[slot]
                for g in mine:
                    orphans.append(g)
                orphan_flags.append((fin, want))
                totals.update(c)
            del mine[:]
        except BaseException:
            error("thread %d: %s" % (slot, traceback.format_exc()))
            with lock:
                outboxes.pop(slot, None)
                totals.update(c)

    gc.collect()
    base = count_greenlets()
    s0 = vm_status()
    out("threads [%s]: %d threads for %.0f s (each lives 1-4 s, then a new one "
        "takes its slot)" % (impl, a.threads, a.seconds))
    t0 = time.monotonic()
    slots = [None] * a.threads
    gens = [0] * a.threads
    started = 0
    quarter = None
    peak = s0["VmRSS"]
    samples = []
    next_sample = t0
    rng = random.Random(1)
    while True:
        now = time.monotonic()
        running = False
        for i, t in enumerate(slots):
            if t is not None and not t.is_alive():
                t.join()
                slots[i] = t = None
            if t is None and now < deadline - 0.2:
                gens[i] += 1
                t = threading.Thread(target=worker, args=(i, gens[i], rng.uniform(1, 4)),
                                     name="stress-%d" % i)
                t.start()
                slots[i] = t
                started += 1
            running = running or t is not None
        if now >= next_sample:
            r = rss()
            peak = max(peak, r)
            samples.append((now - t0, r))
            if quarter is None and now - t0 >= a.seconds / 4:
                quarter = r
            next_sample += 1.0
        if not running and now >= deadline:
            break
        if now > deadline + 60:
            error("threads still running 60 s after the deadline")
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    # What the exited threads left behind: no finally ran for the orphans
    # (their threads are gone); they must still be freed.
    n_orphans = len(orphans)
    import weakref
    refs = [weakref.ref(g) for g in orphans]
    for fin, want in orphan_flags:
        if fin[0] != want:
            error("a victim's finally ran after its thread exited (%d != %d)" % (fin[0], want))
    del orphans[:]
    for _ in range(3):
        gc.collect()
        time.sleep(0.05)
    alive_orphans = sum(1 for r in refs if r() is not None)
    if alive_orphans:
        error("%d of %d orphaned greenlets not freed" % (alive_orphans, n_orphans))
    left = count_greenlets() - base
    leaked_cycles = totals["cycles"] - totals["cycle_finally"]
    if ours:
        if left:
            error("%d greenlet objects left after the threads ended" % left)
        if leaked_cycles:
            error("%d greenlet cycles never collected" % leaked_cycles)
    mains = None
    if hasattr(greenlet._greenlet, "get_total_main_greenlets"):
        time.sleep(0.1)
        gc.collect()
        mains = greenlet._greenlet.get_total_main_greenlets()
    s1 = vm_status()
    c = totals
    kills = c["kill_local"] + c["dropped_own"] + c["dropped_foreign"]
    # transfers of control: counted where made, plus two per kill by a drop
    # or by the collector (into the victim, and out as it dies)
    switches = c["switches"] + 2 * (c["dropped_own"] + c["dropped_foreign"]
                                    + c["cycle_finally"])
    out("  threads started %s in %.1f s; greenlets created %s; switches %s" % (
        num(started), elapsed, num(c["created"]), num(switches)))
    out("  victims parked %s: killed in their thread by throw() %s, dropped by their "
        "owner %s, dropped by another thread (deferred kill) %s, orphaned %s; "
        "finally ran %s, all in the owner thread" % (
            num(c["victims"]), num(c["kill_local"]), num(c["dropped_own"]),
            num(c["dropped_foreign"]), num(c["orphans"]), num(c["victim_finally"])))
    out("  cross-thread switch()/throw() refused %s; cycles parked %s, killed by "
        "the owner's collector %s%s; gc.collect() %s" % (
            num(c["refused"]), num(c["cycles"]), num(c["cycle_finally"]),
            " (stock greenlet never collects them: documented)" if not ours and leaked_cycles
            else "", num(c["gc"])))
    out("  orphans freed %d of %d; greenlet objects left %d%s; main greenlets %s" % (
        n_orphans - alive_orphans, n_orphans, left,
        " (the leaked cycles)" if not ours and left else "", mains))
    out("  RSS start %s, after %.0f s %s, end %s, peak %s (sampled each second); "
        "errors %d" % (mb(s0["VmRSS"]), a.seconds / 4, mb(quarter or 0),
                       mb(s1["VmRSS"]), mb(max(peak, s1["VmRSS"])), len(errors)))
    for e in errors[:20]:
        out("  PROBLEM: " + e.rstrip())
    result({"part": "threads", "impl": a.impl, "module": impl, "threads": a.threads,
            "seconds": a.seconds, "started": started, "greenlets": c["created"],
            "switches": switches, "kills": kills,
            "deferred_kills": c["dropped_foreign"], "refused": c["refused"],
            "victim_finally": c["victim_finally"], "orphans": n_orphans,
            "cycles": c["cycles"], "cycles_killed": c["cycle_finally"],
            "rss0": s0["VmRSS"], "rss_quarter": quarter, "rss1": s1["VmRSS"],
            "peak_rss": max(peak, s1["VmRSS"]), "errors": len(errors),
            "problems": errors[:50]})


# ---------------------------------------------------------------- part 3

def child_server(a):
    impl = check_module(a.impl, a.build_dir, gevent_too=True)
    import socket
    import gevent
    import gevent.event
    from gevent.pywsgi import WSGIServer

    body = b"Hello, world!\n"
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    closing = headers + [("Connection", "close")]
    counts = [0, 0]                            # requests, connections

    def app(environ, start_response):
        counts[0] += 1
        # Say so when the client asked to close (pywsgi closes without
        # saying, and wrk would count each close as a read error).
        close = environ.get("HTTP_CONNECTION", "").lower() == "close"
        start_response("200 OK", closing if close else headers)
        return [body]

    class Server(WSGIServer):
        def handle(self, sock, address):
            # pywsgi writes headers and body apart: without TCP_NODELAY,
            # Nagle and delayed ACKs stall keep-alive connections.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            counts[1] += 1
            return WSGIServer.handle(self, sock, address)

    server = Server(("127.0.0.1", 0), app, log=None, error_log=None)
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    server.start()
    print(json.dumps({"port": server.address[1], "module": impl}), flush=True)
    stop.wait()
    server.stop(timeout=2)
    gevent.sleep(0.1)
    gc.collect()
    print(json.dumps({"requests": counts[0], "connections": counts[1],
                      "greenlets": count_greenlets(), "rss": rss()}), flush=True)


def parse_wrk(text):
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    r = re.search(r"Requests/sec:\s*([\d.]+)", text)
    errs = []
    m2 = re.search(r"Socket errors: (.*)", text)
    if m2:
        errs.append("socket errors: " + m2.group(1).strip())
    m3 = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m3:
        errs.append("%s non-2xx responses" % m3.group(1))
    return {"requests": int(m.group(1)) if m else 0,
            "rate": float(r.group(1)) if r else 0.0, "errors": errs}


def part_gevent(a, env):
    """Runs in the driver: server child, two wrk, RSS sampled each second."""
    problems = []
    cpus = sorted(os.sched_getaffinity(0))
    pin_s = pin_c = []
    if len(cpus) >= 2 and shutil.which("taskset"):
        pin_s, pin_c = ["taskset", "-c", str(cpus[0])], ["taskset", "-c", str(cpus[1])]
    err = tempfile.TemporaryFile()
    srv = popen(pin_s + [a.python, HERE, "--child", "server", "--impl", a.impl,
                         "--build-dir", a.build_dir],
                env=env, stdout=subprocess.PIPE, stderr=err)
    srv_lines = Lines(srv.stdout)

    def server_err():
        return stderr_text(err)

    line = srv_lines.readline(60)
    if not line:
        srv.kill()
        srv.wait()
        return {"part": "gevent", "impl": a.impl,
                "problems": ["server did not start (rc %s): %s" % (srv.poll(), server_err())]}
    ready = json.loads(line)
    port, pid = ready["port"], srv.pid
    secs = a.gevent_seconds
    out("gevent [%s]: pywsgi hello-world on 127.0.0.1:%d under wrk for %d s "
        "(keep-alive -c50 + Connection: close -c8), RSS sampled each second, "
        "warm-up %d s" % (ready["module"], port, secs, a.warmup))
    url = "http://127.0.0.1:%d/" % port
    wrks = []
    for extra, conns in (([], 50), (["-H", "Connection: close"], 8)):
        wrks.append(popen(
            pin_c + ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "--timeout", "10s"]
            + extra + [url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    t0 = time.monotonic()
    samples = []
    k = 0
    while any(w.poll() is None for w in wrks) and time.monotonic() - t0 < secs + 60:
        k += 1
        wait = t0 + k - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if srv.poll() is not None:
            problems.append("server died (rc %s): %s" % (srv.returncode, server_err()))
            break
        if time.monotonic() - t0 <= secs + 0.5:
            samples.append((time.monotonic() - t0, rss(pid)))
            if a.verbose or k % 10 == 0:
                out("  %3d s  server RSS %s" % (k, mb(samples[-1][1])))
    texts = []
    for w in wrks:
        try:
            texts.append(w.communicate(timeout=60)[0].decode(errors="replace"))
        except subprocess.TimeoutExpired:
            w.kill()
            texts.append(w.communicate()[0].decode(errors="replace"))
            problems.append("wrk did not finish")
        if w.returncode:
            problems.append("wrk exited with %s: %s" % (w.returncode, texts[-1][-500:]))
        CHILDREN.remove(w)
    after = None
    if srv.poll() is None:
        srv.send_signal(signal.SIGTERM)
        line = srv_lines.readline(30)
        after = json.loads(line) if line else None
    try:
        srv.wait(30)
    except subprocess.TimeoutExpired:
        srv.kill()
        srv.wait()
    CHILDREN.remove(srv)
    if srv.returncode != 0 or after is None:
        problems.append("server exited with rc %s: %s" % (srv.returncode, server_err()))
    elif server_err():
        problems.append("server wrote to stderr: " + server_err())
    err.close()
    keep, close = (parse_wrk(t) for t in texts)
    for name, w in (("keep-alive", keep), ("close", close)):
        problems.extend("wrk %s: %s" % (name, e) for e in w["errors"])
        if w["requests"] == 0:
            problems.append("wrk %s: no requests" % name)
    # RSS after warm-up: the first sample at or past --warmup.
    warm_i = next((i for i, (t, _) in enumerate(samples) if t >= a.warmup - 0.5), None)
    res = {"part": "gevent", "impl": a.impl, "module": ready["module"],
           "seconds": secs, "warmup": a.warmup, "samples": len(samples),
           "rate": keep["rate"] + close["rate"], "rate_keep": keep["rate"],
           "rate_close": close["rate"], "requests": keep["requests"] + close["requests"],
           "after": after, "problems": problems}
    if warm_i is None or len(samples) - warm_i < 2:
        problems.append("too few RSS samples after warm-up (%d)" % len(samples))
        return res
    tail = samples[warm_i:]
    warm, end = tail[0][1], tail[-1][1]
    drift = end - warm
    n = len(tail)
    mt = sum(t for t, _ in tail) / n
    mr = sum(r for _, r in tail) / n
    var = sum((t - mt) ** 2 for t, _ in tail)
    slope = sum((t - mt) * (r - mr) for t, r in tail) / var if var else 0.0
    window = tail[-1][0] - tail[0][0]
    req_after = res["rate"] * window
    limit = max(FLAT_KB * 1024, warm * FLAT_PCT / 100)
    judged = window >= 20 and not a.quick
    flat = drift < limit
    res.update(rss_first=samples[0][1], rss_warm=warm, rss_end=end, drift=drift,
               drift_pct=100.0 * drift / warm, slope_kb_min=slope * 60 / 1024,
               rss_max=max(r for _, r in tail), rss_min=min(r for _, r in tail),
               per_request=drift / req_after if req_after else 0.0,
               flat=flat, judged=judged, window=window)
    out("  requests/s %.0f (keep-alive %.0f + close %.0f); %s requests; server saw "
        "%s connections" % (res["rate"], keep["rate"], close["rate"],
                            num(res["requests"]),
                            num(after["connections"]) if after else "?"))
    out("  server RSS: first sample %s; after warm-up (%.0f s) %s; end (%.0f s) %s; "
        "min/max after warm-up %s / %s" % (
            mb(samples[0][1]), tail[0][0], mb(warm), tail[-1][0], mb(end),
            mb(res["rss_min"]), mb(res["rss_max"])))
    out("  RSS drift after warm-up: %+.0f KB (%+.2f%%), slope %+.1f KB/min, %+.2f "
        "bytes/request over %.0f s; greenlets alive after the load %s" % (
            drift / 1024, res["drift_pct"], res["slope_kb_min"], res["per_request"],
            window, after and after["greenlets"]))
    verdict = "PASS" if flat else "FAIL"
    if judged:
        out("  memory flat after warm-up: %s (drift %+.0f KB, limit %.0f KB = max(1 MiB, "
            "2%% of the warm RSS))" % (verdict, drift / 1024, limit / 1024))
        if not flat:
            problems.append("server RSS drifted %+.0f KB after warm-up (limit %.0f KB)"
                            % (drift / 1024, limit / 1024))
    else:
        out("  memory flat after warm-up: not judged (%.0f s window%s; would be %s)" % (
            window, ", --quick" if a.quick else "", verdict))
    for p in problems:
        out("  PROBLEM: " + p)
    return res


# ---------------------------------------------------------------- driver

def run_child(a, part, env, timeout):
    cmd = [a.python, HERE, "--child", part, "--impl", a.impl, "--build-dir", a.build_dir,
           "--count", str(a.count), "--threads", str(a.threads),
           "--seconds", str(a.seconds), "--settle", str(a.settle)]
    errf = tempfile.TemporaryFile()     # a file, not a pipe: it never fills up
    p = popen(cmd, env=env, stdout=subprocess.PIPE, stderr=errf)
    lines = Lines(p.stdout)
    res = None
    end = time.monotonic() + timeout
    timed_out = False
    while True:
        line = lines.readline(max(0.0, end - time.monotonic()))
        if line is None:
            timed_out = True
            p.kill()
            break
        if not line.endswith("\n"):        # EOF (a last line without newline is dropped)
            break
        text = line[:-1]
        if text.startswith("@@"):
            res = json.loads(text[2:])
        else:
            out(text)
    p.wait()
    errf.seek(0)
    err = errf.read().decode(errors="replace").strip()
    errf.close()
    CHILDREN.remove(p)
    if res is None:
        why = "timed out after %d s" % timeout if timed_out else "exited with %s" % p.returncode
        if p.returncode is not None and p.returncode < 0:
            why += " (signal %d%s)" % (-p.returncode,
                                       ", killed: out of memory?" if p.returncode == -9 else "")
        res = {"part": part, "impl": a.impl, "problems": ["%s part %s: %s" % (part, why, err[-3000:])]}
    else:
        if res.get("capped"):
            # the core's one-time explanation of EMAPLIMIT is expected here
            lines = err.splitlines()
            for line in lines:
                if line.startswith("cgreenlet: cannot map another guarded stack"):
                    out("  (stderr) " + line)
            err = "\n".join(l for l in lines if not l.startswith(
                "cgreenlet: cannot map another guarded stack")).strip()
        if err:
            res["problems"] = res.get("problems", []) + [
                "%s wrote to stderr: %s" % (part, err[-3000:])]
    return res


def summary(results):
    out("")
    out("stress summary")
    for r in results:
        tag = "%-7s %-5s" % (r["part"], r["impl"])
        if "module" not in r or (r["part"] != "gevent" and "greenlets" not in r):
            out("  %s  FAILED (see problems)" % tag)
            continue
        if r["part"] == "parked":
            out("  %s  greenlets %s%s, switches %s; create+park %.1f s, cleanup %.1f s; "
                "peak RSS %s (%s per greenlet, + %s of page tables); RSS after cleanup "
                "%s, settled %s; finally %s/%s" % (
                    tag, num(r["greenlets"]),
                    " (of %s: map limit)" % num(r["requested"]) if r["capped"] else "",
                    num(r["switches"]), r["t_park"], r["t_cleanup"], mb(r["peak_rss"]),
                    kb(r["rss_per"]), kb(r["pte_per"]), mb(r["rss_after"]),
                    mb(r["rss_settled"]), num(r["finally"]), num(r["greenlets"])))
        elif r["part"] == "threads":
            out("  %s  %d threads x %.0f s (%s started): greenlets %s, switches %s, kills "
                "%s (%s deferred cross-thread), errors %d; RSS start %s, end %s, peak %s" % (
                    tag, r["threads"], r["seconds"], num(r["started"]), num(r["greenlets"]),
                    num(r["switches"]), num(r["kills"]), num(r["deferred_kills"]),
                    r["errors"], mb(r["rss0"]), mb(r["rss1"]), mb(r["peak_rss"])))
        elif "drift" in r:
            out("  %s  %.0f req/s for %d s; server RSS after warm-up %s, end %s, drift "
                "%+.0f KB (%+.2f%%): %s" % (
                    tag, r["rate"], r["seconds"], mb(r["rss_warm"]), mb(r["rss_end"]),
                    r["drift"] / 1024, r["drift_pct"],
                    ("PASS" if r["flat"] else "FAIL") if r["judged"] else "not judged"))
        else:
            out("  %s  FAILED (see problems)" % tag)
    problems = [(r["part"], r["impl"], p) for r in results for p in r.get("problems", [])]
    ours = [x for x in problems if x[1] == "ours"]
    stock = [x for x in problems if x[1] != "ours"]
    if ours:
        out("")
        out("problems:")
        for part, impl, p in ours:
            out("  - [%s %s] %s" % (part, impl, p.rstrip()))
    if stock:
        out("")
        out("stock greenlet's problems (for comparison; not in the exit status), %d:"
            % len(stock))
        for part, impl, p in stock[:40]:
            out("  - [%s %s] %s" % (part, impl, p.rstrip()))
    if not ours:
        out("")
        out("every check passed" + (" (cgreenlet's module)" if stock else ""))
    return 1 if ours else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=["ours", "stock", "both"], default="ours",
                    help="cgreenlet's module (default), Debian's greenlet 2.0.2, or both")
    ap.add_argument("--parts", default="parked,threads,gevent",
                    help="comma-separated: parked, threads, gevent (default: all)")
    ap.add_argument("--count", type=int, help="parked greenlets (default 1,000,000)")
    ap.add_argument("--threads", type=int, help="threads part: threads (default 32)")
    ap.add_argument("--seconds", type=float, help="threads part: seconds (default 20)")
    ap.add_argument("--gevent-seconds", type=int, help="gevent part: seconds of wrk (default 60)")
    ap.add_argument("--warmup", type=int, help="gevent part: warm-up seconds (default 10)")
    ap.add_argument("--settle", type=float, default=None,
                    help="parked part: at most this long for RSS to settle after "
                    "cleanup (default 120)")
    ap.add_argument("--quick", action="store_true",
                    help="a small run (under 30 s): 10,000 parked, 3 s of threads, 6 s of gevent")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "python-3.11"))
    ap.add_argument("-v", "--verbose", action="store_true", help="every RSS sample")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    q = a.quick
    for name, full, quick in (("count", 1_000_000, 10_000), ("threads", 32, 32),
                              ("seconds", 20.0, 3.0), ("gevent_seconds", 60, 6),
                              ("warmup", 10, 2), ("settle", 120.0, 5.0)):
        if getattr(a, name) is None:
            setattr(a, name, quick if q else full)
    a.build_dir = os.path.abspath(a.build_dir)
    if a.child:
        if a.child in ("ours", "stock", "both"):
            ap.error("--child is internal")
        {"parked": child_parked, "threads": child_threads, "server": child_server}[a.child](a)
        return 0
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("parked", "threads", "gevent")]
    if bad or not parts:
        ap.error("--parts wants parked, threads and/or gevent, not %s" % ",".join(bad))
    if a.count < 1 or a.threads < 2 or a.seconds <= 0 or a.gevent_seconds < 2 \
            or not 0 <= a.warmup < a.gevent_seconds - 1:
        ap.error("--count >= 1, --threads >= 2, --seconds > 0, "
                 "0 <= --warmup < --gevent-seconds - 1")
    impls = ["ours", "stock"] if a.impl == "both" else [a.impl]
    if "ours" in impls and not os.path.isdir(os.path.join(a.build_dir, "greenlet")):
        sys.exit("stress: no greenlet module in %s (make python)" % a.build_dir)
    if "gevent" in parts and not shutil.which("wrk"):
        sys.exit("stress: wrk not found (scripts/deps.sh python installs it)")
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    envs = {"ours": dict(base_env, PYTHONPATH=a.build_dir), "stock": base_env}
    out("stress: %s; parts %s; %s; %s, %d CPUs, load average %s" % (
        ", ".join(impls), ",".join(parts), "quick" if q else "full size",
        os.uname().release, os.cpu_count(), " ".join("%.2f" % x for x in os.getloadavg())))
    results = []
    for part in parts:
        for impl in impls:
            a.impl = impl
            t0 = time.monotonic()
            if part == "gevent":
                r = part_gevent(a, envs[impl])
            else:
                timeout = (600 + a.count * 0.006 + 2 * a.settle if part == "parked"
                           else a.seconds + 180)
                r = run_child(a, part, envs[impl], timeout)
            out("  (%s %s: %.1f s)" % (part, impl, time.monotonic() - t0))
            results.append(r)
    return summary(results)


if __name__ == "__main__":
    run_main(main, "stress", 1)
