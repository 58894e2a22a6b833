# cgreenlet-gdb.py - gdb commands for programs using cgreenlet.
#
#   info greenlets          every greenlet of every thread of the process
#   greenlet bt ID [ARGS]   backtrace of greenlet ID (ARGS go to `bt`)
#   greenlet bt all [ARGS]  backtrace of every started, live greenlet
#   greenlet py-bt ID|all   Python frames of greenlets of the CPython module
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
FLAG_AWAY = 8  # shared stack, bytes copied out to the heap (src/internal.h)

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


def _read(addr, n):
    """n bytes of the inferior's memory at addr."""
    return bytes(gdb.selected_inferior().read_memory(addr, n))


def _registries():
    """[(objfile or None, greenlet__threads head)] of every objfile holding
    the core (a program may link the library more than once, e.g. a Python
    module)."""
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
            out.append((objfile, val))
    if not out:
        try:
            out.append((None, gdb.parse_and_eval("greenlet__threads")))
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

    def __init__(self, ptr, thread, objfile=None):
        value = ptr.dereference()
        self.ptr = ptr
        self.objfile = objfile  # the copy of the core it belongs to
        self.value = value
        self.addr = _ptr(ptr)
        self.thread = thread
        self.id = _u64(value["id"])
        self.name = value["name"].string(length=32).split("\0")[0]
        self.raw_state = int(value["state"])
        self.is_main = (int(value["flags"]) & FLAG_MAIN) != 0
        # A shared-stack greenlet whose bytes are in a heap copy: its stack
        # holds another greenlet's frames (src/shared.c).
        self.away = (int(value["flags"]) & FLAG_AWAY) != 0
        self.saved = _ptr(value["saved"])
        self.saved_len = int(value["saved_len"])
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
    for objfile, head in _registries():
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
                gs.append(Greenlet(g, t, objfile))
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
    if want is not None:  # a Python greenlet's object: id(g)
        for t, gs in everything:
            for g in gs:
                if g.userdata == want and python_object(g):
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
    $sp), the stack range, the run function and the name (for greenlets
    of the Python module: the type of the greenlet object)."""

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
                if g.away:
                    rng = ("copied out, %s at 0x%x" % (_size(g.saved_len), g.saved)
                           if g.saved else "not laid out yet")
                rows.append((mark, str(g.id), t.label(), g.state,
                             str(g.parent_id) if g.parent_id else "-",
                             _size(g.in_use()), rng, g.run_name(),
                             g.name or python_type_name(g)))
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
            # As the register's own type: its size is what gdb checks.
            rtype = pending_frame.read_register(name).type
            info.add_saved_register(name, gdb.Value(value).cast(rtype))
        return info


_unwinder = GreenletUnwinder()
register_unwinder(None, _unwinder, replace=True)


def _seq(fmt, first, n, offset, step):
    """[(register name, offset)] of n registers stored one after another."""
    return [(fmt % (first + i), offset + step * i) for i in range(n)]


# The switch frames (src/context_<isa>.S): a suspended greenlet's context is
# the stack pointer its switch stored; the callee-saved registers gdb needs
# to unwind and the return address are stored from there.  Per ISA, matched
# on gdb's architecture name: [(register, byte offset from the saved sp)],
# then the stack pointer's name and its value once the switch returned
# (saved sp + N).  The return address is given as the caller's pc (and its
# link register where it has one).  Words are the target's unsigned long,
# in its byte order.
_SWITCH_FRAMES = [
    # sp+0 MXCSR/x87 CW, +8 r15 r14 r13 r12 rbx rbp, +56 return address
    (r"i386:x86-64", [("r15", 8), ("r14", 16), ("r13", 24), ("r12", 32),
                       ("rbx", 40), ("rbp", 48), ("rip", 56)], "rsp", 64),
    # sp+0 x29 x30, +16 x19..x28, +96 d8..d15
    (r"aarch64", [("x29", 0), ("x30", 8), ("pc", 8)] + _seq("x%d", 19, 10, 16, 8),
     "sp", 160),
    # sp+0 MXCSR, +4 x87 CW, +8 edi esi ebx ebp, +24 return address
    (r"i386(:intel)?$", [("edi", 8), ("esi", 12), ("ebx", 16), ("ebp", 20),
                         ("eip", 24)], "esp", 28),
    # sp+0 d8..d15, +64 FPSCR, +68 r4..r11 (r11 the frame pointer), +100 lr
    # (bit 0 set for a Thumb caller: _arm_thumb below)
    (r"arm", _seq("r%d", 4, 8, 68, 4) + [("lr", 100), ("pc", 100)], "sp", 104),
    # ELFv2: sp+0 back chain, +8 CR, +16 LR, +24 r2 (TOC), +48 r14..r31, ...
    (r"powerpc:common64$", [("lr", 16), ("pc", 16), ("r2", 24)]
     + _seq("r%d", 14, 18, 48, 8), "r1", 528),
    # sp+0 f8..f15, +64 FPC, +72 the switcher's frame: r6..r14 at +48 in its
    # register save area; r14 the return address
    (r"s390:64-bit$", _seq("r%d", 6, 9, 120, 8) + [("pswa", 184), ("pc", 184)],
     "r15", 72),
    # sp+0 ra, +8 s0 (fp) .. s11, +104 fs0..fs11, +200 frm
    (r"riscv:rv64$", [("ra", 0), ("pc", 0), ("fp", 8)] + _seq("s%d", 1, 11, 16, 8),
     "sp", 208),
]


def _switch_frame(arch):
    for pattern, regs, sp_name, sp_delta in _SWITCH_FRAMES:
        if re.match(pattern, arch):
            return regs, sp_name, sp_delta
    raise CgreenletError("cgreenlet: unsupported architecture %s (the "
                         "extension decodes the switch frames of x86-64, "
                         "AArch64, i386, ARM, ppc64le, s390x and riscv64)"
                         % arch)


def _context_registers(g):
    """The registers of the frame that called the switch, from g's saved
    context: [(name, int)], and the saved stack pointer."""
    arch = gdb.selected_inferior().architecture().name()
    ctx = g.value["ctx"]
    names = [f.name for f in ctx.type.strip_typedefs().fields()]
    if "sp" in names:  # assembly back end: one saved word, the rest pushed
        sp = _ptr(ctx["sp"])
        layout, sp_name, sp_delta = _switch_frame(arch)
        word = gdb.lookup_type("unsigned long").pointer()
        regs = [(n, _ptr(gdb.Value(sp + off).cast(word).dereference()))
                for n, off in layout]
        regs.append((sp_name, sp + sp_delta))
        if re.match(r"arm", arch):
            regs = _arm_thumb(regs)
    else:  # ucontext back end: swapcontext saved the registers
        gregs = ctx["uc"]["uc_mcontext"]["gregs"]
        if "x86-64" not in arch:
            raise CgreenletError("cgreenlet: ucontext on %s is not supported"
                                 % arch)
        idx = {"r12": 4, "r13": 5, "r14": 6, "r15": 7, "rbp": 10, "rbx": 11,
               "rsp": 15, "rip": 16}
        regs = [(n, int(gregs[i])) for n, i in idx.items()]
        sp = int(gregs[15])
    return regs, sp


def _arm_thumb(regs):
    """A Thumb caller's return address has bit 0 set: the pc is without
    it, and the CPSR's T bit (0x20) says which state the caller runs in."""
    lr = dict(regs)["lr"]
    cpsr = int(gdb.selected_frame().read_register("cpsr")) & ~0x20
    return ([(n, x & ~1 if n == "pc" else x) for n, x in regs]
            + [("cpsr", cpsr | (0x20 if lr & 1 else 0))])


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
        if not frames and "More stack frames" not in text:
            # gdb refused the registers (bt printed only the borrowed frame)
            raise CgreenletError("cgreenlet: gdb cannot unwind greenlet %d "
                                 "from its saved registers" % g.id)
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
    if st == "suspended" and g.away:
        raise CgreenletError(
            "greenlet %d is suspended with its stack copied out (%s at 0x%x: "
            "a shared stack another greenlet runs on now); gdb cannot unwind "
            "it there%s" % (g.id, _size(g.saved_len), g.saved,
                            "; `greenlet py-bt %d` shows its Python frames" % g.id
                            if g.userdata else ""))
    if st == "suspended":
        return _bt_suspended(g, bt_args)
    raise CgreenletError("greenlet %d is %s: it has no stack" % (g.id, st))


