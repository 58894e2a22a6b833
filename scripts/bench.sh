#!/usr/bin/env bash
# bench.sh [--quick] [--reps N] - cgreenlet against a Boost.Context anchor.
#
# Builds the library (make lib, and make lib FPU_SAVE=0), then the benchmark
# programs into build/bench/, runs every measurement several times with
# cgreenlet and Boost runs interleaved, and prints the medians as a table.
# Each run is a separate process, pinned to one CPU when taskset exists.
#
#   --quick    skip the 1,000,000-greenlet RSS point (about a minute less)
#   --reps N   repetitions of each timed measurement (default 7)
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
REPS=7
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --reps) shift; REPS=${1:?--reps needs a number} ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$REPS" in ''|*[!0-9]*|0) echo "bench.sh: --reps wants a positive number" >&2; exit 2 ;; esac

die() { echo "bench.sh: $*" >&2; exit 1; }

# ---- build -----------------------------------------------------------------

scripts/deps.sh build bench || die "missing packages (scripts/deps.sh build bench)"

OUT=build/bench
mkdir -p "$OUT"
LOG=$OUT/build.log
: >"$LOG"
build() { # description, command...
  local what=$1; shift
  if ! "$@" >>"$LOG" 2>&1; then
    cat "$LOG" >&2
    die "build failed: $what"
  fi
}
CC=${CC:-cc}
CXX=${CXX:-g++}
build "make lib" make lib
build "make lib FPU_SAVE=0" make lib FPU_SAVE=0
CFLAGS_BENCH=(-std=c11 -O2 -Wall -Wextra -Werror -Iinclude)
build "bench_c" "$CC" "${CFLAGS_BENCH[@]}" bench/bench_c.c \
  build/native/libcgreenlet.a -pthread -o "$OUT/bench_c"
build "bench_c_nofpu" "$CC" "${CFLAGS_BENCH[@]}" bench/bench_c.c \
  build/native-nofpu/libcgreenlet.a -pthread -o "$OUT/bench_c_nofpu"
# Boost's context switch lives in libboost_context; link it statically, like
# cgreenlet, so neither side pays a PLT call.
build "bench_boost" "$CXX" -std=c++14 -O2 -DNDEBUG -Wall -Wextra \
  bench/bench_boost.cpp -o "$OUT/bench_boost" -l:libboost_context.a -pthread

# ---- running ---------------------------------------------------------------

PIN=()
PIN_DESC="not pinned (no taskset)"
if command -v taskset >/dev/null 2>&1; then
  CPU=$(( $(nproc) - 1 ))
  PIN=(taskset -c "$CPU")
  PIN_DESC="each run pinned to CPU $CPU (taskset)"
fi

# run PROGRAM ARGS... : prints the program's stdout; dies if it fails.
run() {
  local out
  if ! out=$("${PIN[@]}" "$@"); then
    die "benchmark failed: $*"
  fi
  printf '%s\n' "$out"
}

# field KEY <<< "key value" lines
field() { awk -v k="$1" '$1 == k { print $2; exit }'; }

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
  if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 }
  END { printf "%s..%s", lo, hi }'; }

declare -A RUNS=()
# measure KEY PROGRAM ARGS... : append one timed run to RUNS[KEY]
measure() {
  local key=$1 v; shift
  v=$(run "$@") || exit 1
  RUNS[$key]+="$v "
}

# ---- header ----------------------------------------------------------------

CG_INFO=$(run "$OUT/bench_c" info) || exit 1
BOOST_INFO=$(run "$OUT/bench_boost" info) || exit 1
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "none (no commit yet)")
if [ -n "$(git status --porcelain 2>/dev/null | head -1)" ]; then
  COMMIT="$COMMIT (working tree has changes)"
fi

