#!/usr/bin/env bash
# pypi-env.sh - a venv per interpreter with today's greenlet clients from PyPI,
# pinned, on this repository's `greenlet` module.
#
# usage: scripts/pypi-env.sh [--list FILE] [PYTHON...]
#
#   PYTHON...    interpreters (default: CGREENLET_PYPI_PYTHONS, else
#                /usr/bin/python3 and, for each CPython 3.N with N >= 10
#                under $PYENV_ROOT/versions (default ~/.pyenv), the newest
#                3.N.x, except Debian's own 3.N); one venv per X.Y, the first
#                interpreter given for an X.Y wins
#   --list FILE  write "X.Y FULL PYTHON VENV MODULE_DIR STATE" per ready venv
#                to FILE (scripts/test-pypi.sh reads it)
#
# For each interpreter:
#   1. the module, built as scripts/test-python-versions.sh --build-only
#      builds it, into build/python-X.Y.Z-<debian|pyenv|other>
#   2. build/pypi-venv-X.Y: a venv (no system site-packages) with
#      scripts/pypi-requirements.txt installed by pip with --no-deps
#      --no-index from the cache, and cgreenlet-module.pth naming the
#      directory of step 1.  PyPI's greenlet is never installed: gevent,
#      eventlet and SQLAlchemy import this module.  A venv whose stamp (the
#      requirements' hash, the interpreter, the module directory) matches is
#      kept as it is.
#   3. checks, in the venv: `import greenlet` is the module of step 1
#      (greenlet._greenlet._cgreenlet_version), no `greenlet` distribution
#      is installed, and the pinned versions are the ones imported.
# and, once, greenlet's sdist (GREENLET_SDIST_VERSION, for its test suite)
# into the cache, checked against GREENLET_SDIST_SHA256 and unpacked into
# build/pypi-greenlet-VERSION (never committed: build/ is ignored).
#
# The cache: CGREENLET_PYPI_CACHE (default ~/.cache/cgreenlet-pypi), outside
# the clone so that a fresh clone (CI) reuses it.  What it lacks is fetched
# with `pip download` (wheels only, --no-deps, by each venv's own pip, so the
# wheels fit that interpreter); everything is then installed with
# `pip install --no-index --find-links CACHE`.  A rerun with a full cache
# touches no network: it says "cache: complete, nothing downloaded".
# CGREENLET_PYPI_OFFLINE=1 forbids downloading (a missing file fails).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

GREENLET_SDIST_VERSION=3.5.6
GREENLET_SDIST_SHA256=8e67c43bdfc88d5fee6db0d3e40175b362fc95fb85f0412d233b9b203c53a575
REQ=$ROOT/scripts/pypi-requirements.txt
CACHE=${CGREENLET_PYPI_CACHE:-$HOME/.cache/cgreenlet-pypi}
OFFLINE=${CGREENLET_PYPI_OFFLINE:-0}
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
LOG_DIR=${CGREENLET_TEST_LOGS:-$ROOT/build/test-pypi-logs}/env

