"""The summary table of bench/scale.py: medians over rounds per (part, size,
implementation), the ratio here / stock (or cgreenlet / Boost), and the
issue-14 target beside it."""
import scale_lib as L

M = 1000000

# figure key, label, unit, target(size) -> ratio bound or None
PYTHON_ROWS = [
    ("mem_b", "RSS + VmPTE per parked greenlet", "B", lambda n: 0.8),
    ("rss_b", "  RSS alone", "B", None),
    ("pte_b", "  VmPTE alone (page tables)", "B", None),
    ("gc_s", "one gc.collect() with them parked", "s", lambda n: 1.0),
    ("auto_gc_s", "automatic gc while parking: total", "s", lambda n: 1.0),
    ("auto_gc_n", "  automatic collections", "n", None),
    ("auto_gc_max_s", "  longest automatic collection", "s", None),
    ("park_us", "park (create + first switch), each", "us", lambda n: 1.0 if n >= M else None),
    ("drop_us", "drop (killed by GreenletExit), each", "us", lambda n: 0.5),
]
GEVENT_ROWS = [
    ("mem_b", "server RSS + VmPTE per connection", "B", lambda n: 0.9),
    ("rss_b", "  RSS alone", "B", None),
    ("pte_b", "  VmPTE alone (page tables)", "B", None),
    ("pause_idle_s", "longest GC pause, connections idle", "s", lambda n: 1.0),
    ("forced_gc_s", "  forced gc.collect(), median", "s", None),
    ("idle_gc_n", "  automatic collections while idle", "n", None),
    ("connect_gc_max_s", "longest automatic GC pause, connecting", "s", None),
    ("connect_gc_s", "  automatic gc while connecting: total", "s", None),
    ("connect_gc_n", "  automatic collections while connecting", "n", None),
    ("setup_us", "connect + one echo, each (wall)", "us", None),
]
WAIT_ROWS = [
    ("mem_b", "server RSS + VmPTE per waiting greenlet", "B", None),
    ("rss_b", "  RSS alone", "B", None),
    ("pte_b", "  VmPTE alone (page tables)", "B", None),
    ("pause_idle_s", "longest GC pause, greenlets waiting", "s", None),
    ("forced_gc_s", "  forced gc.collect(), median", "s", None),
    ("connect_gc_max_s", "longest automatic GC pause, spawning", "s", None),
    ("connect_gc_s", "  automatic gc while spawning: total", "s", None),
    ("setup_us", "spawn until parked, each (wall)", "us", None),
]
C_ROWS = [
    ("mem_b", "RSS + VmPTE per parked greenlet", "B"),
    ("rss_b", "  RSS alone", "B"),
    ("pte_b", "  VmPTE alone (page tables)", "B"),
    ("park_us", "create + park, each", "us"),
]


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "B":
        return "{:,.0f} B".format(v)
    if unit == "s":
        return "%.1f ms" % (v * 1e3) if v < 1 else "%.2f s" % v
    if unit == "us":
        return "%.2f us" % v
    return "{:,.0f}".format(v)


def cell(runs, key):
    """(median over the rounds that succeeded, note): note is "" when every
    round succeeded, "*" when some failed, or what went wrong in all."""
    good = [r[key] for r in runs if "error" not in r and r.get(key) is not None]
    if not runs:
        return None, "not run"
    if not good:
        bad = runs[0]
        return None, ("timeout" if bad.get("timeout") else
                      "skipped" if bad.get("error", "").startswith("skipped") else "failed")
    return L.median(good), "" if len(good) == len(runs) else "*"


def show(value, note, unit):
    return note if value is None else fmt(value, unit) + note


def ratio_of(a, b):
    return a / b if a is not None and b else None


def select(runs, **kw):
    return [r for r in runs if all(r.get(k) == v for k, v in kw.items())]


def stock_table(part, rows, sizes, runs, table):
    L.out("  %-5s %-40s %13s %13s %8s %8s" % ("size", "figure", "stock", "here", "ratio",
                                              "target"))
    for n in sizes:
        for key, label, unit, target in rows:
            s, sn = cell(select(runs, part=part, size=n, impl="stock"), key)
            h, hn = cell(select(runs, part=part, size=n, impl="here"), key)
            ratio = ratio_of(h, s)
            bound = target(n) if target else None
            verdict = ""
            if bound is not None:
                verdict = "n/a" if ratio is None else "ok" if ratio <= bound else "MISS"
            L.out("  %-5s %-40s %13s %13s %8s %8s %s" % (
                L.size_label(n), label, show(s, sn, unit), show(h, hn, unit),
                "-" if ratio is None else "%.2fx" % ratio,
                "<=%.1fx" % bound if bound is not None else "", verdict))
            table.append({"part": part, "size": n, "figure": key, "label": label.strip(),
                          "unit": unit, "stock": s, "here": h, "ratio": ratio,
                          "target": bound, "verdict": verdict or None})


