#!/usr/bin/env bash
# gdb_shared.sh BIN - the gdb extension on greenlets that take turns on one
# shared stack (tests/gdb_shared_target.c): `info greenlets` shows the two
# copied out as such, `greenlet bt` says why it cannot unwind those (and
# goes on to the next with `all`), and unwinds the one whose bytes are in
# place through parked_b and parked_a.
# With CGREENLET_GDB_QEMU=qemu-<isa> (scripts/test-cross.sh), BIN runs under
# that qemu-user's gdbstub and gdb-multiarch attaches to it.
set -uo pipefail
bin=$1
ext=$(cd "$(dirname "$0")" && pwd)/../gdb/cgreenlet-gdb.py
cmds=(-ex 'break stop_here')
gdb=(gdb)
if [ -n "${CGREENLET_GDB_QEMU:-}" ]; then
  port=$((20000 + RANDOM % 20000))
  "$CGREENLET_GDB_QEMU" -g "$port" "$bin" >/dev/null 2>&1 &
  qpid=$!
  hex=$(printf '%04X' "$port")
  for _ in $(seq 100); do
    grep -q ":$hex 00000000:0000 0A" /proc/net/tcp 2>/dev/null && break
    sleep 0.1
  done
  gdb=(gdb-multiarch -iex 'set sysroot /')
  cmds=(-ex "target remote 127.0.0.1:$port" "${cmds[@]}" -ex continue)
else
  cmds+=(-ex run)
fi
out=$(timeout 300 "${gdb[@]}" -q -batch -nx -iex "source $ext" "${cmds[@]}" \
  -ex 'echo @@info\n' -ex 'info greenlets' -ex 'echo @@all\n' \
  -ex 'greenlet bt all' -ex kill "$bin" 2>&1)
[ -z "${qpid:-}" ] || { kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null; }
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
