#!/usr/bin/env bash
# demo.sh - the main job (`make demo`): build libcgreenlet and show greenlets
# at work in C programs: a generator, a pipeline, a scheduler.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
make -s lib examples
echo "libcgreenlet built: build/native/libcgreenlet.{a,so}"
for ex in generator pipeline scheduler; do
  bin=build/native/examples/$ex
  [ -x "$bin" ] || continue
  echo
  echo "=================== examples/$ex.c"
  "$bin"
done