echo "cgreenlet benchmark"
echo "  date        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "  cpu         ${CPU_MODEL:-unknown} ($(nproc) online)"
echo "  kernel      $(uname -srm)"
echo "  load avg    $(cut -d' ' -f1-3 /proc/loadavg) at start (other processes add noise)"
echo "  guard mode  $(field guard_mode <<<"$CG_INFO")"
echo "  commit      $COMMIT"
echo "  cgreenlet   $(field version <<<"$CG_INFO"), $($CC --version | head -1)"
echo "  boost       $(field boost_version <<<"$BOOST_INFO"), $($CXX --version | head -1), -O2 -DNDEBUG"
echo "  method      median of $REPS interleaved runs per timed figure; $PIN_DESC"
echo

# ---- figures 1-3: timed ----------------------------------------------------

SECONDS=0
for ((r = 0; r < REPS; r++)); do
  measure sw_cg "$OUT/bench_c" switch
  measure sw_boost "$OUT/bench_boost" switch
  measure sw_nofpu "$OUT/bench_c_nofpu" switch
  measure cr_cg "$OUT/bench_c" create
  measure cr_boost "$OUT/bench_boost" create
  measure pk_cg "$OUT/bench_c" park
  measure pk_boost "$OUT/bench_boost" park
done
T_TIMED=$SECONDS

# ---- figure 4: memory per parked greenlet ----------------------------------
# One process per measurement, one run per point: the figure is deterministic
# (runs differed by < 0.01 KiB in testing) and each run costs N page faults,
# which are slow on VMs.  At 100k the run also kills and destroys everything
# (and times it); at 1M that is left to process exit, because the teardown
# (TLB-flushing madvise + munmap per stack) alone can take over a minute.

SECONDS=0
declare -A RSS=()
rss_point() { # N REPS TEARDOWN(1|0)
  local n=$1 reps=$2 r teardown out
  for ((r = 0; r < reps; r++)); do
    teardown=exit
    if [ "$r" -eq 0 ] && [ "$3" -eq 1 ]; then teardown=""; fi
    out=$(run "$OUT/bench_c" rss "$n" $teardown) || exit 1
    RSS[cg_$n]+="$(field rss_kib <<<"$out") "
    RSS[cg_pte_$n]+="$(field pte_kib <<<"$out") "
    RSS[cg_park_$n]+="$(field park_us <<<"$out") "
    if [ -z "$teardown" ]; then RSS[cg_td_$n]=$(field teardown_us <<<"$out"); fi
    out=$(run "$OUT/bench_boost" rss "$n" fixed $teardown) || exit 1
    [ "$(field made <<<"$out")" = "$n" ] || die "boost made only $(field made <<<"$out") of $n fibers"
    RSS[b_$n]+="$(field rss_kib <<<"$out") "
    RSS[b_pte_$n]+="$(field pte_kib <<<"$out") "
    RSS[b_park_$n]+="$(field park_us <<<"$out") "
    if [ -z "$teardown" ]; then RSS[b_td_$n]=$(field teardown_us <<<"$out"); fi
  done
}
rss_point 100000 1 1
POINTS=(100000)
if [ "$QUICK" -eq 0 ]; then
  rss_point 1000000 1 0
  POINTS+=(1000000)
fi
# Does protected_fixedsize_stack (one mprotect guard page per stack) scale?
PROBE_N=40000
PROBE=$(run "$OUT/bench_boost" rss "$PROBE_N" protected exit) || exit 1
T_RSS=$SECONDS

# ---- table -----------------------------------------------------------------

# row LABEL CG BOOST TARGET_TEXT TARGET_CHECK(awk condition on c, r, or "")
row() {
  local label=$1 cg=$2 b=$3 target=$4 cond=$5
  awk -v l="$label" -v c="$cg" -v b="$b" -v t="$target" -v cond="$cond" 'BEGIN {
    r = b > 0 ? c / b : 0
    st = ""
    if (cond == "ratio<=1.5") st = r <= 1.5 ? "ok" : "MISS"
    else if (cond == "ratio<=2") st = r <= 2 ? "ok" : "MISS"
    else if (cond == "cg<=8") st = c <= 8 ? "ok" : "MISS"
    printf "  %-34s %10.2f %14.2f %8.2fx   %-10s %s\n", l, c, b, r, t, st }'
}

