#!/bin/sh
# virtio-net: L2's virtio_net driver over a tap in L1, under QEMU and under Switchyard in the
# same L1 boot, each with the userspace datapath (vhost=off) and with vhost=on (vhost-net: the
# kernel's worker thread for the VMM's queues must exist; Switchyard's vhost=on boot has two
# vCPUs and mq=on over a two-queue tap, one vhost-net instance per queue pair, and must use both
# pairs). Switchyard's
# vhost=off NIC is hot-plugged after boot through QMP, unplugged, and plugged again; its vhost=on
# mq boot also takes QMP's set_link off and on (net_link_cycle). Its re-plugged NIC offers
# packed rings (packed=on; packed_check: L2's driver took them).
# The VMM creates tap0; L1 moves it into a network namespace of its own (the peer: 10.0.2.2,
# an nc listener on port 5001 and busybox httpd on 5002). L2 (rig.l2=net, l2/init) pings the
# peer, sends it a 4 MiB file and fetches another: the checksums on both sides must agree, and
# the virtio interrupts must count; then 2 s of 1-byte request/response with the peer's echo on
# port 5003 (l2/rr.c). Figures per VMM and mode: link-up, ping, tx and rx times, transactions/s.
. /rig/lib.sh
# Every figure also goes to /tmp/net-times for the ratios at the end.
report_time() { echo "RIG-TIME $1=$2"; echo "RIG-TIME $1=$2" >>/tmp/net-times; }
: >/tmp/net-times
MAC=52:54:00:12:34:56
rc=0

