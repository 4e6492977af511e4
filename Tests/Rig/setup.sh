#!/usr/bin/env bash
# Installs what the nested rig needs, idempotently: a Debian 12 kernel (the bookworm 6.1 one, not
# backports) that boots both L1 and L2, busybox-static for both initramfs images, cpio, xz, kmod,
# gcc and libc6-dev (the L2 agent's static uevent reader, l2/pci-uevents.c), and QEMU (10 from
# bookworm-backports, as scripts/setup.sh installs it).
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(busybox-static cpio xz-utils kmod gzip pciutils gcc libc6-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A bookworm 6.1 kernel with its modules (kvm, kvm-amd) must be on disk.
have_kernel=0
for k in /boot/vmlinuz-6.1.*-amd64; do
  [ -e "$k" ] && [ -d "/lib/modules/${k#/boot/vmlinuz-}" ] && have_kernel=1
done
[ $have_kernel = 1 ] || missing+=(linux-image-amd64)
need_qemu=0
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_qemu=1

if [ ${#missing[@]} -gt 0 ] || [ $need_qemu = 1 ]; then
  $SUDO apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    # linux-image-amd64 without -t: apt's default release is bookworm (priority 500 beats
    # backports' 100), which gives the 6.1 kernel.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if [ $need_qemu = 1 ]; then
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "deb http://deb.debian.org/debian bookworm-backports main" |
        $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
      $SUDO apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-x86
  fi
fi
