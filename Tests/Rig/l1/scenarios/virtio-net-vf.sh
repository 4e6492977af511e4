#!/bin/sh
# virtio-net-vf: the guest sees only virtio while its traffic leaves through an SR-IOV VF.
# L1 has L0's "iommu" set: an igb (82576) PF with SR-IOV and an e1000e on the same L0 hub.
# L1 enables 2 VFs (igbvf binds them) and puts the e1000e in a network namespace as the peer,
# on VLAN 100 (10.0.2.2). Switchyard boots L2 with
#   -netdev macvtap,id=n0,pf=PF,vf=auto,mac=52:54:00:12:34:57,vlan=100
#   -device virtio-net-pci,netdev=n0
# so Switchyard claims a free VF, sets its MAC and VLAN through the PF (rtnetlink, libnl) and
# makes a passthru macvtap on the VF's netdev. L2 (rig.l2=net) pings the peer and moves 4 MiB
# each way. Checked outside Switchyard's own output:
# - the peer reaches L2 only on its VLAN 100 interface: the VF tagged L2's frames;
# - the peer's neighbour table has L2 at 52:54:00:12:34:57: the MAC Switchyard set;
# - while it runs, `switchyard host list` shows the VF held by that switchyard pid;
# - after the VMM exits: no macvtap link left, and no VF held.
# Twice: the userspace datapath, then vhost=on (the kernel's vhost-net worker must serve it).
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh
MAC=52:54:00:12:34:57

igb_pf=$(pci_by_id 8086:10c9) || { echo "CHECK FAILED: no igb 8086:10c9 in L1 (is virtio-net-vf.l0 used?)"; exit 1; }
peer_pf=$(pci_by_id 8086:10d3) || { echo "CHECK FAILED: no e1000e 8086:10d3 in L1"; exit 1; }
pf_if=$(ls /sys/bus/pci/devices/$igb_pf/net | head -n 1)
peer_if=$(ls /sys/bus/pci/devices/$peer_pf/net | head -n 1)
echo "igb PF $igb_pf ($pf_if), peer e1000e $peer_pf ($peer_if)"
# 802.1Q for the peer's VLAN interface (in the image, not loaded at L1's init).
while read -r m; do insmod "/rig/modules/$m" 2>/dev/null; done </rig/modules/order.vlan
ip link set "$pf_if" up
echo 2 >/sys/bus/pci/devices/$igb_pf/sriov_numvfs
for n in 0 1; do
  vf=$(basename "$(readlink /sys/bus/pci/devices/$igb_pf/virtfn$n)")
  wait_driver "$vf" igbvf
  check "VF $n ($vf) bound to igbvf" [ "$(driver_of $vf)" = igbvf ]
done

# The peer: the e1000e in a namespace of its own, listening on VLAN 100.
start_peer "$peer_if" 100
# vf_session LABEL VHOST: one L2 boot over a passthru macvtap on a free VF (vhost=VHOST), the
# checks above, and figures LABEL_ping_avg_ms, LABEL_tx_4MiB, LABEL_rx_4MiB.
vf_session() {
  _label=$1
  peer_listen
  log=/tmp/l2-net-$_label.log
  L2_APPEND_LINE="$(l2_append net)"
  start_vmm "$log" /switchyard -machine q35 -accel kvm -m 512 -smp $L2_SMP \
    -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY \
    -netdev macvtap,id=n0,pf=$pf_if,vf=auto,mac=$MAC,vlan=100,vhost=$2 -device virtio-net-pci,netdev=n0,bus=rp3
  if wait_for "$log" ' RIG-L2 net link-up' 150 >/dev/null; then
    /switchyard host list >/tmp/list-running.txt 2>&1
    check "$_label: host list shows a VF held by this switchyard (netdev n0)" grep -q "switchyard pid [0-9]* uses it (netdev n0)" /tmp/list-running.txt
    grep -B3 "switchyard pid" /tmp/list-running.txt | head -n 8
    # vhost-net's worker for the VMM's queues (Linux 6.1 names it vhost-PID): the kernel moves
    # the frames between the rings and the macvtap.
    [ "$2" = on ] && check "$_label: vhost-net's worker vhost-$(cat /tmp/l2.pid) serves the queues" \
      grep -qx "vhost-$(cat /tmp/l2.pid)" /proc/[0-9]*/comm
    # Where frames went: packet counters along the path (VF netdev, macvtap, PF; the peer's side).
    for d in /sys/class/net/*; do
      n=${d##*/}
      echo "counters $n: rx $(cat $d/statistics/rx_packets) tx $(cat $d/statistics/tx_packets) addr $(cat $d/address) $(cat $d/operstate)"
    done
    # (/proc/net is the reader's namespace; L1's /sys/class/net is not.)
    nsenter -t $peer -n cat /proc/net/dev | sed 's/^/peer counters /'
  fi
  wait_for "$log" ' RIG-L2 net done' 150 >/dev/null || echo "$_label: L2 did not finish its network checks"
  wait_vmm_exit "$log" 30
  echo "--- L2 console ($_label: switchyard over a VF, vhost=$2), times relative to VMM start:"
  show_l2_log "$log"
  check_vmm_exit "$log" "$_label" || fails=$((fails + 1))
  check "$_label: L2 sees a modern virtio-net (1af4:1041) bound to virtio-pci" grep -q ' RIG-L2 net dev .* ids=1af4:1041 drv=virtio-pci' "$log"
  peer_traffic_checks "$_label: " "$log"
  nsenter -t $peer -n ip neigh show >/tmp/neigh.txt 2>&1
  cat /tmp/neigh.txt
  check "$_label: the peer saw L2 on VLAN 100 at $MAC (the VF's tag and the MAC Switchyard set)" grep -q "10.0.2.15 dev $peer_if.100 lladdr $MAC" /tmp/neigh.txt
  ls /sys/class/net >/tmp/links-after.txt
  check "$_label: no macvtap link left after the VMM exited" sh -c "! grep -q '^sy' /tmp/links-after.txt"
  /switchyard host list >/tmp/list-after.txt 2>&1
  check "$_label: no VF held after the VMM exited" sh -c "! grep -q 'switchyard pid' /tmp/list-after.txt"
  # The teardown runs on the VMM's main thread under its sandbox (Landlock: the VF's rebind in
  # sysfs and the reservation file are its grants): it must say no failure and leave no file.
  check "$_label: the VMM's teardown reported no failure" sh -c "! grep -q 'closing it failed' $log.err"
  check "$_label: the VF's reservation file is gone (/run/switchyard/vf: $(ls /run/switchyard/vf 2>/dev/null | tr '\n' ' '))" \
    sh -c '[ -z "$(ls /run/switchyard/vf 2>/dev/null)" ]'
  v=$(sed -n 's/.* RIG-L2 net ping .* avg_ms=\([0-9.]*\).*/\1/p' "$log"); [ -n "$v" ] && report_time ${_label}_ping_avg_ms "$v"
  v=$(sed -n 's/.* RIG-L2 net tx .* seconds=\([0-9.]*\).*/\1/p' "$log"); [ -n "$v" ] && report_time ${_label}_tx_4MiB "$v"
  v=$(sed -n 's/.* RIG-L2 net rx .* seconds=\([0-9.]*\).*/\1/p' "$log"); [ -n "$v" ] && report_time ${_label}_rx_4MiB "$v"
}

vf_session vf off
# The same over vhost-net (libvirt's default for a direct interface): the VF the first boot
# gave back is taken again.
vf_session vf_vhost on
stop_peer
[ $fails = 0 ]
