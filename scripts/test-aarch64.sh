#!/usr/bin/env bash
# test-aarch64.sh [CRITERION-ARGS...] - cross-build cgreenlet for AArch64 and
# run the Criterion suite under qemu-user.  Extra arguments go to the test
# binary (e.g. --filter 'core/*' --verbose).
#
# How it works, and why:
#  * Criterion for arm64 cannot be installed next to the amd64 one with dpkg:
#    libnanomsg5 is Multi-Arch: same but its amd64 build is a binNMU
#    (1.1.5+dfsg-1.1+b1) and the arm64 one is not (1.1.5+dfsg-1.1), so
#    apt-get install libcriterion3:arm64 would remove libcriterion-dev:amd64.
#    Instead the arm64 packages (libcriterion3, libcriterion-dev and the
#    runtime closure, libc6 included) are fetched with `apt-get download` and
#    unpacked into a private sysroot ($SYSROOT), which needs the arm64 dpkg
#    architecture and its apt lists but installs nothing arm64 system-wide.
#  * Criterion runs each test in a worker that it starts by re-executing the
#    test binary (BoxFort: fork + execve of /proc/self/exe).  qemu-user
#    passes execve to the host kernel, which needs a binfmt_misc handler for
#    AArch64 ELF files.  If the host has none registered, the suite runs in a
#    new user + mount namespace with a binfmt_misc instance of its own
#    (Linux >= 6.7), so nothing changes outside this script.
#  * QEMU_LD_PREFIX (inherited across those execs) points qemu at $SYSROOT.
set -euo pipefail
cd "$(dirname "$0")/.."

CROSS=aarch64-linux-gnu-
BUILD=build/aarch64-linux-gnu
SYSROOT=${CGREENLET_AARCH64_SYSROOT:-build/aarch64-sysroot}
SYSROOT=$(mkdir -p "$SYSROOT" && cd "$SYSROOT" && pwd)
QEMU_BINFMT=/usr/libexec/qemu-binfmt/aarch64-binfmt-P

# ---- host packages and the arm64 architecture ------------------------------
HOST_PKGS=(make gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user qemu-user-binfmt)
missing=()
for p in "${HOST_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
need_arch=0
dpkg --print-foreign-architectures | grep -qx arm64 || need_arch=1
need_lists=0
apt-cache show libcriterion3:arm64 >/dev/null 2>&1 || need_lists=1

