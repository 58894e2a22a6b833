#!/usr/bin/env bash
# fuzz.sh - libFuzzer over the C core (tests/fuzz/fuzz_core.c).
#
# Builds build/fuzz/fuzz_core with clang: the harness and src/*.c compiled
# with -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all (the
# library with fuzzer-no-link), the same -D flags as the Makefile, and the
# target's switch (src/context_<cpu>.S).  Then, by mode:
#
#   --bounded        (the test suite's `fuzz` stage) every input of
#                    tests/fuzz/corpus, then mutations from seed FUZZ_SEED
#                    (default 1) up to FUZZ_RUNS executions in all (default
#                    20000), capped at FUZZ_MAX_TIME seconds (default 75).
#                    New inputs go to a scratch dir, not the corpus.  Fails
#                    on any finding (crash, invariant, sanitizer report,
#                    leak, timeout).
#   --soak SECONDS   open-ended: new inputs go to tests/fuzz/corpus, crashes
#                    (and leaks, timeouts) to build/fuzz/crashes/.  Run
#                    --merge afterwards to keep the corpus small.
#   --merge          minimises tests/fuzz/corpus in place (-merge=1): the
#                    seed-* inputs, a minimal set keeping every edge, and
#                    the 150 longest programs of a full-feature merge.
#   --build          only builds.
#
# A finding is a file build/fuzz/crashes/{crash,leak,timeout,oom}-<sha1>;
# replay it with `build/fuzz/fuzz_core FILE` (FUZZ_CORE_TRACE=1 prints each
# operation).  Extra libFuzzer flags may follow the mode.  FUZZ_SRC=dir
# builds the library from another copy of src/ (to try a fix).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
mode=$1
shift
soak_seconds=
case $mode in
  --bounded | --merge | --build) ;;
  --soak)
    if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then usage; fi
    soak_seconds=$1
    shift
    ;;
  *) usage ;;
esac

CC=${FUZZ_CC:-}
if [ -z "$CC" ]; then
  for c in clang-14 clang; do
    if command -v "$c" >/dev/null; then CC=$c; break; fi
  done
fi
arch=$(${CC:-cc} -dumpmachine 2>/dev/null || true)
arch=${arch%%-*}
if [ -z "$CC" ] || [ ! -f "$("$CC" -print-runtime-dir)/libclang_rt.fuzzer-$arch.a" ]; then
  echo "fuzz.sh: needs clang and its libFuzzer runtime (Debian: apt-get install" \
       "clang libclang-rt-14-dev, or scripts/deps.sh test)" >&2
  exit 1
fi

B=build/fuzz
BIN=$B/fuzz_core
CORPUS=tests/fuzz/corpus
CRASHES=$B/crashes
mkdir -p "$B/obj" "$CRASHES" "$CORPUS"

# As the Makefile: Valgrind client requests when the header is there (no-ops
# outside Valgrind), the assembly switch with the FPU save.
SRC=${FUZZ_SRC:-src} # another copy of the sources (a candidate fix, say)
DEFS=(-Iinclude "-I$SRC")
[ -f /usr/include/valgrind/valgrind.h ] && DEFS+=(-DGREENLET_VALGRIND=1)
# shellcheck disable=SC2054 # the commas are clang's
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
CFLAGS=(-std=c11 -O1 -g -Wall -Wextra -fPIC -fvisibility=hidden -pthread)

