#!/bin/sh
# host-tools: `switchyard host` on L0's "iommu" device set (VT-d with interrupt remapping, the
# SR-IOV NVMe and igb; l0-sets.sh), every effect checked in sysfs and dmesg, not in Switchyard's
# own output:
# - host list names both PFs with their IOMMU groups (sysfs iommu_group) and "assignable: no
#   (bound to nvme)" / "(bound to igb)"; a host bridge, a bad BDF and an igb whose interface is
#   up are refused by host bind;
# - host sriov gives the igb 2 VFs (sysfs sriov_numvfs, virtfn links, igbvf bound) and the NVMe
#   1 VF with --assign-resources (its secondary controller online: Linux's nvme driver, probed on
#   the VF, brings up a controller and a namespace);
# - host bind of each VF gives it to vfio-pci (sysfs driver), /dev/vfio/GROUP appears and host
#   list says "assignable: yes"; host unbind brings back igbvf and nvme (sysfs driver);
# - host sriov --vfs 0 removes the igb's VFs.
# Figures: host_list, host_sriov_igb, host_sriov_nvme, host_bind, host_unbind (seconds).
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh

nvme_pf=$(pci_by_id 1b36:0010) || { echo "CHECK FAILED: no NVMe 1b36:0010 in L1 (is host-tools.l0 used?)"; exit 1; }
igb_pf=$(pci_by_id 8086:10c9) || { echo "CHECK FAILED: no igb 8086:10c9 in L1"; exit 1; }
echo "NVMe PF $nvme_pf group $(group_of $nvme_pf), igb PF $igb_pf group $(group_of $igb_pf)"

timed host_list /switchyard host list >/tmp/list1.txt
cat /tmp/list1.txt
check "list: NVMe PF with its group" list_has /tmp/list1.txt $nvme_pf "IOMMU group $(group_of $nvme_pf): $nvme_pf"
check "list: igb PF with its group" list_has /tmp/list1.txt $igb_pf "IOMMU group $(group_of $igb_pf): $igb_pf"
check "list: NVMe PF not assignable, bound to nvme" list_has /tmp/list1.txt $nvme_pf "assignable: no (bound to nvme)"
check "list: igb PF not assignable, bound to igb" list_has /tmp/list1.txt $igb_pf "assignable: no (bound to igb)"
check "list: interrupt remapping on" grep -q '^IOMMU: dmar0 (intel-vt-d, remaps interrupts), on; interrupt remapping on' /tmp/list1.txt
check "list --json parses as one object with every device" json_devices_match

refused "bind of the host bridge" "host bridge" /switchyard host bind 0000:00:00.0
refused "bind of a malformed BDF" "is not a PCI address" /switchyard host bind 0000:zz:00.0
refused "bind of a missing device" "there is no PCI device 0000:7f:00.0" /switchyard host bind 0000:7f:00.0
igb_if=$(ls /sys/bus/pci/devices/$igb_pf/net | head -n 1)
ip link set "$igb_if" up
refused "bind of the igb while $igb_if is up" "its network interface $igb_if is up" /switchyard host bind $igb_pf
ip link set "$igb_if" down
check "the igb PF still on igb after the refusals" [ "$(driver_of $igb_pf)" = igb ]

# SR-IOV on the igb.
timed host_sriov_igb /switchyard host sriov $igb_pf --vfs 2
check "igb sriov_numvfs is 2" [ "$(cat /sys/bus/pci/devices/$igb_pf/sriov_numvfs)" = 2 ]
igb_vf=$(basename "$(readlink /sys/bus/pci/devices/$igb_pf/virtfn0)")
wait_driver $igb_vf igbvf
check "igb VF $igb_vf bound to igbvf" [ "$(driver_of $igb_vf)" = igbvf ]

# SR-IOV on the NVMe with the flexible resources.
timed host_sriov_nvme /switchyard host sriov $nvme_pf --vfs 1 --assign-resources >/tmp/sriov-nvme.txt
cat /tmp/sriov-nvme.txt
check "NVMe sriov_numvfs is 1" [ "$(cat /sys/bus/pci/devices/$nvme_pf/sriov_numvfs)" = 1 ]
check "NVMe VF 1's secondary controller reported online" grep -q 'VF 1: secondary controller [0-9]* online' /tmp/sriov-nvme.txt
nvme_vf=$(basename "$(readlink /sys/bus/pci/devices/$nvme_pf/virtfn0)")
echo "$nvme_vf" >/sys/bus/pci/drivers_probe
wait_driver $nvme_vf nvme
wait_path "/sys/bus/pci/devices/$nvme_vf/nvme/nvme*/nvme*n1" 10
check "Linux's nvme driver brought up the VF $nvme_vf with a namespace" ls /sys/bus/pci/devices/$nvme_vf/nvme/nvme*/nvme*n1
dmesg | grep -E 'nvme' | tail -n 6

timed host_list /switchyard host list >/tmp/list2.txt
check "list: igb PF shows its 2 VFs" list_has /tmp/list2.txt $igb_pf "SR-IOV: 2 of 7 VFs enabled: $igb_vf "
check "list: NVMe PF shows its VF" list_has /tmp/list2.txt $nvme_pf "SR-IOV: 1 of 2 VFs enabled: $nvme_vf"
check "list: igb VF not assignable, bound to igbvf" list_has /tmp/list2.txt $igb_vf "assignable: no (bound to igbvf)"

# bind and unbind each VF.
for pair in $igb_vf=igbvf $nvme_vf=nvme; do
  vf=${pair%=*} drv=${pair#*=} group=$(group_of ${pair%=*})
  timed host_bind /switchyard host bind $vf
  check "$vf bound to vfio-pci" [ "$(driver_of $vf)" = vfio-pci ]
  check "/dev/vfio/$group appeared" [ -c /dev/vfio/$group ]
  /switchyard host list >/tmp/list3.txt
  check "list: $vf assignable" list_has /tmp/list3.txt $vf "assignable: yes"
  check "$drv remembered in /run/switchyard" [ "$(cat /run/switchyard/host-drivers/$vf)" = $drv ]
  timed host_unbind /switchyard host unbind $vf
  wait_driver $vf $drv
  check "$vf back on $drv" [ "$(driver_of $vf)" = $drv ]
  check "$vf's driver_override cleared" [ "$(cat /sys/bus/pci/devices/$vf/driver_override)" = "(null)" ]
done

/switchyard host sriov $igb_pf --vfs 0
check "igb sriov_numvfs back to 0" [ "$(cat /sys/bus/pci/devices/$igb_pf/sriov_numvfs)" = 0 ]
check "no igb virtfn left" [ ! -e /sys/bus/pci/devices/$igb_pf/virtfn0 ]
[ $fails = 0 ]
