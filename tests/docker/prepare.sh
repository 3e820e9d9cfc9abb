#!/usr/bin/env bash
# Makes this machine able to run tests/docker (pytest -m docker) without an
# image registry. Idempotent: each step is skipped when its result is there.
#   1. apt-get install docker.io, docker-compose, debootstrap (only what is missing)
#   2. start dockerd in the background if no daemon answers
#   3. build the base image (Debian minbase with python3) if it is not there
#   4. build the wheelhouse the image installs from offline
# Every step runs under a timeout; the script prints what it did and how long.
#
# Settings (environment):
#   HTTPCOORD_DOCKER_BASE   base image name      (default httpcoord-base:bookworm)
#   HTTPCOORD_WHEELHOUSE    wheelhouse directory (default build/docker/wheelhouse,
#                           relative to the repository: it must be inside the
#                           docker build context)
#   DOCKERD_LOG             dockerd's log file   (default /var/log/httpcoord-dockerd.log)
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE_IMAGE="${HTTPCOORD_DOCKER_BASE:-httpcoord-base:bookworm}"
WHEELHOUSE="${HTTPCOORD_WHEELHOUSE:-build/docker/wheelhouse}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/httpcoord-dockerd.log}"
APT_TIMEOUT_S=600
DOCKERD_START_TIMEOUT_S=60
DEBOOTSTRAP_TIMEOUT_S=600
IMPORT_TIMEOUT_S=300
WHEEL_TIMEOUT_S=600
# The image's python is Debian bookworm's python3 (3.11): wheels must be built
# by the same interpreter so that compiled wheels match it.
WHEEL_PYTHON=/usr/bin/python3

step_started=0
step() { step_started=$(date +%s); printf 'prepare: %s ... ' "$1"; }
done_step() { printf '%s (%ss)\n' "$1" "$(($(date +%s) - step_started))"; }

# Root is needed for apt, dockerd and debootstrap (CI runs as root).
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)

# 1. Packages.
step "packages"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
"$WHEEL_PYTHON" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ ${#missing[@]} -eq 0 ]; then
    done_step "all present"
else
    export DEBIAN_FRONTEND=noninteractive
    timeout "$APT_TIMEOUT_S" "${SUDO[@]}" apt-get update -qq
    timeout "$APT_TIMEOUT_S" "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null
    done_step "installed ${missing[*]}"
fi

# 2. The daemon. Started detached (setsid) so that it outlives this script;
# the test suite never stops it, a later run finds it and goes on.
# A dockerd or its containerd killed without a clean stop leaves a pid file
# behind, and the next dockerd believes the pid named there still runs, even
# as an unreaped zombie: it refuses to start, or waits on a dead containerd.
PIDFILES=(/var/run/docker.pid /var/run/docker/containerd/containerd.pid)
is_stale() {
    [ -f "$1" ] || return 1
    local pid state
    pid="$(cat "$1")"
    [ -r "/proc/$pid/stat" ] || return 0
    state="$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1)"
    [ "$state" = Z ]
}
step "dockerd"
if timeout 10 docker info >/dev/null 2>&1; then
    done_step "already running"
else
    for pidfile in "${PIDFILES[@]}"; do
        if is_stale "$pidfile"; then "${SUDO[@]}" rm -f "$pidfile"; fi
    done
    "${SUDO[@]}" setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    dockerd_pid=$!
    deadline=$(($(date +%s) + DOCKERD_START_TIMEOUT_S))
    until timeout 10 docker info >/dev/null 2>&1; do
        if ! kill -0 "$dockerd_pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
            echo "dockerd did not come up within ${DOCKERD_START_TIMEOUT_S}s; its log:" >&2
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        sleep 1
    done
    done_step "started (pid $dockerd_pid, log $DOCKERD_LOG)"
fi

# 3. The base image: there is no registry to pull python:3.11-slim from.
step "base image $BASE_IMAGE"
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    done_step "present"
else
    rootfs="$(mktemp -d)"
    trap '"${SUDO[@]}" rm -rf "$rootfs"' EXIT
    timeout "$DEBOOTSTRAP_TIMEOUT_S" "${SUDO[@]}" debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" >"$rootfs.log" 2>&1 || {
        echo "debootstrap failed; its log:" >&2
        tail -n 30 "$rootfs.log" >&2
        exit 1
    }
    rm -f "$rootfs.log"
    "${SUDO[@]}" rm -rf "$rootfs"/var/cache/apt/archives/*.deb
    timeout "$IMPORT_TIMEOUT_S" bash -c 'tar -C "$1" -c . | docker import - "$2" >/dev/null' \
        _ "$rootfs" "$BASE_IMAGE"
    "${SUDO[@]}" rm -rf "$rootfs"
    trap - EXIT
    done_step "built with debootstrap and imported"
fi

# 4. The wheelhouse: every dependency as a wheel, plus the build backend, so
# `pip install --no-index` can build and install the package from source. It
# is rebuilt when pyproject.toml changes (the stamp holds its hash).
step "wheelhouse $WHEELHOUSE"
stamp="$WHEELHOUSE/.stamp"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$WHEEL_PYTHON" -V 2>&1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    done_step "up to date"
else
    rm -rf "$WHEELHOUSE"
    mkdir -p "$WHEELHOUSE"
    pip_log="$(mktemp)"
    timeout "$WHEEL_TIMEOUT_S" "$WHEEL_PYTHON" -m pip wheel -q --disable-pip-version-check \
        -w "$WHEELHOUSE" . 'setuptools>=68' wheel >"$pip_log" 2>&1 || {
        echo "pip wheel failed; its output:" >&2
        tail -n 30 "$pip_log" >&2
        exit 1
    }
    rm -f "$pip_log"
    # The package itself is installed from the source in the build context,
    # never from a wheel that may be older than it.
    rm -f "$WHEELHOUSE"/httpcoord-*.whl
    echo "$want" >"$stamp"
    done_step "built ($(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels)"
fi
