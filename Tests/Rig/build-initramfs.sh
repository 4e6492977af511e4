#!/usr/bin/env bash
# Builds the rig's boot images under .rig/build/KEY/ and prints that folder's path:
#   vmlinuz          the Debian 6.1 kernel (bzImage), for L1 and for L2
#   vmlinux          the same kernel uncompressed (ELF, booted through PVH: no decompression)
#   l2-initrd.gz     L2: busybox-static, l2/init, and pciutils' lspci with its libraries and pci.ids
#   l1-initrd.img    L1: busybox, kvm/kvm-amd, vfio-pci, nvme, igb(vf), e1000e, macvtap modules and their dependencies, the L2 kernel and
#                    initramfs, QEMU with its libraries and firmware, l1/init and the scenarios,
#                    and (with --switchyard PATH) the Switchyard binary as /switchyard with the
#                    shared libraries ldd lists
# KEY hashes every input (these scripts, the kernel, busybox, QEMU, the Switchyard binary), so a
# second call with the same inputs only prints the path.
# usage: build-initramfs.sh [--switchyard PATH] [--kernel-version VERSION] [--kernel-dir DIR]
#   --kernel-dir: a kernel built by build-kernel.sh (DIR/vmlinuz, DIR/lib/modules/VERSION) in
#   place of Debian's 6.1 from /boot, for L1 and L2 alike
# RIG_L1_COMPRESS=none|gzip (default none: an uncompressed cpio unpacks faster under TCG).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${RIG_CACHE:-$REPO/.rig}
COMPRESS=${RIG_L1_COMPRESS:-none}

switchyard=""
kver=""
kdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --switchyard) switchyard=$(realpath "$2"); shift 2 ;;
    --kernel-version) kver=$2; shift 2 ;;
    --kernel-dir) kdir=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-initramfs.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -n "$switchyard" ] && [ ! -x "$switchyard" ]; then
  echo "build-initramfs.sh: $switchyard is not an executable" >&2; exit 2
fi

# shellcheck source=common.sh
. "$HERE/common.sh"
# modinfo's root: / for Debian's kernel, the build's folder for build-kernel.sh's.
modroot=/
if [ -n "$kdir" ]; then
  kver=$(cat "$kdir/version")
  kernel=$kdir/vmlinuz
  modroot=$kdir
else
  [ -n "$kver" ] || kver=$(rig_kernel_version)
  kernel=/boot/vmlinuz-$kver
fi
moddir=$modroot/lib/modules/$kver
[ -r "$kernel" ] && [ -d "$moddir" ] || { echo "build-initramfs.sh: no $kernel or $moddir; run setup.sh" >&2; exit 1; }
busybox=$(command -v busybox)
qemu=$(command -v qemu-system-x86_64)
file "$busybox" 2>/dev/null | grep -q dynamically && echo "warning: $busybox is not static (install busybox-static)" >&2

key=$( {
  echo "compress=$COMPRESS kver=$kver"
  cd "$HERE" && find build-initramfs.sh common.sh extract-vmlinux.py l1 l2 -type f | sort | xargs sha256sum
  sha256sum "$kernel" "$busybox" "$qemu" /usr/bin/lspci "$(command -v gcc)"
  [ -z "$switchyard" ] || sha256sum "$switchyard"
} | sha256sum | cut -c1-16)
out=$CACHE/build/$key
if [ -f "$out/done" ]; then echo "$out"; exit 0; fi

work=$(mktemp -d "$CACHE/tmp.XXXXXX" 2>/dev/null || { mkdir -p "$CACHE"; mktemp -d "$CACHE/tmp.XXXXXX"; })
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/out"

# Applets as symlinks next to busybox, never over a file already there.
install_busybox() { # ROOT BINDIR
  cp "$busybox" "$1/$2/busybox"
  for a in $("$busybox" --list); do
    [ -e "$1/$2/$a" ] || [ -L "$1/$2/$a" ] || ln -s busybox "$1/$2/$a"
  done
}

# Copies an ELF binary's shared libraries (and the loader) to the same paths under ROOT.
copy_libs() { # ROOT BINARY
  { ldd "$2" 2>/dev/null || true; } | { grep -oE '/[^ ]+' || true; } | while read -r lib; do
    [ -e "$1$lib" ] || { mkdir -p "$(dirname "$1$lib")"; cp -L "$lib" "$1$lib"; }
  done
}

