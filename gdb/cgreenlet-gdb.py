# cgreenlet-gdb.py - gdb commands for programs using cgreenlet.
#
#   info greenlets          every greenlet of every thread of the process
#   greenlet bt ID [ARGS]   backtrace of greenlet ID (ARGS go to `bt`)
#   greenlet bt all [ARGS]  backtrace of every started, live greenlet
#   $greenlet(ID)           the greenlet_t * of greenlet ID
#
# Load it with `source gdb/cgreenlet-gdb.py`, or install it as
# <gdb datadir>/auto-load/<libdir>/libcgreenlet.so.0-gdb.py so that gdb loads
# it with the library (docs/debugging.md).  It needs the library's debug
# info (the default build has -g): it reads the records through their types.
#
# How it finds greenlets: the library keeps every thread state on a list,
# from the hidden global `greenlet__threads` (src/greenlet.c), and each
# state lists its records (ts->all).  No TLS and no function calls are
# needed, so it works the same on a live process and on a core file.
#
# How it unwinds a suspended greenlet: its saved context (the stack pointer
# the switch left, and the callee-saved registers pushed below it, see
# src/context_*.S) gives the registers of the frame that called the switch.
# A Python unwinder hands them to gdb as the caller of the selected thread's
# innermost frame; `bt` then walks the greenlet's stack with gdb's own DWARF
# unwinders, and that first, borrowed frame is dropped from the output.
# Nothing is written to the inferior, so core files work too.
#
# Extra frames (an interpreter's, say): register_bt_hook() below.

import re
import sys
import types

import gdb
from gdb.unwinder import Unwinder, register_unwinder

UNSTARTED, ACTIVE, DEAD = 0, 1, 2
FLAG_MAIN = 1

# (run function name or None, hook).  Kept across a reload of this script
# (auto-load and `source` both), so hooks registered earlier stay.
_prev = sys.modules.get("cgreenlet_gdb")
_bt_hooks = _prev._bt_hooks if _prev is not None else []


def register_bt_hook(hook, run=None):
    """Adds extra frames to `greenlet bt`.

    hook(greenlet, frames) is called while the greenlet's backtrace is
    selectable, for greenlets whose run function is named `run` (every
    greenlet if None).  `greenlet` is a Greenlet (see the class: .ptr is
    the greenlet_t *, .value the record, .userdata, .run_name() ...);
    `frames` is a list of (gdb.Frame or None, text) in
    print order, innermost first, each text one or more lines starting with
    "#N".  It returns the list to print (it may insert, rewrite or drop
    entries) or None to leave it as it is.
    """
    _bt_hooks.append((run, hook))


class CgreenletError(gdb.GdbError):
    pass


def _u64(v):
    return int(v.cast(gdb.lookup_type("unsigned long long")))


def _ptr(v):
    return int(v.cast(gdb.lookup_type("unsigned long")))


def _read_words(addr, n):
    mem = gdb.selected_inferior().read_memory(addr, 8 * n)
    return [int.from_bytes(bytes(mem[8 * i:8 * i + 8]), "little")
            for i in range(n)]


def _registries():
    """The greenlet__threads heads of every objfile holding the core (a
    program may link the library more than once, e.g. a Python module)."""
    seen, out = set(), []
    objfiles = list(gdb.objfiles())
    for objfile in objfiles:
        try:
            sym = objfile.lookup_global_symbol("greenlet__threads")
        except (AttributeError, gdb.error):
            sym = None
        if sym is None:
            try:
                sym = objfile.lookup_static_symbol("greenlet__threads")
            except (AttributeError, gdb.error):
                sym = None
        if sym is None:
            continue
        val = sym.value()
        addr = int(val.address) if val.address is not None else id(val)
        if addr not in seen:
            seen.add(addr)
            out.append(val)
    if not out:
        try:
            out.append(gdb.parse_and_eval("greenlet__threads"))
        except gdb.error:
            raise CgreenletError(
                "cgreenlet: no symbol greenlet__threads: the program is not "
                "linked with cgreenlet, or the library has no debug info "
                "(build it with -g)")
    return out


def _gdb_threads():
    by_lwp = {}
    inf = gdb.selected_inferior()
    for t in inf.threads():
        by_lwp[t.ptid[1]] = t
    return by_lwp


