#!/bin/sh
# qemu-hotplug: QEMU in L1 boots L2 with native hot-plug (PCIe for ports, SHPC for the PCI-PCI
# bridge; ACPI hot-plug off) and QMP on a pair of FIFOs (busybox nc has no -U). Once L2 is up,
# one cycle per hot-plug controller: device_add a pci-testdev into an empty slot, wait until L2
# sees it in /sys/bus/pci/devices, device_del it, wait for DEVICE_DELETED and for L2 to see it
# gone. Latencies are L1 times from the QMP command to the L2 console line (or QMP event).
. /rig/lib.sh
# NAME BUS [EXTRA-JSON]: the root port rp3 (pciehp), the switch downstream port dn2 (pciehp),
# the bridge br1 (shpchp).
TARGETS="rootport:rp3: switchport:dn2: shpc:br1:,\"addr\":\"2\""
set -- $TARGETS
cycles=$#
log=/tmp/l2-hotplug.log
rm -f /tmp/qmp.in /tmp/qmp.out
mkfifo /tmp/qmp.in /tmp/qmp.out
stamp </tmp/qmp.out >/tmp/qmp.log &
L2_APPEND_LINE="$(l2_append hotplug) rig.l2cycles=$cycles"
start_vmm "$log" $(qemu_l2_command) -chardev pipe,id=qmp,path=/tmp/qmp -mon chardev=qmp,mode=control
rc=0
qmp() { echo "$1" >&3; echo "qmp> $1"; }
fail() { echo "$1"; rc=1; }

cycle() { # N NAME BUS EXTRA
  n=$1 name=$2 bus=$3 extra=$4
  if [ "$n" = 1 ]; then ready=' RIG-L2 ready devices='; else ready=" RIG-L2 ready cycle=$n "; fi
  wait_for "$log" "$ready" 60 >/dev/null || { fail "L2 not ready for cycle $n ($name)"; return 1; }
  t_add=$(now)
  qmp "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"pci-testdev\",\"id\":\"hp$n\",\"bus\":\"$bus\"$extra}}"
  t_seen=$(wait_for "$log" " RIG-L2 plugged cycle=$n " 30) || { fail "L2 did not see the device plugged into $bus"; return 1; }
  report_time "qemu_${name}_plug" "$(elapsed "$t_add" "$t_seen")"
  t_del=$(now)
  qmp "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"hp$n\"}}"
  t_ev=$(wait_for /tmp/qmp.log "DEVICE_DELETED.*\"hp$n\"" 30) || { fail "no DEVICE_DELETED for hp$n within 30 s"; return 1; }
  report_time "qemu_${name}_unplug_device_deleted" "$(elapsed "$t_del" "$t_ev")"
  t_gone=$(wait_for "$log" " RIG-L2 unplugged cycle=$n " 30) || { fail "L2 did not see hp$n leave $bus"; return 1; }
  report_time "qemu_${name}_unplug_guest" "$(elapsed "$t_del" "$t_gone")"
}

run() {
  ti=$(wait_for "$log" ' RIG-L2 init ' 90) || { fail "L2 did not reach init"; return; }
  report_time qemu_boot_to_init "$(elapsed "$VMM_START" "$ti")"
  wait_for "$log" ' RIG-L2 ready devices=' 60 >/dev/null || { fail "L2 not ready"; return; }
  exec 3>/tmp/qmp.in
  wait_for /tmp/qmp.log '"QMP"' 10 >/dev/null || { fail "no QMP greeting"; return; }
  qmp '{"execute":"qmp_capabilities"}'
  wait_for /tmp/qmp.log '"return"' 10 >/dev/null || { fail "qmp_capabilities failed"; return; }
  n=1
  for target in $TARGETS; do
    name=${target%%:*}; rest=${target#*:}; bus=${rest%%:*}; extra=${rest#*:}
    cycle $n "$name" "$bus" "$extra" || return
    n=$((n + 1))
  done
}
run
exec 3>&-
wait_vmm_exit "$log" 20
echo "--- L2 console, times relative to VMM start:"
show_l2_log "$log"
echo "--- QMP replies and events, times relative to VMM start:"
show_l2_log /tmp/qmp.log | cut -c1-200
grep -q ' RIG-L2 hotplug-timeout' "$log" && fail "L2's hot-plug watch timed out"
grep -q ' "error"' /tmp/qmp.log && fail "QMP returned an error"
exit $rc
