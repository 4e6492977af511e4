#!/bin/sh
# iommu-check: L0's "iommu" device set (l0-sets.sh) as L1's kernel sees it, read from dmesg and
# sysfs only: the VT-d unit is on (DMAR: IOMMU enabled) with interrupt remapping (DMAR-IR, and
# the IR bit, bit 3, of the unit's extended capability register), the NVMe controller (1b36:0010),
# the 82576 igb (8086:10c9) and the e1000e (8086:10d3) are bound to nvme, igb and e1000e, each in
# an IOMMU group, the NVMe PF offers 2 VFs and the igb 7 (the 82576's TotalVFs is 8;
# Linux's igb lowers sriov_totalvfs to the 7 it supports), and VFIO's container device
# /dev/vfio/vfio exists. Other scenarios build on it.
. /rig/lib.sh
fails=0
check() { # DESCRIPTION COMMAND...
  _what=$1; shift
  if "$@"; then echo "ok: $_what"; else echo "CHECK FAILED: $_what"; fails=$((fails + 1)); fi
}
# pci_by_id VENDOR:DEVICE: the first sysfs PCI address with that ID.
pci_by_id() {
  for _d in /sys/bus/pci/devices/*; do
    [ "$(cat $_d/vendor):$(cat $_d/device)" = "0x${1%:*}:0x${1#*:}" ] && { basename $_d; return 0; }
  done
  return 1
}
driver_of() { [ -e /sys/bus/pci/devices/$1/driver ] && basename "$(readlink /sys/bus/pci/devices/$1/driver)"; }

dmesg | grep -E 'DMAR|IOMMU|remapping' | head -n 12
check "dmesg says DMAR: IOMMU enabled" sh -c "dmesg | grep -q 'DMAR: IOMMU enabled'"
ecap=$(cat /sys/class/iommu/dmar0/intel-iommu/ecap 2>/dev/null)
echo "dmar0 ecap=${ecap:-none}"
check "dmar0's ecap has IR (bit 3)" sh -c "[ -n '$ecap' ] && [ \$(( 0x$ecap >> 3 & 1 )) = 1 ]"
check "dmesg says DMAR-IR: Enabled IRQ remapping" sh -c "dmesg | grep -q 'DMAR-IR: Enabled IRQ remapping'"
for want in 1b36:0010=nvme=2 8086:10c9=igb=7 8086:10d3=e1000e=; do
  id=${want%%=*} rest=${want#*=}; drv=${rest%%=*} vfs=${rest#*=}
  bdf=$(pci_by_id $id) || { echo "CHECK FAILED: no PCI device $id in L1"; fails=$((fails + 1)); continue; }
  group=$(basename "$(readlink /sys/bus/pci/devices/$bdf/iommu_group)" 2>/dev/null)
  echo "$id at $bdf: driver=$(driver_of $bdf) iommu_group=${group:-none} sriov_totalvfs=$(cat /sys/bus/pci/devices/$bdf/sriov_totalvfs 2>/dev/null) reset_method=$(cat /sys/bus/pci/devices/$bdf/reset_method 2>/dev/null)"
  check "$id bound to $drv" [ "$(driver_of $bdf)" = "$drv" ]
  check "$id in an IOMMU group" [ -n "$group" ]
  [ -z "$vfs" ] || check "$id offers $vfs VFs" [ "$(cat /sys/bus/pci/devices/$bdf/sriov_totalvfs 2>/dev/null)" = "$vfs" ]
done
check "/dev/vfio/vfio exists" [ -c /dev/vfio/vfio ]
echo "IOMMU groups: $(ls /sys/kernel/iommu_groups | wc -l)"
[ $fails = 0 ]