LIST=
ARGS=()
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --list) [ $# -ge 2 ] || { echo "pypi-env.sh: --list needs a file" >&2; exit 2; }
            LIST=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "pypi-env.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

scripts/deps.sh pypi || exit 1
mkdir -p "$CACHE" "$LOG_DIR" "$ROOT/build" || exit 1
CACHE=$(cd "$CACHE" && pwd -P)
case "$CACHE/" in
  "$ROOT"/*) echo "pypi-env.sh: the cache ($CACHE) must be outside the clone" >&2; exit 2 ;;
esac
# One run at a time per tree (the venvs), and per cache (pip download).
exec 8>"$ROOT/build/.pypi-env.lock"
flock -n 8 || { echo "== another scripts/pypi-env.sh runs in this tree; waiting for it"; flock 8; }
exec 7>"$CACHE/.lock"
flock -n 7 || { echo "== another scripts/pypi-env.sh uses $CACHE; waiting for it"; flock 7; }

# ---------------------------------------------------------------- interpreters
if [ ${#ARGS[@]} -eq 0 ] && [ -n "${CGREENLET_PYPI_PYTHONS:-}" ]; then
  read -r -a ARGS <<<"$CGREENLET_PYPI_PYTHONS"
fi
pyver() { (cd / && env -u PYTHONPATH -u PYTHONHOME "$1" -c \
  'import sys; print("%d.%d %d.%d.%d" % (sys.version_info[:2] + sys.version_info[:3]))' 2>/dev/null); }
PYTHONS=()
if [ ${#ARGS[@]} -gt 0 ]; then
  PYTHONS=("${ARGS[@]}")
else
  debian_xy=
  if [ -x /usr/bin/python3 ]; then
    PYTHONS+=(/usr/bin/python3)
    read -r debian_xy _ <<<"$(pyver /usr/bin/python3)"
  fi
  declare -A NEWEST=()
  while read -r dir; do
    [ -x "$dir/bin/python3" ] || continue
    v=$(basename "$dir")
    [[ "$v" =~ ^3\.([0-9]+)\.[0-9]+$ ]] || continue
    [ "${BASH_REMATCH[1]}" -ge 10 ] || continue
    [ "3.${BASH_REMATCH[1]}" = "$debian_xy" ] && continue
    NEWEST[3.${BASH_REMATCH[1]}]=$dir/bin/python3      # sorted: the last is the newest
  done < <(compgen -G "$PYENV_ROOT/versions/3.*" | sort -V)
  while read -r xy; do
    [ -n "$xy" ] && PYTHONS+=("${NEWEST[$xy]}")
  done < <(printf '%s\n' "${!NEWEST[@]}" | sort -V)
fi
[ ${#PYTHONS[@]} -gt 0 ] || { echo "pypi-env.sh: no interpreter" >&2; exit 1; }

# ---------------------------------------------------------------- helpers
cache_count() { find "$CACHE" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' \) | wc -l; }
downloaded_total=0

# The module for each interpreter, as the pyversions stage builds it.
build_modules() {
  local xys=() py xy
  for py in "$@"; do read -r xy _ <<<"$(pyver "$py")"; xys+=("$xy"); done
  echo "== building the module (scripts/test-python-versions.sh --build-only; log: ${LOG_DIR#"$ROOT"/}/build-modules.log)"
  CGREENLET_TEST_LOGS=$LOG_DIR/build-modules CGREENLET_PY_SUPPORTED="${xys[*]}" \
    scripts/test-python-versions.sh --build-only "$@" >"$LOG_DIR/build-modules.log" 2>&1
  local rc=$?
  sed -n '/^== python versions:/,$p' "$LOG_DIR/build-modules.log" | grep -v '^WARNING: supported version' |
    grep -v '^python-versions:' | sed 's/^/   /'
  return $rc
}

module_dir() {  # python full -> the build directory test-python-versions.sh uses
  local tag
  case "$1" in
    /usr/bin/python3*) tag=debian ;;
    "$PYENV_ROOT"/versions/*) tag=pyenv ;;
    *) tag=other ;;
  esac
  echo "$ROOT/build/python-$2-$tag"
}

# Installs the requirements into VENV from the cache; downloads what the cache
# lacks (unless offline) with VENV's pip.  Echo lines go to the terminal.
install_from_cache() {  # venv log
  local venv=$1 log=$2 before after
  local pipi=("$venv/bin/python" -m pip install -q --no-deps --no-index --find-links "$CACHE" -r "$REQ")
  if "${pipi[@]}" >>"$log" 2>&1; then
    echo "   cache: complete, nothing downloaded"
    return 0
  fi
  if [ "$OFFLINE" = 1 ]; then
    echo "   cache: incomplete and CGREENLET_PYPI_OFFLINE=1 (see $log)"
    return 1
  fi
  before=$(cache_count)
  echo "   cache: incomplete, pip download (wheels only) into $CACHE"
  if ! "$venv/bin/python" -m pip download -q --no-deps --only-binary :all: -d "$CACHE" \
       -r "$REQ" >>"$log" 2>&1; then
    echo "   pip download failed:"; tail -5 "$log" | sed 's/^/   | /'
    return 1
  fi
  after=$(cache_count)
  echo "   downloaded $((after - before)) file(s)"
  downloaded_total=$((downloaded_total + after - before))
  "${pipi[@]}" >>"$log" 2>&1 || { echo "   install failed:"; tail -5 "$log" | sed 's/^/   | /'; return 1; }
}

# In the venv: the greenlet imported is the module in MODULE_DIR, no greenlet
# distribution is installed, and the pinned packages import at their pins.
check_venv() {  # venv module_dir
  (cd / && env -u PYTHONPATH -u PYTHONHOME -u CGREENLET_ALLOW_STOCK \
     MODULE_DIR="$2" REQ="$REQ" "$1/bin/python" -W ignore - <<'EOF'
import importlib.metadata as md, os, sys
import greenlet, greenlet._greenlet as impl
mod = os.path.realpath(os.environ["MODULE_DIR"])
where = os.path.realpath(greenlet.__file__)
problems = []
if not where.startswith(mod + os.sep):
    problems.append("greenlet imported from %s, not from %s" % (where, mod))
if getattr(impl, "_cgreenlet_version", None) is None:
    problems.append("greenlet._greenlet has no _cgreenlet_version: not cgreenlet's module")
try:
    d = md.distribution("greenlet")
    problems.append("a greenlet distribution is installed: %s %s" % (d.metadata["Name"], d.version))
except md.PackageNotFoundError:
    pass
# every pin whose marker holds is what is installed
from packaging.requirements import Requirement
pins = 0
for line in open(os.environ["REQ"]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate():
        continue
    want = next(iter(r.specifier)).version
    try:
        have = md.version(r.name)
    except md.PackageNotFoundError:
        have = None
    if have != want:
        problems.append("%s: installed %s, pinned %s" % (r.name, have, want))
    pins += 1
import gevent, eventlet, sqlalchemy, aiosqlite
if problems:
    print("FAIL " + "; ".join(problems))
    sys.exit(1)
print("ok: greenlet %s (cgreenlet %s) from %s; %d pins; gevent %s, eventlet %s, SQLAlchemy %s, aiosqlite %s"
      % (greenlet.__version__, impl._cgreenlet_version, os.path.dirname(where), pins,
         gevent.__version__, eventlet.__version__, sqlalchemy.__version__,
         md.version("aiosqlite")))
EOF
  )
}

# ---------------------------------------------------------------- venvs
T0=$(date +%s)
echo "== interpreters: ${PYTHONS[*]}"
echo "== requirements: ${REQ#"$ROOT"/} (sha256 $(sha256sum "$REQ" | cut -c1-12)); cache: $CACHE ($(cache_count) files)"
# (a failed build fails the run; the venvs are made all the same, and an
# interpreter without any module built is left out)
fail=0
if ! build_modules "${PYTHONS[@]}"; then
  echo "   the module did not build for every interpreter (table above)"; fail=1
fi

[ -n "$LIST" ] && : >"$LIST"
declare -A SEEN=()
FIRST_VENV=
for py in "${PYTHONS[@]}"; do
  read -r xy full <<<"$(pyver "$py")"
  if [ -z "$xy" ]; then echo "== $py: cannot run it"; fail=1; continue; fi
  if [ -n "${SEEN[$xy]:-}" ]; then
    echo "== $py: $xy already has a venv (from ${SEEN[$xy]}); left out"
    continue
  fi
  SEEN[$xy]=$py
  venv=$ROOT/build/pypi-venv-$xy
  mod=$(module_dir "$py" "$full")
  log=$LOG_DIR/venv-$xy.log
  : >"$log"
  echo
  echo "== $xy: $py ($full) -> ${venv#"$ROOT"/}, module ${mod#"$ROOT"/}"
  if ! compgen -G "$mod/greenlet/_greenlet*.so" >/dev/null; then
    echo "   no module built in $mod"; fail=1; continue
  fi
  stamp="req=$(sha256sum "$REQ" | cut -d' ' -f1) python=$py $full module=$mod"
  state=kept
  if [ -x "$venv/bin/python" ] && [ -f "$venv/.cgreenlet-pypi-stamp" ] &&
     [ "$(cat "$venv/.cgreenlet-pypi-stamp")" = "$stamp" ]; then
    echo "   venv: kept (stamp matches)"
  else
    state=made
    rm -rf "$venv"
    if ! (cd / && env -u PYTHONPATH -u PYTHONHOME "$py" -m venv "$venv") >>"$log" 2>&1; then
      echo "   python -m venv failed:"; tail -5 "$log" | sed 's/^/   | /'; fail=1; continue
    fi
    if ! install_from_cache "$venv" "$log"; then fail=1; continue; fi
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # A plain path line: appended to sys.path, after site-packages (which
    # holds no greenlet) and after PYTHONPATH (so a test may put another
    # copy of the module first, as the upstream suite's run does).
    echo "$mod" >"$site/cgreenlet-module.pth"
    echo "   venv: made; cgreenlet-module.pth -> ${mod#"$ROOT"/}"
  fi
  if ! out=$(check_venv "$venv" "$mod" 2>&1); then
    echo "   check FAILED: $(tail -3 <<<"$out")"; rm -f "$venv/.cgreenlet-pypi-stamp"; fail=1; continue
  fi
  echo "   $out"
  echo "$stamp" >"$venv/.cgreenlet-pypi-stamp"
  [ -n "$FIRST_VENV" ] || FIRST_VENV=$venv
  [ -n "$LIST" ] && echo "$xy $full $py $venv $mod $state" >>"$LIST"
done

# ---------------------------------------------------------------- greenlet sdist
sdist=$CACHE/greenlet-$GREENLET_SDIST_VERSION.tar.gz
src=$ROOT/build/pypi-greenlet-$GREENLET_SDIST_VERSION
echo
echo "== greenlet $GREENLET_SDIST_VERSION sdist (its test suite) -> ${src#"$ROOT"/}"
sha_ok() { [ -f "$sdist" ] && [ "$(sha256sum "$sdist" | cut -d' ' -f1)" = "$GREENLET_SDIST_SHA256" ]; }
if sha_ok; then
  echo "   cache: $(basename "$sdist") present, sha256 ok, nothing downloaded"
elif [ "$OFFLINE" = 1 ] || [ -z "$FIRST_VENV" ]; then
  echo "   cache: $(basename "$sdist") missing or wrong and cannot download (offline or no venv)"; fail=1
else
  rm -f "$sdist"
  # --no-build-isolation: the venv's setuptools prepares the metadata
  # (nothing else is fetched); the sdist is not built or installed.
  if "$FIRST_VENV/bin/python" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
       -d "$CACHE" "greenlet==$GREENLET_SDIST_VERSION" >>"$LOG_DIR/sdist.log" 2>&1 && sha_ok; then
    echo "   downloaded $(basename "$sdist"), sha256 ok"
    downloaded_total=$((downloaded_total + 1))
  else
    echo "   download failed or sha256 differs (log: $LOG_DIR/sdist.log)"; rm -f "$sdist"; fail=1
  fi
fi
if sha_ok; then
  if [ "$(cat "$src/.cgreenlet-sha256" 2>/dev/null)" != "$GREENLET_SDIST_SHA256" ]; then
    rm -rf "$src" "$src.tmp" && mkdir -p "$src.tmp" &&
      tar -xzf "$sdist" -C "$src.tmp" --strip-components=1 &&
      echo "$GREENLET_SDIST_SHA256" >"$src.tmp/.cgreenlet-sha256" && mv "$src.tmp" "$src" ||
      { echo "   unpacking failed"; fail=1; }
    [ $fail -eq 0 ] && echo "   unpacked"
  else
    echo "   already unpacked"
  fi
fi

echo
echo "== pypi-env: $(( $(date +%s) - T0 ))s; downloaded $downloaded_total file(s); cache $CACHE: $(cache_count) files, $(du -sh "$CACHE" | cut -f1)"
exit $fail
