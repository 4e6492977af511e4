#!/usr/bin/env bash
# Builds the rig's iommufd kernel and prints its folder: Debian's 6.12 (linux-source-6.12 from
# bookworm-security) with Debian's own configuration plus CONFIG_IOMMUFD and
# CONFIG_VFIO_DEVICE_CDEV, which Debian leaves out (its 6.1 predates them; the bookworm-backports
# 6.12 image has "# CONFIG_IOMMUFD is not set"). Only the modules the rig loads are built
# (localmodconfig over the list below), and no debug information, so the build takes about
# 25 minutes on two cores; once built it is kept.
#   DIR/vmlinuz                     the kernel (bzImage)
#   DIR/lib/modules/VERSION/        its modules (modinfo -b DIR -k VERSION)
#   DIR/version                     VERSION (6.12.N-iommufd)
# usage: build-kernel.sh   (RIG_KERNEL_CACHE: where, default .rig/kernel in the checkout)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
out=${RIG_KERNEL_CACHE:-$REPO/.rig/kernel}/iommufd
if [ -f "$out/done" ]; then echo "$out"; exit 0; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

# The source and what building it takes (the source comes with bookworm-security's updates).
need=()
for p in linux-source-6.12 bc flex bison libelf-dev libssl-dev cpio kmod; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "build-kernel.sh: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
# Debian's configuration of the same series: the bookworm-backports image's /boot/config.
work=${RIG_KERNEL_CACHE:-$REPO/.rig/kernel}/work
mkdir -p "$work"
if [ ! -f "$work/config-debian" ]; then
  grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/ || {
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    $SUDO apt-get update -qq
  }
  image=$(apt-cache depends -t bookworm-backports linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-6\.12[^ ]*-amd64\)$/\1/p' | head -n 1)
  [ -n "$image" ] || { echo "build-kernel.sh: no linux-image-6.12 in bookworm-backports" >&2; exit 1; }
  (cd "$work" && rm -f linux-image-*.deb && apt-get download "$image" >&2)
  dpkg-deb --fsys-tarfile "$work"/linux-image-*.deb | tar -xO --wildcards './boot/config-*' >"$work/config-debian"
  rm -f "$work"/linux-image-*.deb
fi
src=$work/linux-source-6.12
if [ ! -f "$src/Makefile" ]; then
  echo "build-kernel.sh: unpacking /usr/src/linux-source-6.12.tar.xz" >&2
  tar -xJf /usr/src/linux-source-6.12.tar.xz -C "$work"
fi

cd "$src"
# The modules L1 and L2 load (build-initramfs.sh) and what they need, as an lsmod listing.
{
  echo "Module Size Used"
  for m in kvm_amd kvm irqbypass tun tap vhost_net vhost vhost_iotlb vfio vfio_iommu_type1 vfio_pci vfio_pci_core \
           iommufd nvme nvme_core nvme_auth igb igbvf e1000e e1000 macvlan macvtap 8021q garp mrp stp llc \
           pci_pf_stub virtio_pci virtio_pci_legacy_dev virtio_pci_modern_dev virtio_net net_failover failover \
           dca i2c_algo_bit ptp pps_core; do
    echo "$m 1 0"
  done
} >"$work/lsmod"
cp "$work/config-debian" .config
# iommufd with device cdevs; no debug information, module signing or lockdown (nothing here
# signs); modules compressed with xz as Debian's are (Debian 12's depmod reads no gzip).
scripts/config --module IOMMUFD --enable VFIO_DEVICE_CDEV --disable MODULE_COMPRESS_GZIP --enable MODULE_COMPRESS_XZ \
  --disable DEBUG_INFO --disable DEBUG_INFO_DWARF5 --disable DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT \
  --enable DEBUG_INFO_NONE --disable DEBUG_INFO_BTF \
  --disable MODULE_SIG --disable MODULE_SIG_ALL --disable MODULE_SIG_FORCE --disable SECURITY_LOCKDOWN_LSM \
  --disable IMA_APPRAISE_MODSIG --set-str MODULE_SIG_KEY "" \
  --set-str SYSTEM_TRUSTED_KEYS "" --set-str SYSTEM_REVOCATION_KEYS "" --set-str LOCALVERSION "-iommufd"
{ yes '' || true; } | make -s LSMOD="$work/lsmod" localmodconfig >/dev/null
scripts/config --disable MODULE_SIG --disable MODULE_SIG_ALL --set-str MODULE_SIG_KEY ""
make -s olddefconfig
for option in CONFIG_IOMMUFD=m CONFIG_VFIO_DEVICE_CDEV=y CONFIG_INTEL_IOMMU=y CONFIG_IRQ_REMAP=y CONFIG_KVM_AMD=m CONFIG_PVH=y; do
  grep -qx "$option" .config || { echo "build-kernel.sh: the configuration lost $option" >&2; exit 1; }
done
echo "build-kernel.sh: building $(make -s kernelrelease) (about 25 minutes on two cores)" >&2
make -j"$(nproc)" bzImage modules >"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; exit 1; }
version=$(make -s kernelrelease)
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
make -s INSTALL_MOD_PATH="$out.tmp" modules_install >/dev/null
cp arch/x86/boot/bzImage "$out.tmp/vmlinuz"
echo "$version" >"$out.tmp/version"
[ -s "$out.tmp/lib/modules/$version/modules.dep" ] || { echo "build-kernel.sh: depmod wrote no modules.dep" >&2; exit 1; }
touch "$out.tmp/done"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
