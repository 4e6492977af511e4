#!/bin/sh
# vfio-nvme: a real NVMe VF assigned to L2 through L1's VFIO, under QEMU and then Switchyard
# with the same options, in one L1 boot. L1 has L0's "iommu" set (VT-d with interrupt
# remapping, QEMU's NVMe with SR-IOV); `switchyard host sriov --assign-resources` makes VF 1
# with its flexible queues and interrupts online, `switchyard host bind` gives it to vfio-pci.
# Each VMM boots L2 with -device vfio-pci,host=VF on a pcie-root-port; L2 (rig.l2=nvme) loads
# nvme, waits for /dev/nvme0n1, writes 4 MiB with O_DIRECT and reads it back. Checked outside
# the VMM under test: L2's own sysfs (nvme bound to a 1b36:0010 class 010802 function), the
# checksums of the pattern written and read, L2's /proc/interrupts (nvme vectors on PCI-MSI(-X)
# that counted), and L1's sysfs after each run (the VF still on vfio-pci). QEMU passing the same
# VF is the oracle that the device and the L1 set-up work; Switchyard runs twice (the VF is
# reusable after a VMM closed it), and in the second L1 unbinds the VF while L2 runs: the VMM
# must hand it back (VFIO's request notice -> unplug) and the unbind complete.
# Figures per VMM: LABEL_nvme_live (s from VMM start to L2's namespace), LABEL_write_MiBps,
# LABEL_read_MiBps; and their ratios switchyard/qemu.
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh

nvme_pf=$(pci_by_id 1b36:0010) || { echo "CHECK FAILED: no NVMe 1b36:0010 in L1 (is vfio-nvme.l0 used?)"; exit 1; }
/switchyard host sriov $nvme_pf --vfs 1 --assign-resources || { echo "CHECK FAILED: host sriov on $nvme_pf"; exit 1; }
vf=$(basename "$(readlink /sys/bus/pci/devices/$nvme_pf/virtfn0)")
/switchyard host bind $vf || { echo "CHECK FAILED: host bind $vf"; exit 1; }
check "VF $vf bound to vfio-pci" [ "$(driver_of $vf)" = vfio-pci ]
group=$(group_of $vf)
check "/dev/vfio/$group present" [ -c /dev/vfio/$group ]
echo "NVMe PF $nvme_pf, VF $vf in IOMMU group $group"

# Every figure also goes to /tmp/vfio-times for the ratios at the end.
report_time() { echo "RIG-TIME $1=$2"; echo "$1=$2" >>/tmp/vfio-times; }
: >/tmp/vfio-times
PORT="-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1"
# run_l2 LABEL CMD...: boots L2 in nvme mode, prints its console, checks what L2 saw.
run_l2() {
  _label=$1; shift
  _log=/tmp/l2-nvme-$_label.log
  L2_APPEND_LINE="$(l2_append nvme)${NVME_HOLD:+ rig.l2nvmehold=1}"
  start_vmm "$_log" "$@"
  if _t=$(wait_for "$_log" ' RIG-L2 nvme (live|not-live)' 300); then
    report_time "${_label}_nvme_live" "$(elapsed "$VMM_START" "$_t")"
    # Switchyard's seccomp sandbox (the -accel kvm default) is on while the VF works:
    # the kernel's view of the VMM process, mode 2 = filter.
    case $_label in switchyard*)
      check "$_label: the VMM runs under its seccomp filter (/proc/PID/status Seccomp: 2)" \
        grep -q '^Seccomp:[[:space:]]*2$' /proc/$(cat /tmp/l2.pid)/status ;;
    esac
  fi
  wait_for "$_log" ' RIG-L2 nvme done' 200 >/dev/null || echo "$_label: L2 did not finish its nvme checks"
  [ -n "${NVME_HOLD:-}" ] && take_back
  wait_vmm_exit "$_log" 30
  echo "--- L2 console ($_label), times relative to VMM start:"
  show_l2_log "$_log"
  check_vmm_exit "$_log" "$_label" || fails=$((fails + 1))
  check "$_label: L2's nvme driver bound the VF (1b36:0010) and /dev/nvme0n1 appeared" \
    grep -q ' RIG-L2 nvme live dev=[0-9a-f:.]* ids=1b36:0010 drv=nvme ' "$_log"
  _w=$(sed -n 's/.* RIG-L2 nvme write bytes=4194304 md5=\([0-9a-f]*\).*/\1/p' "$_log")
  _r=$(sed -n 's/.* RIG-L2 nvme read bytes=4194304 md5=\([0-9a-f]*\).*/\1/p' "$_log")
  check "$_label: 4 MiB written and read back with O_DIRECT, equal md5 ($_w)" [ -n "$_w" -a "$_w" = "$_r" ]
  # /proc/interrupts: "NN: COUNT [COUNT...] PCI-MSI(-X)... nvme0qN"; some queue vector counted (with the
  # one interrupt the VF is given, the admin and I/O queues share nvme0q0).
  check "$_label: nvme queue vectors on PCI-MSI(-X) counted interrupts" \
    awk '/ RIG-L2 nvme irq .*PCI-MSI.* nvme0q[0-9]/ { for (i = 5; i <= NF; i++) if ($i ~ /^[0-9]+$/ && $i > 0) ok = 1 } END { exit !ok }' "$_log"
  if [ -n "${NVME_HOLD:-}" ]; then
    check "$_label: L2 saw its NVMe controller leave after the host's unbind" grep -q ' RIG-L2 nvme gone seconds=' "$_log"
    check "$_label: the VMM unplugged the VF on VFIO's request notice (its log says so)" \
      grep -q "the host asks for .* back; unplugging it from the guest" "$_log.err"
    check "$_label: L1's unbind of the VF completed while the VMM still ran" [ "$_unbound_first" = 1 ]
    /switchyard host bind $vf || echo "CHECK FAILED: host bind $vf again"
    check "$_label: the VF is back on vfio-pci after host bind" [ "$(driver_of $vf)" = vfio-pci ]
  else
    check "$_label: the VF is still on vfio-pci after the VMM exited" [ "$(driver_of $vf)" = vfio-pci ]
  fi
  for _step in write read; do
    _s=$(sed -n "s/.* RIG-L2 nvme $_step bytes=4194304 .* seconds=\([0-9.]*\).*/\1/p" "$_log")
    [ -n "$_s" ] && report_time "${_label}_${_step}_MiBps" "$(awk "BEGIN { s = $_s; if (s < 0.01) s = 0.01; printf \"%.1f\", 4 / s }")"
  done
}

