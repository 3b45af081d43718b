#!/usr/bin/env bash
# Sets up meshdev on this machine and runs the example mesh with its dashboard.
# Uses Docker when an engine answers (MESHDEV_SETUP_DOCKER=1 also installs and starts one),
# and runs the same pods as local processes otherwise. Extra arguments go to `meshdev up`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_venv example
if [ "${MESHDEV_SETUP_DOCKER:-0}" = 1 ]; then
  MESHDEV_BASE_IMAGE=$(bash scripts/docker-setup.sh | tail -n1)
  export MESHDEV_BASE_IMAGE
fi
exec .venv/bin/meshdev up examples/flask-app/mesh.yaml "$@"