class Thread(object):
    """One greenlet__tstate."""

    def __init__(self, ptr, gdb_threads):
        value = ptr.dereference()
        self.value = value
        self.addr = _ptr(ptr)
        self.tid = int(value["tid"])
        self.alive = int(value["alive"]) != 0
        self.current = _ptr(value["current"])
        self.dying = _ptr(value["dying"])
        self.main_stack_hi = _ptr(value["main_stack_hi"])
        self.gdb_thread = gdb_threads.get(self.tid) if self.alive else None

    def label(self):
        if not self.alive:
            return "exited"
        if self.gdb_thread is not None:
            return "%d (LWP %d)" % (self.gdb_thread.num, self.tid)
        return "LWP %d" % self.tid


class Greenlet(object):
    """One greenlet record, decoded."""

    def __init__(self, ptr, thread):
        value = ptr.dereference()
        self.ptr = ptr
        self.value = value
        self.addr = _ptr(ptr)
        self.thread = thread
        self.id = _u64(value["id"])
        self.name = value["name"].string(length=32).split("\0")[0]
        self.raw_state = int(value["state"])
        self.is_main = (int(value["flags"]) & FLAG_MAIN) != 0
        self.parent_addr = _ptr(value["parent"])
        self.run = _ptr(value["run"])
        self.userdata = _ptr(value["userdata"])
        stack = value["stack"]
        self.stack_base = _ptr(stack["base"])
        self.stack_lo = _ptr(stack["lo"])
        self.stack_size = int(stack["size"])
        self.reserve = int(value["reserve"])
        self.parent_id = None

    @property
    def state(self):
        if self.raw_state == UNSTARTED:
            return "not started"
        if self.raw_state == DEAD:
            return "dead"
        if self.thread.alive and self.thread.current == self.addr:
            return "running"
        return "suspended"

    def run_name(self):
        if self.is_main:
            return "(main)"
        if not self.run:
            return "?"
        try:
            block = gdb.block_for_pc(self.run)
            if block is not None and block.function is not None:
                return block.function.name
        except RuntimeError:
            pass
        sym = gdb.execute("info symbol 0x%x" % self.run, to_string=True)
        return sym.split(" ")[0] if "No symbol" not in sym else "0x%x" % self.run

    def stack_top(self):
        """Where the C stack starts (below the reserve), or 0."""
        if self.stack_base:
            return self.stack_lo + self.stack_size - self.reserve
        if self.is_main:
            return self.thread.main_stack_hi
        return 0

    def saved_sp(self):
        ctx = self.value["ctx"]
        names = [f.name for f in ctx.type.strip_typedefs().fields()]
        if "sp" in names:
            return _ptr(ctx["sp"])
        gregs = ctx["uc"]["uc_mcontext"]["gregs"]
        return int(gregs[15])  # REG_RSP

    def sp(self):
        """Its stack pointer: saved one if suspended, the thread's if it
        runs (0 if unknown)."""
        if self.state == "suspended":
            return self.saved_sp()
        if self.state == "running" and self.thread.gdb_thread is not None:
            return _thread_sp(self.thread.gdb_thread)
        return 0

    def in_use(self):
        top, sp = self.stack_top(), self.sp()
        if self.state not in ("running", "suspended") or not top or not sp:
            return None
        return top - sp if sp < top else None


class _KeepSelection(object):
    """Restores the selected thread and frame (switching threads resets
    the frame to #0)."""

    def __enter__(self):
        self.thread = gdb.selected_thread()
        try:
            self.level = gdb.selected_frame().level()
        except gdb.error:
            self.level = None
        return self

    def __exit__(self, *exc):
        if self.thread is not None and self.thread.is_valid():
            self.thread.switch()
            if self.level:
                # Frame.select(), not `frame N`: that one would print.
                try:
                    f = gdb.newest_frame()
                    for _ in range(self.level):
                        f = f.older() if f is not None else None
                    if f is not None:
                        f.select()
                except gdb.error:
                    pass
        return False


def _thread_sp(thread):
    with _KeepSelection():
        try:
            thread.switch()
            return int(gdb.newest_frame().read_register("sp"))
        except gdb.error:
            return 0


