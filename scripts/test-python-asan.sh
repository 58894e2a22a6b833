#!/usr/bin/env bash
# test-python-asan.sh - the greenlet module under AddressSanitizer + UBSan.
#
# usage: scripts/test-python-asan.sh [--python PY] [--build-dir DIR] [--no-build] [--all]
#
#   --python PY      interpreter (default /usr/bin/python3, Debian's; it is
#                    not ASan-built: the runtime comes in by LD_PRELOAD)
#   --build-dir DIR  where the ASan build of the module goes
#                    (default build/python-X.Y-asan)
#   --no-build       test what DIR holds, do not (re)build it
#   --all            also run the ids listed in python/tests/known_failures.txt
#                    and python/tests/asan_known_failures.txt (left out and
#                    printed by default, as the CI stage wants)
#
# Builds the module, libcgreenlet's sources included (setup.py), with
#   -fsanitize=address,undefined -fno-sanitize-recover=all
#   -fno-omit-frame-pointer -g
# (given to setup.py as CFLAGS/LDFLAGS, which setuptools appends; the normal
# build is untouched), checks that the core's fiber-switch annotations
# (__sanitizer_start/finish_switch_fiber, src/sanitizer.h) are compiled in,
# then runs
#   1. Debian's upstream greenlet 2.0.2 suite, GREENLET_SKIP_LEAKCHECKS=1
#      (the compiled _test_extension*.so tests included)
#   2. python/tests (pytest)
#   3. each test of python/tests/asan_options.txt alone, with the ASan
#      options given there added (and left out of parts 1 and 2)
# with the ASan runtime preloaded into the stock interpreter.  Every process
# (children included) writes sanitizer reports to files in the log directory
# (a pytest test's children into a directory of the test's own, see
# scripts/asan_pytest_plugin.py); any report, any sanitizer warning in the
# output, or any failed test fails the run, except the report of a child that
# a test marked xfail expects to crash (shown, not counted).  A part whose
# resident memory passes CGREENLET_ASAN_RSS_MB (default 6144) or that runs
# longer than CGREENLET_TEST_TIMEOUT seconds (default 900) is stopped with
# SIGABRT (faulthandler prints the stacks).  Logs: build/test-python-asan-logs
# (or CGREENLET_TEST_LOGS).  PYTHONMALLOC=malloc in the environment makes
# CPython's objects ASan heap blocks (the module's use of a freed object is
# then reported with where it was freed), at two to five times the run time.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

PYTHON=/usr/bin/python3
BUILD_DIR=""
DO_BUILD=1
ALL=0
KNOWN_FILES=(python/tests/known_failures.txt python/tests/asan_known_failures.txt)
# Tests that run in parts of their own with ASan options of their own
# (id, options, '#' and why): left out of parts 1 and 2, run in part 3.
TUNED_FILE=python/tests/asan_options.txt
PART_TIMEOUT=${CGREENLET_TEST_TIMEOUT:-900}
RSS_LIMIT_MB=${CGREENLET_ASAN_RSS_MB:-6144}
DEBIAN_TESTS=/usr/lib/python3/dist-packages/greenlet/tests
SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"

USAGE_END=38
. "$ROOT/scripts/test-args.sh"

while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) DO_BUILD=0; shift ;;
    --all) ALL=1; shift ;;
    *) common_arg "$@"; shift "$ARG_SHIFT" ;;
  esac
done

scripts/deps.sh python

python_version
[ -d "$DEBIAN_TESTS" ] || { echo "test-python-asan.sh: $DEBIAN_TESTS missing (python3-greenlet)" >&2; exit 1; }
BUILD_DIR=${BUILD_DIR:-build/python-$PYVER-asan}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac

LOG_DIR=${CGREENLET_TEST_LOGS:-$ROOT/build/test-python-asan-logs}
SAN_DIR=$LOG_DIR/reports        # asan.<pid> / ubsan.<pid>, one per process
mkdir -p "$LOG_DIR"
rm -rf "$SAN_DIR"
mkdir -p "$SAN_DIR"

