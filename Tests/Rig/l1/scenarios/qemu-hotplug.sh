#!/bin/sh
# qemu-hotplug: QEMU in L1 boots L2 (native PCIe hot-plug, QMP on a pair of FIFOs: busybox nc
# has no -U). Once L2 is up: device_add a pci-testdev into the empty root port rp3, wait until
# L2 sees it in /sys/bus/pci/devices, device_del it, wait for DEVICE_DELETED and for L2 to see
# it gone. Latencies are L1 times from the QMP command to the L2 line (or the QMP event).
. /rig/lib.sh
log=/tmp/l2-hotplug.log
rm -f /tmp/qmp.in /tmp/qmp.out
mkfifo /tmp/qmp.in /tmp/qmp.out
stamp </tmp/qmp.out >/tmp/qmp.log &
L2_APPEND_LINE=$(l2_append hotplug)
start_vmm "$log" $(qemu_l2_command) -chardev pipe,id=qmp,path=/tmp/qmp -mon chardev=qmp,mode=control
rc=0
qmp() { echo "$1" >&3; echo "qmp> $1"; }
fail() { echo "$1"; rc=1; }
run() {
  ti=$(wait_for "$log" ' RIG-L2 init ' 90) || { fail "L2 did not reach init"; return; }
  report_time qemu_boot_to_init "$(elapsed "$VMM_START" "$ti")"
  tr=$(wait_for "$log" ' RIG-L2 ready' 60) || { fail "L2 not ready"; return; }
  exec 3>/tmp/qmp.in
  wait_for /tmp/qmp.log '"QMP"' 10 >/dev/null || { fail "no QMP greeting"; return; }
  qmp '{"execute":"qmp_capabilities"}'
  wait_for /tmp/qmp.log '"return"' 10 >/dev/null || { fail "qmp_capabilities failed"; return; }

  t_add=$(now)
  qmp '{"execute":"device_add","arguments":{"driver":"pci-testdev","id":"hp1","bus":"rp3"}}'
  t_seen=$(wait_for "$log" ' RIG-L2 plugged' 30) || { fail "L2 did not see the plugged device within 30 s"; return; }
  report_time qemu_plug_latency "$(elapsed "$t_add" "$t_seen")"

  t_del=$(now)
  qmp '{"execute":"device_del","arguments":{"id":"hp1"}}'
  t_ev=$(wait_for /tmp/qmp.log 'DEVICE_DELETED.*hp1' 30) || { fail "no DEVICE_DELETED within 30 s"; return; }
  report_time qemu_unplug_device_deleted "$(elapsed "$t_del" "$t_ev")"
  t_gone=$(wait_for "$log" ' RIG-L2 unplugged' 30) || { fail "L2 did not see the device leave"; return; }
  report_time qemu_unplug_guest_sees_removal "$(elapsed "$t_del" "$t_gone")"
}
run
exec 3>&-
wait_vmm_exit "$log" 20
echo "--- L2 console, times relative to VMM start:"
show_l2_log "$log"
echo "--- QMP replies and events, times relative to VMM start:"
show_l2_log /tmp/qmp.log | cut -c1-200
grep -q ' RIG-L2 hotplug-timeout' "$log" && fail "L2's hot-plug watch timed out"
exit $rc
