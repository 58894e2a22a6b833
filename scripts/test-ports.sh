#!/usr/bin/env bash
# test-ports.sh - the greenlet module on Debian 12's other release
# architectures: each built and tested in a Debian 12 root file system of
# its own (scripts/test-port-module.sh --arch ARCH, under qemu-user; i386
# natively where the kernel runs 32-bit x86), then one table.
#
# usage: scripts/test-ports.sh [--bench] [ARCH...]
#   ARCH: armhf, i386, ppc64el, s390x (default: all four, or $PORTS);
#         arm64 is the arm64module stage of `make test` and can be named too
#   --bench  switch timings against Debian's greenlet 2.0.2 on each
#            (`make bench-ports`) instead of the tests
#
# Not a stage of `make test`: the four root file systems take about 40
# minutes to make from an empty cache, and the four test runs over 20 with
# it (docs/platforms.md has the measured times); `make test-ports` runs it.
# Logs: build/ports-logs/ARCH.log.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=()
if [ "${1:-}" = --bench ]; then MODE=(--bench); shift; fi
if [ $# -gt 0 ]; then ARCHES=("$@"); else read -r -a ARCHES <<<"${PORTS:-armhf i386 ppc64el s390x}"; fi

mkdir -p build/ports-logs
rows=()
fail=0
for a in "${ARCHES[@]}"; do
  log=build/ports-logs/$a${MODE:+-bench}.log
  echo
  echo "======== $a: scripts/test-port-module.sh --arch $a ${MODE[*]} (log: $log)"
  start=$(date +%s)
  scripts/test-port-module.sh --arch "$a" "${MODE[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  secs=$(( $(date +%s) - start ))
  [ "$rc" -eq 0 ] || fail=1
  # The per-part rows of test-python.sh's summary: passed/failed/skipped.
  parts=$(awk '/^== summary/ { on = 1; next }
               on && /^(upstream-leakchecks|upstream-noleakchecks|pytest) / { printf " %s/%s/%s", $2, $3, $4 }' "$log")
  made=$(grep -q "made in" "$log" && echo " (root file system made)" || true)
  rows+=("$(printf '%-8s %-5s %6s  %s%s' "$a" "$([ "$rc" -eq 0 ] && echo ok || echo FAIL)" "$secs" "${parts:- -}" "$made")")
done

echo
if [ ${#MODE[@]} -eq 0 ]; then
  echo "== ports: passed/failed/skipped of upstream (leak checks on), upstream (off), python/tests"
  printf '%-8s %-5s %6s  %s\n' arch rc secs "up-leak up-noleak pytest"
else
  echo "== ports bench (ratios to Debian's greenlet 2.0.2 on the same emulated CPU: in the logs above)"
  printf '%-8s %-5s %6s\n' arch rc secs
fi
printf '%s\n' "${rows[@]}"
exit $fail
