#!/bin/sh
# switchyard-soak: plug/unplug cycles into a running L2 (issue 15's soak with a real guest).
# Switchyard boots L2 (the rig's topology, rig.l2=hotplug) with QMP on a FIFO; each cycle
# device_adds a pci-testdev into rp3, waits for L2 to see it, and unplugs it: by surprise
# (device_del x-surprise: pciehp removes it at once), and every SOAK_BUTTON_EVERY-th cycle
# through the attention button (pciehp's 5 s wait). Cycles: rig.soakcycles=N on L1's command
# line (run.sh --append), 8 by default (make test); make rig-soak runs 500.
# Leak accounting, outside the VMM's own word: before the first cycle and after the last, the
# VMM's open fds, threads and resident memory (/proc/PID), and its query-pci reply (bus numbers,
# bridge windows, every function and BAR) must be the same; L2's function count the same.
# Figures: soak_cycles, soak_seconds, soak_surprise_cycle_s and soak_button_cycle_s (mean
# wall time per cycle, a surprise cycle including 1.5 s for L2's pciehp to power the slot off),
# and the before/after table.
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh
report_time() { echo "RIG-TIME $1=$2"; }
cycles=8
for arg in $(cat /proc/cmdline); do case "$arg" in rig.soakcycles=*) cycles=${arg#rig.soakcycles=} ;; esac; done
SOAK_BUTTON_EVERY=10

log=/tmp/l2-soak.log q=/tmp/qmp-soak
rm -f $q.in $q.out; mkfifo $q.in $q.out
stamp <$q.out >$q.log &
# One cycle more than L1 runs: L2 then waits for a plug that never comes, and stays up while
# L1 takes its after-snapshot (QMP quit ends it).
L2_APPEND_LINE="$(l2_append hotplug) rig.l2cycles=$((cycles + 1))"
start_vmm "$log" /switchyard -machine q35 -accel kvm -m 512 -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY \
  -chardev pipe,id=qmp,path=$q -mon chardev=qmp,mode=control
exec 3<>$q.in
_qmp() { echo "$1" >&3; }

# snapshot NAME: the VMM's fds, threads and VmRSS (kB), and its query-pci reply, to /tmp/soak-NAME.*
snapshot() {
  _p=$(cat /tmp/l2.pid)
  echo "fds=$(ls /proc/$_p/fd | wc -l) threads=$(ls /proc/$_p/task | wc -l) rss_kB=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' /proc/$_p/status)" >/tmp/soak-$1.proc
  _before=$(grep -c '"id": *"pci-' $q.log)
  _qmp "{\"execute\":\"query-pci\",\"id\":\"pci-$1\"}"
  _i=0
  while [ "$(grep -c '"id": *"pci-' $q.log)" = "$_before" ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i + 1)); done
  grep "\"id\": *\"pci-$1\"" $q.log | tail -n 1 | cut -d' ' -f2- | sed "s/\"id\": *\"pci-$1\"//" >/tmp/soak-$1.pci
}

fails=0
if ! wait_for "$log" ' RIG-L2 ready devices=' 120 >/dev/null || ! wait_for $q.log '"QMP"' 10 >/dev/null; then
  echo "CHECK FAILED: L2 or QMP never became ready"; fails=1
else
  _qmp '{"execute":"qmp_capabilities"}'
  wait_for $q.log '"return"' 10 >/dev/null
  snapshot before
  t0=$(now) tb=0 nb=0 ts=0 ns=0 c=1
  while [ $c -le "$cycles" ]; do
    [ $c = 1 ] || wait_for "$log" " RIG-L2 ready cycle=$c " 60 >/dev/null || { echo "CHECK FAILED: L2 not ready for cycle $c"; fails=1; break; }
    tc=$(now)
    _qmp "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"pci-testdev\",\"id\":\"soak$c\",\"bus\":\"rp3\"}}"
    wait_for "$log" " RIG-L2 plugged cycle=$c " 30 >/dev/null || { echo "CHECK FAILED: L2 did not see soak$c (cycle $c)"; fails=1; break; }
    if [ $((c % SOAK_BUTTON_EVERY)) = 0 ]; then
      _qmp "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"soak$c\"}}"; kind=button
    else
      _qmp "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"soak$c\",\"x-surprise\":true}}"; kind=surprise
    fi
    wait_for $q.log "DEVICE_DELETED.*\"soak$c\"" 30 >/dev/null || { echo "CHECK FAILED: no DEVICE_DELETED for soak$c"; fails=1; break; }
    wait_for "$log" " RIG-L2 unplugged cycle=$c " 30 >/dev/null || { echo "CHECK FAILED: L2 still has soak$c (cycle $c, $kind)"; fails=1; break; }
    # After a surprise removal L2's pciehp powers the slot off and then sleeps 1 s (Linux 6.1
    # pciehp_disable_slot): a device added before that would be powered off with the slot, and
    # the VMM then unplugs it as QEMU does (seen: DEVICE_DELETED 60 ms after device_add).
    [ $kind = surprise ] && sleep 1.5
    d=$(elapsed "$tc" "$(now)")
    if [ $kind = button ]; then tb=$(awk "BEGIN { print $tb + $d }"); nb=$((nb + 1)); else ts=$(awk "BEGIN { print $ts + $d }"); ns=$((ns + 1)); fi
    [ $((c % 50)) = 0 ] && echo "soak: $c of $cycles cycles, $(elapsed "$t0" "$(now)") s"
    c=$((c + 1))
  done
  done_cycles=$((c - 1))
  report_time soak_cycles "$done_cycles"
  report_time soak_seconds "$(elapsed "$t0" "$(now)")"
  [ $ns -gt 0 ] && report_time soak_surprise_cycle_s "$(awk "BEGIN { printf \"%.2f\", $ts / $ns }")"
  [ $nb -gt 0 ] && report_time soak_button_cycle_s "$(awk "BEGIN { printf \"%.2f\", $tb / $nb }")"
  snapshot after
  echo "before: $(cat /tmp/soak-before.proc)"
  echo "after:  $(cat /tmp/soak-after.proc)"
  check "all $cycles cycles ran ($ns surprise, $nb button)" [ "$done_cycles" = "$cycles" ]
  for k in fds threads; do
    b=$(sed -n "s/.*$k=\([0-9]*\).*/\1/p" /tmp/soak-before.proc); a=$(sed -n "s/.*$k=\([0-9]*\).*/\1/p" /tmp/soak-after.proc)
    check "the VMM's $k are flat ($b before, $a after)" [ -n "$a" -a "$a" = "$b" ]
  done
  b=$(sed -n 's/.*rss_kB=\([0-9]*\).*/\1/p' /tmp/soak-before.proc); a=$(sed -n 's/.*rss_kB=\([0-9]*\).*/\1/p' /tmp/soak-after.proc)
  # Resident memory may settle (allocator caches, lazily touched pages) but not grow per cycle:
  # at most 4 MiB more after all the cycles.
  check "the VMM's resident memory is flat (${b} kB before, ${a} kB after)" [ "${a:-999999999}" -le $((${b:-0} + 4096)) ]
  check "query-pci is the same before and after (bus numbers, windows, functions, BARs)" \
    sh -c '[ -s /tmp/soak-before.pci ] && cmp -s /tmp/soak-before.pci /tmp/soak-after.pci'
  cmp -s /tmp/soak-before.pci /tmp/soak-after.pci || { echo "query-pci before: $(head -c 600 /tmp/soak-before.pci)"; echo "after: $(head -c 600 /tmp/soak-after.pci)"; }
  _qmp '{"execute":"quit"}'
fi
exec 3>&-
wait_vmm_exit "$log" 30
grep -q ' RIG-L2 hotplug-timeout' "$log" && { echo "CHECK FAILED: L2's hot-plug watch timed out"; fails=$((fails + 1)); }
grep -q ' "error"' $q.log && { echo "CHECK FAILED: QMP returned an error: $(grep ' "error"' $q.log | head -n 2)"; fails=$((fails + 1)); }
tail -n 5 "$log.err" 2>/dev/null | sed 's/^/vmm stderr: /'
if [ $fails != 0 ]; then
  echo "--- the end of L2's console and of the QMP log:"
  tail -n 40 "$log"; tail -n 12 $q.log | cut -c1-300
fi
[ $fails = 0 ]
