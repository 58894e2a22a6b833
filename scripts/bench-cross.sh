#!/usr/bin/env bash
# bench-cross.sh [--reps N] [ISA...] - the core's switch, create and park
# costs on each cross ISA under qemu-user (default: aarch64 i386 arm ppc64le
# s390x riscv64 x86_64) against Boost.Context built for the same ISA, as
# `make bench` does natively, and against the core's own ucontext back end;
# all measured in the same run on the same emulated CPU, the programs
# interleaved, the medians of N runs (default 5).
#
# Under emulation an absolute figure says how fast qemu's translator is, not
# the ISA: only a ratio to an anchor on the same emulated CPU means
# anything, and even a ratio is qemu's weighting of the work, not a
# processor's (TCG makes every indirect branch and return a lookup, and
# emulates atomics and system calls dearly).  The x86_64 rows measure that:
# the same x86-64 binaries natively and under qemu-x86_64, in the same run.
# The ucontext ratio is skewed against ucontext, whose swapcontext makes a
# sigprocmask system call per switch, which qemu-user emulates at a higher
# price than a kernel charges.
#
# Boost.Context, as in bench/bench_boost.cpp (the program `make bench` runs):
#  * built with Debian's g++ cross compiler (g++-<triplet>) against Debian's
#    Boost 1.74 for the target: libboost-context1.74-dev:<arch> and
#    libboost-context1.74.0:<arch>, fetched with `apt-get download` (the
#    version of the host's libboost1.74-dev) into ~/.cache/cgreenlet-debs
#    (CGREENLET_DEBS_CACHE) and unpacked with dpkg-deb -x into a private
#    sysroot, build/bench-cross/boost-<arch>; nothing of the target's is
#    installed.  Fetching needs the <arch> dpkg architecture and its apt
#    lists, added as root (dpkg --add-architecture, apt-get update) if
#    missing; with the .debs cached a rerun needs neither, nor the network.
#  * the headers are the host's libboost1.74-dev: it is Multi-Arch: same, so
#    its files are the same for every architecture (Boost.Config detects the
#    target from the compiler's macros); the fcontext assembly is chosen when
#    Debian builds libboost_context for the target, and the script checks
#    that the binary has jump_fcontext from that library's
#    jump_<isa>_<abi>_elf_gas.o (ar, nm), linked statically
#    (libboost_context.a, as the core is; readelf: no shared Boost), and is
#    an ELF file of the ISA (objdump).
#  * riscv64 has no Boost: it is no Debian 12 architecture.  There the
#    ucontext anchor only.
#  * x86_64 (on an x86-64 host, in the default list): the host's own gcc,
#    g++ and Boost, as `make bench` builds them.
#
# The core's switch is also built with FPU_SAVE=0 (the "no FPU" column).
#
# What each switch saves differs on three ISAs (docs/platforms.md): on
# armhf the core also keeps FPSCR; on ppc64el Boost 1.74 saves r14-r31, CR
# and LR only, none of f14-f31, v20-v31 (callee-saved in ELFv2) or FPSCR,
# which the core saves; on i386 Boost also saves MXCSR, which the core
# touches only when built with SSE (Debian's i686 baseline is not).
# Boost's switch figure is a raw jump_fcontext ping-pong, the core's a
# greenlet_switch with a value each way, as natively.
#
# The clock is each thread's CPU time (CGREENLET_BENCH_CLOCK=thread, read
# by both programs), not the wall clock `make bench` uses: it leaves out the
# time a run waits for a CPU, which on a shared machine made the wall-clock
# figures of the same binary vary by 3x from run to run.
# CGREENLET_BENCH_CLOCK=monotonic measures wall time.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=5
if [ "${1:-}" = --reps ]; then REPS=${2:?--reps needs a number}; shift 2; fi
case "$REPS" in ''|*[!0-9]*|0) echo "bench-cross.sh: --reps wants a positive number" >&2; exit 2 ;; esac
ISAS=("$@")
[ ${#ISAS[@]} -gt 0 ] || ISAS=(aarch64 i386 arm ppc64le s390x riscv64)
if [ $# -eq 0 ] && [ "$(uname -m)" = x86_64 ]; then ISAS+=(x86_64); fi

info() { # ISA -> TRIPLET DEBARCH QEMU LDSO MULTIARCH BOOST_JUMP_OBJECT|-
  case "$1" in
    aarch64) echo "aarch64-linux-gnu arm64 aarch64 ld-linux-aarch64.so.1 aarch64-linux-gnu jump_arm64_aapcs_elf_gas.o" ;;
    i386) echo "i686-linux-gnu i386 i386 ld-linux.so.2 i386-linux-gnu jump_i386_sysv_elf_gas.o" ;;
    arm) echo "arm-linux-gnueabihf armhf arm ld-linux-armhf.so.3 arm-linux-gnueabihf jump_arm_aapcs_elf_gas.o" ;;
    ppc64le) echo "powerpc64le-linux-gnu ppc64el ppc64le ld64.so.2 powerpc64le-linux-gnu jump_ppc64_sysv_elf_gas.o" ;;
    s390x) echo "s390x-linux-gnu s390x s390x ld64.so.1 s390x-linux-gnu jump_s390x_sysv_elf_gas.o" ;;
    riscv64) echo "riscv64-linux-gnu riscv64 riscv64 ld-linux-riscv64-lp64d.so.1 riscv64-linux-gnu -" ;;
    # The host's own toolchain, libc and Boost: the calibration rows.
    x86_64) [ "$(uname -m)" = x86_64 ] || { echo "bench-cross.sh: x86_64 is the calibration on an x86-64 host" >&2; return 1; }
      echo "x86_64-linux-gnu amd64 x86_64 - x86_64-linux-gnu jump_x86_64_sysv_elf_gas.o" ;;
    *) echo "bench-cross.sh: unknown ISA $1" >&2; return 1 ;;
  esac
}
for isa in "${ISAS[@]}"; do info "$isa" >/dev/null || exit 2; done

