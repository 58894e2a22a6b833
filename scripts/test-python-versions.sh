#!/usr/bin/env bash
# test-python-versions.sh - build and test the greenlet module on every CPython.
#
# usage: scripts/test-python-versions.sh [--build-only] [--no-debian] [PYTHON...]
#
#   PYTHON...     interpreters to use (default: CGREENLET_PYTHONS, else
#                 /usr/bin/python3 and every $PYENV_ROOT/versions/3.N*/bin/python3
#                 with N >= 9; PYENV_ROOT defaults to ~/.pyenv)
#   --build-only  build (and import) the module for each, run no test; this
#                 is how to get a build for bench/bench_python.py --python
#   --no-debian   leave /usr/bin/python3 out of the default list (where
#                 scripts/test-python.sh already tests it, as in `make test`)
#
# For each interpreter, isolated from the others:
#   1. build with setup.py (as `make python` does) into
#      build/python-X.Y.Z-<debian|pyenv|other>; an interpreter without
#      setuptools (pyenv's 3.12+) gets Debian's python3-setuptools, staged
#      alone (pure Python) into build/pyversions-site/setuptools
#   2. import it: greenlet must come from that directory and be cgreenlet's
#   3. the upstream greenlet 2.0.2 suite, Debian's copy, once, with
#      GREENLET_SKIP_LEAKCHECKS=1 (CGREENLET_PY_LEAKCHECKS=1: with
#      GREENLET_SKIP_FAILING_LEAKCHECKS=1 instead), by scripts/upstream-suite.py:
#      tests needing the compiled helpers _test_extension/_test_extension_cpp
#      (cpython-311 only) or psutil are skipped where those cannot be
#      imported, with the reason printed
#   4. python/tests (pytest).  An interpreter without pytest (pyenv's) gets
#      Debian's pytest and its pure-Python dependencies, staged into
#      build/pyversions-site/pytest, never the whole dist-packages (whose
#      compiled modules are for Debian's 3.11); objgraph, which the upstream
#      suite imports, likewise.  gevent, eventlet and psutil exist for
#      Debian's python3 only: their tests skip elsewhere (reasons printed).
# then prints one table and, last, "python-versions: N passed, N failed, N skipped".
#
# Versions listed in scripts/python-versions-supported (or CGREENLET_PY_SUPPORTED,
# e.g. "3.11 3.12") must build and pass: any failure there makes the exit
# status non-zero.  Other versions are built and tested the same way but shown
# as "not supported yet" (with the build's first error line) and never fail
# the run.  Tests listed in python/tests/known_failures.txt are left out
# (upstream ones shown as skipped), as in scripts/test-python.sh --ci.
#
# Environment: CGREENLET_PYTHONS, CGREENLET_PY_SUPPORTED, CGREENLET_PY_LEAKCHECKS,
# CGREENLET_TEST_TIMEOUT (seconds per part, default 900), CGREENLET_TEST_LOGS
# (default build/test-python-versions-logs).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

BUILD_ONLY=0
NO_DEBIAN=0
ARGS=()
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) BUILD_ONLY=1; shift ;;
    --no-debian) NO_DEBIAN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "test-python-versions.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
DIST=/usr/lib/python3/dist-packages
DEBIAN_TESTS=$DIST/greenlet/tests
SITE=$ROOT/build/pyversions-site
LOG_DIR=${CGREENLET_TEST_LOGS:-$ROOT/build/test-python-versions-logs}
PART_TIMEOUT=${CGREENLET_TEST_TIMEOUT:-900}
KNOWN=python/tests/known_failures.txt
SUPPORTED_FILE=scripts/python-versions-supported
if [ -n "${CGREENLET_PY_SUPPORTED+x}" ]; then
  SUPPORTED=$CGREENLET_PY_SUPPORTED
  SUPPORTED_FROM="CGREENLET_PY_SUPPORTED"
else
  SUPPORTED=$(sed -e 's/#.*//' "$SUPPORTED_FILE" | tr -s ' \n\t' ' ')
  SUPPORTED_FROM=$SUPPORTED_FILE