def all_greenlets():
    """[(Thread, [Greenlet ...])] for every thread state, oldest thread
    first, greenlets in creation order (main first)."""
    gthreads = _gdb_threads()
    result = []
    for head in _registries():
        ts = head
        states = []
        while _ptr(ts) != 0:
            states.append(ts)
            ts = ts["reg_next"]
        for ts in reversed(states):  # the list is newest first
            t = Thread(ts, gthreads)
            gs = []
            g = ts["all"]
            n = 0
            while _ptr(g) != 0:
                gs.append(Greenlet(g, t))
                g = g["all_next"]
                n += 1
                if n > 10000000:
                    raise CgreenletError("cgreenlet: greenlet list loops")
            result.append((t, gs))
    ids = {}
    for t, gs in result:
        for g in gs:
            ids[g.addr] = g.id
    for t, gs in result:
        for g in gs:
            g.parent_id = ids.get(g.parent_addr) if g.parent_addr else None
    return result


def find_greenlet(spec):
    """By id, address or name; failing those, as a gdb expression giving an
    id or a greenlet_t * ($greenlet(N), a variable ...)."""
    spec = spec.strip()
    try:
        want = int(spec, 0)
    except ValueError:
        want = None
    everything = all_greenlets()
    for t, gs in everything:
        for g in gs:
            if want is not None and (g.id == want or g.addr == want):
                return g
            if want is None and g.name == spec:
                return g
    if want is None:
        try:
            want = int(gdb.parse_and_eval(spec))
        except (gdb.error, ValueError, RuntimeError):
            want = None
        for t, gs in everything:
            for g in gs:
                if want is not None and (g.addr == want or g.id == want):
                    return g
    raise CgreenletError("cgreenlet: no greenlet %s" % spec)


def _size(n):
    if n is None:
        return "-"
    if n < 10 * 1024:
        return "%d" % n
    if n < 10 * 1024 * 1024:
        return "%.1fK" % (n / 1024.0)
    return "%.1fM" % (n / 1048576.0)


class InfoGreenlets(gdb.Command):
    """List every greenlet of every thread: id, thread (gdb's number and
    LWP, or "exited"), state, parent id, stack bytes in use (suspended:
    from the saved stack pointer to the top; running: from the thread's
    $sp), the stack range, the run function and the name."""

    def __init__(self):
        super(InfoGreenlets, self).__init__("info greenlets", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        rows = []
        sel = gdb.selected_thread()
        sel_lwp = sel.ptid[1] if sel is not None else None
        for t, gs in all_greenlets():
            for g in gs:
                if g.stack_base and g.raw_state == ACTIVE:
                    rng = "0x%x-0x%x" % (g.stack_lo,
                                         g.stack_lo + g.stack_size)
                elif (g.is_main and g.thread.main_stack_hi
                      and g.raw_state == ACTIVE):
                    rng = "thread stack, top 0x%x" % g.thread.main_stack_hi
                else:
                    rng = "-"
                mark = "*" if (g.state == "running" and t.tid == sel_lwp) else " "
                rows.append((mark, str(g.id), t.label(), g.state,
                             str(g.parent_id) if g.parent_id else "-",
                             _size(g.in_use()), rng, g.run_name(), g.name))
        head = (" ", "Id", "Thread", "State", "Parent", "In use", "Stack",
                "Function", "Name")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        for r in [head] + rows:
            gdb.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                      + "\n")
        if not rows:
            gdb.write("No greenlets.\n")


class _FrameId(object):
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


class GreenletUnwinder(Unwinder):
    """While `regs` is set, the innermost frame of the selected thread
    unwinds to those registers: the suspended greenlet's resume point."""

    def __init__(self):
        super(GreenletUnwinder, self).__init__("cgreenlet")
        self.regs = None
        self.frame_sp = 0
        self.level = 0  # of the innermost real (not inlined) frame

    def __call__(self, pending_frame):
        if self.regs is None or pending_frame.level() != self.level:
            return None
        pc = pending_frame.read_register("pc")
        # The borrowed frame's id lies on the greenlet's stack, below the
        # resumed frame, so gdb's "inner to this frame" check passes.
        sp = gdb.Value(self.frame_sp).cast(gdb.lookup_type("unsigned long"))
        info = pending_frame.create_unwind_info(_FrameId(sp, pc))
        for name, value in self.regs:
            info.add_saved_register(name, value)
        return info


