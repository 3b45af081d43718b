#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian/Ubuntu machine and runs all of it:
# lint, types, layer contracts, and every test, with a real Docker engine (installed and started
# here when none answers; tests marked `docker` then fail rather than skip).
# Extra arguments go to pytest (e.g. scripts/test.sh -k sidecar).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_venv test
apt_need tmux tmux            # the dashboard's end-to-end test drives a real terminal
apt_need promtool prometheus  # checks the sidecar's /stats/prometheus output
apt_need redis-server redis-server  # a real tcp service in the mesh (tests/e2e/test_tcp_process.py)
apt_need curl curl                # a real HTTP/2 client (tests/sidecar/http2/test_h2c_server.py)
apt_need iptables-restore iptables  # capture-init in a network namespace (tests/sidecar/capture/test_iptables.py)
apt_need unshare util-linux
apt_need chromium chromium             # the web dashboard in a real browser (tests/e2e/test_web_dashboard.py)
apt_need chromedriver chromium-driver
MESHDEV_BASE_IMAGE=$(bash scripts/docker-setup.sh | tail -n1)
export MESHDEV_BASE_IMAGE
export MESHDEV_REQUIRE_DOCKER=${MESHDEV_REQUIRE_DOCKER:-1}
log "base image: $MESHDEV_BASE_IMAGE"

step() { log "== $*"; "$@"; }
step .venv/bin/ruff check .
step .venv/bin/ruff format --check .
step .venv/bin/mypy
step .venv/bin/lint-imports
step .venv/bin/pytest "$@"
