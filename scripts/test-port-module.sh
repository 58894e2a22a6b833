#!/usr/bin/env bash
# test-port-module.sh - the greenlet module on another Debian architecture,
# tested for real: built and run in a Debian 12 root file system of that
# architecture under qemu-user (i386: natively, see scripts/rootfs.sh).
#
# usage: scripts/test-port-module.sh [--arch ARCH] [--full] [--bench]
#
#   --arch ARCH  arm64 (default), armhf, i386, ppc64el or s390x
#   (default)  greenlet 2.0.2's suite (Debian's python3-greenlet tests,
#              unmodified) with leak checks on and with them off, and
#              python/tests but test_differential.py ($CI_PYTEST below);
#              for arm64 the arm64module stage of `make test`, for the
#              others `make test-ports` (scripts/test-ports.sh)
#   --full     the same, with all of python/tests
#              (`make test-arm64-module-full`)
#   --bench    no tests: switch timings of this module against Debian's
#              python3-greenlet 2.0.2 of the same architecture, same qemu,
#              same root file system (`make bench-arm64-module`,
#              `make bench-ports`); under emulation only the ratio means
#              anything
#
# Steps:
#   1. scripts/rootfs.sh --arch ARCH path: the root file system
#      (debootstrap --arch=ARCH bookworm, with Debian's python3,
#      python3-greenlet, python3-gevent, python3-eventlet, pytest, gcc and
#      python3-dev), made once and kept in ~/.cache/cgreenlet-rootfs
#      (CGREENLET_ROOTFS_CACHE); it says when it is making one (minutes)
#   2. the module built there, natively: Debian's gcc and python3 of ARCH
#      run `setup.py build` under qemu, as on a machine of that
#      architecture (setup.py picks src/context_<isa>.S by
#      platform.machine(), printed; sysconfig gives the ARCH flags and
#      suffix), into build/ARCH-python-3.11.  A cross build would be faster
#      but would need setup.py and sysconfig told they are cross-compiling;
#      the native build costs a minute or two and is exactly what a user of
#      that architecture runs.
#   3. scripts/test-python.sh --ci in the root file system (the clone is
#      bound in at /cgreenlet), less python/tests/known_failures.txt, with
#      python/tests/qemu_<isa>_skip.txt: the tests qemu-user cannot run
#      (reasons in the file, printed; pytest shows them as skipped).
#
# Under qemu everything runs some 5-20 times slower: per-part timeout 2400 s
# (CGREENLET_TEST_TIMEOUT), child timeouts scaled by 8
# (CGREENLET_TEST_TIMEOUT_SCALE).  CGREENLET_GUARD=mprotect: qemu-user 7.2
# answers madvise(MADV_GUARD_INSTALL) with success and does nothing, so the
# guard pages are made with mprotect, which it emulates (as in
# scripts/test-aarch64.sh).  Logs: build/ARCH-test-python-logs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=ci
ARCH=arm64
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=${2:?--arch needs a Debian architecture name}; shift 2 ;;
    --full) MODE=full; shift ;;
    --bench) MODE=bench; shift ;;
    -h|--help) sed -n '2,46p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test-port-module.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
# ISA: qemu's (and the switch's) name for ARCH, what the skip file is named
# after; EMU=0 where the CPU runs it natively (i386 with IA32 emulation).
case "$ARCH" in
  arm64) ISA=aarch64 ;;
  armhf) ISA=arm ;;
  i386) ISA=i386 ;;
  ppc64el) ISA=ppc64le ;;
  s390x) ISA=s390x ;;
  *) echo "test-port-module.sh: unknown architecture '$ARCH' (arm64, armhf, i386, ppc64el, s390x)" >&2; exit 2 ;;
esac

# python/tests in the CI stage: all of it but test_differential.py, whose
# batch of 2,000 random programs (each run on this module and on Debian's
# stock greenlet, traces compared) takes over 3 minutes under qemu; --full
# runs it too.
CI_PYTEST="python/tests --ignore=python/tests/test_differential.py"

BUILD_DIR=build/$ARCH-python-3.11
SKIP=python/tests/qemu_${ISA}_skip.txt

RFS=$(scripts/rootfs.sh --arch "$ARCH" path | tail -1)
# (Byte code goes to the root file system's /tmp, a tmpfs: .pyc files in the
# clone would carry /cgreenlet/... paths into the x86-64 stages' tracebacks.)
in_rootfs() {
  scripts/rootfs.sh --arch "$ARCH" run --bind "$ROOT:/cgreenlet" --cwd /cgreenlet \
    PYTHONPYCACHEPREFIX=/tmp/pycache "$@"
}

CPU=$(in_rootfs sh -c 'echo "$CGREENLET_ROOTFS_CPU"')
echo "== building the module in the $ARCH root file system (its gcc and python3, $CPU): $BUILD_DIR"
start=$(date +%s)
in_rootfs python3 setup.py -q build --build-base "$BUILD_DIR-tmp" --build-lib "$BUILD_DIR"
in_rootfs python3 -c 'import platform, sys; sys.path.insert(0, sys.argv[1]); import greenlet
print("   built in %ss: %s on %s, %s" % (sys.argv[2], greenlet._greenlet.__file__, platform.machine(),
      greenlet._greenlet._cgreenlet_version))' "$BUILD_DIR" "$(( $(date +%s) - start ))"
# The switch it was built with: setup.py compiles exactly one
# src/context_<isa>.S (none with the ucontext fallback, which would pass the
# tests too, slower, and prove nothing about this ISA's switch).
switch=$(cd "$BUILD_DIR-tmp" && find . -name 'context_*.o' -printf '%f\n')
[ "$switch" = "context_$ISA.o" ] ||
  { echo "test-port-module.sh: built with '${switch:-no assembly switch}', not src/context_$ISA.S" >&2; exit 1; }
echo "   switch: src/context_$ISA.S (compiled: $BUILD_DIR-tmp/.../$switch)"
echo "   root file system: $RFS ($(cat "$RFS/etc/debian_version"), $(in_rootfs python3 --version))"

if [ "$MODE" = bench ]; then
  if [ "$CPU" = native ]; then
    echo "== switch timings, $ARCH natively (32-bit x86 on this x86-64 CPU)"
  else
    echo "== switch timings under $CPU (emulated: only the ratio to stock means anything)"
  fi
  in_rootfs python3 bench/bench_python.py --python /usr/bin/python3 --build-dir "$BUILD_DIR" \
    --no-pypi --only pingpong,deep --runs "${CGREENLET_BENCH_RUNS:-3}"
  exit 0
fi

# Under qemu: longer timeouts, and guard pages by mprotect (see above).
# Natively (i386), as on x86-64 but for the tests' scale.
emu=()
[ "$CPU" = native ] || emu=(CGREENLET_GUARD=mprotect CGREENLET_TEST_QEMU=1)
paths=()
[ "$MODE" = ci ] && paths=(--pytest-paths "$CI_PYTEST")
in_rootfs CGREENLET_TEST_TIMEOUT="${CGREENLET_TEST_TIMEOUT:-2400}" \
  CGREENLET_TEST_TIMEOUT_SCALE="${CGREENLET_TEST_TIMEOUT_SCALE:-8}" \
  "${emu[@]}" \
  CGREENLET_TEST_LOGS="/cgreenlet/build/$ARCH-test-python-logs" \
  bash scripts/test-python.sh --ci --no-deps --python /usr/bin/python3 \
    --build-dir "$BUILD_DIR" --skip-list "$SKIP" "${paths[@]}"