# net_session LABEL VHOST CMD...: one boot; the VMM's tap0 goes to a fresh namespace.
# NET_DEVICE_EXTRA is added to -device virtio-net-pci (QEMU: romfile= for no option ROM, which
# L1 does not carry and a PVH boot does not use), NET_NETDEV_EXTRA to -netdev.
net_session() {
  _nl=$1 _vh=$2; shift 2
  _log=/tmp/l2-net-$_nl.log
  unshare -n sleep 600 </dev/null >/dev/null 2>&1 &
  _peer=$!
  rm -rf /tmp/peer-$_nl; mkdir -p /tmp/peer-$_nl/www
  dd if=/dev/urandom of=/tmp/peer-$_nl/www/rx bs=64k count=64 2>/dev/null
  L2_APPEND_LINE="$(l2_append net)${NET_EXITS:+ rig.l2netexits=1}${NET_LINK:+ rig.l2netlink=1}"
  _q=/tmp/qmp-$_nl
  if [ -n "${NET_LINK:-}" ]; then
    rm -f $_q.in $_q.out; mkfifo $_q.in $_q.out
    stamp <$_q.out >$_q.log &
    start_vmm "$_log" "$@" -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=$_vh$NET_NETDEV_EXTRA \
      -device virtio-net-pci,netdev=n0,bus=rp3,mac=$MAC$NET_DEVICE_EXTRA -chardev pipe,id=qmp,path=$_q -mon chardev=qmp,mode=control
  elif [ -n "${NET_HOTPLUG:-}" ]; then
    # No NIC at boot: QMP on a FIFO pair plugs it into rp3 once L2 waits for it.
    rm -f $_q.in $_q.out; mkfifo $_q.in $_q.out
    stamp <$_q.out >$_q.log &
    L2_APPEND_LINE="$L2_APPEND_LINE rig.l2nethp=$NET_HOTPLUG"
    start_vmm "$_log" "$@" -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=$_vh$NET_NETDEV_EXTRA \
      -chardev pipe,id=qmp,path=$_q -mon chardev=qmp,mode=control
  else
    start_vmm "$_log" "$@" -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=$_vh$NET_NETDEV_EXTRA \
      -device virtio-net-pci,netdev=n0,bus=rp3,mac=$MAC$NET_DEVICE_EXTRA
  fi
  _i=0
  while [ ! -e /sys/class/net/tap0 ] && [ $_i -lt 200 ]; do sleep 0.05; _i=$((_i + 1)); done
  if [ -e /sys/class/net/tap0 ]; then
    ip link set dev tap0 netns $_peer
    nsenter -t $_peer -n sh -c "
      ip link set lo up; ip addr add 10.0.2.2/24 dev tap0; ip link set tap0 up
      sleep 600 | nc -l -p 5001 >/tmp/peer-$_nl/tx &
      nc -l -p 5003 -e cat &
      httpd -p 5002 -h /tmp/peer-$_nl/www"
  else
    echo "CHECK FAILED: $_nl: no tap0 appeared within 10 s of the VMM's start"
  fi
  [ -n "${NET_HOTPLUG:-}" ] && { net_hotplug_cycles || _hpf=1; }
  [ "$_vh" = on ] && [ -z "${NET_HOTPLUG:-}" ] && { vhost_check || _hpf=1; }
  [ -n "${NET_EXITS:-}" ] && { net_exits || _hpf=1; }
  [ -n "${NET_LINK:-}" ] && { net_link_cycle || _hpf=1; }
  wait_for "$_log" ' RIG-L2 net done' 150 >/dev/null || echo "$_nl: L2 did not finish its network checks"
  [ -n "${NET_THREADS:-}" ] && vmm_threads
  _sw1=$(io_thread_switches "${_vp:-0}")
  [ -n "${NET_HOTPLUG:-}${NET_LINK:-}" ] && exec 3>&-
  wait_vmm_exit "$_log" 20
  show_run "$_nl" "$_log" ${NET_HOTPLUG:+$_q.log}
  check_vmm_exit "$_log" "$_nl" || rc=1
  _f=${_hpf:-0}; _hpf=0
  if [ -n "${NET_HOTPLUG:-}${NET_LINK:-}" ]; then
    grep -q ' "error"' $_q.log && { echo "CHECK FAILED: $_nl: QMP returned an error"; _f=1; }
  fi
  grep -q ' RIG-L2 net dev .* ids=1af4:1041 drv=virtio-pci' "$_log" ||
    { echo "CHECK FAILED: $_nl: no modern virtio-net function (1af4:1041) bound to virtio-pci"; _f=1; }
  grep -q ' RIG-L2 net link-up ok=1' "$_log" || { echo "CHECK FAILED: $_nl: the peer never answered a ping"; _f=1; }
  _p=$(sed -n 's/.* RIG-L2 net ping sent=\([0-9]*\) received=\([0-9]*\).*/\1 \2/p' "$_log")
  [ "${_p% *}" = 10 ] && [ "${_p#* }" = 10 ] || { echo "CHECK FAILED: $_nl: ping sent/received '${_p:-none}', want 10 10"; _f=1; }
  _tx=$(sed -n 's/.* RIG-L2 net tx bytes=4194304 md5=\([0-9a-f]*\).*/\1/p' "$_log")
  _peer_tx=$(md5sum </tmp/peer-$_nl/tx 2>/dev/null | cut -d' ' -f1)
  [ -n "$_tx" ] && [ "$_tx" = "$_peer_tx" ] ||
    { echo "CHECK FAILED: $_nl: L2 sent md5 '${_tx:-none}', the peer received '$_peer_tx' ($(wc -c </tmp/peer-$_nl/tx 2>/dev/null) bytes)"; _f=1; }
  _rx=$(sed -n 's/.* RIG-L2 net rx bytes=4194304 md5=\([0-9a-f]*\).*/\1/p' "$_log")
  _peer_rx=$(md5sum </tmp/peer-$_nl/www/rx | cut -d' ' -f1)
  [ -n "$_rx" ] && [ "$_rx" = "$_peer_rx" ] ||
    { echo "CHECK FAILED: $_nl: L2 fetched md5 '${_rx:-none}', the peer served '$_peer_rx'"; _f=1; }
  _rr=$(sed -n 's/.* RIG-L2 net rr transactions=\([1-9][0-9]*\) .*per_s=\([0-9]*\).*/\2/p' "$_log" | head -n 1)
  [ -n "$_rr" ] || { echo "CHECK FAILED: $_nl: no request/response transactions: '$(sed -n 's/.* RIG-L2 net rr //p' "$_log" | head -n 1)'"; _f=1; }
  _irqs=$(sed -n 's/.* RIG-L2 net irq *[0-9]*: *\([0-9]*\) .*virtio.*input.*/\1/p' "$_log" | head -n 1)
  [ -n "$_irqs" ] && [ "$_irqs" -gt 0 ] || { echo "CHECK FAILED: $_nl: no virtio input interrupts counted"; _f=1; }
  [ -n "$NET_NETDEV_EXTRA" ] && { mq_check "$_log" "$_nl" || _f=1; }
  [ "$_vh" = on ] && [ -z "${NET_HOTPLUG:-}" ] && { irqfd_check || _f=1; }
  [ -n "${NET_PACKED:-}" ] && { packed_check || _f=1; }
  [ $_f = 0 ] && echo "ok: $_nl: ping 10/10, 4 MiB each way with equal checksums, $_rr request/response per s, $_irqs rx interrupts"
  [ $_f = 0 ] || rc=1
  _v=$(sed -n 's/.* RIG-L2 net link-up ok=1 seconds=\([0-9.]*\).*/\1/p' "$_log"); [ -n "$_v" ] && report_time "${_nl}_link_up" "$_v"
  _v=$(sed -n 's/.* RIG-L2 net ping .* avg_ms=\([0-9.]*\).*/\1/p' "$_log"); [ -n "$_v" ] && report_time "${_nl}_ping_avg_ms" "$_v"
  _v=$(sed -n 's/.* RIG-L2 net tx .* seconds=\([0-9.]*\).*/\1/p' "$_log"); [ -n "$_v" ] && report_time "${_nl}_tx_4MiB" "$_v"
  _v=$(sed -n 's/.* RIG-L2 net rx .* seconds=\([0-9.]*\).*/\1/p' "$_log"); [ -n "$_v" ] && report_time "${_nl}_rx_4MiB" "$_v"
  [ -n "$_rr" ] && report_time "${_nl}_rr_per_s" "$_rr"
  # The namespace lives while a process is in it: the listeners go with the peer.
  killall nc httpd 2>/dev/null
  kill $_peer 2>/dev/null
  sleep 0.2
}

