#!/usr/bin/env bash
# Run the test suite on QGIS 3.44 (Debian sid) in a cached chroot: the 3.40 recipe with SUITE=sid.
# Usage: .ci/qgis344.sh [pytest args...]   (as root; the chroot is kept in $SID_ROOT between runs)
set -euo pipefail
SUITE=sid CHROOT_ROOT="${SID_ROOT:-/opt/civic311-sid}" exec bash "$(dirname "$0")/qgis340.sh" "$@"
