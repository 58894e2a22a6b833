#!/usr/bin/env bash
# test-pypi.sh - this greenlet module against today's greenlet and its
# clients from PyPI, pinned: the `pypi` stage of scripts/test.sh (make test-pypi).
#
# usage: scripts/test-pypi.sh [PYTHON...]
#
#   PYTHON...   interpreters (default as scripts/pypi-env.sh: CGREENLET_PYPI_PYTHONS,
#               else Debian's python3 and the newest ~/.pyenv CPython 3.N.x
#               for each N >= 10 but Debian's)
#
# Parts:
#   A. scripts/pypi-env.sh: the module built per interpreter, a venv each
#      (build/pypi-venv-X.Y) with scripts/pypi-requirements.txt installed
#      from the wheel cache outside the clone (~/.cache/cgreenlet-pypi, or
#      CGREENLET_PYPI_CACHE; downloaded once), and greenlet's sdist
#      unpacked into build/pypi-greenlet-VERSION.
#   B. greenlet 3.5.x's own test suite, per interpreter: its tests, unmodified,
#      next to a copy of this module's package in build/pypi-suite-X.Y/greenlet
#      (its two C test extensions built there against its own greenlet.h;
#      PyPI's greenlet is not built or installed), run by scripts/pypi-suite.py
#      (unittest discovery of greenlet.tests) with GREENLET_SKIP_FAILING_LEAKCHECKS=1.
#      The failures listed in python/tests/pypi_known_failures.txt for that
#      version are known (printed); any other failure fails the stage.
#   C. today's clients, per interpreter, by pytest in the venv:
#      python/tests/test_pypi_{gevent,eventlet,sqlalchemy}.py (gevent 26,
#      eventlet 0.41, SQLAlchemy 2.1 asyncio ORM on aiosqlite) and the
#      existing gevent/eventlet integration tests, now on those versions.
#      Every test checks that the `greenlet` it uses is this module.
#   D. once (in the first venv's pytest): python/tests/test_pypi_install.py,
#      `pip install` of this tree as the `greenlet` distribution in fresh
#      venvs (build/pypi-install/), with build isolation, from the cache:
#      before gevent (pip keeps it), after gevent (README's one-liner
#      replaces PyPI's greenlet), a requirements file, an sdist.  Its
#      seconds per step: build/test-pypi-logs/install/timings.txt.
# then one table, and last "pypi: N passed, N failed, N skipped".
#
# Environment: CGREENLET_PYPI_PYTHONS, CGREENLET_PYPI_CACHE, CGREENLET_PYPI_OFFLINE=1
# (no download), CGREENLET_PYPI_STRICT=1 (a listed failure that passes fails
# the stage too), CGREENLET_TEST_TIMEOUT (seconds per part, default 600),
# CGREENLET_TEST_LOGS (default build/test-pypi-logs).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

KNOWN=python/tests/pypi_known_failures.txt
PART_TIMEOUT=${CGREENLET_TEST_TIMEOUT:-600}
export CGREENLET_TEST_LOGS=${CGREENLET_TEST_LOGS:-$ROOT/build/test-pypi-logs}
LOG_DIR=$CGREENLET_TEST_LOGS
CLIENT_TESTS=(python/tests/test_pypi_gevent.py python/tests/test_pypi_eventlet.py
              python/tests/test_pypi_sqlalchemy.py
              python/tests/test_integration_gevent.py python/tests/test_integration_eventlet.py)

case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac

. "$ROOT/scripts/test-counts.sh"
mkdir -p "$LOG_DIR"
T0=$(date +%s)

# ---------------------------------------------------------------- A
echo "== A. venvs and caches (scripts/pypi-env.sh)"
LIST=$LOG_DIR/envs.txt
scripts/pypi-env.sh --list "$LIST" "$@"
env_rc=$?
SDIST_VERSION=$(sed -n 's/^GREENLET_SDIST_VERSION=//p' scripts/pypi-env.sh)
SDIST=$ROOT/build/pypi-greenlet-$SDIST_VERSION
T_ENV=$(( $(date +%s) - T0 ))

