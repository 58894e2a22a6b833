#!/usr/bin/env bash
# test-python-valgrind.sh - the greenlet module under Valgrind memcheck.
#
# usage: scripts/test-python-valgrind.sh [--python PY] [--build-dir DIR] [--all]
#
#   --python PY      interpreter (default /usr/bin/python3, Debian's)
#   --build-dir DIR  the built module (default build/python-X.Y, `make python`;
#                    built with Valgrind's stack registration when
#                    valgrind.h is installed, which setup.py checks)
#   --all            also run the ids in python/tests/valgrind_skip.txt and
#                    python/tests/known_failures.txt
#
# Runs, each process (children too) under memcheck with PYTHONMALLOC=malloc
# (so that CPython's objects are heap blocks memcheck sees, and pymalloc's
# reads of memory it does not own raise no false reports):
#   1. Debian's upstream greenlet 2.0.2 suite, GREENLET_SKIP_LEAKCHECKS=1
#   2. python/tests (pytest)
# less python/tests/valgrind_skip.txt (printed: tests about time, not
# memory) and python/tests/known_failures.txt (as test-python.sh --ci).
# Suppressions: python/tests/valgrind.supp (each with its reason; none is
# about this module's code).  Any other memcheck report (each process
# writes its own file to the log directory) or failed test fails the run.
# Leaks are not checked here (CPython frees little at exit); the leak checks
# of the upstream suite and python/tests/test_faults.py count objects.
# Logs: build/test-python-valgrind-logs (or CGREENLET_TEST_LOGS).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=/usr/bin/python3
BUILD_DIR=""
ALL=0
SKIP_FILES=(python/tests/valgrind_skip.txt python/tests/known_failures.txt)
DEBIAN_TESTS=/usr/lib/python3/dist-packages/greenlet/tests

USAGE_END=22
. "$ROOT/scripts/test-args.sh"
while [ $# -gt 0 ]; do
  case "$1" in
    --all) ALL=1; shift ;;
    *) common_arg "$@"; shift "$ARG_SHIFT" ;;
  esac
done

scripts/deps.sh build python
python_version
BUILD_DIR=${BUILD_DIR:-build/python-$PYVER}
compgen -G "$BUILD_DIR/greenlet/_greenlet*.so" >/dev/null ||
  { echo "test-python-valgrind.sh: no module in $BUILD_DIR (make python PYTHON=$PYTHON)" >&2; exit 1; }
BUILD_DIR=$(cd "$BUILD_DIR" && pwd -P)
LOG_DIR=${CGREENLET_TEST_LOGS:-$ROOT/build/test-python-valgrind-logs}
VG_DIR=$LOG_DIR/memcheck
rm -rf "$VG_DIR"
mkdir -p "$VG_DIR"

# The upstream tests as the package greenlet.tests next to our module.
rm -rf "$BUILD_DIR/greenlet/tests"
mkdir -p "$BUILD_DIR/greenlet/tests"
cp -p "$DEBIAN_TESTS"/* "$BUILD_DIR/greenlet/tests/" 2>/dev/null || true
rm -rf "$BUILD_DIR/greenlet/tests/__pycache__"

# Children python/tests start get 5 times their usual time limit.
export PYTHONPATH="$BUILD_DIR" PYTHONMALLOC=malloc GREENLET_SKIP_LEAKCHECKS=1 \
  CGREENLET_TEST_TIMEOUT_SCALE=5
unset GREENLET_SKIP_FAILING_LEAKCHECKS CGREENLET_ALLOW_STOCK
VG=(valgrind -q --tool=memcheck --trace-children=yes --error-exitcode=99
    --suppressions="$ROOT/python/tests/valgrind.supp" --log-file="$VG_DIR/vg.%p")

cgl=$(cd "$BUILD_DIR" && "$PYTHON" -c 'import greenlet._greenlet as m; print(m._cgreenlet_version)') ||
  { echo "FATAL: $BUILD_DIR/greenlet is not cgreenlet's module" >&2; exit 1; }
echo "== greenlet module: $BUILD_DIR (cgreenlet $cgl), memcheck reports: $VG_DIR"

skip=
if [ "$ALL" -eq 0 ]; then
  skip=$(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "${SKIP_FILES[@]}" | grep -v '^$' || true)
  echo "== leaving out (${SKIP_FILES[*]}):"
  sed 's/^/   /' <<<"$skip"
fi
mapfile -t UPSTREAM < <(cd "$BUILD_DIR" && SKIP="$skip" "$PYTHON" -c '
import os, unittest
skip = os.environ["SKIP"].split()
def walk(s):
    for t in s:
        yield from walk(t) if isinstance(t, unittest.TestSuite) else [t]
for t in walk(unittest.defaultTestLoader.discover("greenlet/tests", top_level_dir=".")):
    if not any(t.id() == s or t.id().startswith(s + ".") for s in skip):
        print(t.id())')
DESELECT=()
for id in $skip; do case "$id" in python/*) DESELECT+=(--deselect "$id") ;; esac; done

. "$ROOT/scripts/test-counts.sh"
fail=0
start=$(date +%s)
echo
echo "== upstream suite under memcheck: ${#UPSTREAM[@]} tests"
rc=0
(cd "$BUILD_DIR" && "${VG[@]}" "$PYTHON" -m unittest "${UPSTREAM[@]}") \
  >"$LOG_DIR/upstream.log" 2>&1 || rc=$?
tail -n 3 "$LOG_DIR/upstream.log"
read -r up_p up_f up_o <<<"$(unittest_counts "$LOG_DIR/upstream.log")"
[ "$rc" -eq 0 ] && [ "$up_f" -eq 0 ] || { fail=1; grep -E '^(FAIL|ERROR):' "$LOG_DIR/upstream.log" || true; }
up_s=$(( $(date +%s) - start ))

start=$(date +%s)
echo
echo "== python/tests under memcheck"
rc=0
(cd "$ROOT" && PYTHONPATH="$BUILD_DIR:$ROOT/python/tests" "${VG[@]}" "$PYTHON" -m pytest \
  python/tests -q -p no:cacheprovider -rfE --durations=10 "${DESELECT[@]}") >"$LOG_DIR/pytest.log" 2>&1 || rc=$?
tail -n 1 "$LOG_DIR/pytest.log"
read -r py_p py_f py_o <<<"$(pytest_counts "$LOG_DIR/pytest.log" "$rc")"
[ "$rc" -eq 0 ] && [ "$py_f" -eq 0 ] || { fail=1; grep -E '^(FAILED|ERROR) ' "$LOG_DIR/pytest.log" || true; }
py_s=$(( $(date +%s) - start ))

# Every process's report file; -q leaves them empty unless memcheck found
# something.
reports=0
for f in "$VG_DIR"/vg.*; do
  [ -s "$f" ] || continue
  reports=$((reports + 1))
  echo "--- memcheck report $f:"
  head -60 "$f" | sed 's/^/   | /'
done
[ "$reports" -eq 0 ] || fail=1

echo
printf '%-10s %7s %7s %14s %6s\n' part passed failed skipped/xfail secs
printf '%-10s %7s %7s %14s %6s\n' upstream "$up_p" "$up_f" "$up_o" "$up_s"
printf '%-10s %7s %7s %14s %6s\n' pytest "$py_p" "$py_f" "$py_o" "$py_s"
echo "python (valgrind): $((up_p + py_p)) passed, $((up_f + py_f)) failed, $reports memcheck reports (processes: $(ls "$VG_DIR" | wc -l))"
exit $fail
