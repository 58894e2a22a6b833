#!/usr/bin/env bash
# test.sh - every test of cgreenlet, as `make test` runs it (and CI).
#
# Stages (each builds its own variant under build/):
#   native      Criterion suite, assembly switch, full size (1M greenlets)
#   ucontext    the portable fallback back end
#   nofpu       x86-64 switch without MXCSR/x87 save
#   asan        ASan + UBSan
#   tsan        ThreadSanitizer over the thread tests
#   valgrind    memcheck over the native suite
#   aarch64     cross-built, run under qemu-user
#   cross       i386, armhf, ppc64el, s390x and riscv64 cross-built with
#               Debian's gcc cross compilers, the whole suite under
#               qemu-user on each (scripts/test-cross.sh all; a table)
#   examples    every example program (they check their own results)
#   fuzz        libFuzzer over the C core with ASan + UBSan: tests/fuzz/corpus
#               and a fixed-seed bounded run (scripts/fuzz.sh --bounded)
#   python      the greenlet module for CPython 3.11 (scripts/test-python.sh --ci)
#   arm64module the module built and tested in a Debian 12 arm64 root file
#               system under qemu-user (scripts/test-arm64-module.sh: the
#               upstream suite both ways, a subset of python/tests; the
#               root file system made once, cached in ~/.cache/cgreenlet-rootfs)
#   pyversions  the module built and tested on each ~/.pyenv CPython 3.9+
#               (scripts/test-python-versions.sh --no-debian; a version
#               listed in scripts/python-versions-supported must pass)
#   pypi        today's PyPI packages, pinned, in a venv per CPython 3.10+
#               (scripts/test-pypi.sh): greenlet 3.5.x's own suite against
#               the module, less python/tests/pypi_known_failures.txt
#               (printed), and gevent 26 / eventlet 0.41 / SQLAlchemy 2.1
#               asyncio tests; wheels cached outside the clone
#   pyasan      the module and core under ASan + UBSan on Debian's 3.11
#               (scripts/test-python-asan.sh: upstream suite, python/tests)
#   pyvalgrind  the module under Valgrind memcheck on Debian's 3.11
#               (scripts/test-python-valgrind.sh: upstream suite, python/tests)
#   stress      `bench/stress.py --quick`: the load command's checks pass
#   benchreport `bench/report.py --quick` into a temporary directory (with
#               stock greenlet 3.5.6 and gevent 26.9 from the wheel cache,
#               scripts/bench-env.sh): the report command works (no figure
#               is checked)
# Run a subset: scripts/test.sh native asan
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh build test || exit 1

JOBS=${JOBS:-2}
ALL=(native ucontext nofpu asan tsan valgrind aarch64 cross examples fuzz python arm64module pyversions pypi pyasan pyvalgrind stress benchreport)
STAGES=("${@:-${ALL[@]}}")
declare -A RESULT TIME

suite() { # suite BUILD_DIR [criterion args...]
  local bin=$1/tests/cgreenlet-tests
  shift
  "$bin" --jobs "$JOBS" "$@"
}

stage_native() {
  make -s tests cxx-terminate gdb-target gdb-greenlets && suite build/native &&
    cxx_terminates build/native && tests/gdb_bt.sh build/native/tests/gdb-target &&
    tests/gdb_greenlets.sh build/native/tests/gdb-greenlets-target \
      build/native/tests/gdb-greenlets-target-shared build/native/libcgreenlet.so &&
    tests/gdb_shared.sh build/native/tests/gdb-shared-target
}