echo
echo "== known failures ($KNOWN): test id [versions]  # reason"
{ grep -v '^\s*#' "$KNOWN" | grep -v '^\s*$' || echo "(none)"; } | sed 's/^/   /'

# ---------------------------------------------------------------- B and C
declare -a R_XY=() R_FULL=() R_VENV=() R_SUITE=() R_CLIENTS=() R_SECS=() R_RESULT=()
any_fail=0
[ $env_rc -ne 0 ] && any_fail=1
TP=0; TF=0; TS=0; TK=0

run_one() {  # xy full python venv module state
  local xy=$1 full=$2 py=$3 venv=$4 mod=$5 state=$6 start logs tree rc
  start=$(date +%s)
  logs=$LOG_DIR/$xy
  rm -rf "$logs"; mkdir -p "$logs"
  echo
  echo "================================================================ $xy: $py ($full)"
  echo "== venv ${venv#"$ROOT"/} ($state), module ${mod#"$ROOT"/}"

  # -- B: greenlet's suite next to a copy of the module
  local s_p=0 s_f=1 s_k=0 s_s=0 s_stale=0 suite_txt="-" bad=0
  tree=$ROOT/build/pypi-suite-$xy
  echo
  echo "== B. greenlet $SDIST_VERSION's test suite -> ${tree#"$ROOT"/} (logs: ${logs#"$ROOT"/}/suite*.log)"
  if [ ! -d "$SDIST/src/greenlet/tests" ]; then
    echo "   no unpacked sdist in $SDIST"; bad=1; suite_txt="no sdist"
  elif ! (cd / && env -u PYTHONPATH "$venv/bin/python" "$ROOT/scripts/pypi-suite.py" build-ext \
            --sdist "$SDIST" --out "$ROOT/build/pypi-testext-$xy" \
            --tmp "$ROOT/build/pypi-testext-$xy-tmp") >"$logs/suite-build.log" 2>&1; then
    echo "   building the test extensions failed:"; tail -5 "$logs/suite-build.log" | sed 's/^/   | /'
    bad=1; suite_txt="ext build failed"
  else
    grep '^built ' "$logs/suite-build.log" | sed 's/^/   /'
    rm -rf "$tree" && mkdir -p "$tree" &&
      cp -a "$mod/greenlet" "$tree/greenlet" && rm -rf "$tree/greenlet/tests" &&
      find "$tree" -name __pycache__ -prune -exec rm -rf {} + &&
      cp -a "$SDIST/src/greenlet/tests" "$tree/greenlet/tests" &&
      cp -p "$ROOT"/build/pypi-testext-"$xy"/greenlet/tests/_test_extension*.so "$tree/greenlet/tests/"
    (cd "$tree" && env -u PYTHONHOME -u CGREENLET_ALLOW_STOCK -u GREENLET_SKIP_LEAKCHECKS \
       -u GREENLET_ONLY_FAILING_LEAKCHECKS PYTHONPATH="$tree" GREENLET_SKIP_FAILING_LEAKCHECKS=1 \
       timeout -s ABRT --kill-after=10 "$PART_TIMEOUT" \
       "$venv/bin/python" -X faulthandler "$ROOT/scripts/pypi-suite.py" run \
         --tree "$tree" --known "$ROOT/$KNOWN" --pyver "$xy") >"$logs/suite.log" 2>&1
    rc=$?
    [ $rc -eq 124 ] && echo "   TIMEOUT after ${PART_TIMEOUT}s (SIGABRT: stacks in the log)" | tee -a "$logs/suite.log"
    grep -E '^(== (greenlet|_test|leak)|FATAL)' "$logs/suite.log" | sed 's/^/   /'
    sed -n '/^== slowest tests/,$p' "$logs/suite.log" | grep -v '^PYPI-SUITE-COUNTS' | head -150 | sed 's/^/   /'
    grep -E '^(Ran |OK|FAILED)' "$logs/suite.log" | sed 's/^/   /'
    if [ $rc -ne 0 ] && [ $rc -ne 1 ]; then
      grep -E '(Fatal Python error|Segmentation fault)' "$logs/suite.log" | sort | uniq -c | head -5
    fi
    local counts
    counts=$(grep -E '^PYPI-SUITE-COUNTS ' "$logs/suite.log" | tail -1)
    if [ -n "$counts" ]; then
      read -r _ s_p s_f s_k s_s s_stale <<<"$counts"
    else   # crash or timeout
      s_p=$(grep -Ec '\.\.\. ok$' "$logs/suite.log")
      s_s=$(grep -Ec '\.\.\. (skipped|expected failure)' "$logs/suite.log")
      s_f=$(( $(grep -Ec '\.\.\. (FAIL|ERROR)$' "$logs/suite.log") + 1 ))
    fi
    [ $rc -ne 0 ] && [ "$s_f" -eq 0 ] && s_f=1
    [ $rc -ne 0 ] && bad=1
    suite_txt="$s_p/$s_f/$s_k/$s_s"
    [ "$s_stale" -gt 0 ] && suite_txt="$suite_txt ($s_stale stale)"
    echo "   suite: $s_p passed, $s_f new failures, $s_k known failures, $s_s skipped (rc=$rc)"
  fi

  # -- C: the clients
  local deselect=() id vers line
  while read -r line; do
    line=${line%%#*}
    read -r id vers <<<"$line"
    case "$id" in python/*) ;; *) continue ;; esac
    if [ -z "$vers" ] || [[ " $vers " == *" $xy "* ]]; then deselect+=(--deselect "$id"); fi
  done <"$KNOWN"
  echo
  echo "== C. clients: ${CLIENT_TESTS[*]#python/tests/} (log: ${logs#"$ROOT"/}/clients.log)"
  (cd "$ROOT" && env -u PYTHONPATH -u PYTHONHOME -u CGREENLET_ALLOW_STOCK \
     timeout -s ABRT --kill-after=10 "$PART_TIMEOUT" \
     "$venv/bin/python" -X faulthandler -m pytest "${CLIENT_TESTS[@]}" -q -rfEsxX \
       -p no:cacheprovider --durations=5 "${deselect[@]}") >"$logs/clients.log" 2>&1
  rc=$?
  [ $rc -eq 124 ] && echo "   TIMEOUT after ${PART_TIMEOUT}s" | tee -a "$logs/clients.log"
  awk '/slowest 5 durations/ { on = 1; next } on && /^[0-9.]+s / { print "   " $0; next } { on = 0 }' \
    "$logs/clients.log"
  grep -E '^(FAILED|ERROR|SKIPPED|XFAIL|XPASS) ' "$logs/clients.log" | cut -c1-240 | sed 's/^/   /'
  tail -1 "$logs/clients.log" | sed 's/^/   /'
  local c_p c_f c_s
  read -r c_p c_f c_s <<<"$(pytest_counts "$logs/clients.log" "$rc")"
  [ "$c_p" -eq 0 ] && bad=1
  [ $rc -ne 0 ] && bad=1

  TP=$((TP + s_p + c_p)); TF=$((TF + s_f + c_f)); TS=$((TS + s_s + c_s)); TK=$((TK + s_k))
  local result=ok
  if [ $bad -ne 0 ] || [ "$s_f" -ne 0 ] || [ "$c_f" -ne 0 ]; then result=FAIL; any_fail=1; fi
  R_XY+=("$xy"); R_FULL+=("$full"); R_VENV+=("$state"); R_SUITE+=("$suite_txt")
  R_CLIENTS+=("$c_p/$c_f/$c_s"); R_SECS+=($(( $(date +%s) - start ))); R_RESULT+=("$result")
}

if [ -s "$LIST" ]; then
  while read -r xy full py venv mod state; do
    run_one "$xy" "$full" "$py" "$venv" "$mod" "$state" </dev/null
  done <"$LIST"
else
  echo "test-pypi.sh: no venv is ready (scripts/pypi-env.sh failed)"; any_fail=1
fi

# ---------------------------------------------------------------- D
I_TXT=; I_SECS=0; I_RESULT=
if [ -s "$LIST" ]; then
  read -r _ _ _ I_VENV _ _ <"$LIST"
  echo
  echo "================================================================ install"
  echo "== D. pip install of this tree as \`greenlet\`, fresh venvs: python/tests/test_pypi_install.py"
  echo "   (pytest of ${I_VENV#"$ROOT"/}; log: ${LOG_DIR#"$ROOT"/}/install.log, pip's output in ${LOG_DIR#"$ROOT"/}/install/)"
  start=$(date +%s)
  rm -rf "$LOG_DIR/install"
  (cd "$ROOT" && env -u PYTHONPATH -u PYTHONHOME -u CGREENLET_ALLOW_STOCK CGREENLET_PYPI_INSTALL_TEST=1 \
     timeout -s ABRT --kill-after=10 "$PART_TIMEOUT" \
     "$I_VENV/bin/python" -X faulthandler -m pytest python/tests/test_pypi_install.py -q -rfEsxX \
       -p no:cacheprovider) >"$LOG_DIR/install.log" 2>&1
  rc=$?
  [ $rc -eq 124 ] && echo "   TIMEOUT after ${PART_TIMEOUT}s" | tee -a "$LOG_DIR/install.log"
  if [ -f "$LOG_DIR/install/timings.txt" ]; then
    echo "   seconds per venv (all its steps: main ones listed; install-* and one-liner build the module):"
    sed -n '/^$/q; p' "$LOG_DIR/install/timings.txt" | sed 's/^/   /'
  fi
  grep -E '^(FAILED|ERROR|SKIPPED|XFAIL|XPASS) ' "$LOG_DIR/install.log" | cut -c1-240 | sed 's/^/   /'
  tail -1 "$LOG_DIR/install.log" | sed 's/^/   /'
  read -r i_p i_f i_s <<<"$(pytest_counts "$LOG_DIR/install.log" "$rc")"
  I_SECS=$(( $(date +%s) - start ))
  I_TXT="$i_p/$i_f/$i_s"
  I_RESULT=ok
  if [ $rc -ne 0 ] || [ "$i_p" -eq 0 ] || [ "$i_f" -ne 0 ]; then I_RESULT=FAIL; any_fail=1; fi
  TP=$((TP + i_p)); TF=$((TF + i_f)); TS=$((TS + i_s))
fi

# ---------------------------------------------------------------- table
echo
echo "== pypi: greenlet $SDIST_VERSION's suite (passed/new failures/known failures/skipped) and"
echo "   the clients (pytest passed/failed/skipped), in venvs of pinned PyPI packages"
fmt="%-6s %-8s %-10s %-24s %-12s %5s  %s\n"
printf "$fmt" python version venv "suite p/new/known/s" "clients p/f/s" secs result
for i in "${!R_XY[@]}"; do
  printf "$fmt" "${R_XY[$i]}" "${R_FULL[$i]}" "${R_VENV[$i]}" "${R_SUITE[$i]}" \
    "${R_CLIENTS[$i]}" "${R_SECS[$i]}" "${R_RESULT[$i]}"
done
[ -n "$I_RESULT" ] && printf "$fmt" install - fresh - "$I_TXT" "$I_SECS" "$I_RESULT"
[ $env_rc -ne 0 ] && echo "(scripts/pypi-env.sh failed: see above)"
echo "total: $(( $(date +%s) - T0 ))s (venvs and cache: ${T_ENV}s); $TK known failures of greenlet $SDIST_VERSION's suite (not counted below); logs: ${LOG_DIR#"$ROOT"/}"
echo "pypi: $TP passed, $TF failed, $TS skipped"
exit $any_fail
