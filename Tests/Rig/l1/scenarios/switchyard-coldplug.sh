#!/bin/sh
# switchyard-coldplug: devices given with -device at start-up behind PCIe ports, under QEMU and
# then under /switchyard in the same L1 boot. $TOPOLOGY cold-plugs t1 behind the root port rp1
# and t2 behind the switch downstream port dn1. L2 must see both with pciehp bound to their
# ports and no "Card not present" in its kernel log; then device_del of t1, of t2, and of the
# switch (up1, whose subtree up1, dn1, dn2 leaves with it): each time L2 lets go and a
# DEVICE_DELETED arrives for every id. What L2's lspci decodes of the two slots' Link Status and
# Slot Status must be the same under both VMMs. Figures: LABEL_boot_to_init, and per removal
# LABEL_NAME_unplug_device_deleted and LABEL_NAME_unplug_guest (L1 times from device_del).
# Skips (exit 77) when the image has no /switchyard.
. /rig/lib.sh
if [ ! -x /switchyard ]; then
  echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77
fi

# NAME:ID:IDS-DELETED:FUNCTIONS-LEAVING-L2 per removal.
REMOVALS="rootport:t1:t1:1 switchport:t2:t2:1 switch:up1:up1,dn1,dn2:3"

# coldplug_session LABEL CMD...: boots L2 in unplug mode under a VMM with QMP on the FIFO pair
# /tmp/qmp-LABEL.in/.out, checks what L2 found, then runs $REMOVALS. Returns 1 on failure.
coldplug_session() {
  _cl=$1; shift
  _clog=/tmp/l2-coldplug-$_cl.log _cq=/tmp/qmp-$_cl _crc=0
  set -- "$@" -chardev pipe,id=qmp,path=$_cq -mon chardev=qmp,mode=control
  rm -f $_cq.in $_cq.out
  mkfifo $_cq.in $_cq.out
  stamp <$_cq.out >$_cq.log &
  _drops=""
  for _r in $REMOVALS; do _drops="$_drops,${_r##*:}"; done
  L2_APPEND_LINE="$(l2_append unplug) rig.l2drops=${_drops#,}"
  start_vmm "$_clog" "$@"
  _coldplug_removals || _crc=1
  exec 3>&-
  wait_vmm_exit "$_clog" 30
  show_run "$_cl" "$_clog" $_cq.log
  check_l2_report "$_clog" "$_cl" || _crc=1
  _n=$(grep -c ' RIG-L2 coldslot .* pciehp=1' "$_clog")
  [ "$_n" = 2 ] || { echo "CHECK FAILED ($_cl): $_n cold-plugged slots with pciehp, want 2 (rp1, dn1)"; _crc=1; }
  grep -q ' RIG-L2 cardnotpresent=0' "$_clog" || { echo "CHECK FAILED ($_cl): pciehp logged 'Card not present' (or L2 did not say)"; _crc=1; }
  grep -q ' RIG-L2 unplug-timeout' "$_clog" && { echo "CHECK FAILED ($_cl): L2 still saw a removed device after 60 s"; _crc=1; }
  grep -q ' "error"' $_cq.log && { echo "CHECK FAILED ($_cl): QMP returned an error"; _crc=1; }
  # The slot registers as L2's lspci decoded them, without the console's time stamps.
  sed -n 's/.* RIG-L2 slotreg /slotreg /p' "$_clog" >/tmp/slotreg-$_cl
  [ -s /tmp/slotreg-$_cl ] || { echo "CHECK FAILED ($_cl): L2 printed no slot registers"; _crc=1; }
  return $_crc
}

_coldplug_removals() {
  _ti=$(wait_for "$_clog" ' RIG-L2 init ' 90) || { echo "$_cl: L2 did not reach init"; return 1; }
  report_time "${_cl}_boot_to_init" "$(elapsed "$VMM_START" "$_ti")"
  exec 3>$_cq.in
  wait_for $_cq.log '"QMP"' 10 >/dev/null || { echo "$_cl: no QMP greeting"; return 1; }
  _qmp '{"execute":"qmp_capabilities"}'
  wait_for $_cq.log '"return"' 10 >/dev/null || { echo "$_cl: qmp_capabilities failed"; return 1; }
  _n=1
  for _r in $REMOVALS; do
    _name=${_r%%:*}; _rest=${_r#*:}; _id=${_rest%%:*}; _rest=${_rest#*:}; _gone=${_rest%%:*}
    wait_for "$_clog" " RIG-L2 ready cycle=$_n " 90 >/dev/null || { echo "$_cl: L2 not ready for removal $_n ($_id)"; return 1; }
    _t0=$(now)
    _qmp "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"$_id\"}}"
    for _g in $(echo "$_gone" | tr ',' ' '); do
      _t1=$(wait_for $_cq.log "DEVICE_DELETED.*\"$_g\"" 30) || { echo "$_cl: no DEVICE_DELETED for $_g within 30 s of device_del $_id"; return 1; }
    done
    report_time "${_cl}_${_name}_unplug_device_deleted" "$(elapsed "$_t0" "$_t1")"
    _t1=$(wait_for "$_clog" " RIG-L2 unplugged cycle=$_n " 30) || { echo "$_cl: L2 did not let $_id go"; return 1; }
    report_time "${_cl}_${_name}_unplug_guest" "$(elapsed "$_t0" "$_t1")"
    _n=$((_n + 1))
  done
}

rc=0
coldplug_session qemu $(qemu_l2_command) || rc=1
coldplug_session switchyard /switchyard -machine q35 -accel kvm -m 512 -kernel $L2_SWITCHYARD_KERNEL \
  -initrd $L2_INITRD $TOPOLOGY || rc=1
echo "--- slot registers as L2's lspci decodes them (QEMU, then Switchyard):"
cat /tmp/slotreg-qemu /tmp/slotreg-switchyard 2>/dev/null
if cmp -s /tmp/slotreg-qemu /tmp/slotreg-switchyard; then
  echo "ok: the cold-plugged slots' Link Status and Slot Status read the same under both VMMs"
else
  echo "CHECK FAILED: L2 decodes the cold-plugged slots differently under QEMU and Switchyard"; rc=1
fi
exit $rc