def c_table(sizes, runs, info, table):
    shared = info.get("shared_stack") == "1"
    head = "  %-5s %-8s %-33s %11s %11s %11s %7s %7s" % (
        "size", "stack", "figure", "boost", "boost mmap", "cgreenlet", "/boost", "/mmap")
    if shared:
        head += " %11s %7s" % ("cg shared", "/boost")
    L.out(head)
    stacks = sorted({r["stack"] for r in runs if r["part"] == "c"}, reverse=True)
    for n in sizes:
        for stack in stacks:
            for key, label, unit in C_ROWS:
                got = {impl: cell(select(runs, part="c", size=n, stack=stack, impl=impl), key)
                       for impl in ("boost", "boost-mmap", "here", "here-shared")}
                b, bm, h = got["boost"][0], got["boost-mmap"][0], got["here"][0]
                rb, rm = ratio_of(h, b), ratio_of(h, bm)
                line = "  %-5s %-8s %-33s %11s %11s %11s %7s %7s" % (
                    L.size_label(n), "%d KiB" % (stack // 1024), label,
                    show(*got["boost"], unit), show(*got["boost-mmap"], unit),
                    show(*got["here"], unit), fmt_ratio(rb), fmt_ratio(rm))
                rs = ratio_of(got["here-shared"][0], b)
                if shared:
                    line += " %11s %7s" % (show(*got["here-shared"], unit), fmt_ratio(rs))
                L.out(line)
                table.append({"part": "c", "size": n, "stack": stack, "figure": key,
                              "label": label.strip(), "unit": unit, "boost": b,
                              "boost_mmap": bm, "here": h,
                              "here_shared": got["here-shared"][0], "ratio": rb,
                              "ratio_mmap": rm, "ratio_shared": rs})


def fmt_ratio(r):
    return "-" if r is None else "%.2fx" % r


def print_table(a, parts, runs, info):
    """Print the summary; return its rows (for --json)."""
    table = []
    L.out("\n" + "=" * 100)
    L.out("scale summary: medians of %d round(s); ratio = here / stock (lower is better); "
          "* = some rounds failed" % a.rounds)
    if "python" in parts:
        L.out("\npython: stock greenlet 2.0.2 vs this module, %s; each greenlet parked 4 "
              "frames deep, gc on" % a.python)
        stock_table("python", PYTHON_ROWS, a.sizes, runs, table)
    if "gevent" in parts:
        L.out("\ngevent: StreamServer echo server, N idle connections (one echo each), "
              "server process figures")
        stock_table("gevent", GEVENT_ROWS, a.gevent_sizes, runs, table)
        if a.wait_sizes:
            L.out("\ngevent: greenlets spawned by gevent.spawn(), parked in Event.wait() "
                  "(no sockets), server process figures")
            stock_table("gevent-wait", WAIT_ROWS, a.wait_sizes, runs, table)
    if "c" in parts:
        L.out("\nc: cgreenlet vs Boost.Context fibers, 4 C calls deep, same stack size; "
              "ratio = cgreenlet / boost (fixedsize_stack, malloc)%s" % (
                  "" if info.get("shared_stack") == "1"
                  else "; no shared-stack row (cgreenlet.h has no GREENLET_ATTR_SHARED_STACK)"))
        c_table(a.c_sizes, runs, info, table)
    errors = [r for r in runs if "error" in r]
    if errors:
        L.out("\nfailed, timed out or skipped measurements:")
        for r in errors:
            L.out("  - %s %s %s round %d%s: %s" % (
                r["part"], r["impl"], L.size_label(r["size"]), r["round"],
                " stack %d KiB" % (r["stack"] // 1024) if "stack" in r else "",
                r["error"][:1500]))
    noisy = [r for r in runs if r.get("stderr")]
    if noisy:
        L.out("\nchildren that wrote to stderr (their figures are in the table):")
        for r in noisy:
            L.out("  - %s %s %s round %d: %s" % (r["part"], r["impl"], L.size_label(r["size"]),
                                                r["round"], r["stderr"][-800:]))
    return table