# packed_check (in net_session, NET_PACKED=1 with NET_HOTPLUG: the re-plugged NIC offers
# VIRTIO_F_RING_PACKED, packed=on): L2's virtio_net took the packed ring on it. The sysfs
# features string L2 prints for cycle 2 has one 0/1 character per feature bit; bit 34 is
# RING_PACKED. (The first cycle, whose transfers are compared with QEMU's, keeps the default
# split ring, as QEMU's userspace boot does.)
packed_check() {
  _feat=$(sed -n 's/.* RIG-L2 net hp features cycle=2 \([01]*\).*/\1/p' "$_log" | head -n 1)
  if [ "$(printf '%s' "$_feat" | cut -c35)" = 1 ]; then
    echo "ok: $_nl: L2's driver took the packed ring (feature 34 of $_feat)"
  else
    echo "CHECK FAILED: $_nl: packed=on, but L2's negotiated features '${_feat:-none}' have no RING_PACKED (bit 34)"; return 1
  fi
}

# net_qmp_open (in net_session): QMP on the session's FIFO pair (fd 3), capabilities negotiated.
net_qmp_open() {
  exec 3<>$_q.in
  wait_for $_q.log '"QMP"' 30 >/dev/null || { echo "CHECK FAILED: $_nl: no QMP greeting"; return 1; }
  _qmp '{"execute":"qmp_capabilities"}'
  wait_for $_q.log '"return"' 10 >/dev/null || { echo "CHECK FAILED: $_nl: qmp_capabilities failed"; return 1; }
}

