#!/usr/bin/env bash
# rootfs.sh - a Debian 12 (bookworm) root file system for a foreign Debian
# architecture (arm64, armhf, i386, ppc64el, s390x), made by debootstrap
# from Debian's packages, and that architecture's commands run in it under
# qemu-user (i386: natively, if the kernel runs 32-bit x86 programs).
#
# usage: scripts/rootfs.sh [--arch ARCH] path
#            make the root file system unless the cache has it; print its
#            directory (last line of stdout)
#        scripts/rootfs.sh [--arch ARCH] run [--bind HOSTDIR:DIR]... [--cwd DIR] CMD...
#            run CMD in it (chroot), with a clean environment (PATH, HOME,
#            LANG, and CGREENLET_ROOTFS_CPU: qemu-<name> or native; VAR=value
#            words before CMD add to it, as env(1) does)
#        ARCH is a Debian architecture name; default arm64
#        (scripts/arm64-rootfs.sh is `rootfs.sh --arch arm64`)
#
# The cache: CGREENLET_ROOTFS_CACHE, default ~/.cache/cgreenlet-rootfs,
# outside the clone, so that a second run on the same machine does not make
# the root file system again (several minutes under emulation).  It holds
#   bookworm-ARCH/    the root file system; its .cgreenlet-rootfs records the
#                     recipe (packages); a different recipe remakes it
#   qemu-static/      qemu-*-static, unpacked from Debian's
#                     qemu-user-static .deb (`apt-get download`, not installed)
# and build/ARCH-rootfs in the clone is a symlink to the root file system.
#
# How it works, and why:
#  * debootstrap --foreign --arch=ARCH --variant=minbase unpacks the
#    packages on the host (as root); its second stage runs the packages'
#    maintainer scripts with the root file system's own dpkg, perl and sh,
#    ARCH binaries, in a chroot.  So a real Debian system is configured as
#    on an ARCH machine: dpkg's database is complete, and apt-get works in
#    it.  (Unpacking the closure with dpkg-deb -x would skip every
#    maintainer script; mmdebstrap is not what Debian's own procedure names.)
#  * A foreign binary in the chroot runs through binfmt_misc.  This script
#    never registers a handler on the host: everything runs in a new user +
#    mount + pid namespace with a binfmt_misc instance of its own (Linux >=
#    6.7), as scripts/test-aarch64.sh does.  The handler is registered with
#    the F flag (the kernel opens the interpreter at registration, so it need
#    not exist inside the chroot) and must then be a static binary: the
#    chroot has no x86-64 libraries.  qemu-user-static provides one, but it
#    conflicts with qemu-user-binfmt (which the aarch64 stage needs), so its
#    .deb is unpacked into the cache instead of installed.
#  * The namespace maps uids and gids 0-65535 to themselves (we are root on
#    the host): dpkg's chown to system users works, and the files in the
#    cache belong to the ids they say.  Inside: a tmpfs /dev with the host's
#    null, zero, full, random, urandom and tty bound in, a devpts instance, a
#    fresh /proc and a tmpfs /tmp (so test files never land in the cache).
#    When CMD ends, the pid namespace ends every process it left behind.
#  * i386 on an x86-64 kernel with CONFIG_IA32_EMULATION: the chroot's
#    /bin/true is tried first, and if it runs, no qemu handler is
#    registered (the CPU runs it natively, much faster); everything runs
#    under `setarch i686`, so uname -m (and platform.machine()) says i686,
#    as on an i386 machine, not the kernel's x86_64.
#    CGREENLET_I386_QEMU=1 runs it under qemu-i386 even so.
#  * Needs root (debootstrap, the uid map): CI runs as root.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

ARCH=arm64
if [ "${1:-}" = --arch ]; then
  ARCH=${2:?--arch needs a Debian architecture name}
  shift 2
fi
# Per architecture: qemu-user's name for it, and the binfmt_misc magic and
# mask of its ELF executables (as Debian's qemu-user-binfmt registers them).
case "$ARCH" in
  arm64) QNAME=aarch64
    MAGIC='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
  armhf) QNAME=arm
    MAGIC='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00'
    MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
  i386) QNAME=i386
    MAGIC='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00'
    MASK='\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
  ppc64el) QNAME=ppc64le
    MAGIC='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00'
    MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00' ;;
  s390x) QNAME=s390x
    MAGIC='\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16'
    MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff' ;;
  *) echo "rootfs.sh: unknown architecture '$ARCH' (arm64, armhf, i386, ppc64el, s390x)" >&2; exit 2 ;;
esac

