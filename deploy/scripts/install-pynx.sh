#!/usr/bin/env bash
# Install PyNX (ESRF) as Debian's python3-pynx from bookworm-backports, for the second phasing engine.
# It lives in Debian's /usr/bin/python3 (numpy 1.x); the project calls it there in a subprocess.
set -euo pipefail
if /usr/bin/python3 -c "import pynx.cdi" >/dev/null 2>&1; then exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
src=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -f "$src" ]; then
  $SUDO tee "$src" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  -t bookworm-backports python3-pynx >/dev/null
/usr/bin/python3 -c 'import pynx.cdi; from pynx.version import __version__ as v; print("PyNX", v)'
