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
# The first Switchyard run and QEMU's also count L1's KVM exits while L2 moves its 8 MiB
# (nvme_exits): none may be an MMIO exit under Switchyard.
# Before the VFs exist, Switchyard also assigns the PF itself to an L2 booted with pci=nomsi:
# the controller's INTx pin (switchyard-intx), checked as above with the IO-APIC's line.
# Figures per VMM: LABEL_nvme_live (s from VMM start to L2's namespace), LABEL_write_MiBps,
# LABEL_read_MiBps, LABEL_randread_iops (4 KiB random reads at queue depth 1, l2/randread.c);
# both VMMs also hot-plug the VF after boot (device_add to the namespace: LABEL_plug_to_live_1);
# and the ratios switchyard/qemu.
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh

nvme_pf=$(pci_by_id 1b36:0010) || { echo "CHECK FAILED: no NVMe 1b36:0010 in L1 (is vfio-nvme.l0 used?)"; exit 1; }

# Every figure also goes to /tmp/vfio-times for the ratios at the end.
report_time() { echo "RIG-TIME $1=$2"; echo "$1=$2" >>/tmp/vfio-times; }
: >/tmp/vfio-times
PORT="-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1"
# run_l2 LABEL CMD...: boots L2 in nvme mode, prints its console, checks what L2 saw.
run_l2() {
  _label=$1; shift
  _log=/tmp/l2-nvme-$_label.log
  L2_APPEND_LINE="$(l2_append nvme)${NVME_HOLD:+ rig.l2nvmehold=1}${NVME_EXITS:+ rig.l2nvmeexits=1}${NVME_APPEND:+ $NVME_APPEND}"
  start_vmm "$_log" "$@"
  if _t=$(wait_for "$_log" ' RIG-L2 nvme (live|not-live)' 300); then
    report_time "${_label}_nvme_live" "$(elapsed "$VMM_START" "$_t")"
    # Switchyard's seccomp sandbox (the -accel kvm default) is on while the VF works:
    # the kernel's view of the VMM process, mode 2 = filter.
    # And it holds the VF through the kernel's newest interface (its open files say which).
    case $_label in qemu)
      [ -n "${VFIO_IOMMUFD_OBJECT:-}" ] && check "$_label: QEMU holds the VF through iommufd, as iommufd= asks (its files: $(vfio_backend "$(cat /tmp/l2.pid)"))" \
        [ "$(vfio_backend "$(cat /tmp/l2.pid)")" = iommufd ] ;;
    switchyard*)
      check "$_label: the VMM runs under its seccomp filter (/proc/PID/status Seccomp: 2)" \
        grep -q '^Seccomp:[[:space:]]*2$' /proc/$(cat /tmp/l2.pid)/status
      _b=$(vfio_backend "$(cat /tmp/l2.pid)")
      check "$_label: the VMM holds the VF through $(vfio_kernel_backend), as this kernel offers (its files: $_b)" \
        [ "$_b" = "$(vfio_kernel_backend)" ] ;;
    esac
  fi
  [ -n "${NVME_EXITS:-}" ] && { nvme_exits "$_label" "$_log" || fails=$((fails + 1)); }
  wait_for "$_log" ' RIG-L2 nvme done' 200 >/dev/null || echo "$_label: L2 did not finish its nvme checks"
  [ -n "${NVME_HOLD:-}" ] && take_back
  wait_vmm_exit "$_log" 30
  show_run "$_label" "$_log"
  check_vmm_exit "$_log" "$_label" || fails=$((fails + 1))
  check "$_label: L2's nvme driver bound the assigned controller (1b36:0010) and /dev/nvme0n1 appeared" \
    grep -q ' RIG-L2 nvme live dev=[0-9a-f:.]* ids=1b36:0010 drv=nvme ' "$_log"
  io_checks "$_label" "$_log" "" "${NVME_IRQ:-PCI-MSI}"
  if [ -n "${NVME_HOLD:-}" ]; then
    check "$_label: L2 saw its NVMe controller leave after the host's unbind" grep -q ' RIG-L2 nvme gone seconds=' "$_log"
    check "$_label: the VMM unplugged the VF on VFIO's request notice (its log says so)" \
      grep -q "the host asks for .* back; unplugging it from the guest" "$_log.err"
    check "$_label: L1's unbind of the VF completed while the VMM still ran" [ "$_unbound_first" = 1 ]
    /switchyard host bind $vf || echo "CHECK FAILED: host bind $vf again"
    check "$_label: the VF is back on vfio-pci after host bind" [ "$(driver_of $vf)" = vfio-pci ]
  else
    check "$_label: $ASSIGNED is still on vfio-pci after the VMM exited" [ "$(driver_of $ASSIGNED)" = vfio-pci ]
  fi
  for _step in write read; do
    _s=$(sed -n "s/.* RIG-L2 nvme $_step bytes=4194304 .* seconds=\([0-9.]*\).*/\1/p" "$_log")
    [ -n "$_s" ] && report_time "${_label}_${_step}_MiBps" "$(awk "BEGIN { s = $_s; if (s < 0.01) s = 0.01; printf \"%.1f\", 4 / s }")"
  done
  _iops=$(sed -n 's/.* RIG-L2 nvme randread ios=[1-9][0-9]* seconds=[0-9.]* iops=\([0-9]*\).*/\1/p' "$_log")
  check "$_label: 4 KiB random reads with O_DIRECT completed (${_iops:-none} IOPS)" [ -n "$_iops" ]
  [ -n "$_iops" ] && report_time "${_label}_randread_iops" "$_iops"
}