# net_link_cycle (in net_session, NET_LINK=1): QMP set_link off once L2 is done with its checks;
# L2 must see its carrier go, and while it is down the peer pings L2 five times (L2's MAC in the
# peer's neighbour table, so the frames leave): no reply may come back and L2's rx_packets must
# not move (the VMM drops what the host sends, a pulled cable, with vhost too); set_link on:
# L2's carrier comes back and three pings to the peer are answered.
net_link_cycle() {
  net_qmp_open || return 1
  wait_for "$_log" ' RIG-L2 net link ready' 150 >/dev/null || { echo "CHECK FAILED: $_nl: L2 never reached its set_link phase"; return 1; }
  _qmp '{"execute":"set_link","arguments":{"name":"n0","up":false}}'
  _down=$(wait_for "$_log" ' RIG-L2 net link down' 40 >/dev/null && sed -n 's/.* RIG-L2 net link down \(.*\)/\1/p' "$_log" | tr -d '\r')
  nsenter -t $_peer -n sh -c "iproute2-ip neigh replace 10.0.2.15 lladdr $MAC dev tap0 nud permanent; ping -c 5 -i 0.2 -W 1 10.0.2.15" >/tmp/linkping-$_nl.txt 2>&1
  _peer_got=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/linkping-$_nl.txt)
  _qmp '{"execute":"set_link","arguments":{"name":"n0","up":true}}'
  _up=$(wait_for "$_log" ' RIG-L2 net link up' 70 >/dev/null && sed -n 's/.* RIG-L2 net link up \(.*\)/\1/p' "$_log" | tr -d '\r')
  wait_for "$_log" ' RIG-L2 net link ping received=' 30 >/dev/null
  _after=$(sed -n 's/.* RIG-L2 net link ping received=\([0-9]*\).*/\1/p' "$_log" | tr -d '\r')
  _lf=0
  case "$_down" in "carrier=0 rx="*) ;; *) echo "CHECK FAILED: $_nl: after set_link off L2 reported '${_down:-nothing}', want carrier=0"; _lf=1 ;; esac
  case "$_up" in "carrier=1 rx="*) ;; *) echo "CHECK FAILED: $_nl: after set_link on L2 reported '${_up:-nothing}', want carrier=1"; _lf=1 ;; esac
  [ "${_down#*rx=}" = "${_up#*rx=}" ] || { echo "CHECK FAILED: $_nl: L2 received frames while its link was down (rx_packets ${_down#*rx=} -> ${_up#*rx=})"; _lf=1; }
  [ "$_peer_got" = 0 ] || { echo "CHECK FAILED: $_nl: the peer got '${_peer_got:-?}' replies from L2 while its link was down, want 0"; _lf=1; }
  [ "$_after" = 3 ] || { echo "CHECK FAILED: $_nl: after set_link on L2's pings got '${_after:-none}' replies, want 3"; _lf=1; }
  [ $_lf = 0 ] && echo "ok: $_nl: set_link off: carrier down, the peer's 5 pings lost, L2's rx_packets still ${_up#*rx=}; on: carrier up, 3/3 pings"
  return $_lf
}

