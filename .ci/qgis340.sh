#!/usr/bin/env bash
# Run the test suite on QGIS 3.40 LTR inside a cached Debian 13 (trixie) chroot — or, with SUITE=sid (see
# .ci/qgis344.sh), on QGIS 3.44 in a Debian sid chroot.
# Usage: .ci/qgis340.sh [pytest args...]   (as root; the chroot is kept in $TRIXIE_ROOT between runs)
#        .ci/qgis340.sh --bench              (`make bench` on QGIS 3.40; BENCH_SCALES, BENCH_TASKS and BENCH_REPEAT pass through)
set -euo pipefail
SUITE="${SUITE:-trixie}"
ROOT="${CHROOT_ROOT:-${TRIXIE_ROOT:-/opt/civic311-trixie}}"
# sid's Release file counts as expired against this machine's clock
APT_OPTS=$([ "$SUITE" = sid ] && echo "-o Acquire::Check-Valid-Until=false" || true)
CHECKOUT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="$(cd "$CHECKOUT/.." && pwd)/shared"
PKGS="qgis python3-qgis qgis-providers python3-pandas python3-sklearn python3-requests python3-pytest python3-venv python3-pip"

if [ ! -f "$ROOT/.civic311-base" ]; then
    command -v debootstrap >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }
    rm -rf "$ROOT"
    debootstrap --variant=minbase "$SUITE" "$ROOT" http://deb.debian.org/debian
    touch "$ROOT/.civic311-base"
fi
if [ ! -f "$ROOT/.civic311-qgis" ]; then
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    chroot "$ROOT" bash -c "apt-get $APT_OPTS update -q && DEBIAN_FRONTEND=noninteractive apt-get $APT_OPTS install -y -q --no-install-recommends $PKGS"
    touch "$ROOT/.civic311-qgis"
fi
if [ ! -f "$ROOT/.civic311-venv" ]; then
    # pip inside the chroot cannot verify the registry's certificate: fetch wheels on the host
    rm -rf "$ROOT/tmp/whl" && mkdir -p "$ROOT/tmp/whl"
    /usr/bin/python3 -m pip download -q --no-deps -d "$ROOT/tmp/whl" pytest-qgis==5.0.2
    chroot "$ROOT" bash -c "python3 -m venv --system-site-packages /opt/venv && /opt/venv/bin/pip install -q --no-index --no-deps /tmp/whl/*.whl"
    touch "$ROOT/.civic311-venv"
fi

mkdir -p "$ROOT/work/main" "$ROOT/work/shared" "$ROOT/proc"
cleanup() {
    umount "$ROOT/work/main" 2>/dev/null || true
    umount "$ROOT/work/shared" 2>/dev/null || true
    umount "$ROOT/proc" 2>/dev/null || true
}
trap cleanup EXIT
mount --bind "$CHECKOUT" "$ROOT/work/main"
[ -d "$SHARED" ] && mount --bind "$SHARED" "$ROOT/work/shared"
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
if [ "${1:-}" = "--bench" ]; then
    chroot "$ROOT" env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen \
        BENCH_SCALES="${BENCH_SCALES:-1M}" BENCH_TASKS="${BENCH_TASKS:-precincts,trends,field_ops,fetch_import}" \
        BENCH_REPEAT="${BENCH_REPEAT:-1}" \
        bash -c "cd /work/main && /usr/bin/python3 tests/bench/run_bench.py"
    exit
fi
chroot "$ROOT" bash -c "dpkg-query -W -f='\${Package} \${Version}\n' qgis python3 python3-numpy python3-pandas gdal-bin 2>/dev/null | sed 's/^/  using /'" || true
chroot "$ROOT" env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen \
    CIVIC311_PYTEST_CACHE=/tmp/civic311-pytest \
    bash -c "cd /work/main && /opt/venv/bin/python -P -m pytest -p no:cacheprovider tests $*"