pack() { # ROOT OUTPUT COMPRESSOR
  (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | $3 >"$2"
}

python3 "$HERE/extract-vmlinux.py" "$kernel" "$work/out/vmlinux"

# Kernel modules with everything they depend on, dependencies first, into $mod_dest, each once;
# their file names in load order go to ${order[@]} (written out as the image's "order" file).
declare -A seen=()
order=()
mod_dest=""
add_module() {
  local m=${1//_/-} dep
  [ -n "${seen[$mod_dest:$m]:-}" ] && return
  seen[$mod_dest:$m]=1
  for dep in $(modinfo -b "$modroot" -k "$kver" -F depends "$m" | tr ',' ' '); do add_module "$dep"; done
  local f name
  f=$(modinfo -b "$modroot" -k "$kver" -F filename "$m")
  # Built into this kernel (build-kernel.sh's has some of Debian's modules built in).
  [ "$f" = "(builtin)" ] && return
  name=$(basename "$f"); name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
  case "$f" in
    *.xz) xz -dc "$f" >"$mod_dest/$name" ;;
    *.zst) zstd -qdc "$f" >"$mod_dest/$name" ;;
    *.gz) gzip -dc "$f" >"$mod_dest/$name" ;;
    *) cp "$f" "$mod_dest/$name" ;;
  esac
  order+=("$name")
}

# --- L2 -----------------------------------------------------------------------------------------
l2=$work/l2
mkdir -p "$l2"/{bin,dev,proc,sys,tmp}
mknod -m 600 "$l2/dev/console" c 5 1 2>/dev/null || true  # root only; init reopens it
install_busybox "$l2" bin
cp "$HERE/l2/init" "$l2/init"; chmod 755 "$l2/init"
# The agent's uevent reader, static: the L2 image has no libc.
gcc -static -Os -Wall -Werror -o "$l2/bin/pci-uevents" "$HERE/l2/pci-uevents.c"
# 4 KiB random-read IOPS for rig.l2=nvme (fio is not in the image).
gcc -static -Os -Wall -Werror -o "$l2/bin/randread" "$HERE/l2/randread.c"
# TCP request/response rate for rig.l2=net (netperf is not in the image).
gcc -static -Os -Wall -Werror -o "$l2/bin/rr" "$HERE/l2/rr.c"
# The real lspci (pciutils) with its libraries and names, for rig.l2lspci=1 (busybox's lspci
# applet cannot draw a tree).
mkdir -p "$l2/usr/bin" "$l2/usr/share/misc"
cp /usr/bin/lspci "$l2/usr/bin/lspci"
copy_libs "$l2" /usr/bin/lspci
cp /usr/share/misc/pci.ids "$l2/usr/share/misc/pci.ids"
# pci-pf-stub for rig.l2=sriov (loaded by that mode); the virtio PCI transport and virtio-net
# for rig.l2=net (loaded in the order file's order).
mkdir -p "$l2/lib/modules"
mod_dest=$l2/lib/modules
add_module pci-pf-stub
order=()
add_module virtio_pci
add_module virtio_net
printf '%s\n' "${order[@]}" >"$l2/lib/modules/order"
l2_modules="${order[*]}"
# nvme for rig.l2=nvme (an assigned NVMe VF; vfio-nvme), loaded only by that mode.
order=()
add_module nvme
printf '%s\n' "${order[@]}" >"$l2/lib/modules/order.nvme"
l2_modules="$l2_modules ${order[*]}"
# igbvf for rig.l2=net rig.l2nic=igbvf (an assigned igb VF; vfio-igb), loaded only by that mode.
order=()
add_module igbvf
printf '%s\n' "${order[@]}" >"$l2/lib/modules/order.igbvf"
l2_modules="$l2_modules ${order[*]}"
pack "$l2" "$work/out/l2-initrd.gz" "gzip -9"

# --- L1 -----------------------------------------------------------------------------------------
l1=$work/l1
mkdir -p "$l1"/usr/{bin,lib,lib64} "$l1"/{dev,proc,sys,tmp,run,etc,rig/modules,rig/scenarios,l2} \
         "$l1/usr/share/qemu"