_unwinder = GreenletUnwinder()
register_unwinder(None, _unwinder, replace=True)


def _context_registers(g):
    """The registers of the frame that called the switch, from g's saved
    context: [(name, gdb.Value)], and the saved stack pointer."""
    arch = gdb.selected_inferior().architecture().name()
    ulong = gdb.lookup_type("unsigned long")
    ctx = g.value["ctx"]
    names = [f.name for f in ctx.type.strip_typedefs().fields()]
    v = lambda x: gdb.Value(x).cast(ulong)
    if "sp" in names:  # assembly back end: one saved word, the rest pushed
        sp = _ptr(ctx["sp"])
        if "x86-64" in arch:
            # sp+0 MXCSR/x87 CW, +8 r15 r14 r13 r12 rbx rbp, +56 return addr
            w = _read_words(sp, 8)
            regs = [("r15", w[1]), ("r14", w[2]), ("r13", w[3]), ("r12", w[4]),
                    ("rbx", w[5]), ("rbp", w[6]), ("rip", w[7]),
                    ("rsp", sp + 64)]
        elif "aarch64" in arch:
            # sp+0 x29 x30, +16 x19..x28, +96 d8..d15; 160 bytes popped
            w = _read_words(sp, 12)
            regs = [("x29", w[0]), ("x30", w[1]), ("pc", w[1]),
                    ("sp", sp + 160)]
            regs += [("x%d" % (19 + i), w[2 + i]) for i in range(10)]
        else:
            raise CgreenletError("cgreenlet: unsupported architecture %s" % arch)
    else:  # ucontext back end: swapcontext saved the registers
        gregs = ctx["uc"]["uc_mcontext"]["gregs"]
        if "x86-64" not in arch:
            raise CgreenletError("cgreenlet: ucontext on %s is not supported"
                                 % arch)
        idx = {"r12": 4, "r13": 5, "r14": 6, "r15": 7, "rbp": 10, "rbx": 11,
               "rsp": 15, "rip": 16}
        regs = [(n, int(gregs[i])) for n, i in idx.items()]
        sp = int(gregs[15])
    return [(n, v(x)) for n, x in regs], sp


_FRAME_LINE = re.compile(r"^#(\d+)(\s+)")


def _split_frames(text):
    """bt output -> [(level, text)]; trailing lines with no frame go with
    the last frame."""
    frames, cur = [], None
    for line in text.splitlines(True):
        m = _FRAME_LINE.match(line)
        if m:
            cur = [int(m.group(1)), line]
            frames.append(cur)
        elif cur is not None:
            cur[1] += line
        else:
            frames.append([None, line])
    return [(lvl, txt) for lvl, txt in frames]


def _renumber(text, level):
    def sub(m):
        num = "%d" % level
        pad = m.group(2)
        # Keep the column: "#10 " becomes "#9  ".
        width = len(m.group(1)) + len(pad)
        return "#" + num + " " * max(1, width - len(num))
    return _FRAME_LINE.sub(sub, text, count=1)


def _apply_hooks(g, frames):
    run = g.run_name()
    for key, hook in _bt_hooks:
        if key is not None and key != run:
            continue
        out = hook(g, frames)
        if out is not None:
            frames = out
    return frames


def _bt_running(g, bt_args):
    with _KeepSelection():
        g.thread.gdb_thread.switch()
        text = gdb.execute("bt " + bt_args, to_string=True)
        frames = []
        f = gdb.newest_frame()
        for lvl, txt in _split_frames(text):
            frames.append((f if lvl is not None else None, txt))
            if lvl is not None and f is not None:
                f = f.older()
        return _apply_hooks(g, frames)


def _bt_suspended(g, bt_args):
    regs, sp = _context_registers(g)
    if gdb.selected_thread() is None:
        raise CgreenletError("cgreenlet: no thread to unwind on")
    with _KeepSelection():
        return _bt_borrowed(g, bt_args, regs, sp)