# nvme_exits LABEL LOG (NVME_EXITS=1: L2 marks an idle phase and one holding only its 4 MiB
# O_DIRECT write and read, each followed by 2 s of sleep): L1's KVM counters snapshotted at
# each marker; the io phase's counts less the idle phase's rate over the io phase's length, per
# MiB moved (8): LABEL_user_exits_per_MiB (exits that reached the VMM: doorbells in a trapped
# BAR, interrupts through it), LABEL_mmio_exits_per_MiB, LABEL_exits_per_MiB (KVM's own too).
nvme_exits() {
  _counts=$(phase_exits "$2" "RIG-L2 nvme" 2>/tmp/phase-err) || { echo "CHECK FAILED: $1: $(cat /tmp/phase-err)"; return 1; }
  echo "$_counts" | awk -v l="$1" '{
    printf "%s_exits_per_MiB %.1f\n%s_mmio_exits_per_MiB %.1f\n%s_user_exits_per_MiB %.1f\n", l, $1 / 8, l, $2 / 8, l, $4 / 8
  }' | while read -r _n _v; do report_time "$_n" "$_v"; done
}

# io_checks LABEL LOG TAG [KIND]: from L2's lines tagged TAG ("" or "cycle=C "): the 4 MiB
# pattern written and read back with O_DIRECT with equal md5, and /proc/interrupts ("NN: COUNT
# [COUNT...] KIND... nvme0qN", KIND PCI-MSI by default, IO-APIC for INTx) showing some queue
# interrupt that counted (with the one interrupt the VF is given, the admin and I/O queues
# share nvme0q0).
io_checks() {
  _w=$(sed -n "s/.* RIG-L2 nvme write ${3}bytes=4194304 md5=\([0-9a-f]*\).*/\1/p" "$2")
  _r=$(sed -n "s/.* RIG-L2 nvme read ${3}bytes=4194304 md5=\([0-9a-f]*\).*/\1/p" "$2")
  check "$1: ${3}4 MiB written and read back with O_DIRECT, equal md5 ($_w)" [ -n "$_w" -a "$_w" = "$_r" ]
  check "$1: ${3}nvme queue interrupts on ${4:-PCI-MSI} counted" \
    awk -v tag="RIG-L2 nvme irq $3" -v kind="${4:-PCI-MSI}" 'index($0, tag) && index($0, kind) && / nvme0q[0-9]/ { for (i = 5; i <= NF; i++) if ($i ~ /^[0-9]+$/ && $i > 0) ok = 1 } END { exit !ok }' "$2"
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

# run_l2_hotplug LABEL CMD...: the VMM (CMD) boots L2 with rp1 empty; QMP on a FIFO pair plugs
# the VF in once L2 waits for it (rig.l2nvmehp=2), L2 writes and reads its pattern, and the VF is
# unplugged: cycle 1 through the attention button (device_del), cycle 2 by surprise (device_del
# x-surprise) when HP_SURPRISE=1 (Switchyard, whose rp1 then has Hot-Plug Surprise on), else
# through the button again (QEMU has no surprise removal); the VF stays on vfio-pci and reusable.
# Figures: LABEL_plug_to_live_C (s, device_add to L2's namespace), LABEL_device_deleted_C (s,
# device_del to DEVICE_DELETED), LABEL_guest_gone_C (s, L2's ready line to the controller gone).
run_l2_hotplug() {
  _label=$1 _f=0; shift
  _log=/tmp/l2-nvme-$_label.log
  _q=/tmp/qmp-$_label
  rm -f $_q.in $_q.out; mkfifo $_q.in $_q.out
  stamp <$_q.out >$_q.log &
  L2_APPEND_LINE="$(l2_append nvme) rig.l2nvmehp=2"
  start_vmm "$_log" "$@" -chardev pipe,id=qmp,path=$_q -mon chardev=qmp,mode=control
  exec 3<>$_q.in
  if ! wait_for $_q.log '"QMP"' 30 >/dev/null; then echo "CHECK FAILED: $_label: no QMP greeting"; _f=1
  else
    _qmp '{"execute":"qmp_capabilities"}'
    wait_for "$_log" ' RIG-L2 nvme hp waiting' 120 >/dev/null || { echo "CHECK FAILED: $_label: L2 never waited for its controller"; _f=1; }
  fi
  _c=1
  while [ $_f = 0 ] && [ $_c -le 2 ]; do
    _t0=$(now)
    _qmp "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"vfio-pci\",\"host\":\"$vf\",\"bus\":\"rp1\",\"id\":\"vf0\"}}"
    if ! _t1=$(wait_for "$_log" " RIG-L2 nvme hp plugged cycle=$_c seconds=[0-9]" 90); then
      echo "CHECK FAILED: $_label: L2 found no NVMe namespace within 90 s of device_add (cycle $_c)"; _f=1; break
    fi
    report_time "${_label}_plug_to_live_$_c" "$(elapsed "$_t0" "$_t1")"
    if ! _t0=$(wait_for "$_log" " RIG-L2 nvme hp ready-unplug cycle=$_c" 120); then
      echo "CHECK FAILED: $_label: L2 did not finish its I/O (cycle $_c)"; _f=1; break
    fi
    _t0=$(now)
    if [ $_c = 2 ] && [ "${HP_SURPRISE:-}" = 1 ]; then _qmp '{"execute":"device_del","arguments":{"id":"vf0","x-surprise":true}}'
    else _qmp '{"execute":"device_del","arguments":{"id":"vf0"}}'; fi
    # The cycle's own DEVICE_DELETED: the log holds the earlier cycle's too.
    _i=0
    while [ "$(grep -c 'DEVICE_DELETED.*"vf0"' $_q.log)" -lt $_c ] && [ $_i -lt 600 ]; do sleep 0.05; _i=$((_i + 1)); done
    _t1=$(grep 'DEVICE_DELETED.*"vf0"' $_q.log | sed -n "${_c}p" | cut -d' ' -f1)
    if [ -z "$_t1" ]; then echo "CHECK FAILED: $_label: no DEVICE_DELETED for vf0 within 30 s (cycle $_c)"; _f=1; break; fi
    report_time "${_label}_device_deleted_$_c" "$(elapsed "$_t0" "$_t1")"
    wait_for "$_log" " RIG-L2 nvme hp unplugged cycle=$_c seconds=" 60 >/dev/null
    _g=$(sed -n "s/.* RIG-L2 nvme hp unplugged cycle=$_c seconds=//p" "$_log")
    case "$_g" in [0-9]*) report_time "${_label}_guest_gone_$_c" "$_g" ;;
      *) echo "CHECK FAILED: $_label: L2 still has the controller after the unplug (cycle $_c: '${_g:-no line}')"; _f=1; break ;; esac
    _c=$((_c + 1))
  done
  wait_for "$_log" ' RIG-L2 nvme done' 60 >/dev/null || echo "$_label: L2 did not finish"
  exec 3>&-
  wait_vmm_exit "$_log" 30
  show_run "$_label" "$_log" $_q.log
  check_vmm_exit "$_log" "$_label" || _f=1
  grep -q ' "error"' $_q.log && { echo "CHECK FAILED: $_label: QMP returned an error"; _f=1; }
  for _c in 1 2; do
    check "$_label: cycle $_c: L2's nvme driver bound the hot-plugged VF (1b36:0010)" \
      grep -q " RIG-L2 nvme hp plugged cycle=$_c seconds=[0-9.]* dev=[0-9a-f:.]* ids=1b36:0010 drv=nvme" "$_log"
    io_checks "$_label" "$_log" "cycle=$_c "
  done
  check "$_label: the VF is still on vfio-pci after its unplugs" [ "$(driver_of $vf)" = vfio-pci ]
  [ $_f = 0 ] || fails=$((fails + 1))
}