# ---------------------------------------------------------------- build
# The compiler setuptools uses (CC if set, else the interpreter's), whose
# sanitizer runtimes are preloaded below.
CC_CMD=${CC:-$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("CC"))')}
CC_BIN=${CC_CMD%% *}
if [ "$DO_BUILD" -eq 1 ]; then
  echo "== building the module with $SANFLAGS into $BUILD_DIR"
  start=$(date +%s)
  # --force: setup.py's `depends` does not list every header.
  CFLAGS="${CFLAGS:+$CFLAGS }$SANFLAGS" LDFLAGS="${LDFLAGS:+$LDFLAGS }$SANFLAGS" \
    "$PYTHON" setup.py -q build --force --build-base "$BUILD_DIR-tmp" \
      --build-lib "$BUILD_DIR" 2>&1 | { grep -v 'byte-compiling is disabled' || true; }
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "test-python-asan.sh: build failed" >&2; exit 1; }
  echo "   built in $(( $(date +%s) - start ))s"
fi
SO=$(compgen -G "$BUILD_DIR/greenlet/_greenlet*.so" | head -1 || true)
[ -n "$SO" ] || { echo "test-python-asan.sh: no module in $BUILD_DIR/greenlet (_greenlet*.so)" >&2; exit 1; }
BUILD_DIR=$(cd "$BUILD_DIR" && pwd -P)

# The build must really be instrumented, fiber switches annotated included.
syms=$(nm -D "$SO")
for sym in __asan_init __ubsan_handle_ __sanitizer_start_switch_fiber __sanitizer_finish_switch_fiber; do
  grep -q " U $sym" <<<"$syms" || {
    echo "FATAL: $SO does not use $sym: not an ASan/UBSan build with the core's fiber annotations" >&2
    exit 1
  }
done
echo "== $SO: ASan + UBSan, fiber switches annotated (__sanitizer_start/finish_switch_fiber)"

