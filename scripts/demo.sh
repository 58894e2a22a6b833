#!/usr/bin/env bash
# demo.sh - the main job (`make demo`): build libcgreenlet and show greenlets
# at work in C programs (a generator, a pipeline, a scheduler), then gevent
# serving HTTP on cgreenlet's greenlet module.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build demo
make -s lib examples python
echo "libcgreenlet built: build/native/libcgreenlet.{a,so}"
for ex in generator pipeline scheduler; do
  bin=build/native/examples/$ex
  [ -x "$bin" ] || continue
  echo
  echo "=================== examples/$ex.c"
  "$bin"
done

echo
echo "=================== examples/gevent_demo.py (gevent on cgreenlet's greenlet module)"
PYTHONPATH=build/python-$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
  /usr/bin/python3 examples/gevent_demo.py
