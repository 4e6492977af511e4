#!/bin/sh
# vfio-igb: a real igb VF assigned to L2 through L1's VFIO, under Switchyard and then QEMU with
# the same options, in one L1 boot. L1 has L0's "iommu" set: an igb (82576) PF with SR-IOV and
# an e1000e on the same L0 hub. L1 enables one VF, gives it a MAC through the PF (the address
# igbvf reads from the PF's mailbox), and `switchyard host bind` moves it from igbvf to
# vfio-pci. The e1000e is the peer, in a network namespace of its own (10.0.2.2). Each VMM boots
# L2 with -device vfio-pci,host=VF on a pcie-root-port; L2 (rig.l2=net rig.l2nic=igbvf) loads
# igbvf, pings the peer and moves 4 MiB each way. Checked outside the VMM under test: L2's
# sysfs (igbvf bound to an 8086:10ca function), the peer's bytes against L2's checksums, the
# peer's neighbour table (L2 at the MAC the PF gave the VF: the frames left through the VF), L2's
# /proc/interrupts (eth0's vectors on PCI-MSI(-X) that counted), and L1's sysfs after each run
# (the VF still on vfio-pci). QEMU passing the same VF is the oracle that the device and the L1
# set-up work. Figures per VMM: LABEL_link_up (s from VMM start to the first answered ping),
# LABEL_ping_avg_ms, LABEL_tx_MiBps, LABEL_rx_MiBps; and their ratios switchyard/qemu.
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh
MAC=52:54:00:12:34:58

report_time() { echo "RIG-TIME $1=$2"; echo "$1=$2" >>/tmp/vfio-times; }
: >/tmp/vfio-times
igb_pf=$(pci_by_id 8086:10c9) || { echo "CHECK FAILED: no igb 8086:10c9 in L1 (is vfio-igb.l0 used?)"; exit 1; }
peer_pf=$(pci_by_id 8086:10d3) || { echo "CHECK FAILED: no e1000e 8086:10d3 in L1"; exit 1; }
pf_if=$(ls /sys/bus/pci/devices/$igb_pf/net | head -n 1)
peer_if=$(ls /sys/bus/pci/devices/$peer_pf/net | head -n 1)
ip link set "$pf_if" up
echo 1 >/sys/bus/pci/devices/$igb_pf/sriov_numvfs
vf=$(basename "$(readlink /sys/bus/pci/devices/$igb_pf/virtfn0)")
wait_driver "$vf" igbvf
iproute2-ip link set "$pf_if" vf 0 mac $MAC || echo "CHECK FAILED: setting VF 0's MAC through $pf_if"
iproute2-ip link show "$pf_if" | grep 'vf 0'
/switchyard host bind $vf || { echo "CHECK FAILED: host bind $vf"; exit 1; }
check "VF $vf bound to vfio-pci" [ "$(driver_of $vf)" = vfio-pci ]
group=$(group_of $vf)
check "/dev/vfio/$group present" [ -c /dev/vfio/$group ]
echo "igb PF $igb_pf ($pf_if), VF $vf in IOMMU group $group, peer e1000e $peer_pf ($peer_if)"

# The peer: the e1000e in a namespace of its own; a fresh listener per run, the same file
# served to every run.
start_peer "$peer_if"

PORT="-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1"
# run_l2 LABEL CMD...: boots L2 in net mode with igbvf, prints its console, checks what L2 and
# the peer saw.
run_l2() {
  _label=$1; shift
  _log=/tmp/l2-igb-$_label.log
  peer_listen
  L2_APPEND_LINE="$(l2_append net) rig.l2nic=igbvf"
  start_vmm "$_log" "$@"
  if _t=$(wait_for "$_log" ' RIG-L2 net link-up ok=1' 200); then
    report_time "${_label}_link_up" "$(elapsed "$VMM_START" "$_t")"
    case $_label in switchyard*)
      check "$_label: the VMM runs under its seccomp filter (/proc/PID/status Seccomp: 2)" \
        grep -q '^Seccomp:[[:space:]]*2$' /proc/$(cat /tmp/l2.pid)/status ;;
    esac
  fi
  wait_for "$_log" ' RIG-L2 net done' 200 >/dev/null || echo "$_label: L2 did not finish its network checks"
  wait_vmm_exit "$_log" 30
  show_run "$_label" "$_log"
  check_vmm_exit "$_log" "$_label" || fails=$((fails + 1))
  check "$_label: L2's igbvf bound the assigned VF (8086:10ca)" grep -q ' RIG-L2 net nic [0-9a-f:.]* ids=8086:10ca drv=igbvf' "$_log"
  peer_traffic_checks "$_label: " "$_log"
  nsenter -t $peer -n ip neigh show >/tmp/neigh.txt 2>&1
  cat /tmp/neigh.txt
  check "$_label: the peer saw L2 at $MAC (the MAC the PF gave the VF)" grep -q "10.0.2.15 dev $peer_if lladdr $MAC" /tmp/neigh.txt
  check "$_label: eth0's MSI-X vectors counted" \
    awk 'index($0, "RIG-L2 net irq") && index($0, "PCI-MSI") && / eth0/ { for (i = 5; i <= NF; i++) if ($i ~ /^[0-9]+$/ && $i > 0) ok = 1 } END { exit !ok }' "$_log"
  check "$_label: $vf is still on vfio-pci after the VMM exited" [ "$(driver_of $vf)" = vfio-pci ]
  _v=$(sed -n 's/.* RIG-L2 net ping .* avg_ms=\([0-9.]*\).*/\1/p' "$_log"); [ -n "$_v" ] && report_time "${_label}_ping_avg_ms" "$_v"
  for _d in tx rx; do
    _s=$(sed -n "s/.* RIG-L2 net $_d bytes=4194304 .* seconds=\([0-9.]*\).*/\1/p" "$_log")
    [ -n "$_s" ] && report_time "${_label}_${_d}_MiBps" "$(awk "BEGIN { s = $_s; if (s < 0.01) s = 0.01; printf \"%.1f\", 4 / s }")"
  done
}

