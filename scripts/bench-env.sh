#!/usr/bin/env bash
# bench-env.sh - today's stock greenlet from PyPI, pinned, and gevent 26
# beside it, for the benchmarks that compare this module with it (make
# bench-python, make bench-gevent, make bench-report call it themselves).
#
# usage: scripts/bench-env.sh [--quiet] PYTHON
#
# For PYTHON (its X.Y; default /usr/bin/python3):
#   1. build/bench-greenlet-STOCK-X.Y: stock greenlet STOCK (the
#      STOCK_GREENLET_VERSION below) from its PyPI wheel, unpacked there by
#      `pip install --target`; a benchmark puts it first on PYTHONPATH,
#      beside this module's build directory, on the same interpreter.
#   2. build/bench-venv-X.Y: a venv (no system site-packages) on PYTHON with
#      gevent and its two dependencies at the pins of
#      scripts/pypi-requirements.txt (gevent, zope.event, zope.interface) and
#      NO greenlet: PYTHONPATH chooses the greenlet (this module or 1.).
#   3. checks: in the venv, with each PYTHONPATH, `import greenlet` gives the
#      module asked for (stock STOCK, not cgreenlet's; or cgreenlet's from
#      --module-dir when given) and gevent's pinned version.
# The last line printed is
#   "bench-env: VENV_PYTHON STOCK_DIR STOCK_VERSION GEVENT_VERSION"
# (what the benchmarks read).  A part whose stamp (pins, interpreter) matches
# is kept: a rerun only runs the checks (about a second, no network).
#
# The wheels come from the cache of scripts/pypi-env.sh: CGREENLET_PYPI_CACHE
# (default ~/.cache/cgreenlet-pypi), outside the clone.  What it lacks is
# fetched with `pip download` (wheels only, --no-deps, by the venv's pip);
# everything is installed with `pip install --no-index --find-links CACHE`.
# CGREENLET_PYPI_OFFLINE=1 forbids downloading (a missing file fails).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

STOCK_GREENLET_VERSION=3.5.6
REQ=$ROOT/scripts/pypi-requirements.txt
GEVENT_PKGS="gevent zope.event zope.interface"   # their lines in $REQ
CACHE=${CGREENLET_PYPI_CACHE:-$HOME/.cache/cgreenlet-pypi}
OFFLINE=${CGREENLET_PYPI_OFFLINE:-0}

QUIET=0
MODULE_DIR=
PY=
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quiet) QUIET=1; shift ;;
    --module-dir) [ $# -ge 2 ] || { echo "bench-env.sh: --module-dir needs a directory" >&2; exit 2; }
                  MODULE_DIR=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "bench-env.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) [ -z "$PY" ] || { echo "bench-env.sh: one interpreter only" >&2; exit 2; }
       PY=$1; shift ;;
  esac
done
PY=${PY:-/usr/bin/python3}
say() { [ "$QUIET" = 1 ] || echo "$@"; }
fail() { echo "bench-env.sh: $*" >&2; exit 1; }

scripts/deps.sh pypi || exit 1
mkdir -p "$CACHE" "$ROOT/build" || exit 1
CACHE=$(cd "$CACHE" && pwd -P)
case "$CACHE/" in
  "$ROOT"/*) fail "the cache ($CACHE) must be outside the clone" ;;
esac

read -r XY FULL <<<"$(cd / && env -u PYTHONPATH -u PYTHONHOME "$PY" -c \
  'import sys; print("%d.%d %d.%d.%d" % (sys.version_info[:2] + sys.version_info[:3]))' 2>/dev/null)"
[ -n "${XY:-}" ] || fail "cannot run $PY"
VENV=$ROOT/build/bench-venv-$XY
STOCK=$ROOT/build/bench-greenlet-$STOCK_GREENLET_VERSION-$XY
LOG=$ROOT/build/bench-env-$XY.log

# One run at a time per tree, and per cache (pip download).
exec 8>"$ROOT/build/.bench-env.lock"
flock -n 8 || { say "== another scripts/bench-env.sh runs in this tree; waiting for it"; flock 8; }
exec 7>"$CACHE/.lock"
flock -n 7 || { say "== another user of $CACHE runs; waiting for it"; flock 7; }

# The gevent lines of the requirements (markers kept: pip evaluates them).
GREQ=$ROOT/build/bench-env-$XY.req
awk -v names="$GEVENT_PKGS" 'BEGIN { n = split(names, a, " "); for (i = 1; i <= n; i++) want[tolower(a[i])] = 1 }
  { line = $0; sub(/#.*/, "", line); split(line, f, /[=<>!~; ]/);
    if (tolower(f[1]) in want) print line }' "$REQ" >"$GREQ"
[ "$(grep -c . "$GREQ")" -ge 3 ] || fail "gevent's pins not found in ${REQ#"$ROOT"/}"
STAMP="python=$PY $FULL gevent=$(sha256sum "$GREQ" | cut -c1-16) greenlet=$STOCK_GREENLET_VERSION"