die() { echo "bench-cross.sh: $*" >&2; exit 1; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep "install ok installed" >/dev/null; }

# ---- host packages -----------------------------------------------------------
missing=()
for isa in "${ISAS[@]}"; do
  read -r t a q l m j <<<"$(info "$isa")"
  if [ "$isa" = x86_64 ]; then
    pkgs=(make gcc g++ libboost-context1.74-dev qemu-user)
  else
    pkgs=(make "gcc-$t" "libc6-dev-$a-cross" qemu-user)
    [ "$j" = - ] || pkgs+=("g++-$t" libboost1.74-dev)
  fi
  for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench-cross.sh needs the Debian packages: ${missing[*]}" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "== installing Debian packages: ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

# ---- Boost for the target: .debs in the cache, a sysroot in build/ ----------
DEBS=${CGREENLET_DEBS_CACHE:-$HOME/.cache/cgreenlet-debs}
BOOST_VER=
boost_pkgs() { # DEBARCH -> the target's packages, pinned to the host's version
  echo "libboost-context1.74-dev:$1=$BOOST_VER libboost-context1.74.0:$1=$BOOST_VER"
}
deb_file() { # PACKAGE:ARCH=VERSION -> the file name apt-get download writes
  local p=${1%%:*} rest=${1#*:}
  local arch=${rest%%=*} v=${rest#*=}
  echo "${p}_${v//:/%3a}_$arch.deb"
}
fetch_boost() { # DEBARCH: the .debs into $DEBS/DEBARCH, if not there yet
  local a=$1 want=() p
  for p in $(boost_pkgs "$a"); do
    [ -f "$DEBS/$a/$(deb_file "$p")" ] || want+=("$p")
  done
  [ ${#want[@]} -eq 0 ] && return 0
  if ! apt-cache show "libboost-context1.74-dev:$a=$BOOST_VER" >/dev/null 2>&1; then
    local need_arch=0
    dpkg --print-foreign-architectures | grep -x "$a" >/dev/null || need_arch=1
    if [ "$(id -u)" -ne 0 ]; then
      echo "bench-cross.sh: apt cannot fetch libboost-context1.74-dev:$a $BOOST_VER; set it up with:" >&2
      [ $need_arch -eq 1 ] && echo "  sudo dpkg --add-architecture $a" >&2
      echo "  sudo apt-get update" >&2
      exit 1
    fi
    if [ $need_arch -eq 1 ]; then
      echo "== adding the $a dpkg architecture (for apt-get download of Boost's $a .debs)" >&2
      dpkg --add-architecture "$a"
    fi
    echo "== apt-get update" >&2
    apt-get update -qq
  fi
  echo "== fetching ${want[*]} into $DEBS/$a" >&2
  mkdir -p "$DEBS/$a"
  local tmp
  tmp=$(mktemp -d "$DEBS/$a/.tmp.XXXXXX")
  # As root apt warns that it downloads unsandboxed into a root-owned dir.
  (cd "$tmp" && { apt-get download -qq "${want[@]}" 2>&1 || true; } |
    { grep -v "^W: Download is performed unsandboxed" >&2 || true; })
  for p in "${want[@]}"; do
    [ -f "$tmp/$(deb_file "$p")" ] || { rm -rf "$tmp"; die "apt-get download $p failed"; }
    mv "$tmp/$(deb_file "$p")" "$DEBS/$a/"
  done
  rm -rf "$tmp"
}
sysroot_boost() { # DEBARCH -> prints the sysroot, unpacked from the cache
  local a=$1 sys=build/bench-cross/boost-$1 stamp="" p
  for p in $(boost_pkgs "$a"); do stamp+="$(deb_file "$p")"$'\n'; done
  if [ ! -f "$sys/.debs" ] || [ "$(cat "$sys/.debs")" != "${stamp%$'\n'}" ]; then
    rm -rf "$sys"
    mkdir -p "$sys/include"
    for p in $(boost_pkgs "$a"); do dpkg-deb -x "$DEBS/$a/$(deb_file "$p")" "$sys"; done
    # Only boost/ of the host's /usr/include: the rest is the cross libc's.
    ln -s /usr/include/boost "$sys/include/boost"
    printf '%s' "${stamp%$'\n'}" >"$sys/.debs"
  fi
  echo "$sys"
}

# ---- build -----------------------------------------------------------------
t_build=$SECONDS
OUT=build/bench-cross
mkdir -p "$OUT"
declare -A HAS_BOOST=() BOOST_NOTE=()
for isa in "${ISAS[@]}"; do
  read -r t a q l m j <<<"$(info "$isa")"
  link=(-Wl,--dynamic-linker=/usr/$t/lib/$l -Wl,-rpath=/usr/$t/lib)
  [ "$isa" = x86_64 ] && link=()
  for ctx in asm nofpu ucontext; do # nofpu: the switch without the FP control word
    b=build/$t-bench-$ctx
    case $ctx in
      nofpu) make -s lib CROSS="$t-" FPU_SAVE=0 VALGRIND=0 BUILD=$b >/dev/null ;;
      *) make -s lib CROSS="$t-" CONTEXT=$ctx VALGRIND=0 BUILD=$b >/dev/null ;;
    esac
    "$t-gcc" -std=c11 -O2 -Wall -Wextra -Werror -Iinclude bench/bench_c.c \
      "$b/libcgreenlet.a" -pthread "${link[@]}" -o "$OUT/bench_c-$isa-$ctx"
  done
  if [ "$j" = - ]; then
    BOOST_NOTE[$isa]="no Boost.Context: $isa is no Debian 12 architecture, so Debian 12 has no libboost-context for it; the ucontext anchor only"
    continue
  fi
  [ -n "$BOOST_VER" ] || BOOST_VER=$(dpkg-query -W -f='${Version}' libboost1.74-dev)
  if [ "$isa" = x86_64 ]; then # the host's Boost, as make bench uses
    lib=/usr/lib/$m
    inc=() # (-isystem /usr/include would break libstdc++'s #include_next)
  else
    fetch_boost "$a"
    sys=$(sysroot_boost "$a")
    lib=$sys/usr/lib/$m
    inc=(-isystem "$sys/include")
  fi
  static=0
  if [ -f "$lib/libboost_context.a" ]; then
    static=1
    blib=("$lib/libboost_context.a")
    members=$("$t-ar" t "$lib/libboost_context.a")
    grep -x "$j" <<<"$members" >/dev/null ||
      die "$isa: $lib/libboost_context.a has no $j (it has: $(tr '\n' ' ' <<<"$members"))"
    how="static, from $j of libboost_context.a"
  else # not so in Debian 12's .debs, but just in case: the shared library
    blib=(-L"$lib" -lboost_context -Wl,-rpath="$(cd "$lib" && pwd)")
    how="from the shared libboost_context.so"
  fi
  # RPATH, not RUNPATH: libstdc++ finds the cross libm through it too.
  "$t-g++" -std=c++14 -O2 -DNDEBUG -Wall -Wextra -Werror "${inc[@]}" \
    bench/bench_boost.cpp "${blib[@]}" -pthread "${link[@]}" -Wl,--disable-new-dtags \
    -o "$OUT/bench_boost-$isa"
  # The binary must be an ELF file of this ISA and, when static, define
  # jump_fcontext itself (from the archive's member checked above) and
  # need no libboost_context.so.
  if [ $static = 1 ]; then
    "$t-nm" "$OUT/bench_boost-$isa" | grep ' T jump_fcontext$' >/dev/null ||
      die "$isa: bench_boost defines no jump_fcontext"
    if "$t-readelf" -d "$OUT/bench_boost-$isa" | grep 'NEEDED.*boost' >/dev/null; then
      die "$isa: bench_boost needs a shared Boost library"
    fi
  fi
  "$t-objdump" -f "$OUT/bench_boost-$isa" | grep "file format elf.*$(
    case $isa in aarch64) echo aarch64 ;; i386) echo i386 ;; arm) echo littlearm ;;
      ppc64le) echo powerpcle ;; s390x) echo s390 ;; x86_64) echo x86-64 ;; esac)" >/dev/null || die "$isa: bench_boost is not an $isa binary"
  v=$(qemu-"$q" "$OUT/bench_boost-$isa" info | awk '{print $2}')
  HAS_BOOST[$isa]=1
  BOOST_NOTE[$isa]="Boost.Context $v (Debian $BOOST_VER, $a), jump_fcontext $how"
