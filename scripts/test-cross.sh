#!/usr/bin/env bash
# test-cross.sh ISA [SUITE-ARGS...] - cross-build cgreenlet for ISA with
# Debian's gcc cross compiler and run the whole C suite under qemu-user.
#   ISA: arm (armhf), i386, ppc64le (ppc64el), s390x, riscv64; aarch64 runs
#        scripts/test-aarch64.sh (Criterion from an arm64 sysroot); `all`
#        runs the five above and prints a table.
# Extra arguments go to the test binary (--filter 'core/*', --verbose).
#
# How, and why (docs/platforms.md has the table):
#  * Debian 12 builds Criterion for amd64, arm64 and i386 only (riscv64 is
#    no Debian 12 architecture at all), so the suite is built against
#    tests/minicriterion (make TEST_RUNNER=mini): the same test sources, a
#    small runner that forks each test as Criterion does, prints every skip
#    with its reason, and needs nothing but the target's libc.  For i386,
#    where Criterion exists, the same runner is used for uniformity.
#  * The runner forks but never re-executes itself, so no binfmt_misc
#    handler is needed: the host runs `qemu-<isa> binary` directly.
#  * The binaries name the cross libc (/usr/<triplet>/lib, from
#    libc6-<arch>-cross) as their dynamic linker and rpath, instead of
#    QEMU_LD_PREFIX: with QEMU_LD_PREFIX, a forked i386 child hangs in
#    qemu-i386 7.2 before its first system call.
#  * CGREENLET_TEST_QEMU=1 lets tests skip what qemu-user cannot emulate
#    (RLIMIT_AS, the emulator's own memory in VmSize, tens of thousands of
#    mprotect mappings); CGREENLET_GUARD=mprotect because qemu-user reports
#    MADV_GUARD_INSTALL as done without doing it.  CGREENLET_TEST_LIGHT
#    defaults to 0: the guard-fault (overflow detection) tests run.
#  * arm and riscv64: gcc 12 emits no unwind tables for C there by default,
#    so backtrace() sees one frame even on a plain thread; the suite is built
#    with -funwind-tables so the unwinding tests mean something.
set -uo pipefail
cd "$(dirname "$0")/.."

ALL=(i386 arm ppc64le s390x riscv64)

isa_info() { # ISA -> TRIPLET DEBARCH QEMU LDSO EXTRA_CFLAGS
  case "$1" in
    i386) echo "i686-linux-gnu i386 i386 ld-linux.so.2 -" ;;
    arm) echo "arm-linux-gnueabihf armhf arm ld-linux-armhf.so.3 -funwind-tables" ;;
    ppc64le) echo "powerpc64le-linux-gnu ppc64el ppc64le ld64.so.2 -" ;;
    s390x) echo "s390x-linux-gnu s390x s390x ld64.so.1 -" ;;
    riscv64) echo "riscv64-linux-gnu riscv64 riscv64 ld-linux-riscv64-lp64d.so.1 -funwind-tables" ;;
    *) return 1 ;;
  esac
}

# Installs (as root) or names the Debian packages the ISAs need.
deps() {
  local isa missing=() p t a q l x
  for isa in "$@"; do
    read -r t a q l x <<<"$(isa_info "$isa")"
    for p in make "gcc-$t" "libc6-dev-$a-cross" qemu-user gdb-multiarch; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$p")
    done
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-cross.sh needs the Debian packages: ${missing[*]}" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  echo "== installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
}

# build ISA [make args...]: the library and the suite into build/<triplet>.
build() {
  local isa=$1 t a q l x
  shift
  read -r t a q l x <<<"$(isa_info "$isa")"
  [ "$x" = - ] && x=
  # Through the environment, so the Makefile's `override ... +=` still
  # apply; CFLAGS replaces only the default -O2 -g.
  CFLAGS="-O2 -g $x" \
    LDFLAGS="-Wl,--dynamic-linker=/usr/$t/lib/$l -Wl,-rpath=/usr/$t/lib ${LDFLAGS:-}" \
    make -s lib tests CROSS="$t-" TEST_RUNNER=mini VALGRIND=0 "$@"
}

run_one() { # ISA [suite args...]
  local isa=$1 t a q l x
  shift
  read -r t a q l x <<<"$(isa_info "$isa")"
  build "$isa" || return 1
  local bin=build/$t/tests/cgreenlet-tests
  echo "== $(qemu-"$q" --version | head -1): $bin"
  CGREENLET_TEST_QEMU=1 CGREENLET_TEST_LIGHT=${CGREENLET_TEST_LIGHT:-0} \
    CGREENLET_GUARD=${CGREENLET_GUARD:-mprotect} \
    "qemu-$q" "$bin" --jobs "${JOBS:-2}" "$@" || return 1
  # gdb's backtrace inside a greenlet, and the gdb extension (info
  # greenlets, greenlet bt), through qemu's gdbstub; the kernel-core mode on
  # qemu's own core of the -no-pie build (tests/gdb_greenlets.sh says why).
  [ $# -eq 0 ] || return 0
  build "$isa" gdb-target gdb-greenlets || return 1
  local b=build/$t/tests
  echo "-- gdb-multiarch on qemu-$q -g: tests/gdb_bt.sh, tests/gdb_greenlets.sh, tests/gdb_shared.sh"
  local -x CGREENLET_GDB_QEMU=qemu-$q
  tests/gdb_bt.sh "$b/gdb-target" &&
    CGREENLET_GDB_CORE_BIN=$b/gdb-greenlets-target-nopie tests/gdb_greenlets.sh \
      "$b/gdb-greenlets-target" "$b/gdb-greenlets-target-shared" "build/$t/libcgreenlet.so" &&
    tests/gdb_shared.sh "$b/gdb-shared-target"
}

isa=${1:-}
[ $# -gt 0 ] && shift
case "$isa" in
  aarch64) exec scripts/test-aarch64.sh "$@" ;;
  all) ;;
  *) isa_info "$isa" >/dev/null || {
       echo "usage: test-cross.sh {${ALL[*]// /|}|aarch64|all} [suite args]" >&2
       exit 2
     } ;;
esac

if [ "$isa" != all ]; then
  deps "$isa" || exit 1
  run_one "$isa" "$@"
  exit
fi

deps "${ALL[@]}" || exit 1
declare -A RES SECS SUM
rc=0
for i in "${ALL[@]}"; do
  echo "=============== cross: $i"
  start=$(date +%s)
  log=$(mktemp)
  run_one "$i" "$@" 2>&1 | tee "$log"
  if [ "${PIPESTATUS[0]}" -eq 0 ]; then RES[$i]=pass; else RES[$i]=FAIL; rc=1; fi
  SUM[$i]=$(grep -o 'Tested: [0-9]* | Passing: [0-9]* | Failing: [0-9]* | Skipped: [0-9]*' "$log" | tail -1)
  rm -f "$log"
  SECS[$i]=$(( $(date +%s) - start ))
done
echo
echo "=============== cross summary (qemu-user; skips are listed above with reasons)"
printf '%-8s %-5s %7s  %s\n' isa result seconds suite
for i in "${ALL[@]}"; do
  printf '%-8s %-5s %7s  %s\n' "$i" "${RES[$i]}" "${SECS[$i]}" "${SUM[$i]:-no summary}"
done
exit $rc