# A C++ exception escaping run() must end in std::terminate (SIGABRT).
cxx_terminates() {
  local err rc
  err=$("$1/tests/cxx-terminate" 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 134 ] && grep -q "terminate called after throwing" <<<"$err"; then
    echo "cxx-terminate: std::terminate as expected"
  else
    echo "cxx-terminate: expected SIGABRT from std::terminate, got rc=$rc: $err"
    return 1
  fi
}
stage_ucontext() {
  make -s tests cxx-terminate CONTEXT=ucontext &&
    CGREENLET_TEST_LIGHT=1 suite build/native-ucontext && cxx_terminates build/native-ucontext
}
stage_nofpu()    { make -s tests FPU_SAVE=0 && CGREENLET_TEST_LIGHT=1 suite build/native-nofpu; }
stage_asan() {
  make -s tests SAN=asan &&
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      CGREENLET_TEST_LIGHT=1 suite build/native-asan
}
stage_tsan() {
  # Criterion's worker arena cannot be mapped inside TSan's address layout,
  # so the thread tests run here as plain programs: tests/tsan_threads.c and
  # tests/test_threads.c built against tests/standalone.h.
  # (test_threads.c builds as a plain program too, see tests/standalone.h).
  make -s tsan-threads SAN=tsan &&
    TSAN_OPTIONS=halt_on_error=1 build/native-tsan/tests/tsan-threads &&
    TSAN_OPTIONS=halt_on_error=1:exitcode=66 build/native-tsan/tests/threads-standalone
}
stage_valgrind() {
  # Criterion ignores a worker's exit status once its test has reported, so
  # --exit-on-first-error makes a memcheck error kill the worker first (the
  # test then fails).  Leaks are checked on the plain programs below, where
  # no forked child inherits a heap it did not allocate.
  make -s tests tsan-threads examples || return 1
  CGREENLET_TEST_LIGHT=1 valgrind -q --error-exitcode=99 --exit-on-first-error=yes \
    --trace-children=yes build/native/tests/cgreenlet-tests --jobs "$JOBS" || return 1
  local prog
  for prog in build/native/tests/tsan-threads build/native/examples/*; do
    echo "-- memcheck --leak-check=full $prog"
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
      "$prog" >/dev/null || return 1
  done
}
stage_aarch64()  { scripts/test-aarch64.sh; }
stage_cross()    { scripts/test-cross.sh all; }
stage_fuzz()     { scripts/fuzz.sh --bounded; }
stage_examples() {
  make -s examples || return 1
  local ex rc=0
  for ex in build/native/examples/*; do
    echo "-- $ex"
    "$ex" >/dev/null || { echo "FAILED: $ex"; rc=1; }
  done
  return $rc
}

# The greenlet module for CPython 3.11 (work in progress, issue 3): the
# upstream greenlet 2.0.2 suite twice and python/tests, less the known
# failures listed in python/tests/known_failures.txt (printed).
stage_python() {
  scripts/deps.sh python && make -s python && scripts/test-python.sh --ci
}

stage_arm64module() { scripts/test-arm64-module.sh; }
stage_pyversions() { scripts/test-python-versions.sh --no-debian; }
stage_pypi() { scripts/test-pypi.sh; }
stage_pyasan() { scripts/test-python-asan.sh; }
stage_pyvalgrind() { scripts/deps.sh python && make -s python && scripts/test-python-valgrind.sh; }
stage_stress() {
  scripts/deps.sh python && make -s python &&
    /usr/bin/python3 bench/stress.py --quick --python /usr/bin/python3 --build-dir build/python-3.11
}
stage_benchreport() {
  local out f rc=0
  out=$(mktemp -d) || return 1
  scripts/deps.sh build bench python &&
    /usr/bin/python3 bench/report.py --quick --out "$out/benchmarks.md" || rc=1
  for f in benchmarks.md img/bench-switch-depth.png img/bench-memory.png img/bench-c.png; do
    [ -s "$out/$f" ] || { echo "benchreport: $f missing"; rc=1; }
  done
  rm -rf "$out"
  return $rc
}

fail=0
for s in "${STAGES[@]}"; do
  echo "=============== $s"
  start=$(date +%s)
  if "stage_$s"; then RESULT[$s]=pass; else RESULT[$s]=FAIL; fail=1; fi
  TIME[$s]=$(( $(date +%s) - start ))
done

echo
echo "=============== summary"
printf '%-12s %-6s %6s\n' stage result seconds
for s in "${STAGES[@]}"; do printf '%-12s %-6s %6s\n' "$s" "${RESULT[$s]}" "${TIME[$s]}"; done
exit $fail
