#!/usr/bin/env bash
# bench-cross.sh [--reps N] [ISA...] - the core's switch and create costs on
# each cross ISA under qemu-user (default: aarch64 i386 arm ppc64le s390x
# riscv64), with the ucontext back end built for the same ISA as the anchor,
# measured in the same run on the same emulated CPU.
#
# Under emulation an absolute figure says how fast qemu's translator is, not
# the ISA: only the ratio to the anchor on the same emulated CPU means
# anything, and even that one is skewed against ucontext, whose swapcontext
# makes a sigprocmask system call per switch, which qemu-user emulates at a
# higher price than a kernel charges.  Boost.Context is not the anchor here:
# Debian 12 has no libboost-context for riscv64, and for the others it would
# need g++ cross compilers and a sysroot of Boost's target .debs.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=5
if [ "${1:-}" = --reps ]; then REPS=${2:?--reps needs a number}; shift 2; fi
ISAS=("$@")
[ ${#ISAS[@]} -gt 0 ] || ISAS=(aarch64 i386 arm ppc64le s390x riscv64)

info() { # ISA -> TRIPLET DEBARCH QEMU LDSO
  case "$1" in
    aarch64) echo "aarch64-linux-gnu arm64 aarch64 ld-linux-aarch64.so.1" ;;
    i386) echo "i686-linux-gnu i386 i386 ld-linux.so.2" ;;
    arm) echo "arm-linux-gnueabihf armhf arm ld-linux-armhf.so.3" ;;
    ppc64le) echo "powerpc64le-linux-gnu ppc64el ppc64le ld64.so.2" ;;
    s390x) echo "s390x-linux-gnu s390x s390x ld64.so.1" ;;
    riscv64) echo "riscv64-linux-gnu riscv64 riscv64 ld-linux-riscv64-lp64d.so.1" ;;
    *) echo "bench-cross.sh: unknown ISA $1" >&2; return 1 ;;
  esac
}

missing=()
for isa in "${ISAS[@]}"; do
  read -r t a q l <<<"$(info "$isa")"
  for p in make "gcc-$t" "libc6-dev-$a-cross" qemu-user; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench-cross.sh needs: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

OUT=build/bench-cross
mkdir -p "$OUT"
rows=()
for isa in "${ISAS[@]}"; do
  read -r t a q l <<<"$(info "$isa")"
  link=(-Wl,--dynamic-linker=/usr/$t/lib/$l -Wl,-rpath=/usr/$t/lib)
  for ctx in asm ucontext; do
    b=build/$t-bench-$ctx
    make -s lib CROSS="$t-" CONTEXT=$ctx VALGRIND=0 BUILD=$b >/dev/null
    "$t-gcc" -std=c11 -O2 -Wall -Wextra -Werror -Iinclude bench/bench_c.c \
      "$b/libcgreenlet.a" -pthread "${link[@]}" -o "$OUT/bench_c-$isa-$ctx"
  done
  declare -A S=() C=()
  for ctx in asm ucontext; do S[$ctx]=; C[$ctx]=; done
  for ((r = 0; r < REPS; r++)); do
    for ctx in asm ucontext; do # interleaved, same conditions for both
      S[$ctx]+="$("qemu-$q" "$OUT/bench_c-$isa-$ctx" switch 200000) "
      C[$ctx]+="$("qemu-$q" "$OUT/bench_c-$isa-$ctx" create 20000) "
    done
  done
  sa=$(tr ' ' '\n' <<<"${S[asm]}" | grep . | median)
  su=$(tr ' ' '\n' <<<"${S[ucontext]}" | grep . | median)
  ca=$(tr ' ' '\n' <<<"${C[asm]}" | grep . | median)
  cu=$(tr ' ' '\n' <<<"${C[ucontext]}" | grep . | median)
  rows+=("$(awk -v i="$isa" -v sa="$sa" -v su="$su" -v ca="$ca" -v cu="$cu" \
    'BEGIN {printf "| %-8s | %8.1f | %8.1f | %6.3fx | %8.1f | %8.1f | %6.3fx |", i, sa, su, sa/su, ca, cu, ca/cu}')")
  echo "$isa done" >&2
done

echo
echo "qemu-user $(qemu-aarch64 --version | head -1 | awk '{print $3}') on $(uname -m), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); medians of $REPS interleaved runs."
echo "Emulated: only the ratio to ucontext on the same emulated CPU means anything (see the script's header)."
echo
echo "| ISA (emulated) | switch ns | ucontext | ratio   | create ns | ucontext | ratio   |"
echo "| ---      | ---:      | ---:     | ---:    | ---:      | ---:     | ---:    |"
printf '%s\n' "${rows[@]}"