build() {
  [ -f "$SRC/context_$arch.S" ] || { echo "fuzz.sh: no $SRC/context_$arch.S" >&2; return 1; }
  local stamp=$B/.flags want objs=() src obj
  want="$CC ${DEFS[*]} ${SAN[*]} ${CFLAGS[*]}"
  # Rebuild when a source, header, the flags or this script changed.
  if [ -x "$BIN" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
     [ -z "$(find "$SRC" include tests/fuzz/fuzz_core.c "$0" -newer "$BIN" -print -quit)" ]; then
    return 0
  fi
  echo "== building $BIN with $CC"
  for src in "$SRC"/*.c; do
    obj=$B/obj/$(basename "$src" .c).o
    "$CC" "${DEFS[@]}" "${CFLAGS[@]}" "${SAN[@]}" -fsanitize=fuzzer-no-link \
      -c "$src" -o "$obj"
    objs+=("$obj")
  done
  obj=$B/obj/context_$arch.o
  "$CC" "${DEFS[@]}" -fPIC -c "$SRC/context_$arch.S" -o "$obj"
  objs+=("$obj")
  "$CC" "${DEFS[@]}" "${CFLAGS[@]}" -Werror "${SAN[@]}" -fsanitize=fuzzer \
    tests/fuzz/fuzz_core.c "${objs[@]}" -o "$BIN" -lm
  echo "$want" >"$stamp"
}

build
[ "$mode" = --build ] && exit 0

# A smaller quarantine than the default 256 MB: each input is short, and
# with it RSS stays flat and runs go faster (fewer fresh pages).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:quarantine_size_mb=32}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
COMMON=(-max_len=1024 -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
        -entropic_scale_per_exec_time=1
        -artifact_prefix="$CRASHES/")

# libFuzzer's last status line: "#N DONE cov: C ft: F corp: ..." and the
# final stats (execs/s).
summary() {
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^Done|ERROR|SUMMARY' "$1" || true
}

case $mode in
  --bounded)
    runs=${FUZZ_RUNS:-20000}
    seed=${FUZZ_SEED:-1}
    max_time=${FUZZ_MAX_TIME:-75}
    log=$B/bounded.log
    scratch=$B/bounded-new
    rm -rf "$scratch"
    mkdir -p "$scratch"
    start=$(date +%s)
    # libFuzzer first runs every corpus input (the INITED line), then
    # mutates; the scratch dir takes what it finds new.
    echo "== fuzz: the corpus ($(find "$CORPUS" -type f | wc -l) inputs), then" \
         "$runs runs in all from seed $seed (at most ${max_time}s)"
    if ! "$BIN" "${COMMON[@]}" -seed="$seed" -runs="$runs" \
        -max_total_time="$max_time" "$@" "$scratch" "$CORPUS" >"$log" 2>&1; then
      tail -n 60 "$log"
      echo "fuzz: FAILED (log: $log, reproducer in $CRASHES/)"
      exit 1
    fi
    summary "$log"
    rm -rf "$scratch"
    echo "fuzz: no findings ($(($(date +%s) - start)) s)"
    ;;
  --soak)
    log=$B/soak.log
    echo "== fuzz soak: ${soak_seconds}s, new inputs to $CORPUS, findings to $CRASHES/"
    rc=0
    "$BIN" "${COMMON[@]}" -max_total_time="$soak_seconds" "$@" "$CORPUS" \
      >"$log" 2>&1 || rc=$?
    summary "$log"
    if [ $rc -ne 0 ]; then
      tail -n 60 "$log"
      echo "fuzz soak: FINDING (rc=$rc; log: $log; reproducer in $CRASHES/)"
      exit 1
    fi
    echo "fuzz soak: no findings; run scripts/fuzz.sh --merge to minimise the corpus"
    ;;
  --merge)
    # Kept: the hand-written seed-* inputs (they show every operation), a
    # minimal set that keeps every edge, and the FUZZ_MERGE_DEEP (default
    # 150) longest programs of a full-feature merge (hit counts too), for
    # depth: a full-feature set alone runs to many hundreds of files.
    full=$B/merge-full
    merged=$B/merged
    rm -rf "$full" "$merged"
    mkdir -p "$full" "$merged"
    before=$(find "$CORPUS" -type f | wc -l)
    "$BIN" "${COMMON[@]}" -merge=1 "$@" "$full" "$CORPUS" >"$B/merge.log" 2>&1 ||
      { tail -n 40 "$B/merge.log"; exit 1; }
    cp "$CORPUS"/seed-* "$merged"/ 2>/dev/null || true
    "$BIN" "${COMMON[@]}" -merge=1 -use_counters=0 -use_cmp=0 "$@" "$merged" "$full" \
      >>"$B/merge.log" 2>&1 || { tail -n 40 "$B/merge.log"; exit 1; }
    # shellcheck disable=SC2012
    ls -S "$full" | head -n "${FUZZ_MERGE_DEEP:-150}" |
      while read -r f; do cp "$full/$f" "$merged/"; done
    find "$CORPUS" -type f -delete
    cp "$merged"/* "$CORPUS"/
    rm -rf "$full" "$merged"
    echo "fuzz merge: $before -> $(find "$CORPUS" -type f | wc -l) inputs," \
         "$(cat "$CORPUS"/* | wc -c) bytes"
    ;;
esac
