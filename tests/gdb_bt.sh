#!/usr/bin/env bash
# gdb_bt.sh BIN - gdb's backtrace inside a greenlet ends cleanly at the
# greenlet's entry trampoline (its return address is marked undefined), with
# no "corrupt stack" or runaway frames.
# With CGREENLET_GDB_QEMU=qemu-<isa> (scripts/test-cross.sh), BIN runs under
# that qemu-user's gdbstub and gdb-multiarch attaches to it.
set -uo pipefail
bin=$1
if [ -n "${CGREENLET_GDB_QEMU:-}" ]; then
  port=$((20000 + RANDOM % 20000))
  "$CGREENLET_GDB_QEMU" -g "$port" "$bin" >/dev/null 2>&1 &
  qpid=$!
  sleep 1
  out=$(timeout 120 gdb-multiarch -nx -batch -ex 'set sysroot /' \
    -ex "target remote 127.0.0.1:$port" -ex 'break stop_here' -ex continue \
    -ex bt -ex kill "$bin" 2>&1)
  kill "$qpid" 2>/dev/null
  wait "$qpid" 2>/dev/null
else
  out=$(gdb -nx -batch -ex 'break stop_here' -ex run -ex bt "$bin" 2>&1)
fi
bt=$(grep -E '^#[0-9]+ ' <<<"$out")
last=$(tail -n 1 <<<"$bt")
if grep -qiE 'corrupt|previous frame identical|Cannot access memory' <<<"$out"; then
  echo "gdb_bt: bad backtrace:"; echo "$out"; exit 1
fi
if ! grep -q 'greenlet__context_trampoline' <<<"$last"; then
  echo "gdb_bt: last frame is not the greenlet entry trampoline:"; echo "$bt"; exit 1
fi
if ! grep -q 'descend' <<<"$bt"; then
  echo "gdb_bt: nested frames missing:"; echo "$bt"; exit 1
fi
echo "gdb_bt: backtrace stops at the greenlet entry ($(wc -l <<<"$bt") frames)"
