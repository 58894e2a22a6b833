#!/usr/bin/env bash
# deps.sh GROUP... - make sure the Debian packages a command needs are there.
# As root it installs what is missing (apt-get install -y); otherwise it names
# the missing packages and fails.  Groups: build test bench python pyversions pypi demo rootfs.
set -euo pipefail

declare -A PKGS=(
  [build]="gcc make libc6-dev pkg-config valgrind"
  [test]="g++ gdb libcriterion-dev valgrind clang libclang-rt-14-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user qemu-user-binfmt"
  [bench]="g++ libboost-context-dev python3-matplotlib"
  [python]="python3-dev python3-setuptools python3-pytest gdb python3-greenlet python3-gevent python3-eventlet python3-objgraph python3-psutil wrk"
  # what scripts/test-python-versions.sh stages for the pyenv interpreters
  # (pure Python; exceptiongroup and tomli are pytest's needs before 3.11)
  [pyversions]="python3-setuptools python3-pytest python3-exceptiongroup python3-tomli python3-objgraph"
  # scripts/pypi-env.sh and scripts/test-pypi.sh: venvs for Debian's python3
  # (ensurepip), and greenlet's C/C++ test extensions built in them (the
  # pyenv interpreters bring their own headers and venv)
  [pypi]="python3-venv python3-dev gcc g++"
  [demo]="python3-dev python3-setuptools python3-gevent"
  # scripts/rootfs.sh: the Debian ports' root file systems
  [rootfs]="debootstrap"
)

want=()
for group in "$@"; do
  [[ -v PKGS[$group] ]] || { echo "deps.sh: unknown group '$group'" >&2; exit 2; }
  for p in ${PKGS[$group]}; do want+=("$p"); done
done
[ ${#want[@]} -gt 0 ] || exit 0

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "cgreenlet needs these Debian packages: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "== installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