# INTx first, on the PF (a VF has no INTx pin): L2 boots with pci=nomsi, so its nvme driver
# takes the controller's pin: VFIO's trigger eventfd is a KVM resampling irqfd on the pin's
# IOAPIC input, and the guest's EOI unmasks it. The PF then goes back to L1's nvme driver,
# which sets up the VFs. (VFIO_IOMMUFD_OBJECT=1, a second pass in one L1: the cold-plugged VF
# under both VMMs only; the VF is there and on vfio-pci from the first.)
SECOND_PASS=${VFIO_IOMMUFD_OBJECT:-}
[ -n "$SECOND_PASS" ] || /switchyard host bind $nvme_pf || echo "CHECK FAILED: host bind $nvme_pf"
if [ -z "$SECOND_PASS" ] && [ "$(driver_of $nvme_pf)" = vfio-pci ]; then
  ASSIGNED=$nvme_pf NVME_APPEND=pci=nomsi NVME_IRQ=IO-APIC
  run_l2 switchyard-intx /switchyard -machine q35 -accel kvm -m 256 -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD \
    $PORT -device vfio-pci,host=$nvme_pf,bus=rp1
  check "switchyard-intx: L2 had no MSI (pci=nomsi): the nvme interrupt was the IO-APIC's" \
    grep -q ' RIG-L2 nvme irq .*IO-APIC.* nvme0q0' /tmp/l2-nvme-switchyard-intx.log
  NVME_APPEND= NVME_IRQ=
  /switchyard host unbind $nvme_pf || echo "CHECK FAILED: host unbind $nvme_pf"
