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
set -uo pipefail
abspath() { [ -z "$1" ] || echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
bin=$(abspath "$1")
shared_bin=$(abspath "${2:-}")
libso=$(abspath "${3:-}")
here=$(cd "$(dirname "$0")" && pwd)
ext=$here/../gdb/cgreenlet-gdb.py
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
  local mode=$1 out=$2 info m1 mw mx r
  if grep -qE 'Python Exception|Traceback|corrupt stack|Cannot access memory|^Error' <<<"$out"; then
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

gdbb() { timeout 300 gdb -nx -batch "$@" 2>&1; }

# 1. live, and 2. gcore of the same stop (mprotect guards, see above).
# The hook for extra frames (gdb/cgreenlet-gdb.py, register_bt_hook): one
# keyed by beta's run function shows in beta's backtrace only.
hook='python import cgreenlet_gdb; cgreenlet_gdb.register_bt_hook(lambda g, f: [(None, "#-  <extra frame of %s>\n" % g.name)] + f, run="beta_run")'
out=$(gdbb -iex "source $ext" -ex 'break stop_here' -ex run "${cmds[@]}" \
        -ex "$hook" -ex 'echo @@hookbeta\n' -ex 'greenlet bt beta' \
        -ex 'echo @@hookalpha\n' -ex 'greenlet bt alpha' -ex 'echo @@end\n' \
        -ex kill "$bin")
check live "$out"
if ! grep -q '^#-  <extra frame of beta>' <<<"$(section "$out" hookbeta)" ||
   grep -q 'extra frame' <<<"$(section "$out" hookalpha)"; then
  fail live "the bt hook keyed by beta_run did not apply to beta alone" "$out"
fi
out=$(CGREENLET_GUARD=mprotect gdbb -ex 'break stop_here' -ex run \
        -ex "gcore $tmp/gcore" -ex kill "$bin")
if [ -s "$tmp/gcore" ]; then
  check gcore "$(gdbb -iex "source $ext" "${cmds[@]}" "$bin" "$tmp/gcore")"
else
  fail gcore "gcore wrote no core" "$out"
fi

# 3. a kernel core.
pattern=$(cat /proc/sys/kernel/core_pattern 2>/dev/null || echo '|')
if [[ "$pattern" == \|* ]] || ! (ulimit -c unlimited) 2>/dev/null; then
  echo "gdb_greenlets [kernel]: skipped (core_pattern '$pattern' or ulimit -c)"
else
  { (cd "$tmp" && ulimit -c unlimited && exec "$bin" abort) >/dev/null 2>&1; } 2>/dev/null
  core=$(find "$tmp" -maxdepth 1 -name 'core*' -newer "$ext" ! -name gcore | head -n 1)
  if [ -z "$core" ]; then
    echo "gdb_greenlets [kernel]: skipped (no core in $tmp; core_pattern '$pattern')"
  else
    check kernel "$(gdbb -iex "source $ext" "${cmds[@]}" "$bin" "$core")"
  fi
fi

# 4. auto-load, laid out as `make install` does: the library in LIBDIR and
# the script in <auto-load dir>/LIBDIR/libcgreenlet.so.0-gdb.py (here with
# gdb's auto-load directory moved to $tmp/auto).
if [ -n "$shared_bin" ]; then
  mkdir -p "$tmp/lib" "$tmp/auto$tmp/lib"
  cp "$libso" "$tmp/lib/libcgreenlet.so.0"
  cp "$ext" "$tmp/auto$tmp/lib/libcgreenlet.so.0-gdb.py"
  out=$(LD_LIBRARY_PATH=$tmp/lib gdbb -iex "set auto-load scripts-directory $tmp/auto" \
          -iex "set auto-load safe-path $tmp/auto" \
          -ex 'break stop_here' -ex run "${cmds[@]}" -ex kill "$shared_bin")
  check autoload "$out"
fi

if [ "$fails" -ne 0 ]; then
  echo "gdb_greenlets: $fails failure(s)"
  exit 1
fi
echo "gdb_greenlets: info greenlets and greenlet bt right on live and core"
