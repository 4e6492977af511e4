#!/bin/sh
# vfio-iommufd: device assignment through iommufd (make rig-iommufd; vfio-iommufd.l0 boots L1
# and L2 on Debian's 6.12 built with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV). Switchyard
# must choose iommufd by itself: an IOAS of /dev/iommu holds the DMA maps of guest RAM and each
# assigned function is its cdev (/dev/vfio/devices/vfioN) bound to that iommufd; QEMU 10, given
# no iommufd object, keeps the type1 container, and stays the oracle. Then the same checks as
# on Debian's 6.1:
# - vfio-nvme: the NVMe VF under Switchyard (twice, the second handed back on the host's
#   unbind), hot-plugged and unplugged, under QEMU; DMA of 4 MiB each way with equal md5, MSI-X
#   vectors counting, no MMIO exits; each Switchyard run also checks that the VMM's open files
#   are /dev/iommu and a device cdev, not /dev/vfio/vfio;
# - vfio-nvme again with -object iommufd,id=iommufd0 and iommufd=iommufd0 on both VMMs'
#   cold-plugged VF (QEMU's spelling): QEMU then holds the VF through iommufd too;
# - vfio-busreset: the lone e1000's reset (VFIO_DEVICE_RESET) and the pair's bus reset, which
#   under iommufd passes no group fds (the kernel finds function 1 owned: same group).
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh
fails=0
echo "L1 kernel $(uname -r)"
check "L1's kernel has iommufd (/dev/iommu)" [ -c /dev/iommu ]
check "L1's kernel has VFIO device cdevs (a vfio-dev major in /proc/devices)" grep -q ' vfio-dev$' /proc/devices
[ "$(vfio_kernel_backend)" = iommufd ] || { echo "CHECK FAILED: this L1 has no iommufd; is vfio-iommufd.l0's kernel booted?"; exit 1; }
echo "=== vfio-nvme under iommufd"
/rig/scenarios/vfio-nvme.sh || fails=$((fails + 1))
echo "=== vfio-nvme again, both VMMs told iommufd=iommufd0 with -object iommufd,id=iommufd0 (QEMU's spelling)"
VFIO_IOMMUFD_OBJECT=1 /rig/scenarios/vfio-nvme.sh || fails=$((fails + 1))
echo "=== vfio-busreset under iommufd"
/rig/scenarios/vfio-busreset.sh || fails=$((fails + 1))
[ $fails = 0 ]
