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
# Not a stage of `make test`: on the 2-core machine the four root file
# systems took 33 minutes to make from an empty cache, and a run with the
# cache 10 more (17 under load; docs/platforms.md has the measured times);
# `make test-ports` runs it.
# Logs: build/ports-logs/ARCH.log.
set -euo pipefail
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
  set +e   # (one ISA's failure must not stop the others)
  scripts/test-port-module.sh --arch "$a" "${MODE[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  secs=$(( $(date +%s) - start ))
  [ "$rc" -eq 0 ] || fail=1
  if [ ${#MODE[@]} -eq 0 ]; then
    # The per-part rows of test-python.sh's summary: passed/failed/skipped.
    parts=$(awk '/^== summary/ { on = 1; next }
                 on && /^(upstream-leakchecks|upstream-noleakchecks|pytest) / { printf " %s/%s/%s", $2, $3, $4 }' "$log")
  else
    # bench_python.py's rows: ours and stock 2.0.2 in ns, and the ratio.
    parts=$(awk '/^switch ping-pong / { printf " ping-pong %s/%s ns %s;", $3, $5, $7 }
                 /^switch, 100 sorted/ { printf " 100 frames deep %s/%s ns %s", $6, $8, $10 }' "$log")
  fi
  made=$(grep -q "made in" "$log" && echo " (root file system made)" || true)
  rows+=("$(printf '%-8s %-5s %6s  %s%s' "$a" "$([ "$rc" -eq 0 ] && echo ok || echo FAIL)" "$secs" "${parts:- -}" "$made")")
done

echo
if [ ${#MODE[@]} -eq 0 ]; then
  echo "== ports: passed/failed/skipped of upstream (leak checks on), upstream (off), python/tests"
  printf '%-8s %-5s %6s  %s\n' arch rc secs "up-leak up-noleak pytest"
else
  echo "== ports bench: this module / Debian's greenlet 2.0.2, same root file system, same CPU"
  echo "   (emulated but for i386: only the ratio means anything; the ns are qemu's)"
  printf '%-8s %-5s %6s  %s\n' arch rc secs "ours/stock ns, ratio"
fi
printf '%s\n' "${rows[@]}"
exit $fail