done

# ---- runs ------------------------------------------------------------------
export CGREENLET_BENCH_CLOCK=${CGREENLET_BENCH_CLOCK:-thread}
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
med() { tr ' ' '\n' <<<"$1" | grep . | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3fx", a/b}'; }
ns() { awk -v a="$1" 'BEGIN {printf "%.1f", a}'; }

brows=() urows=()
t_start=$SECONDS
t_build=$((t_start - t_build))
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# measure ISA LABEL RUNNER...: one row of each table.
measure() {
  local isa=$1 label=$2 p r
  shift 2
  local run=("$@")
  local progs=(asm nofpu ucontext)
  [ -n "${HAS_BOOST[$isa]:-}" ] && progs=(asm nofpu boost ucontext)
  bin() { case $1 in boost) echo "$OUT/bench_boost-$isa" ;; *) echo "$OUT/bench_c-$isa-$1" ;; esac; }
  local -A S=() C=() P=()
  for p in "${progs[@]}"; do S[$p]=; C[$p]=; P[$p]=; done
  for ((r = 0; r < REPS; r++)); do
    for p in "${progs[@]}"; do # interleaved, same conditions for all
      S[$p]+="$("${run[@]}" "$(bin "$p")" switch 200000) "
      [ "$p" = nofpu ] && continue
      C[$p]+="$("${run[@]}" "$(bin "$p")" create 20000) "
      [ "$p" = ucontext ] || P[$p]+="$("${run[@]}" "$(bin "$p")" park 20000) "
    done
  done
  local sa sn su ca cu pa sb cb pb
  sa=$(med "${S[asm]}") sn=$(med "${S[nofpu]}") su=$(med "${S[ucontext]}")
  ca=$(med "${C[asm]}") cu=$(med "${C[ucontext]}")
  pa=$(med "${P[asm]}")
  if [ -n "${HAS_BOOST[$isa]:-}" ]; then
    sb=$(med "${S[boost]}") cb=$(med "${C[boost]}") pb=$(med "${P[boost]}")
    brows+=("$(printf '| %-14s | %8s | %8s | %7s | %8s | %7s | %8s | %8s | %7s | %8s | %8s | %7s |' "$label" \
      "$(ns "$sa")" "$(ns "$sb")" "$(ratio "$sa" "$sb")" "$(ns "$sn")" "$(ratio "$sn" "$sb")" \
      "$(ns "$ca")" "$(ns "$cb")" "$(ratio "$ca" "$cb")" "$(ns "$pa")" "$(ns "$pb")" "$(ratio "$pa" "$pb")")")
  else
    brows+=("$(printf '| %-14s | %8s | %8s | %7s | %8s | %7s | %8s | %8s | %7s | %8s | %8s | %7s |' "$label" \
      "$(ns "$sa")" "-" "-" "$(ns "$sn")" "-" "$(ns "$ca")" "-" "-" "$(ns "$pa")" "-" "-")")
  fi
  urows+=("$(printf '| %-14s | %8s | %8s | %7s | %8s | %8s | %7s |' "$label" \
    "$(ns "$sa")" "$(ns "$su")" "$(ratio "$sa" "$su")" "$(ns "$ca")" "$(ns "$cu")" "$(ratio "$ca" "$cu")")")
  echo "$label done" >&2
}
for isa in "${ISAS[@]}"; do
  read -r t a q l m j <<<"$(info "$isa")"
  if [ "$isa" = x86_64 ]; then
    measure "$isa" "x86_64, native" env
    measure "$isa" "x86_64, qemu" "qemu-$q"
  else
    measure "$isa" "$isa" "qemu-$q"
  fi