def _bt_borrowed(g, bt_args, regs, sp):
    # Unwind on the owner thread when it still runs: TLS reads in frame
    # filters then see the right thread.
    if g.thread.gdb_thread is not None and g.thread.gdb_thread.is_valid():
        g.thread.gdb_thread.switch()
    # Inlined frames at the top are not unwound by unwinders: borrow the
    # first real one, and drop them all from the output.
    gdb.invalidate_cached_frames()
    skip = 0
    f = gdb.newest_frame()
    while f is not None and f.type() == gdb.INLINE_FRAME:
        skip += 1
        f = f.older()
    _unwinder.regs = regs
    _unwinder.frame_sp = sp
    _unwinder.level = skip
    gdb.invalidate_cached_frames()
    try:
        text = gdb.execute("bt " + bt_args, to_string=True)
        frames = []
        f = gdb.newest_frame()
        for _ in range(skip + 1):
            f = f.older() if f is not None else None
        for lvl, txt in _split_frames(text):
            if lvl is not None and lvl <= skip:
                continue  # the borrowed frames of the thread
            if lvl is None:
                if frames:
                    frames.append((None, txt))
                continue
            frames.append((f, _renumber(txt, lvl - skip - 1)))
            if f is not None:
                f = f.older()
        return _apply_hooks(g, frames)
    finally:
        _unwinder.regs = None
        gdb.invalidate_cached_frames()


def greenlet_backtrace(g, bt_args=""):
    """The backtrace of greenlet g as [(gdb.Frame or None, text)], or raises
    CgreenletError saying why there is none."""
    st = g.state
    if st == "running":
        if g.thread.gdb_thread is None:
            raise CgreenletError("cgreenlet: greenlet %d runs on LWP %d, "
                                 "which gdb does not know" % (g.id, g.thread.tid))
        return _bt_running(g, bt_args)
    if st == "suspended":
        return _bt_suspended(g, bt_args)
    raise CgreenletError("greenlet %d is %s: it has no stack" % (g.id, st))


def _header(g):
    return "Greenlet %d%s (%s, thread %s, %s):\n" % (
        g.id, ' "%s"' % g.name if g.name else "", g.state, g.thread.label(),
        g.run_name())


class GreenletPrefix(gdb.Command):
    """Commands for cgreenlet greenlets: greenlet bt."""

    def __init__(self):
        super(GreenletPrefix, self).__init__("greenlet", gdb.COMMAND_STACK,
                                             gdb.COMPLETE_NONE, True)


class GreenletBt(gdb.Command):
    """Backtrace of a greenlet: greenlet bt ID|NAME|ADDRESS|all [bt options].
    A suspended greenlet's frames start where it called the switch; a
    running one's are its thread's."""

    def __init__(self):
        super(GreenletBt, self).__init__("greenlet bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        parts = arg.split(None, 1)
        if not parts:
            raise gdb.GdbError("usage: greenlet bt ID|NAME|ADDRESS|all [bt options]")
        spec, rest = parts[0], parts[1] if len(parts) > 1 else ""
        if spec == "all":
            first = True
            for t, gs in all_greenlets():
                for g in gs:
                    if g.state not in ("running", "suspended"):
                        continue
                    if not first:
                        gdb.write("\n")
                    first = False
                    gdb.write(_header(g))
                    try:
                        for _, txt in greenlet_backtrace(g, rest):
                            gdb.write(txt)
                    except gdb.error as e:
                        gdb.write("  (%s)\n" % e)
            return
        g = find_greenlet(spec)
        gdb.write(_header(g))
        for _, txt in greenlet_backtrace(g, rest):
            gdb.write(txt)


class GreenletFunction(gdb.Function):
    """$greenlet(ID) - the greenlet_t * of greenlet ID."""

    def __init__(self):
        super(GreenletFunction, self).__init__("greenlet")

    def invoke(self, ident):
        g = find_greenlet(str(int(ident)))
        return g.ptr


InfoGreenlets()
GreenletPrefix()
GreenletBt()
GreenletFunction()

# Other gdb scripts (an interpreter's, adding its frames) reach this one as
# `import cgreenlet_gdb`, however it was loaded.
_mod = types.ModuleType("cgreenlet_gdb")
_mod.__doc__ = "cgreenlet's gdb extension (gdb/cgreenlet-gdb.py)"
for _name in ("register_bt_hook", "all_greenlets", "find_greenlet",
              "greenlet_backtrace", "Greenlet", "Thread", "CgreenletError",
              "_bt_hooks"):
    setattr(_mod, _name, globals()[_name])
sys.modules["cgreenlet_gdb"] = _mod
