#!/usr/bin/env bash
# test-arm64-module.sh - the greenlet module on AArch64 in a Debian 12 arm64
# root file system under qemu-user: scripts/test-port-module.sh --arch arm64
# (the arm64module stage; usage: [--full] [--bench]).
set -euo pipefail
exec "$(dirname "$0")/test-port-module.sh" --arch arm64 "$@"