# pip install from the cache; download what it lacks (unless offline).
from_cache() {  # what, then pip install arguments
  local what=$1; shift
  local pipi=("$VENV/bin/python" -m pip install -q --no-deps --only-binary :all: --no-index --find-links "$CACHE" "$@")
  if "${pipi[@]}" >>"$LOG" 2>&1; then
    say "   $what: from the cache, nothing downloaded"; return 0
  fi
  [ "$OFFLINE" = 1 ] && { echo "   $what: not in the cache and CGREENLET_PYPI_OFFLINE=1 (log: $LOG)" >&2; return 1; }
  local dl=("$@")  # the requirement arguments without --target DIR
  [ "${dl[0]}" = --target ] && dl=("${dl[@]:2}")
  say "   $what: not all in the cache; pip download (wheels only) into $CACHE"
  "$VENV/bin/python" -m pip download -q --no-deps --only-binary :all: -d "$CACHE" "${dl[@]}" >>"$LOG" 2>&1 ||
    { echo "   pip download failed (log: $LOG):" >&2; tail -5 "$LOG" | sed 's/^/   | /' >&2; return 1; }
  "${pipi[@]}" >>"$LOG" 2>&1 ||
    { echo "   install failed (log: $LOG):" >&2; tail -5 "$LOG" | sed 's/^/   | /' >&2; return 1; }
}

say "== bench-env: $PY ($FULL): venv ${VENV#"$ROOT"/}, stock greenlet $STOCK_GREENLET_VERSION in ${STOCK#"$ROOT"/}"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.cgreenlet-bench-stamp" 2>/dev/null)" = "$STAMP" ] &&
   [ "$(cat "$STOCK/.cgreenlet-bench-stamp" 2>/dev/null)" = "$STAMP" ]; then
  say "   kept (stamps match)"
else
  : >"$LOG"
  rm -rf "$VENV" "$STOCK"
  (cd / && env -u PYTHONPATH -u PYTHONHOME "$PY" -m venv "$VENV") >>"$LOG" 2>&1 ||
    { tail -5 "$LOG" >&2; fail "$PY -m venv failed (log: $LOG)"; }
  from_cache "gevent" -r "$GREQ" || fail "cannot install gevent's pins into $VENV"
  from_cache "greenlet $STOCK_GREENLET_VERSION" --target "$STOCK" "greenlet==$STOCK_GREENLET_VERSION" ||
    fail "cannot install greenlet $STOCK_GREENLET_VERSION into $STOCK"
  echo "$STAMP" >"$VENV/.cgreenlet-bench-stamp"
  echo "$STAMP" >"$STOCK/.cgreenlet-bench-stamp"
  say "   made"
fi

# Each greenlet, chosen by PYTHONPATH in the venv: the one wanted, and gevent
# at its pin on it.
check() {  # which dir
  (cd / && env -u PYTHONHOME -u CGREENLET_ALLOW_STOCK PYTHONPATH="$2" WHICH="$1" DIR="$2" \
     GREQ="$GREQ" STOCKV="$STOCK_GREENLET_VERSION" "$VENV/bin/python" -W ignore - <<'EOF'
import os, sys, importlib.metadata as md
import greenlet, greenlet._greenlet as impl, gevent, gevent.hub
where = os.path.realpath(greenlet.__file__)
ours = getattr(impl, "_cgreenlet_version", None)
problems = []
if not where.startswith(os.path.realpath(os.environ["DIR"]) + os.sep):
    problems.append("greenlet from %s, not from %s" % (where, os.environ["DIR"]))
if os.environ["WHICH"] == "stock":
    if ours is not None or greenlet.__version__ != os.environ["STOCKV"]:
        problems.append("wanted stock greenlet %s, got %s" % (
            os.environ["STOCKV"], "cgreenlet " + ours if ours else greenlet.__version__))
elif ours is None:
    problems.append("wanted cgreenlet's module, got stock %s" % greenlet.__version__)
from pip._vendor.packaging.requirements import Requirement  # the venv's pip's copy
for line in open(os.environ["GREQ"]):
    r = Requirement(line)
    if r.marker is None or r.marker.evaluate():
        want = next(iter(r.specifier)).version
        if md.version(r.name) != want:
            problems.append("%s %s, pinned %s" % (r.name, md.version(r.name), want))
if not issubclass(gevent.hub.Hub, greenlet.greenlet):
    problems.append("gevent's hub is not a greenlet of this module")
if problems:
    print("FAIL " + "; ".join(problems)); sys.exit(1)
print("ok: %s greenlet %s%s, gevent %s" % (os.environ["WHICH"], greenlet.__version__,
      " (cgreenlet %s)" % ours if ours else "", gevent.__version__))
EOF
  )
}
out=$(check stock "$STOCK" 2>&1)
echo "$out" | grep -q '^ok:' || {
  echo "$out" >&2; rm -f "$VENV/.cgreenlet-bench-stamp"; fail "check of stock greenlet in $VENV failed"; }
say "   $out"
if [ -n "$MODULE_DIR" ]; then
  out=$(check ours "$(cd "$MODULE_DIR" && pwd -P)" 2>&1)
  echo "$out" | grep -q '^ok:' || { echo "$out" >&2; fail "check of cgreenlet's module in $VENV failed"; }
  say "   $out"
fi
GEVENT_VERSION=$(awk -F'[=; ]+' 'tolower($1) == "gevent" { print $2; exit }' "$GREQ")
echo "bench-env: $VENV/bin/python $STOCK $STOCK_GREENLET_VERSION $GEVENT_VERSION"