# Switchyard first, then QEMU (vfio-nvme's order: see the README).
run_l2 switchyard /switchyard -machine q35 -accel kvm -m 256 -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD \
  $PORT -device vfio-pci,host=$vf,bus=rp1
run_l2 qemu qemu-system-x86_64 -accel kvm -cpu host -M q35 -m 256 -nodefaults -display none -no-reboot -serial stdio \
  -kernel $L2_QEMU_KERNEL -initrd $L2_INITRD $PORT -device vfio-pci,host=$vf,bus=rp1

# What each VMM shows the guest of the VF's config space: L2's real lspci -vvv lines that
# differ, and every byte of the 4 KiB that differs (offset, Switchyard's value, QEMU's).
cfg_lines() { sed -n "s/.* RIG-L2 cfg $2 //p" /tmp/l2-igb-$1.log; }
cfg_bytes() { cfg_lines "$1" hex | awk '{ for (i = 2; i <= NF; i++) printf "%03x %s\n", (NR - 1) * 16 + i - 2, $i }'; }
cfg_lines switchyard vvv >/tmp/cfg-switchyard.vvv; cfg_lines qemu vvv >/tmp/cfg-qemu.vvv
cfg_bytes switchyard >/tmp/cfg-switchyard.hex; cfg_bytes qemu >/tmp/cfg-qemu.hex
check "both L2s dumped the VF's 4096 config bytes" \
  sh -c '[ "$(wc -l </tmp/cfg-switchyard.hex)" = 4096 ] && [ "$(wc -l </tmp/cfg-qemu.hex)" = 4096 ]'
echo "--- the VF's config space in L2, lspci -vvv, Switchyard (-) against QEMU (+):"
diff /tmp/cfg-switchyard.vvv /tmp/cfg-qemu.vvv | grep '^[-+][^-+]'
echo "--- bytes that differ (offset switchyard qemu):"
paste -d' ' /tmp/cfg-switchyard.hex /tmp/cfg-qemu.hex | awk '$2 != $4 { print "cfg byte 0x" $1, $2, $4 }' | tee /tmp/cfg-diff.txt
# The differences the README explains (vfio-igb), by offset in this VF's config space:
#   0x004-0x005 Command: QEMU's L2 has I/O and SERR enable set as well (its firmware path);
#   0x010-0x027 BARs: each VMM places them (Switchyard above 4 GiB, SeaBIOS below);
#   0x0ac-0x0af, 0x0b2-0x0b3 Link Capabilities and Status (PCIe capability at 0xa0): Switchyard
#               shows the guest's link (its root port's), QEMU the device's own;
#   0x100-0x103 the first extended capability's next pointer: QEMU drops ARI from the chain.
check "every config byte that differs between the VMMs is one the README explains" \
  awk '{ o = $3; sub(/^0x/, "", o) } !(o ~ /^00[45]$/ || (o >= "010" && o <= "027") || o ~ /^0a[c-f]$/ || o ~ /^0b[23]$/ || o ~ /^10[0-3]$/) { bad = 1; print "unexplained: " $0 >"/dev/stderr" } END { exit bad }' /tmp/cfg-diff.txt

ratio() { # NAME A B
  _a=$(sed -n "s/^$2=//p" /tmp/vfio-times); _b=$(sed -n "s/^$3=//p" /tmp/vfio-times)
  [ -n "$_a" ] && [ -n "$_b" ] && awk "BEGIN { exit !($_b != 0) }" && report_time "$1" "$(awk "BEGIN { printf \"%.2f\", $_a / $_b }")"
}
ratio ratio_link_up_switchyard_over_qemu switchyard_link_up qemu_link_up
ratio ratio_ping_avg_switchyard_over_qemu switchyard_ping_avg_ms qemu_ping_avg_ms
ratio ratio_tx_MiBps_switchyard_over_qemu switchyard_tx_MiBps qemu_tx_MiBps
ratio ratio_rx_MiBps_switchyard_over_qemu switchyard_rx_MiBps qemu_rx_MiBps
stop_peer
[ $fails = 0 ]