# ---- the CPython module: Python frames -----------------------------------
#
# The greenlet module (python/src/*.c, module.h) compiles its own copy of
# the core; each record's userdata is its PyGreenlet, whose pimpl->st holds
# the interpreter state a suspended greenlet carries (python/src/pystate_*.h)
# and pimpl->thread->tstate the thread's PyThreadState.  Frames, code
# objects and those structs are read through the module's DWARF, field by
# field, which tells the CPython version apart (3.9 to 3.13).  Strings,
# bytes and location tables are decoded here: CPython's own python-gdb.py
# needs the interpreter's debug info, which Debian's python3 does not ship.

_PY_MODULES = {}  # objfile filename -> _PyModule or None


class _PyModule(object):
    """The greenlet module in one objfile: its types and CPython layout."""

    def __init__(self, objfile, block):
        self.objfile = objfile
        look = lambda n: gdb.lookup_type(n, block)
        self.greenlet_t = look("PyGreenlet").pointer()
        st_fields = [f.name for f in look("cg_pystate").fields()]
        if "datastack_chunk" in st_fields:
            self.frame_t = look("_PyInterpreterFrame")
            ff = [f.name for f in self.frame_t.fields()]
            self.version = ((3, 13) if "f_executable" in ff else
                            (3, 12) if "py_recursion_depth" in st_fields else
                            (3, 11))
        else:
            self.frame_t = look("PyFrameObject")
            self.version = ((3, 10) if "recursion_headroom" in st_fields
                            else (3, 9))
        self.code_t = look("PyCodeObject").pointer()
        self.ts_t = look("PyThreadState")
        self.code_fields = set(f.name for f in look("PyCodeObject").fields())
        # PyASCIIObject and PyCompactUnicodeObject: 3.12 dropped wstr.
        self.ascii_size, self.compact_size = ((48, 72) if self.version < (3, 12)
                                              else (40, 56))