# net_hotplug_cycles (in net_session, NET_HOTPLUG=N): for each cycle, when L2 waits for its NIC,
# device_add virtio-net-pci (netdev n0, rp3, id net0: the same netdev every time, as a NIC that
# is unplugged gives its netdev back), then when L2 is done with it, device_del (the attention
# button: pciehp's 5 s wait) and both DEVICE_DELETED and L2 seeing eth0 go. Cycle 1 runs the
# full checks, later cycles 5 pings. Not a surprise removal: Linux's virtio-pci reset polls the
# device status until it reads 0, and a removed function reads all ones, so the guest's remove
# never ends (the same under QEMU; a known Linux limitation, not the VMM's).
net_hotplug_cycles() {
  net_qmp_open || return 1
  wait_for "$_log" ' RIG-L2 net hp waiting' 120 >/dev/null || { echo "CHECK FAILED: $_nl: L2 never waited for its NIC"; return 1; }
  _c=1
  while [ $_c -le "$NET_HOTPLUG" ]; do
    _t0=$(now)
    # NET_PACKED: the re-plugged NIC (cycles after the first) offers packed rings.
    _pk=; [ -n "${NET_PACKED:-}" ] && [ $_c -gt 1 ] && _pk=',"packed":true'
    _qmp "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"virtio-net-pci\",\"netdev\":\"n0\",\"bus\":\"rp3\",\"id\":\"net0\",\"mac\":\"$MAC\"$_pk}}"
    _t1=$(wait_for "$_log" " RIG-L2 net hp plugged cycle=$_c seconds=[0-9]" 60) ||
      { echo "CHECK FAILED: $_nl: L2 did not see eth0 within 60 s of device_add (cycle $_c)"; return 1; }
    report_time "${_nl}_plug_to_eth0_$_c" "$(elapsed "$_t0" "$_t1")"
    wait_for "$_log" " RIG-L2 net hp ready-unplug cycle=$_c" 150 >/dev/null ||
      { echo "CHECK FAILED: $_nl: L2 did not finish with the NIC (cycle $_c)"; return 1; }
    _t0=$(now)
    _qmp '{"execute":"device_del","arguments":{"id":"net0"}}'
    # The cycle's own DEVICE_DELETED: the log holds the earlier cycles' too.
    _i=0
    while [ "$(grep -c 'DEVICE_DELETED.*"net0"' $_q.log)" -lt $_c ] && [ $_i -lt 600 ]; do sleep 0.05; _i=$((_i + 1)); done
    _t1=$(grep 'DEVICE_DELETED.*"net0"' $_q.log | sed -n "${_c}p" | cut -d' ' -f1)
    [ -n "$_t1" ] || { echo "CHECK FAILED: $_nl: no DEVICE_DELETED for net0 within 30 s (cycle $_c)"; return 1; }
    report_time "${_nl}_unplug_device_deleted_$_c" "$(elapsed "$_t0" "$_t1")"
    wait_for "$_log" " RIG-L2 net hp unplugged cycle=$_c seconds=[0-9]" 30 >/dev/null ||
      { echo "CHECK FAILED: $_nl: L2 still has eth0 after the unplug (cycle $_c)"; return 1; }
    if [ $_c -gt 1 ]; then
      grep -q " RIG-L2 net hp ping cycle=$_c received=5" "$_log" ||
        { echo "CHECK FAILED: $_nl: re-plugged NIC: '$(sed -n "s/.* RIG-L2 net hp ping cycle=$_c //p" "$_log")', want received=5"; return 1; }
    fi
    _c=$((_c + 1))
  done
  echo "ok: $_nl: virtio-net-pci hot-plugged into rp3 and unplugged $NET_HOTPLUG times on one netdev"
}

# vhost_check (in net_session, vhost=on): once L2's link is up, L1 has the kernel's vhost-net
# worker for the VMM's queues: a kernel thread named vhost-PID after the VMM that owns the
# /dev/vhost-net instance (Linux 6.1 drivers/vhost/vhost.c). Nothing the VMM says counts.
vhost_check() {
  _sw0=none
  wait_for "$_log" ' RIG-L2 net link-up' 150 >/dev/null || { echo "CHECK FAILED: $_nl: L2's link never came up"; return 1; }
  _vp=$(cat /tmp/l2.pid 2>/dev/null)
  if grep -qx "vhost-$_vp" /proc/[0-9]*/comm 2>/dev/null; then
    echo "ok: $_nl: vhost-net's worker vhost-$_vp serves the VMM's queues"
  else
    echo "CHECK FAILED: $_nl: no vhost-$_vp kernel thread: the queues are not vhost-net's"; return 1
  fi
  _sw0=$(io_thread_switches "$_vp")
}

# io_thread_switches PID: the context switches (voluntary and not) of the VMM's virtio-net I/O
# thread, as L1's kernel counts them; "none" for a VMM without one (QEMU).
io_thread_switches() {
  for _t in /proc/$1/task/*; do
    [ "$(cat $_t/comm 2>/dev/null)" = virtio-net ] || continue
    awk '/ctxt_switches/ { s += $2 } END { print s + 0 }' $_t/status; return
  done
  echo none
}

# irqfd_check (in net_session, Switchyard with vhost=on): vhost's interrupt requests reach L2
# through KVM irqfds, so the NIC's I/O thread (which serves only the control queue) hardly runs
# while L2 moves 8 MiB: its context switches from link-up to the end of the checks must be under
# a tenth of the queue interrupts L2 counted (every CPU, every input and output vector). Through
# the I/O thread each interrupt is a wake.
irqfd_check() {
  case $_nl in switchyard*) ;; *) return 0 ;; esac
  [ "${_sw0:-none}" = none ] || [ "$_sw1" = none ] &&
    { echo "CHECK FAILED: $_nl: no virtio-net I/O thread in the VMM to count (link-up: $_sw0, end: $_sw1)"; return 1; }
  _wakes=$((_sw1 - _sw0))
  _qirqs=$(sed -n 's/.* RIG-L2 net irq *[0-9]*:\([0-9 ]*\) .*virtio.*-[a-z]*put\..*/\1/p' "$_log" |
    awk '{ for (i = 1; i <= NF; i++) s += $i } END { print s + 0 }')
  echo "RIG-COUNT ${_nl}_io_thread_switches=$_wakes queue_interrupts=$_qirqs"
  if [ $((_wakes * 10)) -lt "$_qirqs" ]; then
    echo "ok: $_nl: vhost's interrupts bypass the VMM: its I/O thread switched $_wakes times for $_qirqs queue interrupts"
  else
    echo "CHECK FAILED: $_nl: the I/O thread switched $_wakes times for $_qirqs queue interrupts: vhost's calls are not KVM irqfds"; return 1
  fi
}

