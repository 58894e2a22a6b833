#!/usr/bin/env bash
# gdb_greenlets.sh BIN [SHARED_BIN LIBSO] - the gdb extension
# (gdb/cgreenlet-gdb.py) on tests/gdb_greenlets_target.c:
#
#   live     the program stopped at a breakpoint on stop_here
#   gcore    a core written by gdb's gcore (with CGREENLET_GUARD=mprotect:
#            gdb 13's gcore cannot save a mapping holding MADV_GUARD_INSTALL
#            guard markers; see docs/debugging.md)
#   kernel   a core dumped by the kernel (the program aborts in stop_here),
#            default guards; skipped when core_pattern pipes to a helper or
#            the core size limit cannot be raised
#   autoload SHARED_BIN (the same program linked with libcgreenlet.so):
#            the script found by gdb's auto-load as libcgreenlet.so.0-gdb.py
#            for the library LIBSO, installed as `make install` does, with
#            no `source`
#
# In each, `info greenlets` must list every greenlet of the three threads
# with the right state, thread and parent, and `greenlet bt` must show the
# functions each one is parked in, and only those.
#
# With CGREENLET_GDB_QEMU=qemu-<isa> (scripts/test-cross.sh), the programs
# run under that qemu-user's gdbstub (qemu -g PORT) and gdb-multiarch
# attaches to it; its threads are the gdbstub's threads.  There:
#   gcore    runs only if the gdbstub gives gdb the process's memory map
#            (else gcore would save the program's own sections alone);
#   kernel   the core is the one qemu-user writes for its guest
#            (qemu_<prog>_<time>_<pid>.core), of CGREENLET_GDB_CORE_BIN,
#            the program built -no-pie (skipped without it): qemu-user
#            leaves read-only file mappings out of its cores, so gdb cannot
#            find where a PIE was loaded.
set -uo pipefail
abspath() { [ -z "$1" ] || echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
bin=$(abspath "$1")
shared_bin=$(abspath "${2:-}")
libso=$(abspath "${3:-}")
here=$(cd "$(dirname "$0")" && pwd)
ext=$here/../gdb/cgreenlet-gdb.py
qemu=${CGREENLET_GDB_QEMU:-}
core_bin=$(abspath "${CGREENLET_GDB_CORE_BIN:-}")
[ -n "$qemu" ] || core_bin=${core_bin:-$bin}
tmp=$(mktemp -d)
qpid=
trap 'reap; rm -rf "$tmp"' EXIT
fails=0

# The commands run in every mode, each output section after a marker.
cmds=(-ex 'echo @@info\n' -ex 'info greenlets'
      -ex 'echo @@alpha\n' -ex 'greenlet bt alpha'
      -ex 'echo @@beta\n' -ex 'greenlet bt beta'
      -ex 'echo @@gamma\n' -ex 'greenlet bt gamma'
      -ex 'echo @@delta\n' -ex 'greenlet bt delta'
      -ex 'echo @@later\n' -ex 'greenlet bt later'
      -ex 'echo @@all\n' -ex 'greenlet bt all'
      -ex 'echo @@end\n')

section() { # output name
  awk -v s="@@$2" '$0 == s {on = 1; next} /^@@/ {on = 0} on' <<<"$1"
}

fail() { # mode message output
  echo "gdb_greenlets [$1]: $2"
  echo "----- gdb output -----"
  echo "$3"
  echo "----------------------"
  fails=$((fails + 1))
}

# "id|thread|state|parent|in use|stack|function|name" of the row whose
# name (or, for main greenlets, function and thread) matches.
row() { # info-section name
  sed -E 's/^[ *]+//; s/ {2,}/|/g' <<<"$1" | awk -F'|' -v n="$2" '$8 == n'
}
main_row() { # info-section thread-prefix
  sed -E 's/^[ *]+//; s/ {2,}/|/g' <<<"$1" |
    awk -F'|' -v t="$2" '$7 == "(main)" && index($2, t) == 1'
}
field() { cut -d'|' -f"$2" <<<"$1"; }

# Frame function names of a backtrace, innermost first, without the
# library's own switch frames on top (the ucontext back end has them; the
# assembly one resumes straight into the caller).
frames() {
  sed -nE 's/^#[0-9]+ +(0x[0-9a-f]+ in )?([A-Za-z_][A-Za-z0-9_.]*) .*/\2/p' <<<"$1" |
    awk '!user && /^(greenlet__context_(swap|jump)|transfer|resume|resume_slow|greenlet_(switch|throw|kill))$/ {next} {user = 1; print}'
}

check_bt() { # mode out name expected-frames... (innermost first, a prefix)
  local mode=$1 out=$2 name=$3; shift 3
  local bt got want
  bt=$(section "$out" "$name")
  got=$(frames "$bt" | tr '\n' ' ')
  want="$* "
  if [[ "$got" != "$want"* ]]; then
    fail "$mode" "greenlet bt $name: frames '$got', expected them to start with '$want'" "$bt"
  fi
  if ! grep -q ' greenlet__entry ' <<<"$bt"; then
    fail "$mode" "greenlet bt $name does not end at the greenlet entry" "$bt"
  fi
}

check() { # mode output
  local mode=$1 out=$2 info m1 mw mx r clean
  # gdb ends the backtrace of a thread's own stack in libc's thread start
  # with "corrupt stack?" on armhf, as a plain bt of any thread does there:
  # not the extension's error (the worker's main greenlet shows it).
  clean=$(awk '/^Backtrace stopped: previous frame identical to this frame \(corrupt stack\?\)$/ &&
               prev ~ / from [^ ]*\/libc\.so\.6$/ {next} {prev = $0; print}' <<<"$out")
  [ "$clean" = "$out" ] || echo "gdb_greenlets [$mode]: note: gdb stops in libc's" \
    "thread start with 'corrupt stack?' (as a plain bt of a thread does here)"
  if grep -qE 'Python Exception|Traceback|corrupt stack|Cannot access memory|^Error|cgreenlet: gdb cannot' <<<"$clean"; then
    fail "$mode" "errors in the output" "$out"
    return
  fi
  # Only the table: gdb may print a warning there when it first reads.
  info=$(section "$out" info | grep -E '^[ *] +(Id|[0-9]+) ')
  m1=$(main_row "$info" "1 (")
  mx=$(main_row "$info" "exited")
  for n in alpha beta later finished omega gamma delta; do
    [ -n "$(row "$info" $n)" ] || fail "$mode" "info greenlets lacks $n" "$info"
  done
  [ "$(wc -l <<<"$info")" -eq 11 ] ||
    fail "$mode" "info greenlets: expected a header and 10 rows" "$info"
  [ "$(field "$m1" 3)" = running ] || fail "$mode" "main of thread 1 not running" "$info"
  [ "$(field "$mx" 3)" = dead ] || fail "$mode" "main of the exited thread not dead" "$info"
  local id1 idx ida idw
  id1=$(field "$m1" 1)
  idx=$(field "$mx" 1)
  ida=$(field "$(row "$info" alpha)" 1)
  r=$(row "$info" gamma)
  local wthread
  wthread=$(field "$r" 2)
  mw=$(sed -E 's/^[ *]+//; s/ {2,}/|/g' <<<"$info" |
         awk -F'|' -v t="$wthread" '$7 == "(main)" && $2 == t')
  idw=$(field "$mw" 1)
  # gdb knows both live threads (through qemu-user's gdbstub too).
  [[ "$(field "$m1" 2)" =~ ^1\ \(LWP\ [0-9]+\)$ && "$wthread" =~ ^[0-9]+\ \(LWP\ [0-9]+\)$ &&
     "$wthread" != "$(field "$m1" 2)" ]] ||
    fail "$mode" "gdb does not know the main thread and the worker as threads" "$info"
  [ "$(field "$mw" 3)" = suspended ] || fail "$mode" "worker's main not suspended" "$info"
  # name state parent-id thread
  while read -r n st par th; do
    r=$(row "$info" "$n")
    [ "$(field "$r" 3)" = "${st//_/ }" ] ||
      fail "$mode" "$n: state '$(field "$r" 3)', expected '${st//_/ }'" "$info"
    [ "$(field "$r" 4)" = "$par" ] ||
      fail "$mode" "$n: parent '$(field "$r" 4)', expected '$par'" "$info"
    [ "$(field "$r" 2)" = "$th" ] ||
      fail "$mode" "$n: thread '$(field "$r" 2)', expected '$th'" "$info"
    if [ "$st" = suspended ]; then
      [[ "$(field "$r" 5)" =~ ^[0-9] ]] && [ "$(field "$r" 6)" != - ] ||
        fail "$mode" "$n: no stack figures" "$info"
    fi
  done <<EOF
alpha suspended $id1 $(field "$m1" 2)
beta suspended $ida $(field "$m1" 2)
later not_started $id1 $(field "$m1" 2)
finished dead $id1 $(field "$m1" 2)
omega dead $idx exited
gamma suspended $idw $wthread
delta running $idw $wthread
EOF
  check_bt "$mode" "$out" alpha alpha_leaf alpha_mid alpha_run greenlet__entry
  check_bt "$mode" "$out" beta beta_leaf beta_run greenlet__entry
  check_bt "$mode" "$out" gamma gamma_leaf gamma_mid gamma_run greenlet__entry
  local bt
  bt=$(section "$out" delta)
  grep -q ' delta_block ' <<<"$bt" && grep -q ' delta_run ' <<<"$bt" ||
    fail "$mode" "greenlet bt delta (running) lacks delta_block/delta_run" "$bt"
  for n in alpha beta gamma; do
    grep -qE 'delta_|stop_here|pthread_cond' <<<"$(section "$out" $n)" &&
      fail "$mode" "greenlet bt $n shows its thread's frames" "$(section "$out" $n)"
  done
  grep -q 'not started' <<<"$(section "$out" later)" ||
    fail "$mode" "greenlet bt later: no 'not started' message" "$(section "$out" later)"
  bt=$(section "$out" all)
  [ "$(grep -c '^Greenlet ' <<<"$bt")" -eq 6 ] ||
    fail "$mode" "greenlet bt all: expected 6 started, live greenlets" "$bt"
  awk -v RS= -v h="Greenlet $idw " 'index($0, h) == 1' <<<"$bt" | grep -q ' worker ' ||
    fail "$mode" "greenlet bt all: the worker's suspended main is not in worker()" "$bt"
  echo "gdb_greenlets [$mode]: checked"
}

if [ -n "$qemu" ]; then
  gdbb() { timeout 300 gdb-multiarch -nx -batch -iex 'set sysroot /' "$@" 2>&1; }
else
  gdbb() { timeout 300 gdb -nx -batch "$@" 2>&1; }
fi
reap() { [ -z "$qpid" ] || { kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null; qpid=; }; }

# start BIN: sets STOP to the gdb arguments that bring BIN to the
# breakpoint on stop_here.  Natively gdb runs it; under qemu-user, BIN
# starts now under the gdbstub (the environment reaches the guest) and gdb
# attaches to it.
start() {
  STOP=(-ex 'break stop_here')
  if [ -z "$qemu" ]; then STOP+=(-ex run); return; fi
  local port hex n=0
  port=$((20000 + RANDOM % 20000))
  "$qemu" -g "$port" "$1" >/dev/null 2>&1 &
  qpid=$!
  hex=$(printf '%04X' "$port")
  until grep -q ":$hex 00000000:0000 0A" /proc/net/tcp 2>/dev/null || [ $n -ge 100 ]; do
    sleep 0.1
    n=$((n + 1))
  done
  STOP=("${TDESC[@]}" -ex "target remote 127.0.0.1:$port" "${STOP[@]}" -ex continue)
}

# qemu-i386's target description lacks the org.gnu.gdb.i386.linux feature
# (orig_eax), without which gdb 13 sets up none of its GNU/Linux support
# for i386: no shared libraries, so neither libc's frames nor auto-load.
# The live sessions give gdb qemu's own description with that feature.
TDESC=()
if [ "$qemu" = qemu-i386 ]; then
  start "$bin"
  xml=$(gdbb "${STOP[@]:0:2}" -ex 'maint print xml-tdesc' -ex kill "$bin" |
          sed -n '/^<?xml/,/^<\/target>/p')
  reap
  n=$(grep -c '<reg ' <<<"$xml")
  if grep -q '<architecture>i386</architecture>' <<<"$xml" &&
     ! grep -q 'org.gnu.gdb.i386.linux' <<<"$xml"; then
    sed "s|^</target>|  <feature name=\"org.gnu.gdb.i386.linux\">\n    <reg name=\"orig_eax\" bitsize=\"32\" type=\"int\" regnum=\"$n\"/>\n  </feature>\n</target>|" \
      <<<"$xml" >"$tmp/tdesc.xml"
    TDESC=(-ex "set tdesc filename $tmp/tdesc.xml")
    echo "gdb_greenlets: $qemu's target description lacks org.gnu.gdb.i386.linux" \
      "(orig_eax), without which gdb sets up no GNU/Linux support (no shared" \
      "libraries): gdb gets qemu's description with that feature added"
  fi
fi

# 1. live, and 2. gcore of the same stop (mprotect guards, see above).
# The hook for extra frames (gdb/cgreenlet-gdb.py, register_bt_hook): one
# keyed by beta's run function shows in beta's backtrace only.
hook='python import cgreenlet_gdb; cgreenlet_gdb.register_bt_hook(lambda g, f: [(None, "#-  <extra frame of %s>\n" % g.name)] + f, run="beta_run")'
probe=()
[ -z "$qemu" ] || probe=(-ex 'echo @@threads\n' -ex 'info threads'
                         -ex 'echo @@maps\n' -ex 'info proc mappings')
start "$bin"
out=$(gdbb -iex "source $ext" "${STOP[@]}" "${cmds[@]}" \
        -ex "$hook" -ex 'echo @@hookbeta\n' -ex 'greenlet bt beta' \
        -ex 'echo @@hookalpha\n' -ex 'greenlet bt alpha' "${probe[@]}" \
        -ex 'echo @@end\n' -ex kill "$bin")
reap
check live "$out"
if ! grep -q '^#-  <extra frame of beta>' <<<"$(section "$out" hookbeta)" ||
   grep -q 'extra frame' <<<"$(section "$out" hookalpha)"; then
  fail live "the bt hook keyed by beta_run did not apply to beta alone" "$out"
fi
if [ -n "$qemu" ]; then
  echo "gdb_greenlets [live]: gdb-multiarch sees $(section "$out" threads |
    grep -cE '^[* ] +[0-9]+ +Thread ') threads through $qemu's gdbstub"
fi
if [ -n "$qemu" ] && grep -q 'unable to open /proc file' <<<"$(section "$out" maps)"; then
  echo "gdb_greenlets [gcore]: skipped ($qemu's gdbstub gives gdb no memory map" \
    "of the process (no /proc/PID/maps through it), so gcore would save the" \
    "program's own sections and none of the heap or greenlet stacks)"
else
  CGREENLET_GUARD=mprotect start "$bin"
  out=$(CGREENLET_GUARD=mprotect gdbb "${STOP[@]}" -ex "gcore $tmp/gcore" -ex kill "$bin")
  reap
  if [ -s "$tmp/gcore" ]; then
    check gcore "$(gdbb -iex "source $ext" "${cmds[@]}" "$bin" "$tmp/gcore")"
  else
    fail gcore "gcore wrote no core" "$out"
  fi
fi

# 3. a kernel core; under qemu-user, the core qemu writes for its guest.
pattern=$(cat /proc/sys/kernel/core_pattern 2>/dev/null || echo '|')
if [ -n "$qemu" ] && [ -z "$core_bin" ]; then
  echo "gdb_greenlets [kernel]: skipped (no CGREENLET_GDB_CORE_BIN: qemu-user's" \
    "cores leave out read-only file mappings, so gdb cannot place a PIE)"
elif ! (ulimit -c unlimited) 2>/dev/null; then
  echo "gdb_greenlets [kernel]: skipped (ulimit -c cannot be raised)"
elif [ -z "$qemu" ] && [[ "$pattern" == \|* ]]; then
  echo "gdb_greenlets [kernel]: skipped (core_pattern '$pattern' or ulimit -c)"
else
  mkdir -p "$tmp/k"
  if [ -n "$qemu" ]; then
    # qemu-user dumps the guest, then dies of the signal itself: a
    # directory named core keeps the kernel from dumping qemu too.
    mkdir -p "$tmp/k/core"
    { (cd "$tmp/k" && ulimit -c unlimited && exec "$qemu" "$core_bin" abort) >/dev/null 2>&1; } 2>/dev/null
    core=$(find "$tmp/k" -maxdepth 1 -name 'qemu_*.core' | head -n 1)
  else
    { (cd "$tmp/k" && ulimit -c unlimited && exec "$bin" abort) >/dev/null 2>&1; } 2>/dev/null
    core=$(find "$tmp/k" -maxdepth 1 -name 'core*' | head -n 1)
  fi
  if [ -z "$core" ] && [ -n "$qemu" ] && ! grep -qa 'qemu_%s_%s_%d.core' "$(command -v "$qemu")"; then
    echo "gdb_greenlets [kernel]: skipped ($qemu writes no core files: qemu-user" \
      "has no ELF core dump for this target)"
  elif [ -z "$core" ] && [ -n "$qemu" ]; then
    fail kernel "$qemu wrote no core of $core_bin in $tmp/k" ""
  elif [ -z "$core" ]; then
    echo "gdb_greenlets [kernel]: skipped (no core in $tmp/k; core_pattern '$pattern')"
  else
    [ -z "$qemu" ] || [ "$core_bin" = "$bin" ] || echo "gdb_greenlets [kernel]:" \
      "on $qemu's own core of $(basename "$core_bin") (built -no-pie: qemu-user's" \
      "cores leave out read-only file mappings, the program headers among them," \
      "so gdb cannot find where a PIE was loaded)"
    check kernel "$(gdbb -iex "source $ext" "${cmds[@]}" "$core_bin" "$core")"
  fi
fi

# 4. auto-load, laid out as `make install` does: the library in LIBDIR and
# the script in <auto-load dir>/LIBDIR/libcgreenlet.so.0-gdb.py (here with
# gdb's auto-load directory moved to $tmp/auto).
if [ -n "$shared_bin" ]; then
  mkdir -p "$tmp/lib" "$tmp/auto$tmp/lib"
  cp "$libso" "$tmp/lib/libcgreenlet.so.0"
  cp "$ext" "$tmp/auto$tmp/lib/libcgreenlet.so.0-gdb.py"
  LD_LIBRARY_PATH=$tmp/lib start "$shared_bin"
  out=$(LD_LIBRARY_PATH=$tmp/lib gdbb -iex "set auto-load scripts-directory $tmp/auto" \
          -iex "set auto-load safe-path $tmp/auto" \
          "${STOP[@]}" "${cmds[@]}" -ex kill "$shared_bin")
  reap
  check autoload "$out"
fi

if [ "$fails" -ne 0 ]; then
  echo "gdb_greenlets: $fails failure(s)"
  exit 1
fi
echo "gdb_greenlets: info greenlets and greenlet bt right on live and core"
