#!/usr/bin/env bash
# Makes a Docker engine answer on this machine and a Python base image exist for meshdev's
# builds. CI machines start with neither an engine nor a reachable image registry, so this
# installs Debian's docker.io, starts dockerd, and (only when the public image cannot be pulled)
# builds a local base image with debootstrap. The last line printed on stdout is the image name
# to use, so callers can do: MESHDEV_BASE_IMAGE=$(scripts/docker-setup.sh | tail -n1)
set -euo pipefail

PUBLIC_IMAGE=${MESHDEV_PUBLIC_BASE_IMAGE:-python:3.12-slim}
LOCAL_IMAGE=${MESHDEV_LOCAL_BASE_IMAGE:-meshdev-base:bookworm}
DOCKERD_LOG=${MESHDEV_DOCKERD_LOG:-/tmp/meshdev-dockerd.log}

log() { echo "docker-setup: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from apt"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  fi
}

ensure_engine() {
  if docker info >/dev/null 2>&1; then
    return
  fi
  ensure_packages
  log "starting dockerd (log: $DOCKERD_LOG)"
  as_root sh -c "nohup dockerd >'$DOCKERD_LOG' 2>&1 &"
  for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
      log "engine is up"
      return
    fi
    sleep 0.5
  done
  log "dockerd did not answer within 60 s; last lines of its log:"
  tail -n 20 "$DOCKERD_LOG" >&2 || true
  exit 1
}

build_local_image() {
  ensure_packages
  local root
  root=$(mktemp -d /tmp/meshdev-rootfs.XXXXXX)
  log "building $LOCAL_IMAGE with debootstrap (about two minutes)"
  as_root debootstrap --variant=minbase \
    --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >&2
  as_root tar -C "$root" -c . | docker import - "$LOCAL_IMAGE-rootfs" >&2
  as_root rm -rf "$root"
  local ctx
  ctx=$(mktemp -d /tmp/meshdev-basectx.XXXXXX)
  # The host's CA bundle is what lets pip inside `docker build` reach PyPI through this
  # machine's network; the Debian bundle alone is not enough here.
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $LOCAL_IMAGE-rootfs
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN rm -f /usr/lib/python3*/EXTERNALLY-MANAGED && ln -sf /usr/bin/python3 /usr/bin/python
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
CMD ["python3"]
DOCKERFILE
  docker build -q -t "$LOCAL_IMAGE" "$ctx" >&2
  rm -rf "$ctx"
}

choose_base_image() {
  if [ -n "${MESHDEV_BASE_IMAGE:-}" ] && docker image inspect "$MESHDEV_BASE_IMAGE" >/dev/null 2>&1; then
    echo "$MESHDEV_BASE_IMAGE"; return
  fi
  if docker image inspect "$PUBLIC_IMAGE" >/dev/null 2>&1 \
     || timeout 30 docker pull -q "$PUBLIC_IMAGE" >/dev/null 2>&1; then
    echo "$PUBLIC_IMAGE"; return
  fi
  if ! docker image inspect "$LOCAL_IMAGE" >/dev/null 2>&1; then
    log "$PUBLIC_IMAGE cannot be pulled; building a local base image instead"
    build_local_image
  fi
  echo "$LOCAL_IMAGE"
}

ensure_engine
choose_base_image