fi
# The PF's controller back under L1's nvme (its character device is how VFs are set up).
_i=0
while ! ls /sys/bus/pci/devices/$nvme_pf/nvme/ 2>/dev/null | grep -q nvme && [ $_i -lt 300 ]; do sleep 0.1; _i=$((_i + 1)); done

[ -n "$SECOND_PASS" ] || /switchyard host sriov $nvme_pf --vfs 1 --assign-resources || { echo "CHECK FAILED: host sriov on $nvme_pf"; exit 1; }
vf=$(basename "$(readlink /sys/bus/pci/devices/$nvme_pf/virtfn0)")
ASSIGNED=$vf
[ -n "$SECOND_PASS" ] || /switchyard host bind $vf || { echo "CHECK FAILED: host bind $vf"; exit 1; }
check "VF $vf bound to vfio-pci" [ "$(driver_of $vf)" = vfio-pci ]
group=$(group_of $vf)
check "/dev/vfio/$group present" [ -c /dev/vfio/$group ]
echo "NVMe PF $nvme_pf, VF $vf in IOMMU group $group"

# VFIO_IOMMUFD_OBJECT=1 (vfio-iommufd's second pass): both VMMs' cold-plugged VF names an
# iommufd object, QEMU's spelling (-object iommufd,id=ID ... iommufd=ID), so QEMU uses iommufd too.
OBJ="" ASSIGN=""
[ -n "${VFIO_IOMMUFD_OBJECT:-}" ] && OBJ="-object iommufd,id=iommufd0" ASSIGN=",iommufd=iommufd0"
SY="/switchyard -machine q35 -accel kvm -m 256 -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $PORT $OBJ -device vfio-pci,host=$vf,bus=rp1$ASSIGN"
# run.sh --append rig.vfio=switchyard-only: one Switchyard run alone (for debugging the VMM;
# the scenario then fails for want of QEMU's figures).
if grep -q 'rig.vfio=switchyard-only' /proc/cmdline; then
  run_l2 switchyard $SY
  echo "CHECK FAILED: rig.vfio=switchyard-only ran no QEMU L2"; exit 1