# take_back (NVME_HOLD=1, L2 holds on after its checks): L1 unbinds the VF from vfio-pci while
# the VMM has it. vfio-pci then signals the VMM's request notice (again every 10 s) and the
# unbind waits until the device is released: Switchyard unplugs it through the root port's
# attention button, pciehp in L2 lets go (its 5 s wait), and the VMM closes the device. Figures:
# LABEL_unbind (s, L1's unbind), LABEL_guest_gone (s, from L2's done line to the controller
# gone). _unbound_first=1 when the unbind returned before the VMM exited (closing the device at
# exit would also end it).
take_back() {
  _unbound_first=0
  : >/tmp/unbind.done
  _u0=$(now)
  ( echo "$vf" >/sys/bus/pci/drivers/vfio-pci/unbind; echo "$(now)" >/tmp/unbind.done ) &
  _ub=$!
  wait_for "$_log" ' RIG-L2 nvme (gone|still-there)' 120 >/dev/null || echo "$_label: L2 said nothing about its controller after the unbind"
  _i=0
  while [ ! -s /tmp/unbind.done ] && [ $_i -lt 300 ]; do sleep 0.1; _i=$((_i + 1)); done
  if [ -s /tmp/unbind.done ]; then
    grep -q ' VMM-EXIT' "$_log" || _unbound_first=1
    report_time "${_label}_unbind" "$(elapsed "$_u0" "$(cat /tmp/unbind.done)")"
  else
    echo "$_label: L1's unbind of $vf still waits 30 s after L2's report"
  fi
  _g=$(sed -n 's/.* RIG-L2 nvme gone seconds=//p' "$_log"); [ -n "$_g" ] && report_time "${_label}_guest_gone" "$_g"
  wait $_ub 2>/dev/null
}

SY="/switchyard -machine q35 -accel kvm -m 256 -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $PORT -device vfio-pci,host=$vf,bus=rp1"
# run.sh --append rig.vfio=switchyard-only: one Switchyard run alone (for debugging the VMM;
# the scenario then fails for want of QEMU's figures).
if grep -q 'rig.vfio=switchyard-only' /proc/cmdline; then
  run_l2 switchyard $SY
  echo "CHECK FAILED: rig.vfio=switchyard-only ran no QEMU L2"; exit 1
fi
# Switchyard first, twice, then QEMU: with QEMU first, L1 froze (run.sh's watchdog: "running
# at one RIP with an interrupt pending") as Switchyard started after QEMU had released the VF,
# in both boots that got that far on 2026-12-05; see the README.
run_l2 switchyard $SY
# The second run ends with the host taking the VF back while L2 runs (take_back).
NVME_HOLD=1
run_l2 switchyard2 $SY
NVME_HOLD=
run_l2 qemu qemu-system-x86_64 -accel kvm -cpu host -M q35 -m 256 -nodefaults -display none -no-reboot -serial stdio \
  -kernel $L2_QEMU_KERNEL -initrd $L2_INITRD $PORT -device vfio-pci,host=$vf,bus=rp1

# Ratios Switchyard / QEMU from this one L1 boot (figures vary with the host's load).
ratio() { # NAME A B
  _a=$(sed -n "s/^$2=//p" /tmp/vfio-times); _b=$(sed -n "s/^$3=//p" /tmp/vfio-times)
  [ -n "$_a" ] && [ -n "$_b" ] && report_time "$1" "$(awk "BEGIN { printf \"%.2f\", $_a / $_b }")"
}
ratio ratio_nvme_live_switchyard_over_qemu switchyard_nvme_live qemu_nvme_live
ratio ratio_write_MiBps_switchyard_over_qemu switchyard_write_MiBps qemu_write_MiBps
ratio ratio_read_MiBps_switchyard_over_qemu switchyard_read_MiBps qemu_read_MiBps
[ $fails = 0 ]
