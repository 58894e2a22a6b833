#!/usr/bin/env bash
# test-arm64-module.sh - the greenlet module on AArch64, tested for real: built
# and run in a Debian 12 arm64 root file system under qemu-user.
#
# usage: scripts/test-arm64-module.sh [--full] [--bench]
#
#   (default)  what `make test` runs (the arm64module stage): greenlet
#              2.0.2's suite (Debian's python3-greenlet tests, unmodified)
#              with leak checks on and with them off, and python/tests
#              but test_differential.py ($CI_PYTEST below)
#   --full     the same, with all of python/tests
#              (`make test-arm64-module-full`)
#   --bench    no tests: switch timings of this module against Debian's
#              arm64 python3-greenlet 2.0.2, same qemu, same root file
#              system (`make bench-arm64-module`); under emulation only the
#              ratio means anything
#
# Steps:
#   1. scripts/arm64-rootfs.sh path: the root file system (debootstrap
#      --arch=arm64 bookworm, with Debian's python3, python3-greenlet,
#      python3-gevent, python3-eventlet, pytest, gcc and python3-dev), made
#      once and kept in ~/.cache/cgreenlet-rootfs (CGREENLET_ROOTFS_CACHE);
#      it says when it is making one (a few minutes)
#   2. the module built there, natively: Debian's arm64 gcc and python3
#      run `setup.py build` under qemu, as on an arm64 machine
#      (platform.machine() is aarch64, so setup.py picks
#      src/context_aarch64.S; sysconfig gives the arm64 flags and suffix),
#      into build/arm64-python-3.11.  A cross build (aarch64-linux-gnu-gcc
#      against the root file system's headers) would be faster but would
#      need setup.py and sysconfig told they are cross-compiling; the native
#      build costs under a minute and is exactly what an arm64 user runs.
#   3. scripts/test-python.sh --ci in the root file system (the clone is
#      bound in at /cgreenlet), less python/tests/known_failures.txt, with
#      python/tests/qemu_aarch64_skip.txt: the tests qemu-user cannot run
#      (reasons in the file, printed; pytest shows them as skipped).
#
# Under qemu everything runs some 5-20 times slower: per-part timeout 2400 s
# (CGREENLET_TEST_TIMEOUT), child timeouts scaled by 8
# (CGREENLET_TEST_TIMEOUT_SCALE).  CGREENLET_GUARD=mprotect: qemu-user 7.2
# answers madvise(MADV_GUARD_INSTALL) with success and does nothing, so the
# guard pages are made with mprotect, which it emulates (as in
# scripts/test-aarch64.sh).  Logs: build/arm64-test-python-logs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=ci
case "${1:-}" in
  "") ;;
  --full) MODE=full ;;
  --bench) MODE=bench ;;
  -h|--help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "test-arm64-module.sh: unknown argument '$1'" >&2; exit 2 ;;
esac

# python/tests in the CI stage: all of it but test_differential.py, whose
# batch of 2,000 random programs (each run on this module and on Debian's
# stock greenlet, traces compared) takes over 3 minutes under qemu; --full
# runs it too.
CI_PYTEST="python/tests --ignore=python/tests/test_differential.py"

BUILD_DIR=build/arm64-python-3.11
SKIP=python/tests/qemu_aarch64_skip.txt

RFS=$(scripts/arm64-rootfs.sh path | tail -1)
# (Byte code goes to the root file system's /tmp, a tmpfs: .pyc files in the
# clone would carry /cgreenlet/... paths into the x86-64 stages' tracebacks.)
in_rootfs() {
  scripts/arm64-rootfs.sh run --bind "$ROOT:/cgreenlet" --cwd /cgreenlet \
    PYTHONPYCACHEPREFIX=/tmp/pycache "$@"
}

echo "== building the module in the arm64 root file system (gcc and python3 under qemu): $BUILD_DIR"
start=$(date +%s)
in_rootfs python3 setup.py -q build --build-base "$BUILD_DIR-tmp" --build-lib "$BUILD_DIR"
in_rootfs python3 -c 'import platform, sys; sys.path.insert(0, sys.argv[1]); import greenlet
print("   built in %ss: %s on %s, %s" % (sys.argv[2], greenlet._greenlet.__file__, platform.machine(),
      greenlet._greenlet._cgreenlet_version))' "$BUILD_DIR" "$(( $(date +%s) - start ))"
echo "   root file system: $RFS ($(cat "$RFS/etc/debian_version"), $(in_rootfs python3 --version))"

if [ "$MODE" = bench ]; then
  echo "== switch timings under qemu-aarch64 (emulated: only the ratio means anything)"
  in_rootfs python3 bench/bench_python.py --python /usr/bin/python3 --build-dir "$BUILD_DIR" \
    --no-pypi --only pingpong,deep --runs "${CGREENLET_BENCH_RUNS:-3}"
  exit 0
fi

paths=()
[ "$MODE" = ci ] && paths=(--pytest-paths "$CI_PYTEST")
in_rootfs CGREENLET_TEST_TIMEOUT="${CGREENLET_TEST_TIMEOUT:-2400}" \
  CGREENLET_TEST_TIMEOUT_SCALE="${CGREENLET_TEST_TIMEOUT_SCALE:-8}" \
  CGREENLET_GUARD=mprotect CGREENLET_TEST_QEMU=1 \
  CGREENLET_TEST_LOGS=/cgreenlet/build/arm64-test-python-logs \
  bash scripts/test-python.sh --ci --no-deps --python /usr/bin/python3 \
    --build-dir "$BUILD_DIR" --skip-list "$SKIP" "${paths[@]}"