CACHE=${CGREENLET_ROOTFS_CACHE:-$HOME/.cache/cgreenlet-rootfs}
SUITE=bookworm
MIRROR=${CGREENLET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
RFS=$CACHE/$SUITE-$ARCH
QEMU=$CACHE/qemu-static/usr/bin/qemu-$QNAME-static
# What the module's tests need: Debian's python3 with its greenlet 2.0.2
# (the reference, and its test suite), gevent, eventlet, pytest, psutil and
# objgraph (the upstream suite's leak checks), and what builds the module
# natively (gcc, python3-dev, python3-setuptools).
PKGS=python3,python3-dev,python3-setuptools,python3-pytest,python3-greenlet,python3-gevent,python3-eventlet,python3-psutil,python3-objgraph,gcc,libc6-dev
# (The recipe line of arm64's is unchanged since its script was
# arm64-rootfs.sh, so its root file system stays valid.)
RECIPE="recipe 1: debootstrap --variant=minbase --arch=$ARCH $SUITE, --include=$PKGS"

die() { echo "rootfs.sh ($ARCH): $*" >&2; exit 1; }


need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, and the user namespace's uid map of 0-65535)"
}

qemu_static() {
  [ -x "$QEMU" ] && return 0
  echo "== fetching qemu-user-static (apt-get download, unpacked into $CACHE/qemu-static)" >&2
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq qemu-user-static 2>&1 |
     { grep -v "^W: Download is performed unsandboxed" >&2 || true; })
  compgen -G "$tmp/qemu-user-static_*.deb" >/dev/null || die "apt-get download qemu-user-static failed"
  rm -rf "$CACHE/qemu-static.new"
  dpkg-deb -x "$tmp"/qemu-user-static_*.deb "$CACHE/qemu-static.new"
  rm -rf "$tmp" "$CACHE/qemu-static"
  mv "$CACHE/qemu-static.new" "$CACHE/qemu-static"
  [ -x "$QEMU" ] || die "$QEMU missing from the qemu-user-static package"
}

# A user namespace with a binfmt_misc instance of its own (Linux >= 6.7)?
ns_check() {
  unshare --user --map-root-user --mount \
    sh -c 'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc' 2>/dev/null && return 0
  die "cannot mount a private binfmt_misc in a new user namespace (needs Linux >= 6.7
  and unprivileged user namespaces allowed; kernel here: $(uname -r)), so $ARCH
  programs cannot run in the root file system without changing the host"
}

# in_ns ROOTFS [--bind H:G]... [--cwd DIR] CMD...: run CMD in a chroot into
# ROOTFS inside the private namespace (see the header).
in_ns() {
  local rfs=$1 cwd=/ binds=() pid rc
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --bind) binds+=("$2"); shift 2 ;;
      --cwd) cwd=$2; shift 2 ;;
      *) break ;;
    esac
  done
  [ $# -gt 0 ] || die "run: no command"
  # The inner shell (host bash, pid 1 of the namespace) waits for the
  # uid map written below, sets up the mounts and runs CMD as its child
  # (not exec'd: pid 1 would ignore default-action signals CMD's tests
  # send themselves).
  # shellcheck disable=SC2016  # expanded by the inner shell
  unshare --user --mount --pid --fork --kill-child bash -euc '
    magic=$1 mask=$2 qemu=$3 r=$4 cwd=$5 nb=$6 arch=$7 qname=$8 forceq=$9; shift 9
    while [ "$(id -u)" != 0 ]; do sleep 0.01; done
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    pers=() cpu=native
    [ "$arch" = i386 ] && pers=(setarch i686)
    if [ "$arch" != i386 ] || [ "$forceq" = 1 ] || ! "${pers[@]}" chroot "$r" /bin/true 2>/dev/null; then
      printf "%s" ":qemu-$qname:M::$magic:$mask:$qemu:FP" >/proc/sys/fs/binfmt_misc/register
      cpu=qemu-$qname
    fi
    mount -t tmpfs -o mode=755 dev "$r/dev"
    for d in null zero full random urandom tty; do
      touch "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"
    done
    mkdir "$r/dev/pts" "$r/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
    ln -s pts/ptmx "$r/dev/ptmx"
    mount -t tmpfs shm "$r/dev/shm"
    ln -s /proc/self/fd "$r/dev/fd"
    ln -s /proc/self/fd/0 "$r/dev/stdin"
    ln -s /proc/self/fd/1 "$r/dev/stdout"
    ln -s /proc/self/fd/2 "$r/dev/stderr"
    mount -t proc proc "$r/proc"
    mount -t tmpfs -o mode=1777 tmp "$r/tmp"
    while [ "$nb" -gt 0 ]; do
      mkdir -p "$r${1#*:}"
      mount --bind "${1%%:*}" "$r${1#*:}"
      shift; nb=$((nb - 1))
    done
    rc=0
    "${pers[@]}" chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" CGREENLET_ROOTFS_CPU="$cpu" /usr/bin/env -C "$cwd" "$@" || rc=$?
    exit $rc
  ' bash "$MAGIC" "$MASK" "$QEMU" "$rfs" "$cwd" "${#binds[@]}" "$ARCH" "$QNAME" "${CGREENLET_I386_QEMU:-0}" "${binds[@]}" "$@" &
  pid=$!
  # (unshare ignores SIGTERM while it waits: end the namespace's pid 1.)
  trap 'kill -KILL $(cat "/proc/$pid/task/$pid/children" 2>/dev/null) 2>/dev/null' INT TERM
  local me
  me=$(readlink /proc/self/ns/user)
  while [ -d "/proc/$pid" ] && [ "$(readlink "/proc/$pid/ns/user")" = "$me" ]; do sleep 0.01; done
  echo "0 0 65536" >"/proc/$pid/uid_map" 2>/dev/null || true
  echo "0 0 65536" >"/proc/$pid/gid_map" 2>/dev/null || true
  rc=0
  while :; do
    wait "$pid" && rc=0 || rc=$?
    [ -d "/proc/$pid" ] || break   # (a trapped signal also ends wait)
  done
  trap - INT TERM
  return $rc
}

