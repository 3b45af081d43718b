# Shared set-up steps for scripts/up.sh and scripts/test.sh (sourced, not run).

log() { echo "meshdev-setup: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else log "need root (or sudo) to run: $*"; return 1
  fi
}

# apt_need CMD PACKAGE...: install the packages when CMD is missing.
apt_need() {
  local cmd=$1; shift
  if command -v "$cmd" >/dev/null 2>&1; then return 0; fi
  apt_install "$@"
}

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    log "not a Debian/Ubuntu machine; please install: $*"; return 1
  fi
  log "installing $*"
  if [ -z "${MESHDEV_APT_UPDATED:-}" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    export MESHDEV_APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

pick_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 \
       && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

# ensure_venv EXTRAS: a .venv with meshdev installed (editable) with those extras; reinstalls
# only when pyproject.toml changed since the last install.
ensure_venv() {
  local extras=$1 py stamp
  py=$(pick_python) || { apt_need python3 python3 python3-venv python3-pip; py=$(pick_python) || {
    log "meshdev needs Python >= 3.11; this machine has $(python3 --version 2>&1)"; return 1; }; }
  if [ ! -x .venv/bin/python ]; then
    if ! "$py" -m venv .venv >/dev/null 2>&1; then
      rm -rf .venv
      apt_install python3-venv
      "$py" -m venv .venv
    fi
  fi
  stamp=".venv/.meshdev-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    log "installing meshdev[$extras] into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q -e ".[$extras]" >&2
    rm -f .venv/.meshdev-"$extras"-*
    touch "$stamp"
  fi
}
