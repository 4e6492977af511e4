#!/bin/sh
# vfio-refusals: -device vfio-pci refused before any guest runs, each with its fix, under L0's
# "iommu intremap=off" set (VT-d without interrupt remapping; l0-sets.sh):
# - host=0000:99:00.0, a device the host does not have;
# - host=the NVMe PF while Linux's nvme driver holds it (no member of its group is on vfio-pci,
#   so /dev/vfio/N does not exist: the error names the PF and its driver);
# - host=an NVMe VF bound to vfio-pci, on this host without interrupt remapping: the kernel's
#   type1 IOMMU driver refuses to attach the group (EPERM at VFIO_SET_IOMMU, its dmesg line
#   "No interrupt remapping support").
# Each attempt must exit non-zero within 20 s with no L2 console output (no guest ran), and say
# what to do. QEMU gets the same command lines first: its exit status and words are printed as
# the reference, and it must refuse each too (the oracle that the host really refuses). After
# the refusals the VF is still bound to vfio-pci and its group can be opened again (the same
# refusal a second time, not "busy").
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh

nvme_pf=$(pci_by_id 1b36:0010) || { echo "CHECK FAILED: no NVMe 1b36:0010 in L1 (is vfio-refusals.l0 used?)"; exit 1; }
check "no interrupt remapping in L1 (no IR- chip in /proc/interrupts)" sh -c "! grep -q 'IR-' /proc/interrupts"
check "the NVMe PF $nvme_pf is on nvme" [ "$(driver_of $nvme_pf)" = nvme ]
/switchyard host sriov $nvme_pf --vfs 1 --assign-resources || { echo "CHECK FAILED: host sriov on $nvme_pf"; exit 1; }
vf=$(basename "$(readlink /sys/bus/pci/devices/$nvme_pf/virtfn0)")
/switchyard host bind $vf || { echo "CHECK FAILED: host bind $vf"; exit 1; }
check "VF $vf bound to vfio-pci" [ "$(driver_of $vf)" = vfio-pci ]
echo "NVMe PF $nvme_pf (group $(group_of $nvme_pf)), VF $vf (group $(group_of $vf))"

PORT="-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1"
L2_APPEND_LINE="$(l2_append report)"
# attempt LABEL VMM HOST: runs VMM with -device vfio-pci,host=HOST; leaves its status in
# /tmp/refusal-LABEL.rc, its stderr in .err, its stdout (L2's console) in .out.
attempt() {
  _l=$1 _vmm=$2 _host=$3
  if [ "$_vmm" = qemu ]; then
    set -- qemu-system-x86_64 -accel kvm -cpu host -M q35 -m 512 -nodefaults -display none -no-reboot -serial stdio
  else
    set -- /switchyard -machine q35 -accel kvm -m 512
  fi
  _t0=$(now)
  timeout -s KILL 60 "$@" -kernel $L2_QEMU_KERNEL -initrd $L2_INITRD -append "$L2_APPEND_LINE" \
    $PORT -device vfio-pci,host=$_host,bus=rp1 </dev/null >/tmp/refusal-$_l.out 2>/tmp/refusal-$_l.err
  echo $? >/tmp/refusal-$_l.rc
  _t1=$(now)
  echo "$ $_vmm ... -device vfio-pci,host=$_host -> status $(cat /tmp/refusal-$_l.rc) after $(elapsed $_t0 $_t1) s"
  sed 's/^/  stderr: /' /tmp/refusal-$_l.err | head -n 6
  sed 's/^/  stdout: /' /tmp/refusal-$_l.out | head -n 4
  echo "$(elapsed $_t0 $_t1)" >/tmp/refusal-$_l.seconds
}
# refusal LABEL HOST TEXT...: QEMU, then Switchyard; both refuse, Switchyard says every TEXT.
refusal() {
  _name=$1 _host=$2; shift 2
  attempt qemu-$_name qemu $_host
  check "$_name: QEMU refuses too (exit status not 0)" [ "$(cat /tmp/refusal-qemu-$_name.rc)" != 0 ]
  attempt sy-$_name switchyard $_host
  check "$_name: Switchyard exits non-zero" [ "$(cat /tmp/refusal-sy-$_name.rc)" != 0 -a "$(cat /tmp/refusal-sy-$_name.rc)" != 137 ]
  check "$_name: Switchyard ran no guest (no L2 console output)" sh -c "! grep -q 'RIG-L2' /tmp/refusal-sy-$_name.out"
  check "$_name: Switchyard refused within 20 s" [ "$(centi "$(cat /tmp/refusal-sy-$_name.seconds)")" -lt 2000 ]
  for _text in "$@"; do
    check "$_name: Switchyard's error says '$_text'" grep -qF -- "$_text" /tmp/refusal-sy-$_name.err
  done
}

refusal bad-bdf 0000:99:00.0 "0000:99:00.0" "no PCI device 0000:99:00.0" "lspci -D"
# The PF is alone in its group: with no member on vfio-pci there is no /dev/vfio/N at all.
refusal pf-on-host-driver $nvme_pf "/dev/vfio/$(group_of $nvme_pf) does not exist" "$nvme_pf (nvme)" "switchyard host bind"
dmesg -c >/dev/null 2>&1
refusal no-interrupt-remapping $vf "VFIO_SET_IOMMU" "interrupt remapping" "allow_unsafe_interrupts"
dmesg | grep -i -E 'vfio|remapping' | tail -n 5
check "the kernel's type1 driver logged the refusal (no interrupt remapping)" sh -c "dmesg | grep -q 'No interrupt remapping support'"
check "the VF is still on vfio-pci after the refusals" [ "$(driver_of $vf)" = vfio-pci ]
check "the PF is still on nvme after the refusals" [ "$(driver_of $nvme_pf)" = nvme ]
# The group was closed: a second attempt meets the same refusal, not a busy group.
attempt sy-again switchyard $vf
check "a second attempt on the VF gets the same refusal (the group was let go)" \
  sh -c "grep -qF allow_unsafe_interrupts /tmp/refusal-sy-again.err && ! grep -q busy /tmp/refusal-sy-again.err"
[ $fails = 0 ]