def _py_module(g):
    """The greenlet module that g's record belongs to, or None (a C
    greenlet, or a module built without debug info)."""
    objfile = g.objfile
    if objfile is None:
        return None
    key = objfile.filename
    if key not in _PY_MODULES:
        mod = None
        try:
            # A global (hidden) symbol since the module is several files
            # (python/src/type.c); a static one in older builds.
            sym = (objfile.lookup_global_symbol("PyGreenlet_Type") or
                   objfile.lookup_static_symbol("PyGreenlet_Type"))
            if sym is not None:
                mod = _PyModule(objfile, sym.symtab.static_block())
        except (gdb.error, AttributeError, RuntimeError):
            mod = None
        _PY_MODULES[key] = mod
    return _PY_MODULES[key]


def _i64(addr):
    return int.from_bytes(_read(addr, 8), "little", signed=True)


def _py_str(mod, addr):
    """A str object's text (at most 1,000 characters)."""
    if not addr:
        return "?"
    length = _i64(addr + 16)
    state = int.from_bytes(_read(addr + 32, 4), "little")
    kind, compact, ascii = (state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1
    if kind not in (1, 2, 4) or not 0 <= length < 1 << 30:
        return "?"
    if compact:
        data = addr + (mod.ascii_size if ascii else mod.compact_size)
    else:
        data = _i64(addr + mod.compact_size)  # PyUnicodeObject.data.any
    n = min(length, 1000)
    raw = _read(data, n * kind)
    return raw.decode({1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind],
                      "replace")


def _py_bytes(addr):
    """A bytes object's contents (ob_size at 16, ob_sval at 32)."""
    n = _i64(addr + 16)
    return _read(addr + 32, n) if 0 <= n < 1 << 24 else b""


def _varint(tab, i):
    """Location table varint (6-bit chunks, 0x40: more follow)."""
    b = tab[i]
    val, shift, i = b & 63, 6, i + 1
    while b & 64:
        b = tab[i]
        val |= (b & 63) << shift
        shift += 6
        i += 1
    return val, i


def _svarint(tab, i):
    val, i = _varint(tab, i)
    return (-(val >> 1) if val & 1 else val >> 1), i


def _line_311(tab, first, unit):
    """Line of code unit `unit` from a 3.11+ location table
    (Objects/locations.md): entries of 1..8 units, each a code in bits
    3-6 of its first byte saying how the line moves."""
    line, addr, i = first, 0, 0
    while i < len(tab):
        head = tab[i]
        code, length = (head >> 3) & 15, (head & 7) + 1
        i += 1
        if code == 15:            # no location
            delta, here = 0, None
        elif code == 14:          # long form
            delta, i = _svarint(tab, i)
            for _ in range(3):
                _, i = _varint(tab, i)
            here = True
        elif code == 13:          # no columns
            delta, i = _svarint(tab, i)
            here = True
        elif code >= 10:          # one line, two column bytes
            delta, i, here = code - 10, i + 2, True
        else:                     # short form, one column byte
            delta, i, here = 0, i + 1, True
        line += delta
        if addr <= unit < addr + length:
            return line if here else None
        addr += length
    return None


def _line_310(tab, first, byte):
    """3.10's co_linetable: (bytes, line delta) pairs, -128 for none."""
    line, addr = first, 0
    for k in range(0, len(tab) - 1, 2):
        sdelta, ldelta = tab[k], tab[k + 1]
        ldelta = ldelta - 256 if ldelta > 127 else ldelta
        here = None
        if ldelta != -128:
            line += ldelta
            here = line
        if addr <= byte < addr + sdelta:
            return here
        addr += sdelta
    return None


def _line_39(tab, first, byte):
    """3.9's co_lnotab: (bytes, line delta) pairs, the line changing where
    the address reaches a pair."""
    line, addr = first, 0
    for k in range(0, len(tab) - 1, 2):
        addr += tab[k]
        if addr > byte:
            break
        d = tab[k + 1]
        line += d - 256 if d > 127 else d
    return line


class PyFrame(object):
    """One Python frame: file, line (None if unknown), function."""

    def __init__(self, filename, line, name):
        self.filename, self.line, self.name = filename, line, name

    def __str__(self):
        return 'File "%s", line %s, in %s' % (
            self.filename, self.line if self.line is not None else "?",
            self.name)


def _py_code_frame(mod, code, unit):
    """PyFrame of code object `code` (a gdb.Value, PyCodeObject *) at code
    unit (3.10+) or byte (3.9) `unit`."""
    c = code.dereference()
    filename = _py_str(mod, _ptr(c["co_filename"]))
    name = _py_str(mod, _ptr(c["co_qualname" if "co_qualname" in
                                mod.code_fields else "co_name"]))
    first = int(c["co_firstlineno"])
    try:
        if mod.version >= (3, 11):
            line = _line_311(_py_bytes(_ptr(c["co_linetable"])), first, unit)
        elif mod.version == (3, 10):
            line = _line_310(_py_bytes(_ptr(c["co_linetable"])), first, 2 * unit)
        else:
            line = _line_39(_py_bytes(_ptr(c["co_lnotab"])), first, unit)
    except (IndexError, gdb.MemoryError):
        line = None
    return PyFrame(filename, line, name)


def _py_groups(mod, top):
    """The Python frames from frame pointer `top` (a gdb.Value, NULL for
    none) down, innermost first, in groups: one per C call of
    _PyEval_EvalFrameDefault, innermost first."""
    groups, cur, n = [], [], 0
    f = top
    while _ptr(f) != 0 and n < 100000:
        n += 1
        v = f.dereference()
        if mod.version >= (3, 11):
            owner = int(v["owner"])
            if mod.version >= (3, 12) and owner == 3:  # FRAME_OWNED_BY_CSTACK
                groups.append(cur)
                cur = []
                f = v["previous"]
                continue
            if mod.version >= (3, 13):
                code = v["f_executable"].cast(mod.code_t)
                ip = v["instr_ptr"]
            else:
                code = v["f_code"]
                ip = v["prev_instr"]
            base = _ptr(code.dereference()["co_code_adaptive"].address)
            unit = (_ptr(ip) - base) // 2
            if unit >= 0 and owner in (0, 1):  # thread's or generator's
                cur.append(_py_code_frame(mod, code, unit))
            if mod.version == (3, 11) and int(v["is_entry"]):
                groups.append(cur)
                cur = []
            f = v["previous"]
        else:
            # One PyFrameObject per C call; f_lasti: 3.10 counts code
            # units, 3.9 bytes.
            cur.append(_py_code_frame(mod, v["f_code"], int(v["f_lasti"])))
            groups.append(cur)
            cur = []
            f = v["f_back"]
    if cur:
        groups.append(cur)
    return [grp for grp in groups if grp]


def _py_impl(g, mod):
    """The cg_impl of Python greenlet g, or None."""
    if not g.userdata:
        return None
    obj = gdb.Value(g.userdata).cast(mod.greenlet_t).dereference()
    impl = obj["pimpl"]
    return impl.dereference() if _ptr(impl) else None


def python_frames(g):
    """The Python frames of greenlet g as [[PyFrame]] (see _py_groups), or
    None if g is not a Python greenlet."""
    mod = _py_module(g)
    if mod is None:
        return None
    impl = _py_impl(g, mod)
    if impl is None:
        return None
    state = g.state
    if state == "suspended":
        st = impl["st"]
        if mod.version >= (3, 13) or mod.version < (3, 11):
            top = st["frame"]
        else:
            cframe = st["cframe"]
            if _ptr(cframe) == 0:
                return []
            top = cframe.dereference()["current_frame"]
    elif state == "running":
        th = impl["thread"]
        if _ptr(th) == 0 or _ptr(th.dereference()["tstate"]) == 0:
            return []
        ts = th.dereference()["tstate"].dereference()
        if mod.version >= (3, 13):
            top = ts["current_frame"]
        elif mod.version >= (3, 11):
            top = ts["cframe"].dereference()["current_frame"]
        else:
            top = ts["frame"]
    else:
        return []
    return _py_groups(mod, top)


def python_object(g):
    """The address of greenlet g's Python object (id(g)), or 0."""
    mod = _py_module(g)
    return g.userdata if mod is not None else 0


def python_type_name(g):
    """The type name of greenlet g's Python object ("greenlet.greenlet",
    gevent's "Hub" ...), or "" for a C greenlet."""
    obj = python_object(g)
    if not obj:
        return ""
    try:
        ob = gdb.Value(obj).cast(_py_module(g).greenlet_t).dereference()
        tp = ob["ob_base"]["ob_type"].dereference()
        name = _ptr(tp["tp_name"])
        raw = _read(name, min(200, 4096 - name % 4096))  # not past its page
        return raw.split(b"\0")[0].decode("utf-8", "replace")
    except (gdb.error, gdb.MemoryError):
        return "?"


def _python_bt_hook(g, frames):
    """Adds each C call of _PyEval_EvalFrameDefault's Python frames after
    its line.  The groups and the C frames pair off innermost first; what a
    short backtrace (bt N) leaves unpaired is not shown."""
    try:
        groups = python_frames(g)
    except (gdb.error, gdb.MemoryError) as e:
        return frames + [(None, "    (Python frames unreadable: %s)\n" % e)]
    if not groups:
        return None
    out, k = [], 0
    for frame, text in frames:
        out.append((frame, text))
        if (k < len(groups) and frame is not None
                and frame.name() == "_PyEval_EvalFrameDefault"):
            for pf in groups[k]:
                out.append((None, "    py: %s\n" % pf))
            k += 1
    return out


# Built in: a reload replaces the previous copy instead of adding one.
_python_bt_hook.cgreenlet_builtin = True
_bt_hooks[:] = [h for h in _bt_hooks
                if not getattr(h[1], "cgreenlet_builtin", False)]
register_bt_hook(_python_bt_hook)


def _source_line(filename, line):
    try:
        with open(filename, encoding="utf-8", errors="replace") as fh:
            for i, text in enumerate(fh, 1):
                if i == line:
                    return text.strip()
    except (OSError, TypeError):
        pass
    return None


def python_backtrace(g):
    """py-bt's text for greenlet g: "Traceback (most recent call first):"
    and a File/line/function entry per frame with its source line, or why
    there is none."""
    groups = python_frames(g)
    if groups is None:
        return "  (not a Python greenlet)\n"
    if not groups:
        return "  (no Python frames: %s)\n" % g.state
    lines = ["Traceback (most recent call first):\n"]
    for grp in groups:
        for pf in grp:
            lines.append("  %s\n" % pf)
            src = _source_line(pf.filename, pf.line) if pf.line else None
            if src:
                lines.append("    %s\n" % src)
    return "".join(lines)


def _header(g):
    obj = python_object(g)
    return "Greenlet %d%s (%s, thread %s, %s%s):\n" % (
        g.id, ' "%s"' % g.name if g.name else "", g.state, g.thread.label(),
        g.run_name(), ", Python object 0x%x" % obj if obj else "")


def _each_greenlet(spec, show):
    """show(g) for greenlet spec, or for every running or suspended one
    (spec "all"), each after its header."""
    if spec != "all":
        g = find_greenlet(spec)
        gdb.write(_header(g))
        show(g)
        return
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
                show(g)
            except (gdb.error, gdb.GdbError) as e:
                gdb.write("  (%s)\n" % e)


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

        def show(g):
            for _, txt in greenlet_backtrace(g, rest):
                gdb.write(txt)
        _each_greenlet(spec, show)


class GreenletPyBt(gdb.Command):
    """Python backtrace of a greenlet of the CPython module, like py-bt:
    greenlet py-bt ID|ADDRESS|all.  ADDRESS may be the greenlet object's
    (id(g) in Python).  Reads the frames the greenlet's saved interpreter
    state holds; the C stack is not unwound."""

    def __init__(self):
        super(GreenletPyBt, self).__init__("greenlet py-bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        spec = arg.strip()
        if not spec:
            raise gdb.GdbError("usage: greenlet py-bt ID|ADDRESS|all")
        _each_greenlet(spec, lambda g: gdb.write(python_backtrace(g)))


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
GreenletPyBt()
GreenletFunction()

# Other gdb scripts (an interpreter's, adding its frames) reach this one as
# `import cgreenlet_gdb`, however it was loaded.
_mod = types.ModuleType("cgreenlet_gdb")
_mod.__doc__ = "cgreenlet's gdb extension (gdb/cgreenlet-gdb.py)"
for _name in ("register_bt_hook", "all_greenlets", "find_greenlet",
              "greenlet_backtrace", "Greenlet", "Thread", "CgreenletError",
              "python_frames", "python_backtrace", "python_object", "PyFrame",
              "_bt_hooks"):
    setattr(_mod, _name, globals()[_name])
sys.modules["cgreenlet_gdb"] = _mod