# ---------------------------------------------------------------- environment
LIBASAN=$("$CC_BIN" -print-file-name=libasan.so)
LIBSTDCXX=$("$CC_BIN" -print-file-name=libstdc++.so)
for lib in "$LIBASAN" "$LIBSTDCXX"; do
  case "$lib" in /*) [ -e "$lib" ] && continue ;; esac
  echo "test-python-asan.sh: $CC_BIN has no $lib" >&2; exit 1
done
# libasan must come first.  libstdc++ is preloaded too: python3 does not
# link it, and ASan resolves the real __cxa_throw once, at start; without it
# the C++ test extension's throw inside a greenlet (test_cpp) dies in
# "CHECK failed: ... real___cxa_throw != 0".
export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
# detect_leaks=0: CPython is not leak-clean (and the leak checks are off).
# detect_stack_use_after_return=1: frames of the module and the core live in
# ASan's fake stacks, which the core saves and restores on every switch
# (__sanitizer_start_switch_fiber's fake_stack_save); this checks that too.
# abort_on_error=1: a report ends in SIGABRT, so faulthandler adds the Python
# stack to the test log.  log_path: reports of every process, children too,
# land in $SAN_DIR even when a test swallows the child's stderr.
# CGREENLET_ASAN_OPTIONS=... adds options (later ones win).
ASAN_BASE="detect_leaks=0:detect_stack_use_after_return=1:abort_on_error=1"
export ASAN_OPTIONS="$ASAN_BASE:log_path=$SAN_DIR/asan${CGREENLET_ASAN_OPTIONS:+:$CGREENLET_ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$SAN_DIR/ubsan"
export GREENLET_SKIP_LEAKCHECKS=1
unset GREENLET_SKIP_FAILING_LEAKCHECKS GREENLET_ONLY_FAILING_LEAKCHECKS CGREENLET_ALLOW_STOCK
export PYTHONPATH="$BUILD_DIR${PYTHONPATH:+:$PYTHONPATH}"
echo "== LD_PRELOAD=$LD_PRELOAD"
echo "== ASAN_OPTIONS=$ASAN_OPTIONS"
echo "== UBSAN_OPTIONS=$UBSAN_OPTIONS"

# The upstream tests, unmodified, as the subpackage greenlet.tests of ours.
rm -rf "$BUILD_DIR/greenlet/tests"
mkdir -p "$BUILD_DIR/greenlet/tests"
cp -p "$DEBIAN_TESTS"/* "$BUILD_DIR/greenlet/tests/" 2>/dev/null || true
rm -rf "$BUILD_DIR/greenlet/tests/__pycache__"

info=$(cd "$BUILD_DIR" && "$PYTHON" -c '
import greenlet, greenlet.tests, os
print(os.path.realpath(greenlet._greenlet.__file__))
print(os.path.realpath(greenlet.tests.__file__))
print(getattr(greenlet._greenlet, "_cgreenlet_version", None))
g = greenlet.greenlet(lambda x: greenlet.getcurrent().parent.switch(x + 1))
assert g.switch(41) == 42') || { echo "FATAL: cannot import and switch the ASan build:" >&2; echo "$info" >&2; exit 1; }
GL_SO=$(sed -n 1p <<<"$info")
GL_TESTS=$(sed -n 2p <<<"$info")
GL_CGREENLET=$(sed -n 3p <<<"$info")
echo "== greenlet._greenlet = $GL_SO (_cgreenlet_version $GL_CGREENLET)"
case "$GL_SO" in "$BUILD_DIR"/*) ;; *) echo "FATAL: imported $GL_SO, not the build in $BUILD_DIR" >&2; exit 1 ;; esac
case "$GL_TESTS" in "$BUILD_DIR"/*) ;; *) echo "FATAL: greenlet.tests from $GL_TESTS" >&2; exit 1 ;; esac
[ "$GL_CGREENLET" != None ] || { echo "FATAL: $GL_SO is not cgreenlet's module" >&2; exit 1; }

# Does ASan follow the switches?  __asan_handle_no_return (what a C++ throw
# or longjmp calls) clears the current stack between the stack pointer and
# the top ASan believes the stack has; on a greenlet's stack ASan knows
# nothing of, that span reaches the thread's stack, and ASan prints "ASan is
# ignoring requested __asan_handle_no_return ... False positive error reports
# may follow" instead.  Called here in two nested greenlets and in main,
# with reports on stderr: any output but the last line is a failure.
canary=$(cd "$BUILD_DIR" && ASAN_OPTIONS="$ASAN_BASE${CGREENLET_ASAN_OPTIONS:+:$CGREENLET_ASAN_OPTIONS}" \
  "$PYTHON" -c '
import ctypes, greenlet
no_return = ctypes.CDLL(None).__asan_handle_no_return
def inner():
    no_return()
    greenlet.getcurrent().parent.switch("parked")
def outer():
    no_return()
    assert greenlet.greenlet(inner).switch() == "parked"
    no_return()
    return "done"
assert greenlet.greenlet(outer).switch() == "done"
no_return()
print("fiber-switch-canary-ok")' 2>&1) || true
if [ "$canary" != fiber-switch-canary-ok ]; then
  echo "FATAL: ASan does not follow the greenlet switches of this build:" >&2
  echo "$canary" >&2
  exit 1
fi
echo "== ASan follows switches between greenlet stacks and the thread's stack (canary)"

# ---------------------------------------------------------------- what to run
known=
if [ "$ALL" -eq 0 ]; then
  echo
  for f in "${KNOWN_FILES[@]}"; do
    [ -f "$f" ] || continue
    echo "== leaving out the ids of $f:"
    ids=$(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$f" | grep -v '^$' || true)
    [ -n "$ids" ] && sed 's/^/   /' <<<"$ids" || echo "   (none)"
    known="$known $ids"
  done
fi
# id<TAB>options of each tuned test (run in part 3, never in parts 1-2).
TUNED=$(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$TUNED_FILE" | awk 'NF >= 2 {print $1 "\t" $2}')
if [ -n "$TUNED" ]; then
  echo "== run in parts of their own, with their ASan options ($TUNED_FILE):"
  sed 's/^/   /' <<<"$TUNED"
  known="$known $(cut -f1 <<<"$TUNED")"
fi
PYTEST_DESELECT=()
for id in $known; do
  case "$id" in python/*) PYTEST_DESELECT+=(--deselect "$id") ;; esac
done
mapfile -t UPSTREAM_IDS < <(cd "$BUILD_DIR" && KNOWN_IDS="$known" "$PYTHON" -c '
import os, unittest
known = set(os.environ["KNOWN_IDS"].split())
def walk(s):
    for t in s:
        yield from walk(t) if isinstance(t, unittest.TestSuite) else [t]
for t in walk(unittest.defaultTestLoader.discover("greenlet/tests", top_level_dir=".")):
    if t.id() not in known:
        print(t.id())')
[ "${#UPSTREAM_IDS[@]}" -gt 0 ] || { echo "FATAL: no upstream tests found" >&2; exit 1; }

# ---------------------------------------------------------------- running
declare -a NAMES=() PASSED=() FAILED=() OTHER=() SECS=() RCS=() SANS=()
any_fail=0

# run_guarded LOG DIR CMD...: CMD in DIR, output to LOG; stopped with SIGABRT
# (then SIGKILL) past PART_TIMEOUT seconds or RSS_LIMIT_MB resident.
run_guarded() {
  local log=$1 dir=$2 pid t=0 rss why=
  shift 2
  (cd "$dir" && exec "$@") >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    t=$((t + 1))
    rss=$(awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$pid/status" 2>/dev/null || echo 0)
    if [ "${rss:-0}" -gt "$RSS_LIMIT_MB" ]; then
      why="resident memory ${rss} MB > CGREENLET_ASAN_RSS_MB=$RSS_LIMIT_MB"
    elif [ "$t" -ge "$PART_TIMEOUT" ]; then
      why="timeout after ${PART_TIMEOUT}s"
    fi
    if [ -n "$why" ]; then
      kill -ABRT "$pid" 2>/dev/null || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
  done
  local rc=0
  wait "$pid" || rc=$?
  if [ -n "$why" ]; then
    printf '\n   STOPPED: %s (SIGABRT: faulthandler dumped the stacks into the log)\n' "$why" | tee -a "$log"
    [ "$rc" -ne 0 ] || rc=124
  fi
  return "$rc"
}

# Sanitizer findings of the part just run: report files, and what the
# runtimes print to stderr (link-order errors, CHECK failures, and the
# warning ASan gives when a switch to another stack was not annotated).
# Reports of a pytest test's children are in reports/tests/<test>/ (see
# scripts/asan_pytest_plugin.py); those of a test that ended xfailed are the
# crash it expects (its reason names the bug): shown, not counted.
SEEN_REPORTS=""
sanitizer_findings() {  # log -> prints findings, returns how many
  local log=$1 n=0 f d outcome nodeid
  while IFS= read -r f; do
    case " $SEEN_REPORTS " in *" $f "*) continue ;; esac
    SEEN_REPORTS="$SEEN_REPORTS $f"
    d=$(dirname "$f")
    outcome=""
    nodeid=""
    if [ "$d" != "$SAN_DIR" ] && [ -f "$SAN_DIR/tests/outcomes.txt" ]; then
      read -r outcome nodeid < <(awk -v n="${d##*/}" '$1 == n {print $2, $3; exit}' \
        "$SAN_DIR/tests/outcomes.txt") || true
    fi
    if [ "$outcome" = xfailed ]; then
      echo "   --- expected: $nodeid is xfail and its child crashed ($f):"
      grep -E 'ERROR: |SUMMARY: ' "$f" | sed 's/^/   | /'
      continue
    fi
    n=$((n + 1))
    echo "   --- sanitizer report $f${nodeid:+ (test $nodeid: $outcome)}:"
    sed 's/^/   | /' "$f" | head -80
  done < <(find "$SAN_DIR" -type f \( -name 'asan.*' -o -name 'ubsan.*' \) | sort)
  local pat='ERROR: AddressSanitizer|runtime error:|Sanitizer: CHECK failed|Sanitizer:DEADLYSIGNAL|ASan runtime does not come first|WARNING: ASan|ASan is ignoring|False positive error reports may follow|==[0-9]+==(ERROR|WARNING)'
  if grep -Eq "$pat" "$log"; then
    n=$((n + 1))
    echo "   --- sanitizer output in $log:"
    grep -E "$pat" "$log" | sort | uniq -c | head -20 | sed 's/^/   | /'
  fi
  return "$n"
}