fi
# Switchyard first, twice, then QEMU: with QEMU first, L1 froze (run.sh's watchdog: "running
# at one RIP with an interrupt pending") as Switchyard started after QEMU had released the VF,
# in both boots that got that far on 2026-12-05; see the README.
_exits=
if kvm_counters_ready; then _exits=1; else echo "no KVM statistics in L1's debugfs: no exit counts"; fi
NVME_EXITS=$_exits
run_l2 switchyard $SY
NVME_EXITS=
if [ -z "$SECOND_PASS" ]; then
  # The second run ends with the host taking the VF back while L2 runs (take_back).
  NVME_HOLD=1
  run_l2 switchyard2 $SY
  NVME_HOLD=
  # Then hot-plugged after boot, unplugged by button and by surprise.
  HP_SURPRISE=1 run_l2_hotplug switchyard-hp /switchyard -machine q35 -accel kvm -m 256 -kernel $L2_SWITCHYARD_KERNEL \
    -initrd $L2_INITRD $PORT,x-hotplug-surprise=on
fi
NVME_EXITS=$_exits
run_l2 qemu qemu-system-x86_64 -accel kvm -cpu host -M q35 -m 256 -nodefaults -display none -no-reboot -serial stdio \
  -kernel $L2_QEMU_KERNEL -initrd $L2_INITRD $PORT $OBJ -device vfio-pci,host=$vf,bus=rp1$ASSIGN
NVME_EXITS=
# QEMU hot-plugging the same VF: its q35 hot-plugs through ACPI by default; native PCIe hot-plug,
# as Switchyard's, needs the LPC's bridge support off. The reference for the time to the namespace,
# and the side-by-side of the hot-plug (in make test since 2026-12-07: about 30 s of L1 time).
[ -n "$SECOND_PASS" ] || run_l2_hotplug qemu-hp qemu-system-x86_64 -accel kvm -cpu host -M q35 -m 256 -nodefaults -display none -no-reboot \
  -serial stdio -global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off -kernel $L2_QEMU_KERNEL -initrd $L2_INITRD $PORT

# Ratios Switchyard / QEMU from this one L1 boot (figures vary with the host's load).
ratio() { # NAME A B
  _a=$(sed -n "s/^$2=//p" /tmp/vfio-times); _b=$(sed -n "s/^$3=//p" /tmp/vfio-times)
  # No ratio over a zero (an exit count of nothing).
  [ -n "$_a" ] && [ -n "$_b" ] && awk "BEGIN { exit !($_b != 0) }" && report_time "$1" "$(awk "BEGIN { printf \"%.2f\", $_a / $_b }")"
}
ratio ratio_nvme_live_switchyard_over_qemu switchyard_nvme_live qemu_nvme_live
ratio ratio_write_MiBps_switchyard_over_qemu switchyard_write_MiBps qemu_write_MiBps
ratio ratio_read_MiBps_switchyard_over_qemu switchyard_read_MiBps qemu_read_MiBps
ratio ratio_exits_per_MiB_switchyard_over_qemu switchyard_exits_per_MiB qemu_exits_per_MiB
ratio ratio_randread_iops_switchyard_over_qemu switchyard_randread_iops qemu_randread_iops
ratio ratio_plug_to_live_switchyard_over_qemu switchyard-hp_plug_to_live_1 qemu-hp_plug_to_live_1
# The VF's doorbells are in BAR pages mapped into L2 and its MSI-X vectors are irqfds: its I/O
# makes no MMIO exit (a trapped doorbell would be two per NVMe command, 2 commands per MiB).
if [ -n "$_exits" ]; then
  _m=$(sed -n 's/^switchyard_mmio_exits_per_MiB=//p' /tmp/vfio-times)
  check "switchyard: no MMIO exits during the VF's I/O ($_m per MiB)" awk "BEGIN { exit !(\"$_m\" != \"\" && $_m + 0 < 1) }"
fi
[ $fails = 0 ]
