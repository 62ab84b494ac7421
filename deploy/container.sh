#!/usr/bin/env bash
# Build the container image from the production install steps, run it, stream a clip to it, fetch the export.
#
#   deploy/container.sh [CLIP.wav]
#
# 1. base image localhost/melvin-base:bookworm: `mmdebstrap --variant=minbase` (python3, python3-venv) and
#    `podman import`, unless it exists (no registry needed);
# 2. a wheelhouse on the host (deploy/wheelhouse.sh): the build installs from it with --no-index;
# 3. `podman build` (deploy/Containerfile), `podman run` with a random key on free local ports;
# 4. waits for /health, streams the clip with `melvin-trio stream` (this checkout's .venv), downloads the exports,
#    checks the health check passes, stops the container with SIGTERM and shows how it drained.
# Needs root (or rootless podman), podman, runc, mmdebstrap, and ./dev setup for the client.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=$PWD/deploy/containers.conf
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
BASE=localhost/melvin-base:bookworm
IMAGE=localhost/melvin-trio:latest
CLIP=${1:-../shared/audio/en/melvin_jfk.wav}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/melvin-container.XXXXXX")
NAME=melvin-trio-smoke-$$
cleanup() {
    "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
    "${PODMAN[@]}" volume rm -f "$NAME-data" "$NAME-models" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! "${PODMAN[@]}" image exists "$BASE"; then
    echo "== base image: mmdebstrap bookworm minbase"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/base.tar"
    "${PODMAN[@]}" import --quiet "$WORK/base.tar" "$BASE"
    rm -f "$WORK/base.tar"
fi

echo "== wheelhouse"
mkdir -p "$WORK/context"
deploy/wheelhouse.sh "$WORK/context/wheelhouse" >/dev/null
cp deploy/install.sh deploy/config.yml "$WORK/context/"
du -sh "$WORK/context/wheelhouse"

echo "== build"
start=$(date +%s)
"${PODMAN[@]}" build --quiet --format docker --build-arg BASE="$BASE" -f deploy/Containerfile -t "$IMAGE" "$WORK/context"
echo "built in $(($(date +%s) - start)) s"
"${PODMAN[@]}" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"

echo "== run"
KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
"${PODMAN[@]}" run -d --name "$NAME" --stop-timeout 60 -e MELVIN_API_KEYS="$KEY" \
    -p 127.0.0.1::8393 -p 127.0.0.1::8394 \
    -v "$NAME-data:/var/lib/melvin-trio" -v "$NAME-models:/opt/melvin-trio/models" "$IMAGE" >/dev/null
REST=$("${PODMAN[@]}" port "$NAME" 8393/tcp | head -1)
WS=$("${PODMAN[@]}" port "$NAME" 8394/tcp | head -1)
echo "REST on $REST, WebSocket on $WS; user: $("${PODMAN[@]}" exec "$NAME" id)"
for _ in $(seq 120); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://$REST/health', timeout=2)" 2>/dev/null; then
        break
    fi
    sleep 1
done
echo "health: $(python3 -c "import urllib.request; print(urllib.request.urlopen('http://$REST/health').read().decode())")"
"${PODMAN[@]}" healthcheck run "$NAME" && echo "podman healthcheck: healthy"

echo "== stream $CLIP"
.venv/bin/melvin-trio stream "$CLIP" --url "ws://$WS" --rest-url "http://$REST" --key "$KEY" --speed 2 \
    --save "$WORK/exports"
ls -l "$WORK/exports"

echo "== stop (SIGTERM, drain)"
"${PODMAN[@]}" stop "$NAME" >/dev/null
"${PODMAN[@]}" logs "$NAME" 2>&1 | tail -8
