#!/usr/bin/env bash
# gdb_shared.sh BIN - the gdb extension on greenlets that take turns on one
# shared stack (tests/gdb_shared_target.c): `info greenlets` shows the two
# copied out as such, `greenlet bt` says why it cannot unwind those (and
# goes on to the next with `all`), and unwinds the one whose bytes are in
# place through parked_b and parked_a.
set -uo pipefail
bin=$1
ext=$(cd "$(dirname "$0")" && pwd)/../gdb/cgreenlet-gdb.py
out=$(gdb -q -batch -nx -iex "source $ext" -ex 'break stop_here' -ex run \
  -ex 'echo @@info\n' -ex 'info greenlets' -ex 'echo @@all\n' \
  -ex 'greenlet bt all' "$bin" 2>&1)
fails=0
expect() { # count pattern what
  local n
  n=$(grep -c -- "$2" <<<"$out")
  if [ "$n" -ne "$1" ]; then
    echo "gdb_shared: expected $1 x $3 ($2), got $n" >&2
    fails=$((fails + 1))
  fi
}
expect 2 'suspended .*copied out, [0-9]' "copied-out rows in info greenlets"
expect 2 'stack copied out .*gdb cannot unwind' "bt messages for copied-out greenlets"
expect 1 ' in parked_b ' "parked_b frames (the resident greenlet)"
expect 1 ' in parked_a ' "parked_a frames"
expect 4 '^Greenlet [0-9]' "greenlets in bt all (main and three)"
if [ "$fails" -ne 0 ]; then
  echo "$out" >&2
  exit 1
fi
echo "gdb_shared: ok (copied-out greenlets listed and explained, resident one unwound)"