fi
SUPPORTED=$(echo $SUPPORTED)
if [ "${CGREENLET_PY_LEAKCHECKS:-0}" = 1 ]; then
  LEAK_VAR=GREENLET_SKIP_FAILING_LEAKCHECKS
else
  LEAK_VAR=GREENLET_SKIP_LEAKCHECKS
fi

scripts/deps.sh python pyversions || exit 1
[ -d "$DEBIAN_TESTS" ] || { echo "test-python-versions.sh: $DEBIAN_TESTS missing (python3-greenlet)" >&2; exit 1; }
mkdir -p "$ROOT/build" "$LOG_DIR"
# One run at a time in this tree: the runs share build/python-*-* and the
# staged packages.
exec 9>"$ROOT/build/.test-python-versions.lock"
if ! flock -n 9; then
  echo "== another scripts/test-python-versions.sh runs in this tree; waiting for it"
  flock 9
fi

# ---------------------------------------------------------------- interpreters
if [ ${#ARGS[@]} -eq 0 ] && [ -n "${CGREENLET_PYTHONS:-}" ]; then
  read -r -a ARGS <<<"$CGREENLET_PYTHONS"
fi
PYTHONS=()
if [ ${#ARGS[@]} -gt 0 ]; then
  PYTHONS=("${ARGS[@]}")
else
  [ $NO_DEBIAN -eq 0 ] && [ -x /usr/bin/python3 ] && PYTHONS+=(/usr/bin/python3)
  while read -r dir; do
    [ -n "$dir" ] || continue
    minor=$(sed -E 's/^3\.([0-9]+).*/\1/' <<<"$(basename "$dir")")
    [[ "$minor" =~ ^[0-9]+$ ]] && [ "$minor" -ge 9 ] && [ -x "$dir/bin/python3" ] &&
      PYTHONS+=("$dir/bin/python3")
  done < <(compgen -G "$PYENV_ROOT/versions/3.*" | sort -V)
fi

# ---------------------------------------------------------------- staging
# Copies of what Debian's packages put in dist-packages, package by package
# (dpkg -L), so that only these are importable; *.pth files are left out.
# Done again only when the packages' versions change (stamp file).
stage() {  # dir debian-package...
  local dir=$1; shift
  local stamp pkg entry
  stamp=$(dpkg-query -W -f='${Package}=${Version}\n' "$@")
  [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ] && return 0
  rm -rf "$dir"; mkdir -p "$dir"
  for pkg in "$@"; do
    while read -r entry; do
      case "$entry" in *.pth) continue ;; esac
      cp -r "$entry" "$dir/"
    done < <(dpkg -L "$pkg" | grep -E "^$DIST/[^/]+$")
  done
  find "$dir" -name __pycache__ -prune -exec rm -rf {} +
  if [ -n "$(find "$dir" -name '*.so' -print -quit)" ]; then
    echo "test-python-versions.sh: $dir holds compiled modules; refusing" >&2
    exit 1
  fi
  echo "$stamp" >"$dir/.stamp"
}
stage "$SITE/pytest" python3-pytest python3-pluggy python3-iniconfig python3-packaging \
  python3-attr python3-exceptiongroup python3-tomli
stage "$SITE/objgraph" python3-objgraph
stage "$SITE/setuptools" python3-setuptools python3-pkg-resources

# ---------------------------------------------------------------- helpers
ver_in() {  # X.Y list
  local v
  for v in $2; do [ "$v" = "$1" ] && return 0; done
  return 1
}

has_module() {  # python module: importable without any PYTHONPATH?
  (cd / && env -u PYTHONPATH -u PYTHONHOME "$1" -c "import $2" >/dev/null 2>&1)
}

first_error() {  # build log -> its first error line, shortened
  local line
  line=$(grep -m1 -E ': (fatal )?error: ' "$1" || grep -m1 -E '^error: |Error: ' "$1" ||
         grep -v '^\s*$' "$1" | tail -1)
  line=${line#"$ROOT"/}
  echo "${line:0:160}"
}

# pytest -q's closing line ("6 failed, 106 passed, 2 skipped in 56.22s") ->
# "passed failed skipped" (xfailed counts as skipped, errors as failed).
# Without one (crash, timeout) the progress characters are counted, plus one
# failure for the crash.
pytest_counts() {  # log
  local last p f e x s
  last=$(grep -E '^[0-9]+ (passed|failed|skipped|errors?|xfailed|xpassed|deselected|warnings?)\b.* in [0-9.]+s' "$1" | tail -1)
  if [ -z "$last" ]; then
    local prog
    prog=$(sed -e 's/Fatal Python error.*//' "$1" | grep -E '^[.FEsxX]+( +\[ *[0-9]+%\])?$' |
           sed -E 's/ +\[.*//' | tr -d '\n')
    p=$(tr -cd '.' <<<"$prog" | wc -c); f=$(tr -cd 'FE' <<<"$prog" | wc -c)
    s=$(tr -cd 'sxX' <<<"$prog" | wc -c)
    echo "$p $((f + 1)) $s"
    return
  fi
  p=$(grep -Eo '[0-9]+ passed' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
  f=$(grep -Eo '[0-9]+ failed' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
  e=$(grep -Eo '[0-9]+ errors?' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
  x=$(grep -Eo '[0-9]+ xfailed' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
  s=$(grep -Eo '[0-9]+ skipped' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
  echo "$p $((f + e)) $((s + x))"
}

# Known failures (python/tests/known_failures.txt), as in test-python.sh --ci.
KNOWN_IDS=$(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$KNOWN" | grep -v '^$' || true)
PYTEST_DESELECT=()
for id in $KNOWN_IDS; do
  case "$id" in python/*) PYTEST_DESELECT+=(--deselect "$id") ;; esac
done

# ---------------------------------------------------------------- one interpreter
declare -a R_PY=() R_VER=() R_BUILD=() R_PYTEST=() R_UP=() R_SECS=() R_RESULT=()
any_fail=0
TP=0; TF=0; TS=0        # tests: passed, failed (supported versions), skipped
UNSUP_FAILED=0          # failed tests of versions not supported yet

row() {  # python version build pytest upstream secs result fatal
  R_PY+=("$1"); R_VER+=("$2"); R_BUILD+=("$3"); R_PYTEST+=("$4"); R_UP+=("$5")
  R_SECS+=("$6"); R_RESULT+=("$7")
  [ "$8" -eq 1 ] && any_fail=1
  return 0
}

test_one() {
  local py=$1 start info ver full impl tag B logs supported extra st_path msg rc
  start=$(date +%s)
  echo
  echo "================================================================ $py"
  if ! info=$(cd / && env -u PYTHONPATH -u PYTHONHOME "$py" -c \
      'import sys, platform; sys.stdout.write("%s %d.%d %s\n" % ((platform.python_implementation(),) + tuple(sys.version_info[:2]) + (platform.python_version(),)))' 2>&1); then
    echo "cannot run $py: $info"
    row "$py" "?" "-" "-" "-" 0 "FAIL: cannot run it: ${info:0:100}" 1
    return
  fi
  read -r impl ver full <<<"$info"
  # (an older CPython 3 named explicitly is tried: its build must fail cleanly)
  if [ "$impl" != CPython ] || [ "${ver%%.*}" -ne 3 ]; then
    echo "skipped: $impl $full (only CPython 3)"
    row "$py" "$full" "-" "-" "-" 0 "skipped: $impl $full, not CPython 3" 0
    return
  fi
  case "$py" in
    /usr/bin/python3*) tag=debian ;;
    "$PYENV_ROOT"/versions/*) tag=pyenv ;;
    *) tag=other ;;
  esac
  B=$ROOT/build/python-$full-$tag
  logs=$LOG_DIR/python-$full-$tag
  rm -rf "$logs"; mkdir -p "$logs"
  supported=0
  ver_in "$ver" "$SUPPORTED" && supported=1
  echo "== CPython $full ($tag), $([ $supported -eq 1 ] && echo "supported" || echo "not supported yet") per $SUPPORTED_FROM"

  # -- build
  st_path=
  if has_module "$py" setuptools; then
    echo "== setuptools: the interpreter's own"
  else
    st_path=$SITE/setuptools
    echo "== setuptools: Debian's python3-setuptools staged in ${st_path#"$ROOT"/}"
  fi
  echo "== build -> ${B#"$ROOT"/} (log: ${logs#"$ROOT"/}/build.log)"
  local benv=(env -u PYTHONHOME -u PYTHONPATH)
  [ -n "$st_path" ] && benv+=(PYTHONPATH="$st_path")
  (cd "$ROOT" && "${benv[@]}" timeout "$PART_TIMEOUT" \
     "$py" setup.py -q build --build-base "$B-tmp" --build-lib "$B") >"$logs/build.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] || ! compgen -G "$B/greenlet/_greenlet*.so" >/dev/null; then
    msg=$(first_error "$logs/build.log")
    echo "   build failed (rc=$rc): $msg"
    grep -E ': (fatal )?error: ' "$logs/build.log" | head -3 | sed 's/^/   | /'
    if [ $supported -eq 1 ]; then
      row "$py" "$full" "FAILED" "-" "-" $(( $(date +%s) - start )) "FAIL: build failed: $msg" 1
    else
      row "$py" "$full" "failed" "-" "-" $(( $(date +%s) - start )) "not supported yet: build failed: $msg" 0
    fi
    return
  fi
  echo "   built: $(cd "$B/greenlet" && ls _greenlet*.so)"

  # -- import: from B, and cgreenlet's
  local out
  out=$(cd "$ROOT" && env -u PYTHONHOME -u CGREENLET_ALLOW_STOCK PYTHONPATH="$B" "$py" -c '
import os, greenlet, greenlet._greenlet as g
print(os.path.realpath(greenlet.__file__), g._cgreenlet_version, greenlet.__version__)' 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || [[ "$out" != "$(cd "$B" && pwd -P)/"* ]]; then
    if [ $rc -gt 128 ]; then
      msg="import CRASHED (signal $((rc - 128))): $(tail -1 <<<"$out")"
    else
      msg="import failed (rc=$rc): $(tail -1 <<<"$out")"
    fi
    echo "   $msg"
    echo "$out" | tail -5 | sed 's/^/   | /'
    if [ $supported -eq 1 ]; then
      row "$py" "$full" "ok" "-" "-" $(( $(date +%s) - start )) "FAIL: ${msg:0:160}" 1
    else
      row "$py" "$full" "ok" "-" "-" $(( $(date +%s) - start )) "not supported yet: ${msg:0:140}" 0
    fi
    return
  fi
  echo "== imports: $out"
  if [ $BUILD_ONLY -eq 1 ]; then
    row "$py" "$full" "ok" "-" "-" $(( $(date +%s) - start )) "built: ${B#"$ROOT"/}" 0
    return
  fi

  # -- what the tests need that the interpreter lacks
  extra=
  if has_module "$py" pytest; then
    echo "== pytest: the interpreter's own"
  else
    extra=$SITE/pytest
    echo "== pytest: Debian's python3-pytest and dependencies staged in ${extra#"$ROOT"/}"
  fi
  if ! has_module "$py" objgraph; then
    extra=${extra:+$extra:}$SITE/objgraph
    echo "== objgraph (upstream's leakcheck.py imports it): Debian's, staged in build/pyversions-site/objgraph"
  fi
  local pp="$B${extra:+:$extra}"
  # upstream's test_version runs `python setup.py --version` (ours): it needs
  # setuptools too
  local up_pp="$pp${st_path:+:$st_path}"

  # -- upstream suite
  local up_p=0 up_f=0 up_s=0 up_rc counts secs0
  rm -rf "$B/greenlet/tests"; mkdir -p "$B/greenlet/tests"
  cp -p "$DEBIAN_TESTS"/* "$B/greenlet/tests/" 2>/dev/null
  rm -rf "$B/greenlet/tests/__pycache__"
  echo
  echo "== upstream greenlet 2.0.2 suite ($DEBIAN_TESTS, copied), $LEAK_VAR=1 (log: ${logs#"$ROOT"/}/upstream.log)"
  secs0=$(date +%s)
  (cd "$B" && env -u PYTHONHOME -u CGREENLET_ALLOW_STOCK -u GREENLET_SKIP_LEAKCHECKS \
     -u GREENLET_SKIP_FAILING_LEAKCHECKS -u GREENLET_ONLY_FAILING_LEAKCHECKS \
     "$LEAK_VAR=1" PYTHONPATH="$up_pp" KNOWN_IDS="$KNOWN_IDS" \
     timeout -s ABRT --kill-after=10 "$PART_TIMEOUT" \
     "$py" -X faulthandler "$ROOT/scripts/upstream-suite.py" --expect-dir "$B") \
    >"$logs/upstream.log" 2>&1
  up_rc=$?
  [ $up_rc -eq 124 ] && echo "   TIMEOUT after ${PART_TIMEOUT}s (SIGABRT: stacks in the log)" | tee -a "$logs/upstream.log"
  grep -E '^(== (greenlet|leak|missing|SKIP|known)|FATAL)' "$logs/upstream.log" | cut -c1-300
  grep -E '(\.\.\. (FAIL|ERROR)$|^(FAIL|ERROR):)' "$logs/upstream.log" | head -40
  if [ $up_rc -ne 0 ]; then
    grep -E '(Fatal Python error|Segmentation fault|Traceback \(most recent)' "$logs/upstream.log" |
      sort | uniq -c | head -20
  fi
  grep -E '^(Ran |OK|FAILED|== slowest)' "$logs/upstream.log" | cut -c1-300
  counts=$(grep -E '^UPSTREAM-COUNTS ' "$logs/upstream.log" | tail -1)
  if [ -n "$counts" ]; then
    read -r _ up_p up_f up_s <<<"$counts"
  else   # crash or timeout: count the verbose lines
    up_p=$(grep -Ec '\.\.\. ok$' "$logs/upstream.log")
    up_s=$(grep -Ec '\.\.\. (skipped|expected failure)' "$logs/upstream.log")
    up_f=$(( $(grep -Ec '\.\.\. (FAIL|ERROR)$' "$logs/upstream.log") + 1 ))
  fi
  [ $up_rc -ne 0 ] && [ "$up_f" -eq 0 ] && up_f=1
  echo "   upstream: $up_p passed, $up_f failed, $up_s skipped in $(( $(date +%s) - secs0 ))s (rc=$up_rc)"

  # -- python/tests
  local pt_p pt_f pt_s pt_rc
  echo
  echo "== python/tests (pytest) (log: ${logs#"$ROOT"/}/pytest.log)"
  secs0=$(date +%s)
  (cd "$ROOT" && env -u PYTHONHOME -u CGREENLET_ALLOW_STOCK PYTHONPATH="$pp" \
     timeout -s ABRT --kill-after=10 "$PART_TIMEOUT" \
     "$py" -X faulthandler -m pytest python/tests -q -rfEsxX -p no:cacheprovider --durations=5 \
       -W "ignore::DeprecationWarning:_pytest.assertion.rewrite" \
       "${PYTEST_DESELECT[@]}") 2>&1 | tee "$logs/pytest.log"
  pt_rc=${PIPESTATUS[0]}
  [ $pt_rc -eq 124 ] && echo "   TIMEOUT after ${PART_TIMEOUT}s" | tee -a "$logs/pytest.log"
  read -r pt_p pt_f pt_s < <(pytest_counts "$logs/pytest.log")
  [ $pt_rc -ne 0 ] && [ "$pt_f" -eq 0 ] && pt_f=1
  echo "   pytest: $pt_p passed, $pt_f failed, $pt_s skipped in $(( $(date +%s) - secs0 ))s (rc=$pt_rc)"
  local crash=
  if [ $up_rc -eq 124 ]; then crash="upstream TIMEOUT"
  elif [ $up_rc -gt 128 ]; then crash="upstream CRASHED ($(kill -l $((up_rc - 128)) 2>/dev/null || echo "signal $((up_rc - 128))"))"
  fi
  if [ $pt_rc -eq 124 ]; then crash="${crash:+$crash, }pytest TIMEOUT"
  elif [ $pt_rc -gt 128 ]; then crash="${crash:+$crash, }pytest CRASHED ($(kill -l $((pt_rc - 128)) 2>/dev/null || echo "signal $((pt_rc - 128))"))"
  fi

  # -- verdict
  local bad=0 result
  if [ $up_rc -ne 0 ] || [ "$up_f" -ne 0 ] || [ "$up_p" -eq 0 ] ||
     [ $pt_rc -ne 0 ] || [ "$pt_f" -ne 0 ] || [ "$pt_p" -eq 0 ]; then
    bad=1
  fi
  TP=$((TP + up_p + pt_p)); TS=$((TS + up_s + pt_s))
  if [ $supported -eq 1 ]; then
    TF=$((TF + up_f + pt_f))
    result=$([ $bad -eq 0 ] && echo "ok" || echo "FAIL${crash:+: $crash}")
  else
    UNSUP_FAILED=$((UNSUP_FAILED + up_f + pt_f))
    if [ $bad -eq 0 ]; then
      result="ok, but not supported yet: add $ver to $SUPPORTED_FILE"
    else
      result="not supported yet: tests failed${crash:+ ($crash)} (not fatal)"
    fi
  fi
  row "$py" "$full" "ok" "$pt_p/$pt_f/$pt_s" "$up_p/$up_f/$up_s" $(( $(date +%s) - start )) \
    "$result" $((bad && supported))
}

T0=$(date +%s)
echo "== interpreters: ${PYTHONS[*]:-(none)}"
echo "== supported versions ($SUPPORTED_FROM): ${SUPPORTED:-(none)}"
if [ -n "$KNOWN_IDS" ]; then
  echo "== leaving out the known failures of $KNOWN:"
  sed 's/^/   /' <<<"$KNOWN_IDS"
fi
for py in "${PYTHONS[@]}"; do
  test_one "$py"
done
TOTAL=$(( $(date +%s) - T0 ))

# ---------------------------------------------------------------- table
echo
echo "== python versions: build, python/tests (pytest) and upstream suite (passed/failed/skipped)"
w=11
for p in "${R_PY[@]}"; do [ ${#p} -gt $w ] && w=${#p}; done
fmt="%-${w}s  %-8s  %-6s  %-12s  %-14s  %5s  %s\n"
printf "$fmt" interpreter version build "pytest p/f/s" "upstream p/f/s" secs result
for i in "${!R_PY[@]}"; do
  printf "$fmt" "${R_PY[$i]}" "${R_VER[$i]}" "${R_BUILD[$i]}" "${R_PYTEST[$i]}" \
    "${R_UP[$i]}" "${R_SECS[$i]}" "${R_RESULT[$i]}"
done
for v in $SUPPORTED; do
  found=0
  for i in "${!R_VER[@]}"; do [[ "${R_VER[$i]}" == "$v".* ]] && found=1; done
  [ $found -eq 1 ] || echo "WARNING: supported version $v: no interpreter found, not tested"
done
echo "total: ${TOTAL}s; logs: ${LOG_DIR#"$ROOT"/}; leak checks: $LEAK_VAR=1"
[ $UNSUP_FAILED -gt 0 ] && echo "(versions not supported yet: $UNSUP_FAILED failed tests, not counted below)"
if [ $BUILD_ONLY -eq 0 ]; then
  echo "python-versions: $TP passed, $TF failed, $TS skipped"
fi
exit $any_fail
