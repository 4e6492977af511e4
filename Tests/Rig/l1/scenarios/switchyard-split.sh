#!/bin/sh
# switchyard-split: the split irqchip (-machine q35,kernel-irqchip=split: local APICs in KVM,
# the IOAPIC in the VMM) with two vCPUs in L2, under QEMU and then under Switchyard in the same
# L1 boot. Each boots L2 in hot-plug mode with one pci-testdev plugged into and removed from the
# root port rp3 (pciehp) over QMP; L2 reports its interrupt counts before and after
# (rig.l2irq=1, l2/init). Under both VMMs: both CPUs online, the local timer counting on each,
# the serial line (ttyS0, IRQ 4) counting through the IO-APIC, the ACPI SCI on IO-APIC pin 9
# with the fasteoi (level) flow, pciehp's interrupt count rising over the cycle, and no
# complaint about interrupts in L2's dmesg; the two sessions must agree line by line.
# Skips (exit 77) when the image has no /switchyard or its help has no kernel-irqchip=split.
. /rig/lib.sh
if [ ! -x /switchyard ]; then
  echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77
fi
if ! /switchyard --help 2>&1 | grep -q -e 'kernel-irqchip=on|split'; then
  echo "SKIP: /switchyard has no -machine kernel-irqchip=split yet"; exit 77
fi
L2_SMP=2
HOTPLUG_TARGETS="rootport:rp3:"
HOTPLUG_APPEND=" rig.l2irq=1"
# Two L2 vCPUs on L1's two TCG vCPUs: init came at 96 s under Switchyard and 72 s under QEMU on
# a loaded host (2026-12-06), past the default 90 s wait.
L2_INIT_WAIT=180
# QEMU answered the device_del 0.8 s after the plug with "guest is busy (power indicator
# blinking)" in the second run; the unplug waits until the slot has settled.
HOTPLUG_SETTLE=3

# check_split_irqs LOG LABEL: L2's interrupt report (l2/init's irq_report) as the header says.
check_split_irqs() {
  _f=0
  _ready=$(sed -n 's/^[0-9.]* RIG-L2 irq stage=ready //p' "$1")
  _end=$(sed -n 's/^[0-9.]* RIG-L2 irq stage=end //p' "$1")
  echo "$2: L2 interrupts at ready: $_ready"
  echo "$2: L2 interrupts at the end: $_end"
  if [ -z "$_ready" ] || [ -z "$_end" ]; then echo "CHECK FAILED: $2: no interrupt report from L2"; return 1; fi
  _field() { echo "$1" | sed -n "s/.*$2=\([^ ]*\).*/\1/p"; }
  _cpus=$(sed -n 's/.* RIG-L2 cpus online=\([0-9-]*\).*/\1/p' "$1")
  [ "$_cpus" = 0-1 ] || { echo "CHECK FAILED: $2: L2's online CPUs are '${_cpus:-?}', want 0-1"; _f=$((_f + 1)); }
  _l0=$(_field "$_ready" loc) _l1=$(_field "$_end" loc)
  _a0=${_l0%,*} _b0=${_l0#*,} _a1=${_l1%,*} _b1=${_l1#*,}
  if [ -z "$_a1" ] || [ -z "$_b1" ] || [ "$_a1" -le "${_a0:-0}" ] || [ "$_b1" -le "${_b0:-0}" ]; then
    echo "CHECK FAILED: $2: the local timer did not count on both CPUs (LOC $_l0 -> $_l1)"; _f=$((_f + 1))
  fi
  _s=$(_field "$_end" serial)
  [ "${_s:-0}" -gt 0 ] || { echo "CHECK FAILED: $2: no serial (ttyS0, IRQ 4) interrupt"; _f=$((_f + 1)); }
  case "$_end" in
    *"sci=IO-APIC 9-fasteoi acpi"*) ;;
    *) echo "CHECK FAILED: $2: the SCI is not IO-APIC 9-fasteoi acpi"; _f=$((_f + 1)) ;;
  esac
  _p0=$(_field "$_ready" pciehp) _p1=$(_field "$_end" pciehp)
  [ "${_p1:-0}" -gt "${_p0:-0}" ] || { echo "CHECK FAILED: $2: pciehp's interrupts did not rise ($_p0 -> $_p1)"; _f=$((_f + 1)); }
  _c=$(sed -n 's/^[0-9.]* RIG-L2 irq complaints=\([0-9]*\).*/\1/p' "$1")
  [ "$_c" = 0 ] || { echo "CHECK FAILED: $2: ${_c:-?} interrupt complaints in L2's dmesg:"; grep ' RIG-L2 irq complaint ' "$1"; _f=$((_f + 1)); }
  [ $_f = 0 ] && echo "ok: $2: split irqchip: both CPUs' timers, ttyS0, the SCI (level) and pciehp deliver; no complaints"
  return $_f
}

# L1's KVM statistics (debugfs) sum the counters of the VMs that exist, so they are read while
# L2 runs: kvm_sampler OUT copies every counter ("name value" lines) into OUT every 2 s while a
# VM exists; its last copy is that VM's profile up to at most 2 s before it ended. kvm_profile
# prints it, nonzero counters only, so the two VMMs' exit profiles can be compared (an L1 that
# died under one of them, README "A frozen L1", would show what that VMM made KVM do differently).
mount -t debugfs none /sys/kernel/debug 2>/dev/null
kvm_sampler() {
  while :; do
    for _k in /sys/kernel/debug/kvm/*; do [ -f "$_k" ] && read _v <"$_k" 2>/dev/null && echo "${_k##*/} $_v"; done >/tmp/kvm-now
    read _e </sys/kernel/debug/kvm/exits 2>/dev/null && [ "${_e:-0}" -gt 0 ] && mv /tmp/kvm-now "$1"
    sleep 2
  done
}
kvm_profile() {
  [ -s "$1" ] || { echo "RIG-KVM $2: no KVM statistics ($(ls /sys/kernel/debug/kvm 2>&1 | head -c 120))"; return 0; }
  awk -v label="$2" '$2 ~ /^[0-9]+$/ && $2 > 0 { printf "%s %s=%s", (n++ ? "" : "RIG-KVM " label), $1, $2 } END { if (n) print "" }' "$1"
}
# profiled LABEL CMD...: CMD with kvm_sampler running, then LABEL's profile.
profiled() {
  _pl=$1; shift
  rm -f /tmp/kvm-$_pl
  kvm_sampler /tmp/kvm-$_pl &
  _ps=$!
  "$@"; _prc=$?
  kill $_ps 2>/dev/null; wait $_ps 2>/dev/null
  kvm_profile /tmp/kvm-$_pl $_pl
  return $_prc
}

rc=0
profiled qemu hotplug_session qemu $(qemu_l2_command | sed 's/ -M q35 / -M q35,kernel-irqchip=split /') || rc=1
profiled switchyard hotplug_session switchyard /switchyard -machine q35,kernel-irqchip=split -accel kvm -m 512 -smp $L2_SMP \
  -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY || rc=1
check_split_irqs /tmp/l2-hotplug-qemu.log qemu || rc=1
check_split_irqs /tmp/l2-hotplug-switchyard.log switchyard || rc=1
compare_hotplug_sessions qemu switchyard || rc=1
exit $rc
