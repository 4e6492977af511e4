#!/bin/sh
# cfg-exits: VM exits per PCI config-space access of a Linux L2 guest, under QEMU and then under
# /switchyard in the same L1 boot, counted the same way for both: L1's KVM statistics in debugfs
# (/sys/kernel/debug/kvm/exits, mmio_exits, io_exits; the sums over L1's VMs, and only one runs
# at a time). L2 runs in rig.l2=cfgexits mode (l2/init): phases idle, spin, full, low, ext, each
# between a "begin" and an "end" line; L1 snapshots the counters when it sees each. Per phase P
# with K = bytes/4 dword accesses: (delta_P - delta_idle) / K for exits, mmio_exits, io_exits;
# "bg" also subtracts the busy vCPU's background (timer ticks, L1's own interrupts), the spin
# phase's rate per second times P's duration. Both VMMs must exit with status 0, reach
# extended config space through ECAM reserved in ACPI, and log the same config-space messages.
# Skips (77) without /switchyard.
. /rig/lib.sh
if [ ! -x /switchyard ]; then
  echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77
fi
/switchyard --help >/tmp/sy-help.txt 2>&1
if ! grep -q -e '-kernel' /tmp/sy-help.txt; then
  echo "SKIP: /switchyard has no -kernel option yet (Linux boot support)"; exit 77
fi
kvm_counters_ready || { echo "no KVM statistics in debugfs: $(ls $KSTAT 2>&1 | head -c 200)"; exit 1; }
PHASES="idle spin full low ext"

# measure LABEL CMD...: boots L2 in cfgexits mode, snapshots the counters at each phase marker
# into /tmp/cfg-LABEL.dat ("phase exits mmio io user" before, then after), prints the L2 console.
measure() {
  _label=$1; shift
  _log=/tmp/l2-cfg-$_label.log _dat=/tmp/cfg-$_label.dat _rc=0
  : >$_dat
  L2_APPEND_LINE=$(l2_append cfgexits)
  start_vmm "$_log" "$@"
  if _ti=$(wait_for "$_log" ' RIG-L2 init ' 90); then
    report_time "${_label}_boot_to_init" "$(elapsed "$VMM_START" "$_ti")"
    for _ph in $PHASES; do
      _pat=" RIG-L2 cfgphase $_ph +"
      wait_for "$_log" "${_pat}begin" 120 >/dev/null || { echo "$_label: L2 did not begin phase $_ph"; _rc=1; break; }
      _a=$(kvm_snap)
      # L2 sleeps 2 s after each marker; a snapshot later than that counted part of the work.
      grep -q -E "${_pat}end" "$_log" && { echo "$_label: $_ph: begin snapshot too late"; _rc=1; }
      wait_for "$_log" "${_pat}end" 120 >/dev/null || { echo "$_label: L2 did not end phase $_ph"; _rc=1; break; }
      _b=$(kvm_snap)
      grep -q " RIG-L2 cfgresult phase=$_ph " "$_log" && { echo "$_label: $_ph: end snapshot too late"; _rc=1; }
      echo "$_ph $_a $_b" >>$_dat
    done
    [ $_rc = 0 ] && { wait_for "$_log" ' RIG-L2 cfgexits-done' 30 >/dev/null || { echo "$_label: no cfgexits-done"; _rc=1; }; }
  else
    echo "$_label: L2 did not reach init within 90 s"; _rc=1
  fi
  wait_vmm_exit "$_log" 20
  echo "--- L2 console ($_label), times relative to VMM start:"
  show_l2_log "$_log"
  check_vmm_exit "$_log" "$_label" || _rc=1
  return $_rc
}