# net_exits (in net_session, NET_EXITS=1): L1's KVM counters around L2's transfers (phase_exits,
# the idle rate subtracted), per packet eth0 moved during them: ${_nl}_user_exits_per_packet
# (exits that reached the VMM: a kick it traps, an interrupt it injects through an exit),
# ${_nl}_mmio_exits_per_packet, ${_nl}_exits_per_packet (KVM's own too).
net_exits() {
  _counts=$(phase_exits "$_log" "RIG-L2 net" 2>/tmp/phase-err) || { echo "CHECK FAILED: $_nl: $(cat /tmp/phase-err)"; return 1; }
  wait_for "$_log" ' RIG-L2 net phase packets=[0-9]' 30 >/dev/null || { echo "CHECK FAILED: $_nl: L2 gave no packet count"; return 1; }
  _pk=$(sed -n 's/.* RIG-L2 net phase packets=\([0-9]*\).*/\1/p' "$_log")
  [ "${_pk:-0}" -gt 0 ] || { echo "CHECK FAILED: $_nl: no packets in the transfer phase"; return 1; }
  echo "$_counts" | awk -v l="$_nl" -v p="$_pk" '{
    printf "%s_exits_per_packet %.2f\n%s_mmio_exits_per_packet %.2f\n%s_user_exits_per_packet %.2f\n", l, $1 / p, l, $2 / p, l, $4 / p
  }' | while read -r _n _v; do report_time "$_n" "$_v"; done
  echo "$_nl: $_pk packets in the transfer phase; exits, mmio, io, user (idle-subtracted): $_counts"
}

# irq_count LOG NAME: the interrupts of the virtio vector NAME (e.g. input.1), summed over CPUs.
irq_count() {
  # (Console lines end in CR LF.)
  sed -n "s/.* RIG-L2 net irq *[0-9]*: *\(.*virtio[0-9]*-$2\)[^0-9]*\$/\1/p" "$1" | head -n 1 |
    awk '{ s = 0; for (i = 1; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print s }'
}

# mq_check LOG LABEL: two vCPUs and mq=on with a two-queue tap: the driver set up two queue
# pairs, and the ping from CPU 1 went out on transmit queue 1 and came back on receive queue 1.
mq_check() {
  _mf=0
  grep -q ' RIG-L2 net queues rx-0 rx-1 tx-0 tx-1' "$1" ||
    { echo "CHECK FAILED: $2: eth0's queues are '$(sed -n 's/.* RIG-L2 net queues //p' "$1")', want rx-0 rx-1 tx-0 tx-1"; _mf=1; }
  grep -q ' RIG-L2 net cpu1-ping received=5' "$1" ||
    { echo "CHECK FAILED: $2: the ping from CPU 1: '$(sed -n 's/.* RIG-L2 net cpu1-ping //p' "$1")', want received=5"; _mf=1; }
  for _q in input.1 output.1; do
    _n=$(irq_count "$1" $_q)
    [ -n "$_n" ] && [ "$_n" -gt 0 ] || { echo "CHECK FAILED: $2: no $_q interrupts counted ('${_n:-no such vector}')"; _mf=1; }
  done
  [ $_mf = 0 ] && echo "ok: $2: two queue pairs; CPU 1's ping used pair 1 ($(irq_count "$1" input.1) input.1, $(irq_count "$1" output.1) output.1 interrupts)"
  return $_mf
}

