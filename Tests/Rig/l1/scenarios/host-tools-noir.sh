#!/bin/sh
# host-tools-noir: L0's "iommu" set with intremap=off: L1 has VT-d (groups) but no interrupt
# remapping (dmar0's ecap without the IR bit, no "IR-" interrupt chip, as dmesg and
# /proc/interrupts show independently), and `switchyard host list` says so: the IOMMU line,
# and for the NVMe PF "the kernel does not remap interrupts ... and the IOMMU cannot" with the
# fix (allow_unsafe_interrupts), next to "bound to nvme". Figure: host_list.
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh

ecap=$(cat /sys/class/iommu/dmar0/intel-iommu/ecap)
echo "dmar0 ecap=$ecap; IR- chips in /proc/interrupts: $(grep -c 'IR-' /proc/interrupts)"
check "dmar0's ecap has no IR bit" [ $(( 0x$ecap >> 3 & 1 )) = 0 ]
check "no IR- interrupt chip" sh -c "! grep -q 'IR-' /proc/interrupts"
check "IOMMU groups exist" [ -n "$(ls /sys/kernel/iommu_groups)" ]
nvme_pf=$(pci_by_id 1b36:0010) || { echo "CHECK FAILED: no NVMe 1b36:0010 in L1"; exit 1; }

timed host_list /switchyard host list >/tmp/list.txt
cat /tmp/list.txt
check "list: IOMMU line says interrupt remapping off" grep -q '^IOMMU: dmar0 (intel-vt-d, no interrupt remapping), on; interrupt remapping off' /tmp/list.txt
check "list: NVMe PF refused for interrupt remapping" list_has /tmp/list.txt $nvme_pf "assignable: no (the kernel does not remap interrupts (no IR- interrupt chip in /proc/interrupts) and the IOMMU cannot (no IR bit in its extended capabilities); bound to nvme)"
check "list: the fix names allow_unsafe_interrupts" list_has /tmp/list.txt $nvme_pf "fix: use a host whose IOMMU remaps interrupts, or accept the risk: modprobe vfio_iommu_type1 allow_unsafe_interrupts=1"
[ $fails = 0 ]
