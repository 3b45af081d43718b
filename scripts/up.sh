#!/usr/bin/env bash
# Sets up meshdev on this machine and runs the example mesh with its dashboard.
# Pods run in Docker when an engine answers (MESHDEV_SETUP_DOCKER=1 also installs and starts
# one), as local processes otherwise. Extra arguments go to `meshdev up`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_venv example
if [ "${MESHDEV_SETUP_DOCKER:-0}" = 1 ] || docker info >/dev/null 2>&1; then
  # The base image every build starts from: the public one when it can be pulled, else one
  # built here (docker-setup.sh says which on its last line).
  MESHDEV_BASE_IMAGE=$(bash scripts/docker-setup.sh | tail -n1)
  export MESHDEV_BASE_IMAGE
fi
exec .venv/bin/meshdev up examples/flask-app/mesh.yaml "$@"