med() { median ${RUNS[$1]}; }
rmed() { median ${RSS[$1]}; }

echo "  figure                              cgreenlet  boost.context    ratio   target"
echo "  ---------------------------------- ---------- -------------- --------- ---------- ----"
row "switch (ns)" "$(med sw_cg)" "$(med sw_boost)" "<=1.5x" "ratio<=1.5"
row "switch (no MXCSR/x87 save) (ns)" "$(med sw_nofpu)" "$(med sw_boost)" "<=1.5x" "ratio<=1.5"
row "create+run+finish (ns)" "$(med cr_cg)" "$(med cr_boost)" "<=2x" "ratio<=2"
row "create+park+kill (ns)" "$(med pk_cg)" "$(med pk_boost)" "-" ""
for n in "${POINTS[@]}"; do
  label="RSS per parked @$(awk -v n="$n" 'BEGIN { if (n >= 1000000) printf "%dM", n / 1000000; else printf "%dk", n / 1000 }') (KiB)"
  row "$label" "$(rmed cg_$n)" "$(rmed b_$n)" "<=8 KiB" "cg<=8"
done
echo
echo "  switch: main <-> one greenlet, greenlet_switch() each way, vs a raw"
echo "    jump_fcontext() ping-pong (make_fcontext on an mmap'ed 256 KiB stack);"
echo "    both save MXCSR/x87 CW except the 'no MXCSR/x87 save' cgreenlet build."
echo "  create: cgreenlet pools stacks itself; boost::context::fiber with"
echo "    pooled_fixedsize_stack(256 KiB)."
echo "  park+kill: boost destroys the suspended fiber (forced_unwind exception)."
echo "  RSS: (resident after - before) / N from /proc/self/statm, N parked;"
echo "    boost anchor uses fixedsize_stack(256 KiB): malloc'ed, NO guard page."
for n in "${POINTS[@]}"; do
  echo "    @$n (1 run): page tables (VmPTE, not in RSS) cgreenlet $(rmed cg_pte_$n) KiB," \
       "boost $(rmed b_pte_$n) KiB per parked;"
  echo "      create+park us each: cgreenlet $(rmed cg_park_$n), boost $(rmed b_park_$n);" \
       "kill+destroy us each: cgreenlet ${RSS[cg_td_$n]:-skipped}, boost ${RSS[b_td_$n]:-skipped}"
done
GUARDED=$(field guard_pages <<<"$PROBE")
echo "  boost protected_fixedsize_stack probe: $PROBE_N parked fibers, $GUARDED got a guard page"
if [ "${GUARDED:-0}" -lt "$PROBE_N" ]; then
  echo "    (vm.max_map_count is $(cat /proc/sys/vm/max_map_count 2>/dev/null || echo '?'); a guarded stack costs two VMAs; past the"
  echo "    limit mprotect() fails and, built with NDEBUG, Boost silently hands out"
  echo "    unguarded stacks), hence the unguarded fixedsize_stack anchor above."
fi
if [ "$QUICK" -eq 1 ]; then echo "  --quick: 1M point skipped."; fi
echo
echo "  runs (min..max):"
printf '    %-10s cgreenlet %-16s nofpu %-16s boost %s\n' switch \
  "$(spread ${RUNS[sw_cg]})" "$(spread ${RUNS[sw_nofpu]})" "$(spread ${RUNS[sw_boost]})"
printf '    %-10s cgreenlet %-16s boost %s\n' create \
  "$(spread ${RUNS[cr_cg]})" "$(spread ${RUNS[cr_boost]})"
printf '    %-10s cgreenlet %-16s boost %s\n' park+kill \
  "$(spread ${RUNS[pk_cg]})" "$(spread ${RUNS[pk_boost]})"
echo "  time: timed figures ${T_TIMED}s, RSS ${T_RSS}s; load avg at end $(cut -d' ' -f1-3 /proc/loadavg)"