. "$ROOT/scripts/test-counts.sh"

record() {  # name passed failed other seconds rc sanitizer-findings
  NAMES+=("$1"); PASSED+=("$2"); FAILED+=("$3"); OTHER+=("$4"); SECS+=("$5"); RCS+=("$6"); SANS+=("$7")
  if [ "$6" -ne 0 ] || [ "$3" -ne 0 ] || [ "$2" -eq 0 ] || [ "$7" -ne 0 ]; then any_fail=1; fi
}


run_upstream() {
  local name=upstream-noleakchecks log="$LOG_DIR/upstream-noleakchecks.log" start rc=0 nsan=0
  echo
  echo "== $name: upstream greenlet suite ($GL_TESTS), GREENLET_SKIP_LEAKCHECKS=1, ${#UPSTREAM_IDS[@]} tests"
  start=$(date +%s)
  run_guarded "$log" "$BUILD_DIR" "$PYTHON" -X faulthandler -m unittest -v "${UPSTREAM_IDS[@]}" || rc=$?
  local secs=$(( $(date +%s) - start ))
  grep -E '(\.\.\. (FAIL|ERROR)$|^(FAIL|ERROR):)' "$log" | head -40 || true
  tail -n 3 "$log"
  sanitizer_findings "$log" || nsan=$?
  read -r p f o <<<"$(unittest_counts "$log")"
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  record "$name" "$p" "$f" "$o" "$secs" "$rc" "$nsan"
  echo "   log: $log"
}