if [ ${#missing[@]} -gt 0 ] || [ $need_arch -eq 1 ] || [ $need_lists -eq 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-aarch64.sh needs:" >&2
    [ ${#missing[@]} -gt 0 ] && echo "  Debian packages: ${missing[*]}" >&2
    [ $need_arch -eq 1 ] && echo "  the arm64 dpkg architecture" >&2
    [ $need_lists -eq 1 ] && echo "  apt package lists for arm64" >&2
    echo "Set it up with:" >&2
    [ $need_arch -eq 1 ] && echo "  sudo dpkg --add-architecture arm64" >&2
    echo "  sudo apt-get update" >&2
    [ ${#missing[@]} -gt 0 ] && echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ $need_arch -eq 1 ]; then
    echo "== adding the arm64 dpkg architecture"
    dpkg --add-architecture arm64
  fi
  echo "== apt-get update"
  # A mirror caught mid-sync fails one index (seen: another architecture's
  # security list); what this needs is checked by the install below.
  apt-get update -qq || echo "warning: apt-get update reported errors; going on with the lists it has"
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# ---- the arm64 Criterion sysroot -------------------------------------------
# Runtime closure of libcriterion3 (libc6 and friends included, so the
# sysroot is a complete arm64 library root), plus libcriterion-dev for the
# headers and the libcriterion.so link.
sysroot_pkgs() {
  {
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances libcriterion3:arm64 |
      grep -v '^[ <]'
    echo libcriterion-dev:arm64
  } | grep ':arm64$' | sort -u
}
want=$(sysroot_pkgs)
if [ -z "$want" ]; then
  echo "test-aarch64.sh: could not resolve the arm64 Criterion packages" >&2
  exit 1
fi
if [ ! -f "$SYSROOT/.packages" ] || [ "$(cat "$SYSROOT/.packages")" != "$want" ]; then
  if [ -n "$(ls -A "$SYSROOT")" ] && [ ! -f "$SYSROOT/.packages" ]; then
    echo "test-aarch64.sh: $SYSROOT is not empty and not a sysroot of ours" >&2
    exit 1
  fi
  echo "== unpacking arm64 Criterion into $SYSROOT"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # As root apt warns that it downloads unsandboxed into a root-owned dir.
  # shellcheck disable=SC2086  # one package per word
  (cd "$tmp" && { apt-get download -qq $want 2>&1 || true; } |
    { grep -v "^W: Download is performed unsandboxed" >&2 || true; })
  n=$(find "$tmp" -name '*.deb' | wc -l)
  if [ "$n" -ne "$(wc -l <<<"$want")" ]; then
    echo "test-aarch64.sh: apt-get download fetched $n of $(wc -l <<<"$want") packages" >&2
    exit 1
  fi
  find "$SYSROOT" -mindepth 1 -delete
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$SYSROOT"; done
  printf '%s\n' "$want" >"$SYSROOT/.packages"
  rm -rf "$tmp"
  trap - EXIT
fi

# ---- build -----------------------------------------------------------------
# Passed through the environment, not the command line, so the Makefile's own
# `CPPFLAGS +=` / `LDFLAGS +=` still apply.  (CFLAGS is left to the Makefile's
# default, -O2 -g: a CFLAGS=... on the make command line would also drop its
# -std=c11 -Wall -Werror -fPIC -fvisibility=hidden -pthread.)
LIBDIRS=("$SYSROOT/usr/lib/aarch64-linux-gnu" "$SYSROOT/lib/aarch64-linux-gnu")
export CPPFLAGS="-isystem $SYSROOT/usr/include ${CPPFLAGS:-}"
export LDFLAGS="-L${LIBDIRS[0]} -Wl,-rpath-link,${LIBDIRS[0]} -Wl,-rpath-link,${LIBDIRS[1]} ${LDFLAGS:-}"
make -s lib tests CROSS="$CROSS" VALGRIND=0

# ---- run -------------------------------------------------------------------
BIN=$BUILD/tests/cgreenlet-tests
export QEMU_LD_PREFIX=$SYSROOT
export CGREENLET_TEST_LIGHT=${CGREENLET_TEST_LIGHT:-1}
# Lets tests skip what qemu-user cannot emulate: it ignores
# setrlimit(RLIMIT_AS), and its own per-thread allocations grow VmSize.
export CGREENLET_TEST_QEMU=1
# qemu-user (7.2) answers madvise(MADV_GUARD_INSTALL) with success without
# doing anything, so the library would believe in guard pages that are not
# there; mprotect guards are emulated faithfully.
export CGREENLET_GUARD=${CGREENLET_GUARD:-mprotect}
ulimit -c 0 # qemu writes qemu_*.core files for crashing tests otherwise

run=(qemu-aarch64 "$BIN" --jobs 2 "$@")
echo "== $(qemu-aarch64 --version | head -1): ${run[*]}"
binfmt=/proc/sys/fs/binfmt_misc/qemu-aarch64
if [ -r "$binfmt" ] && head -1 "$binfmt" | grep -qx enabled; then
  # The host already runs AArch64 binaries through qemu (systemd-binfmt).
  exec "${run[@]}"
fi

# A private binfmt_misc: register the qemu handler (P: keep argv[0], which
# BoxFort sets to "boxfort-worker") and run the suite inside.  exec, so that a
# signal to this script reaches unshare, and --kill-child passes it on.
[ -x "$QEMU_BINFMT" ] || { echo "test-aarch64.sh: $QEMU_BINFMT missing (qemu-user-binfmt)" >&2; exit 1; }
ns=(unshare --user --map-root-user --mount)
if ! "${ns[@]}" true 2>/dev/null; then
  echo "test-aarch64.sh: cannot create a user namespace for a private binfmt_misc;" >&2
  echo "  register qemu-aarch64 with binfmt_misc on the host instead" >&2
  echo "  (systemd-binfmt, or: update-binfmts --enable qemu-aarch64)" >&2
  exit 1
fi
magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
# shellcheck disable=SC2016  # expanded by the inner shell
exec "${ns[@]}" --fork --kill-child bash -euc '
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  printf "%s" ":qemu-aarch64:M::$1:$2:$3:P" >/proc/sys/fs/binfmt_misc/register
  shift 3
  exec "$@"
' bash "$magic" "$mask" "$QEMU_BINFMT" "${run[@]}"