# The second stage looks packages up in the Packages index (49 MB for
# arm64) with grep and perl, once per package batch: under emulation that
# takes most of an hour.  It only ever looks up the packages the first stage
# chose (debootstrap/required and debootstrap/base), so the index is cut
# down to their stanzas first (on the host, natively).  The .debs, their
# checksums and what gets installed are unchanged.
trim_index() {
  local t=$1 idx
  idx=$(find "$t/var/lib/apt/lists" -maxdepth 1 -name '*_Packages' | head -1)
  [ -n "$idx" ] || die "no Packages index in $t/var/lib/apt/lists"
  cat "$t/debootstrap/required" "$t/debootstrap/base" | tr ' ' '\n' | grep -v '^$' |
    awk 'NR == FNR { want[$1] = 1; next }
         /^Package: / { keep = ($2 in want) }
         keep' - "$idx" >"$idx.trim"
  mv "$idx.trim" "$idx"
}

make_rootfs() {
  local new=$RFS.new start
  need_root
  "$(dirname "$0")/deps.sh" rootfs >&2 # debootstrap
  ns_check
  qemu_static
  start=$(date +%s)
  echo "== making the $ARCH root file system: debootstrap --arch=$ARCH $SUITE into $RFS"
  echo "   (once per machine: the cache is $CACHE; minutes, most of them qemu running dpkg)"
  echo "   packages: $PKGS"
  rm -rf "$new"
  mkdir -p "$new"
  if ! /usr/sbin/debootstrap --foreign --arch="$ARCH" --variant=minbase --include="$PKGS" \
         "$SUITE" "$new" "$MIRROR" >"$CACHE/debootstrap-$ARCH-1.log" 2>&1; then
    tail -20 "$CACHE/debootstrap-$ARCH-1.log" >&2
    die "debootstrap (first stage) failed; log: $CACHE/debootstrap-$ARCH-1.log"
  fi
  echo "   first stage (download, unpack): $(( $(date +%s) - start )) s"
  trim_index "$new"
  # container=lxc: debootstrap then neither tests mknod (refused in a user
  # namespace) nor makes device nodes over the ones bound in.
  if ! in_ns "$new" /usr/bin/env container=lxc /debootstrap/debootstrap --second-stage \
         >"$CACHE/debootstrap-$ARCH-2.log" 2>&1; then
    tail -20 "$CACHE/debootstrap-$ARCH-2.log" >&2
    die "debootstrap (second stage, under qemu) failed; log: $CACHE/debootstrap-$ARCH-2.log"
  fi
  rm -f "$new"/var/cache/apt/archives/*.deb
  printf '%s\n' "$RECIPE" >"$new/.cgreenlet-rootfs"
  rm -rf "$RFS"
  mv "$new" "$RFS"
  echo "   made in $(( $(date +%s) - start )) s: $RFS"
}

ensure_rootfs() {
  mkdir -p "$CACHE"
  # One maker per root file system at a time (two clones on a machine
  # share the cache); arm64 keeps the lock its first script took.
  local lock=$CACHE/.lock
  [ "$ARCH" = arm64 ] || lock=$CACHE/.lock-$ARCH
  exec 9>"$lock"
  flock 9
  if [ -f "$RFS/.cgreenlet-rootfs" ] && [ "$(cat "$RFS/.cgreenlet-rootfs")" = "$RECIPE" ] &&
     [ -x "$QEMU" ]; then
    echo "== $ARCH root file system: $RFS (cached)"
  else
    make_rootfs
  fi
  flock -u 9
  mkdir -p "$ROOT/build"
  ln -sfn "$RFS" "$ROOT/build/$ARCH-rootfs"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  path) ensure_rootfs >&2; echo "$RFS" ;;
  run)
    need_root
    ns_check
    [ -f "$RFS/.cgreenlet-rootfs" ] && [ -x "$QEMU" ] ||
      die "no root file system in $RFS: run scripts/rootfs.sh --arch $ARCH path first"
    in_ns "$RFS" "$@" ;;
  *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