# vmm_threads (in net_session, NET_THREADS=1: make rig-bench): for each thread of the VMM, the
# CPU time it ran and the time it spent runnable but waiting for a CPU, in ms, and how many
# times it ran (L1's /proc/PID/task/TID/schedstat), so VMMs sharing L1's CPU with L2's vCPU can
# be compared thread by thread.
vmm_threads() {
  _tp=$(cat /tmp/l2.pid 2>/dev/null) || return 0
  for _t in /proc/$_tp/task/*; do
    read -r _run _wait _slices <$_t/schedstat 2>/dev/null || continue
    echo "RIG-THREADS $_nl $(cat $_t/comm 2>/dev/null | tr ' ' _) run_ms=$((_run / 1000000)) wait_ms=$((_wait / 1000000)) slices=$_slices"
  done
}

# net_bench ROUNDS (rig.netbench=ROUNDS on L1's command line: make rig-bench): only the
# transfers, QEMU against Switchyard, ROUNDS times in this one L1 boot, each round one boot of
# each VMM with vhost=off and one with vhost=on, the same cold-plugged NIC on both, the order
# swapped every round (so neither VMM always runs on a warmer L1). A single boot's times swing
# by 2x here; the figures are the medians per VMM, their ratio, and the spread of the
# per-round ratios. Every session keeps its checks (ping, checksums, vhost's worker).
net_bench() {
  _rounds=$1 NET_EXITS= NET_THREADS=1
  _r=0
  while [ $_r -lt "$_rounds" ]; do
    _r=$((_r + 1))
    for _vhost in off on; do
      _m=; [ $_vhost = on ] && _m=_vhost
      if [ $((_r % 2)) = 1 ]; then _order="qemu switchyard"; else _order="switchyard qemu"; fi
      for _vmm in $_order; do
        if [ $_vmm = qemu ]; then
          NET_DEVICE_EXTRA=,romfile= net_session "qemu${_m}_r$_r" $_vhost $(qemu_l2_command)
        else
          NET_DEVICE_EXTRA= net_session "switchyard${_m}_r$_r" $_vhost /switchyard -machine q35 -accel kvm -m 512 -smp $L2_SMP \
            -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY
        fi
      done
    done
  done
  # Medians, ratio of medians (QEMU's time over Switchyard's, Switchyard's request/response
  # rate over QEMU's: above 1, Switchyard is faster), and the lowest and highest ratio of a round.
  for _m in "" _vhost; do
    for _d in tx_4MiB rx_4MiB rr_per_s; do
      awk -v m="$_m" -v d="$_d" -F'[ =]' '
        function median(a, n,   i, j, t) {
          for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
          return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        $2 ~ "^(qemu|switchyard)" m "_r[0-9]+_" d "$" {
          match($2, /_r[0-9]+_/); vmm = substr($2, 1, RSTART - 1); round = substr($2, RSTART + 2, RLENGTH - 3)
          t[vmm, round] = $3; if (vmm ~ /^qemu/) q[++nq] = $3; else s[++ns] = $3
        }
        END {
          if (nq == 0 || ns == 0) exit
          rate = d ~ /_per_s$/
          for (k in t) { split(k, kk, SUBSEP); if (kk[1] ~ /^qemu/ && ((("switchyard" m), kk[2]) in t)) {
            qv = t[kk[1], kk[2]]; sv = t["switchyard" m, kk[2]]; r[++nr] = rate ? sv / qv : qv / sv } }
          mq = median(q, nq); ms = median(s, ns); lo = hi = r[1]
          for (i = 2; i <= nr; i++) { if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
          unit = rate ? "_per_s" : "_s"; sub(/_(4MiB|per_s)$/, "", d)
          printf "bench%s_%s_qemu_median%s %.2f\nbench%s_%s_switchyard_median%s %.2f\nbench%s_%s_ratio_of_medians %.2f\nbench%s_%s_round_ratios_low_high %.2f-%.2f/%d\n",
            m, d, unit, mq, m, d, unit, ms, m, d, rate ? ms / mq : mq / ms, m, d, lo, hi, nr
        }' /tmp/net-times
    done
  done | while read -r _n _v; do report_time "$_n" "$_v"; done
}
_bench=$(sed -n 's/.*rig\.netbench=\([0-9][0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$_bench" ]; then
  [ -x /switchyard ] || { echo "CHECK FAILED: no /switchyard in this initramfs"; exit 1; }
  net_bench "$_bench"
  exit $rc
fi

# KVM exits per packet, for the sessions that do not hot-plug (L1's debugfs counters).
NET_EXITS=
if kvm_counters_ready; then NET_EXITS=1; else echo "no KVM statistics in L1's debugfs: no exit counts"; fi
NET_DEVICE_EXTRA=,romfile=
net_session qemu off $(qemu_l2_command)
net_session qemu_vhost on $(qemu_l2_command)
NET_DEVICE_EXTRA=
if [ -x /switchyard ]; then
  # The userspace datapath on a NIC hot-plugged after boot: plugged, checked, unplugged,
  # plugged again on the same netdev with packed=on (L2 takes the packed ring), pinged, unplugged.
  NET_HOTPLUG=2 _exits=$NET_EXITS NET_EXITS= NET_PACKED=1
  net_session switchyard off /switchyard -machine q35 -accel kvm -m 512 -smp $L2_SMP \
    -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY
  NET_HOTPLUG= NET_EXITS=$_exits NET_PACKED=
  # vhost=on as QEMU's vhost boot: one queue pair, the same vCPUs, for the ratios below.
  # (make rig-full only: rig.full=1 on L1's command line; make test keeps under 45 minutes.)
  grep -q rig.full=1 /proc/cmdline && net_session switchyard_vhost on /switchyard -machine q35 -accel kvm -m 512 -smp $L2_SMP \
    -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY
  # vhost=on: the kernel moves the frames; this boot also proves multiqueue: two vCPUs, a
  # two-queue tap, mq=on (a vhost-net instance per pair).
  # And set_link under vhost: off takes the taps from vhost and drops what the host sends.
  NET_NETDEV_EXTRA=,queues=2 NET_DEVICE_EXTRA=,mq=on,vectors=6 NET_LINK=1
  net_session switchyard_vhost_mq on /switchyard -machine q35 -accel kvm -m 512 -smp 2 \
    -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY
  NET_NETDEV_EXTRA= NET_DEVICE_EXTRA= NET_LINK=
else
  echo "CHECK FAILED: no /switchyard in this initramfs"; rc=1
fi
# Throughput ratios Switchyard / QEMU from this one L1 boot (a time ratio turned over: above 1
# is faster), userspace datapaths against each other and vhost-net against vhost-net.
speed_ratio() { # NAME SWITCHYARD_TIME QEMU_TIME
  [ -n "$2" ] && [ -n "$3" ] && awk "BEGIN { exit !($2 > 0) }" && report_time "$1" "$(awk "BEGIN { printf \"%.2f\", $3 / $2 }")"
}
figure() { sed -n "s/.*RIG-TIME $1=//p" /tmp/net-times | tail -n 1; }
for _d in tx rx; do
  speed_ratio "ratio_${_d}_switchyard_over_qemu" "$(figure switchyard_${_d}_4MiB)" "$(figure qemu_${_d}_4MiB)"
  speed_ratio "ratio_${_d}_vhost_switchyard_over_qemu" "$(figure switchyard_vhost_${_d}_4MiB)" "$(figure qemu_vhost_${_d}_4MiB)"
done
# Request/response is a rate: the ratio is Switchyard's over QEMU's as it stands.
speed_ratio ratio_rr_switchyard_over_qemu "$(figure qemu_rr_per_s)" "$(figure switchyard_rr_per_s)"
speed_ratio ratio_rr_vhost_switchyard_over_qemu "$(figure qemu_vhost_rr_per_s)" "$(figure switchyard_vhost_rr_per_s)"
exit $rc