ln -s usr/bin "$l1/bin"; ln -s usr/bin "$l1/sbin"; ln -s usr/lib "$l1/lib"; ln -s usr/lib64 "$l1/lib64"
mknod -m 600 "$l1/dev/console" c 5 1 2>/dev/null || true  # root only; init reopens it
: >"$l1/etc/passwd"

# kvm-amd; tun and vhost-net for the VMMs' tap back-ends (virtio-net scenarios); VFIO, the NVMe
# and Intel NIC drivers and macvtap for the scenarios with L0's "iommu" device set (l0-sets.sh).
mod_dest=$l1/rig/modules
order=()
for m in kvm-amd tun vhost_net vfio vfio_iommu_type1 vfio_pci nvme igb igbvf e1000e tap macvlan macvtap; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$l1/rig/modules/order"
# 802.1Q VLANs, in the image but not loaded at init: only virtio-net-vf loads them (order file
# "order.vlan"), so every other scenario's L1 stays as it was.
order=()
add_module 8021q
printf '%s\n' "${order[@]}" >"$l1/rig/modules/order.vlan"

cp "$qemu" "$l1/usr/bin/qemu-system-x86_64"
copy_libs "$l1" "$qemu"
# iproute2's ip as iproute2-ip, beside busybox's: only it sets a VF's MAC through its PF
# (`ip link set PF vf N mac ...`; vfio-igb), independently of Switchyard's own rtnetlink code.
iproute2_ip=""
for f in /usr/bin/ip /bin/ip /sbin/ip /usr/sbin/ip; do [ -x "$f" ] && { iproute2_ip=$f; break; }; done
[ -n "$iproute2_ip" ] || { echo "build-initramfs.sh: no iproute2 ip (apt install iproute2)" >&2; exit 1; }
cp "$iproute2_ip" "$l1/usr/bin/iproute2-ip"
copy_libs "$l1" "$iproute2_ip"
for f in bios-256k.bin kvmvapic.bin linuxboot_dma.bin pvh.bin qboot.rom; do
  src=""
  for d in /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu; do
    [ -e "$d/$f" ] && { src=$d/$f; break; }
  done
  [ -n "$src" ] || { echo "build-initramfs.sh: QEMU firmware $f not found" >&2; exit 1; }
  cp -L "$src" "$l1/usr/share/qemu/$f"
done
install_busybox "$l1" usr/bin

cp "$kernel" "$l1/l2/vmlinuz"
cp "$work/out/vmlinux" "$l1/l2/vmlinux"
cp "$work/out/l2-initrd.gz" "$l1/l2/initrd.gz"
cp "$HERE/l1/init" "$l1/init"; chmod 755 "$l1/init"
cp "$HERE/l1/lib.sh" "$l1/rig/lib.sh"
cp "$HERE"/l1/scenarios/*.sh "$l1/rig/scenarios/"; chmod 755 "$l1"/rig/scenarios/*.sh

if [ -n "$switchyard" ]; then
  cp "$switchyard" "$l1/switchyard"; chmod 755 "$l1/switchyard"
  copy_libs "$l1" "$switchyard"
  for f in /usr/share/misc/pci.ids /usr/share/hwdata/pci.ids; do
    if [ -e "$f" ]; then mkdir -p "$l1$(dirname "$f")"; cp -L "$f" "$l1$f"; fi
  done
fi

case "$COMPRESS" in
  none) pack "$l1" "$work/out/l1-initrd.img" cat ;;
  gzip) pack "$l1" "$work/out/l1-initrd.img" "gzip -1" ;;
  *) echo "build-initramfs.sh: RIG_L1_COMPRESS must be none or gzip" >&2; exit 2 ;;
esac
cp "$kernel" "$work/out/vmlinuz"
{
  echo "kernel=$kver"
  echo "qemu=$("$qemu" --version | head -n1)"
  echo "busybox=$("$busybox" | head -n1)"
  echo "modules=${order[*]}"
  echo "l2_modules=$l2_modules"
  echo "switchyard=${switchyard:-none}"
  (cd "$work/out" && du -b -- *) | awk '{print "size " $2 " " $1}'
} >"$work/out/manifest"
touch "$work/out/done"

mkdir -p "$CACHE/build"
rm -rf "$out"
mv "$work/out" "$out"
# Keep the four newest builds.
ls -1dt "$CACHE"/build/*/ 2>/dev/null | tail -n +5 | xargs -r rm -rf
echo "$out"