run_pytest() {
  local name=pytest log="$LOG_DIR/pytest.log" start rc=0 nsan=0
  echo
  echo "== $name: python/tests"
  start=$(date +%s)
  rm -rf "$SAN_DIR/tests"
  run_guarded "$log" "$ROOT" env CGL_SAN_DIR="$SAN_DIR" PYTHONPATH="$PYTHONPATH:$ROOT/scripts" \
    "$PYTHON" -X faulthandler -m pytest python/tests -q -rfExX -p asan_pytest_plugin \
    --durations=8 -p no:cacheprovider "${PYTEST_DESELECT[@]}" || rc=$?
  local secs=$(( $(date +%s) - start ))
  grep -E '^(FAILED|ERROR|XPASS) ' "$log" | head -40 || true
  tail -n 1 "$log"
  sanitizer_findings "$log" || nsan=$?
  local p f o
  read -r p f o <<<"$(pytest_counts "$log" "$rc")"
  record "$name" "$p" "$f" "$o" "$secs" "$rc" "$nsan"
  echo "   log: $log"
}

# Part 3: each tuned test alone, with the base options plus its own.
run_tuned() {
  local id opts name log start rc nsan p f o
  while IFS=$'\t' read -r id opts; do
    [ -n "$id" ] || continue
    name="tuned:${id##*[.:]}"
    log="$LOG_DIR/tuned-${id##*[.:]}.log"
    rc=0 nsan=0
    echo
    echo "== $name: $id with ASAN_OPTIONS +$opts"
    start=$(date +%s)
    case "$id" in
      python/*)
        rm -rf "$SAN_DIR/tests"
        ASAN_OPTIONS="$ASAN_OPTIONS:$opts" run_guarded "$log" "$ROOT" env CGL_SAN_DIR="$SAN_DIR" \
          PYTHONPATH="$PYTHONPATH:$ROOT/scripts" "$PYTHON" -X faulthandler -m pytest "$id" -q \
          -rfExX -p asan_pytest_plugin -p no:cacheprovider || rc=$?
        read -r p f o <<<"$(pytest_counts "$log" "$rc")" ;;
      *)
        ASAN_OPTIONS="$ASAN_OPTIONS:$opts" run_guarded "$log" "$BUILD_DIR" \
          "$PYTHON" -X faulthandler -m unittest -v "$id" || rc=$?
        read -r p f o <<<"$(unittest_counts "$log")"
        if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi ;;
    esac
    tail -n 1 "$log"
    sanitizer_findings "$log" || nsan=$?
    record "$name" "$p" "$f" "$o" "$(( $(date +%s) - start ))" "$rc" "$nsan"
    echo "   log: $log"
  done <<<"$TUNED"
}

# Reports written before the tests (none expected) count against part 1.
run_upstream
run_pytest
run_tuned

# ---------------------------------------------------------------- summary
echo
echo "== summary (ASan+UBSan build of cgreenlet $GL_CGREENLET, $GL_SO)"
printf '%-24s %7s %7s %14s %9s %6s %4s\n' part passed failed skipped/xfail sanitizer secs rc
tp=0; tf=0; ts=0
for i in "${!NAMES[@]}"; do
  printf '%-24s %7s %7s %14s %9s %6s %4s\n' "${NAMES[$i]}" "${PASSED[$i]}" "${FAILED[$i]}" \
    "${OTHER[$i]}" "${SANS[$i]}" "${SECS[$i]}" "${RCS[$i]}"
  tp=$((tp + PASSED[i])); tf=$((tf + FAILED[i])); ts=$((ts + SANS[i]))
done
echo "python (asan): $tp passed, $tf failed, $ts sanitizer findings (reports: $SAN_DIR)"
exit $any_fail