# figures LABEL: the per-access figures from /tmp/cfg-LABEL.dat and L2's cfgresult lines.
# Prints one table line per phase, RIG-TIME lines for the full phase (LABEL_exits_per_cfg_access,
# _mmio_, _io_, _bg) and for low and ext (LABEL_low_..., LABEL_ext_...); returns 1 when the full
# phase's figure is not sensible (no bytes read, no more exits than idle, outside 0.5-10).
figures() {
  sed -n 's/.* RIG-L2 cfgresult phase=\([a-z]*\) bytes=\([0-9]*\) seconds=\([0-9.]*\).*/R \1 \2 \3/p' \
    /tmp/l2-cfg-$1.log | cat - /tmp/cfg-$1.dat | awk -v L="$1" '
    $1 == "R" { bytes[$2] = $3; secs[$2] = $4; next }
    { ph[++n] = $1; de[$1] = $6 - $2; dm[$1] = $7 - $3; di[$1] = $8 - $4; du[$1] = $9 - $5 }
    END {
      if (!("idle" in de) || !("spin" in de) || !("full" in de) || !("spin" in secs)) { print L ": phases missing"; exit 1 }
      rate = secs["spin"] > 0 ? (de["spin"] - de["idle"]) / secs["spin"] : 0
      printf "%s: phase  accesses seconds  d_exits d_mmio  d_io  d_user   exits/acc mmio/acc io/acc bg/acc user/acc us/acc\n", L
      for (j = 1; j <= n; j++) {
        p = ph[j]; k = bytes[p] / 4
        printf "%s: %-5s %8d %7.2f %8d %6d %6d %7d", L, p, k, secs[p], de[p], dm[p], di[p], du[p]
        if (k > 0) printf "   %8.3f %8.3f %6.3f %6.3f %8.3f %6.0f", (de[p] - de["idle"]) / k, (dm[p] - dm["idle"]) / k,
          (di[p] - di["idle"]) / k, (de[p] - de["idle"] - rate * secs[p]) / k, (du[p] - du["idle"]) / k, secs[p] * 1e6 / k
        printf "\n"
      }
      printf "%s: busy background %.0f exits/s (spin phase)\n", L, rate
      for (j = 1; j <= n; j++) {
        p = ph[j]; k = bytes[p] / 4
        if (k <= 0) continue
        pre = (p == "full") ? L : L "_" p
        printf "RIG-TIME %s_exits_per_cfg_access=%.3f\n", pre, (de[p] - de["idle"]) / k
        printf "RIG-TIME %s_mmio_exits_per_cfg_access=%.3f\n", pre, (dm[p] - dm["idle"]) / k
        printf "RIG-TIME %s_io_exits_per_cfg_access=%.3f\n", pre, (di[p] - di["idle"]) / k
        printf "RIG-TIME %s_exits_per_cfg_access_bg=%.3f\n", pre, (de[p] - de["idle"] - rate * secs[p]) / k
        if (du[p] > 0) printf "RIG-TIME %s_user_exits_per_cfg_access=%.3f\n", pre, (du[p] - du["idle"]) / k
        printf "RIG-TIME %s_us_per_cfg_access=%.0f\n", pre, secs[p] * 1e6 / k
      }
      k = bytes["full"] / 4
      if (k <= 0) { print L ": CHECK FAILED: the full phase read no config bytes"; exit 1 }
      if (de["full"] <= de["idle"]) { print L ": CHECK FAILED: no more exits reading than idle"; exit 1 }
      x = (de["full"] - de["idle"]) / k
      if (x < 0.5 || x > 10) { printf "%s: CHECK FAILED: %.3f exits per access, outside 0.5-10\n", L, x; exit 1 }
    }'
}