done

echo
echo "qemu-user $(qemu-aarch64 --version | head -1 | awk '{print $3}') on $(uname -m), $(nproc) CPUs, load $load_start at the start of the runs, $(cut -d' ' -f1-3 /proc/loadavg) at the end; medians of $REPS interleaved runs (built in $t_build s, $((SECONDS - t_start)) s of runs),"
echo "clock: $(case $CGREENLET_BENCH_CLOCK in thread) echo "the measuring thread's CPU time (CLOCK_THREAD_CPUTIME_ID)" ;; *) echo "wall time (CLOCK_MONOTONIC)" ;; esac)."
echo "EMULATED: an absolute figure measures qemu's translator, not the ISA; only the ratio to an anchor"
echo "on the same emulated CPU, in the same run, means anything, and even a ratio is qemu's weighting"
echo "of the work, not a processor's: the x86_64 rows run the same x86-64 binaries natively and under"
echo "qemu-x86_64, which shows how far emulation moves each ratio."
echo
for isa in "${ISAS[@]}"; do echo "  $isa: ${BOOST_NOTE[$isa]}"; done
echo
echo "Against Boost.Context (cgreenlet / Boost; below 1 cgreenlet is cheaper). switch: ns per switch"
echo "(greenlet_switch with a value, against a raw jump_fcontext); create: ns per create + run to"
echo "completion + destroy (against a fiber on a pooled_fixedsize_stack); park: ns per create + park"
echo "+ kill + destroy (against a suspended fiber destroyed, a forced_unwind exception); no FPU: the"
echo "switch of the core built with FPU_SAVE=0 (no FP control word saved), its ratio to Boost's switch."
echo "What the switches save differs on three ISAs: arm: the core also saves FPSCR; ppc64le: Boost"
echo "1.74 saves no FPRs, VRs or FPSCR, the core f14-f31, v20-v31 and FPSCR (ELFv2's callee-saved set);"
echo "i386: Boost also saves MXCSR (the core only when built with SSE, which Debian's i686 is not)."
echo
echo "| ISA (emulated) | switch ns |  Boost  |  ratio  | no FPU ns |  ratio  | create ns |  Boost  |  ratio  | park ns  |  Boost   |  ratio  |"
echo "| ---            |      ---: |    ---: |    ---: |      ---: |    ---: |      ---: |    ---: |    ---: |     ---: |     ---: |    ---: |"
printf '%s\n' "${brows[@]}"
echo
echo "Against the core's own ucontext back end for the same ISA (skewed against ucontext: its"
echo "swapcontext makes a sigprocmask system call per switch, which qemu-user emulates dearly)."
echo
echo "| ISA (emulated) | switch ns | ucontext |  ratio  | create ns | ucontext |  ratio  |"
echo "| ---            |      ---: |     ---: |    ---: |      ---: |     ---: |    ---: |"
printf '%s\n' "${urows[@]}"
