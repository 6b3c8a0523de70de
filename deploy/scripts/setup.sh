#!/usr/bin/env bash
# One-shot set-up for a fresh Debian 12 machine (root or sudo, package registries only).
#   setup.sh          -> .venv with the project and its runtime extras (enough for `bcdi-recon demo`)
#   setup.sh --test   -> also the test extras and the Debian packages the tests talk to: PyNX (python3-pynx,
#                        from bookworm-backports) and docker-compose (only to validate docker-compose.yml; no engine)
# Idempotent: a second run only checks a stamp and returns.
set -euo pipefail
cd "$(dirname "$0")/../.."
want_test=0; [ "${1:-}" = "--test" ] && want_test=1
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
PY=${PYTHON:-python3}
log() { printf '[setup] %s\n' "$*" >&2; }

if ! $PY -m venv --help >/dev/null 2>&1 || ! $PY -c "import ensurepip" >/dev/null 2>&1; then
  log "installing python3-venv"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv python3-dev >/dev/null
fi
[ -x .venv/bin/python ] || { log "creating .venv"; $PY -m venv .venv; }

extras="service,tiled,bluesky"
[ $want_test -eq 1 ] && extras="$extras,dev,keras"
stamp=".venv/.bcdi-setup-$(cat pyproject.toml deploy/constraints.txt | sha1sum | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  log "installing Python packages (torch CPU wheel first, then the project [$extras])"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -c deploy/constraints.txt -e ".[$extras]"  # the tested versions
  touch "$stamp"
fi
if [ $want_test -eq 1 ]; then
  bash deploy/scripts/install-pynx.sh >/dev/null || log "WARNING: PyNX could not be installed; PyNX tests will fail"
  if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    log "installing docker-compose (to validate docker-compose.yml)"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null \
      || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
           --no-install-recommends docker-compose >/dev/null; } || log "WARNING: docker-compose not installed"
  fi
fi
log "ready: .venv/bin/bcdi-recon"