# mechanism LABEL: how L2's Linux reaches config space (its MCFG/MMCONFIG/type 1 messages).
# A broken ECAM path fails: L2 must read extended config space (the root port's config file is
# 4096 bytes) and find ECAM reserved in ACPI motherboard resources (PNP0C01/PNP0C02 _CRS).
mechanism() {
  _mrc=0
  grep -h ' RIG-L2 cfgmech ' /tmp/l2-cfg-$1.log | sed "s/^[0-9.]* RIG-L2 cfgmech /$1 config mechanism: /"
  if ! grep -q ' RIG-L2 cfgexits .*config_size=4096 ' /tmp/l2-cfg-$1.log; then
    echo "CHECK FAILED: $1: L2's root port config file is not 4096 bytes: no extended config space ($(grep -o 'config_size=[0-9]*' /tmp/l2-cfg-$1.log))"
    _mrc=1
  fi
  # Linux says "MMCONFIG at [mem ...] reserved in ACPI motherboard resources" (or "not reserved in").
  if ! grep ' RIG-L2 cfgmech .*MMCONFIG at .* reserved in ACPI motherboard resources' /tmp/l2-cfg-$1.log | grep -q -v ' not reserved '; then
    echo "CHECK FAILED: $1: L2's Linux did not find ECAM reserved as an ACPI motherboard resource"
    _mrc=1
  fi
  return $_mrc
}

rc=0
measure qemu $(qemu_l2_command) || rc=1
measure switchyard /switchyard -machine q35 -accel kvm -m 512 -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY || rc=1
echo "--- results"
for l in qemu switchyard; do
  mechanism $l || rc=1
  figures $l >/tmp/cfg-fig-$l.txt || rc=1
  cat /tmp/cfg-fig-$l.txt
done
# The same kernel on the same q35 must take the same way to config space under both VMMs (the
# MCFG table's own lines are left out: its address and OEM fields are each VMM's own).
for l in qemu switchyard; do
  grep -h ' RIG-L2 cfgmech ' /tmp/l2-cfg-$l.log | sed 's/^[0-9.]* //; s/\[ *[0-9.]*\] //' | grep -v 'ACPI: .*MCFG' >/tmp/cfgmech-$l.txt
done
if [ -s /tmp/cfgmech-qemu.txt ] && cmp -s /tmp/cfgmech-qemu.txt /tmp/cfgmech-switchyard.txt; then
  echo "ok: L2's config-space messages are the same under both VMMs"
else
  echo "CHECK FAILED: L2's config-space messages differ (- qemu, + switchyard):"
  diff /tmp/cfgmech-qemu.txt /tmp/cfgmech-switchyard.txt | grep '^[-+][^-+]'; rc=1
fi
# switchyard/qemu of the full phase's figures: FIGURE (without the LABEL_ prefix) RATIO-NAME.
for f in exits_per_cfg_access:cfg_exits_ratio_switchyard_qemu exits_per_cfg_access_bg:cfg_exits_bg_ratio_switchyard_qemu \
         us_per_cfg_access:cfg_time_ratio_switchyard_qemu user_exits_per_cfg_access:cfg_user_exits_ratio_switchyard_qemu \
         low_user_exits_per_cfg_access:cfg_low_user_exits_ratio_switchyard_qemu \
         low_us_per_cfg_access:cfg_low_time_ratio_switchyard_qemu; do
  q=$(sed -n "s/^RIG-TIME qemu_${f%%:*}=//p" /tmp/cfg-fig-qemu.txt)
  s=$(sed -n "s/^RIG-TIME switchyard_${f%%:*}=//p" /tmp/cfg-fig-switchyard.txt)
  [ -n "$q" ] && [ -n "$s" ] && report_time "${f#*:}" "$(awk -v q="$q" -v s="$s" 'BEGIN { printf "%.3f", (q > 0) ? s / q : 0 }')"
done
# Switchyard's own claim: CONFIG_ADDRESS writes are coalesced, so a type 1 access (the low
# phase: offsets below 256, which Linux reads through CF8/CFC) reaches the VMM once, not twice.
su=$(sed -n 's/^RIG-TIME switchyard_low_user_exits_per_cfg_access=//p' /tmp/cfg-fig-switchyard.txt)
if [ -z "$su" ]; then
  echo "CHECK FAILED: no user-space exit count for Switchyard (tracepoint kvm_userspace_exit)"; rc=1
elif ! awk -v x="$su" 'BEGIN { exit !(x < 1.5) }'; then
  echo "CHECK FAILED: $su exits to Switchyard per type 1 config access; CONFIG_ADDRESS is not coalesced"; rc=1
fi
exit $rc
