#!/usr/bin/env bash
# arm64-rootfs.sh - the Debian 12 arm64 root file system: scripts/rootfs.sh
# --arch arm64 (kept for its callers and users; usage: path | run ...).
set -euo pipefail
exec "$(dirname "$0")/rootfs.sh" --arch arm64 "$@"
