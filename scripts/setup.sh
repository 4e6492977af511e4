#!/usr/bin/env bash
# Installs what Switchyard's build and tests need on a fresh Debian 12 machine.
# Idempotent: each step is skipped when what it installs is already there.
set -euo pipefail

APT_PACKAGES=(libpci-dev libudev-dev libfdt-dev libseccomp-dev libnl-route-3-dev pciutils acpica-tools device-tree-compiler binutils linux-image-amd64
              iproute2 python3 python3-venv)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

need_qemu=0
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 ||
   ! qemu-system-x86_64 --version | grep -Eq 'version (9|[1-9][0-9])\.'; then
  need_qemu=1
fi

if [ ${#missing[@]} -gt 0 ] || [ $need_qemu = 1 ]; then
  if [ $need_qemu = 1 ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" |
      $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  fi
  $SUDO apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if [ $need_qemu = 1 ]; then
    # QEMU 10 from backports: the q35 oracle (Debian 12's own 7.2 lacks igb).
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-x86
  fi
fi

# The Python tools the tests use (QEMU's qemu.qmp client, dt-validate from dtschema) live in a
# virtual environment inside the checkout, made from Debian's own python3: a stock Debian 12
# refuses `pip install` into the system Python (PEP 668). `make test` puts .venv/bin first on
# PATH, and the tests look there first when run by hand.
VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv"
if ! "$VENV/bin/python3" -c "import sys" >/dev/null 2>&1; then
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV"
fi
"$VENV/bin/python3" -c "import qemu.qmp" 2>/dev/null || "$VENV/bin/python3" -m pip install -q qemu.qmp
[ -x "$VENV/bin/dt-validate" ] || "$VENV/bin/python3" -m pip install -q dtschema
