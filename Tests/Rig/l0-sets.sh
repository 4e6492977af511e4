# L0 device sets: what a scenario adds to L0's QEMU command line and to L1's kernel command line.
# A scenario asks for them in Tests/Rig/l1/scenarios/NAME.l0, a bash snippet run.sh sources
# before it starts L0 (with CACHE set), e.g.
#   l0_device_set iommu                  # the set below, interrupt remapping on
#   l0_device_set iommu intremap=off     # the same without interrupt remapping
#   l0_args+=(-device ...)               # raw QEMU arguments
#   l1_append+=" some.option=1"          # L1 kernel command line
#   l1_timeout=600                       # seconds for this scenario's L1 (run.sh's --timeout otherwise)
#   l1_smp=2                             # L1's vCPUs for this scenario (run.sh's --smp otherwise)
#   l1_memory=6144                       # L1's RAM in MiB for this scenario (2048 otherwise)
#   l1_kernel_dir=$CACHE/kernel/iommufd  # L1's and L2's kernel: build-kernel.sh's (Debian's 6.1 otherwise)
# (facts behind the set: ../../shared/RIG-RECIPES.md in the checkout's parent, or the README here).
l0_args=()
l1_append=""
l1_timeout=""
l1_smp=""
l1_memory=""
l1_kernel_dir=""

# l0_device_set NAME [intremap=on|off]
l0_device_set() {
  case "$1" in
    iommu) l0_iommu_set "${2:-intremap=on}" ;;
    *) echo "l0-sets.sh: no L0 device set '$1' (have: iommu)" >&2; return 2 ;;
  esac
}

# The "iommu" set, every device behind its own pcie-root-port:
#   intel-iommu (VT-d, a system device; interrupt remapping per the argument; caching-mode so that L1's
#           QEMU can pass devices on to L2), first, so that it covers the devices after it;
#   rp 00:03.0 -> 01:00.0 NVMe 1b36:0010 in subsystem rig-subsys, SR-IOV with 2 VFs at most and
#           flexible queue/interrupt resources, namespace 1 on a fresh 64 MiB sparse raw image;
#   rp 00:04.0 -> 02:00.0 igb 8086:10c9 (82576, SR-IOV, 8 VFs), MAC 52:54:00:aa:00:01;
#   rp 00:05.0 -> 03:00.0 e1000e 8086:10d3, MAC 52:54:00:bb:00:02, on the same L0 hub as the
#           igb: a peer on the wire for the igb's VFs.
# L1 boots with intel_iommu=on.
l0_iommu_set() {
  local intremap=$1 disk=$CACHE/disks/nvme-ns.img
  case "$intremap" in intremap=on|intremap=off) ;; *) echo "l0-sets.sh: iommu takes intremap=on or intremap=off, not '$intremap'" >&2; return 2 ;; esac
  mkdir -p "$CACHE/disks"
  rm -f "$disk"
  truncate -s 64M "$disk"
  l0_args+=(
    -device "intel-iommu,$intremap,caching-mode=on"
    -device pcie-root-port,id=rig_rp_nvme,chassis=11,slot=1,addr=03.0
    -device nvme-subsys,id=rig_subsys
    -device nvme,id=rig_nvme,bus=rig_rp_nvme,serial=deadbeef,subsys=rig_subsys,sriov_max_vfs=2,sriov_vq_flexible=4,sriov_vi_flexible=2
    -drive "file=$disk,if=none,id=rig_nvme_disk,format=raw"
    -device nvme-ns,drive=rig_nvme_disk,nsid=1
    -netdev hubport,id=rig_igb_port,hubid=0
    -netdev hubport,id=rig_peer_port,hubid=0
    -device pcie-root-port,id=rig_rp_igb,chassis=12,slot=2,addr=04.0
    -device igb,netdev=rig_igb_port,bus=rig_rp_igb,mac=52:54:00:aa:00:01
    -device pcie-root-port,id=rig_rp_peer,chassis=13,slot=3,addr=05.0
    -device e1000e,netdev=rig_peer_port,bus=rig_rp_peer,mac=52:54:00:bb:00:02
  )
  # no_timer_check: L1's timer check through the remapped IO-APIC fails under a loaded TCG
  # ("timer doesn't work through Interrupt-remapped IO-APIC", a panic), as L2's would.
  l1_append+=" intel_iommu=on no_timer_check"
}
