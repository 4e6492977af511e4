#!/bin/sh
# switchyard-reboot: L2 reboots once (rig.l2reboot=1: its init marks CMOS RAM, which survives a
# reset, and runs busybox reboot -f) and comes back to init, under QEMU and under Switchyard;
# each boot must pass the report checks, the second must show the same devices, resources and
# lspci -tvnn tree as the first, and QMP must report one RESET {"guest": true, "reason":
# "guest-reset"}. Then Switchyard with -no-reboot: the guest's reboot ends it with SHUTDOWN
# (same data) and exit status 0, and L2 does not boot again.
. /rig/lib.sh
if [ ! -x /switchyard ]; then
  echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77
fi
if ! /switchyard --help 2>&1 | grep -q -e '-no-reboot .*exit instead of rebooting'; then
  echo "SKIP: this /switchyard does not reboot guests (its -no-reboot is not optional)"; exit 77
fi

# reboot_session LABEL NOREBOOT CMD...: boots L2 with rig.l2reboot=1 under CMD with QMP on the
# FIFO pair /tmp/qmp-LABEL.in/.out; waits for the reboot (or, with NOREBOOT=1, for the VMM to
# exit) and checks what the session must show. Returns 1 on a failed check.
reboot_session() {
  _rl=$1 _nr=$2; shift 2
  _rlog=/tmp/l2-$_rl.log _rq=/tmp/qmp-$_rl _rrc=0
  rm -f $_rq.in $_rq.out
  mkfifo $_rq.in $_rq.out
  stamp <$_rq.out >$_rq.log &
  L2_APPEND_LINE="$(l2_append report) rig.l2reboot=1 rig.l2lspci=1"
  start_vmm "$_rlog" "$@" -chardev pipe,id=qmp,path=$_rq -mon chardev=qmp,mode=control
  exec 3>$_rq.in
  if wait_for $_rq.log '"QMP"' 30 >/dev/null; then
    echo '{"execute":"qmp_capabilities"}' >&3
  else
    echo "$_rl: no QMP greeting"; _rrc=1
  fi
  if _t1=$(wait_for "$_rlog" ' RIG-L2 rebooting' 120); then
    echo "$_rl: L2 reboots ($(elapsed "$VMM_START" "$_t1") s after the VMM started)"
    if [ "$_nr" = 1 ]; then
      wait_vmm_exit "$_rlog" 30
    elif _t2=$(wait_for "$_rlog" ' RIG-L2 rebooted' 120); then
      _t3=$(grep ' RIG-L2 init ' "$_rlog" | sed -n 2p | cut -d' ' -f1)
      [ -n "$_t3" ] && report_time "${_rl}_reset_to_init" "$(elapsed "$_t1" "$_t3")"
      wait_vmm_exit "$_rlog" 30
    else
      echo "$_rl: L2 did not come back after its reboot"; _rrc=1
      wait_vmm_exit "$_rlog" 5
    fi
  else
    echo "$_rl: L2 did not reach its reboot"; _rrc=1
    wait_vmm_exit "$_rlog" 5
  fi
  exec 3>&-
  show_run "$_rl" "$_rlog" $_rq.log
  [ $_rrc = 0 ] || return 1

  # The boots, apart: up to the reboot line, and after it.
  sed -n '1,/ RIG-L2 rebooting/p' "$_rlog" >"$_rlog.1"
  sed -n '/ RIG-L2 rebooting/,$p' "$_rlog" >"$_rlog.2"
  _vmm=${_rl%%_*}   # qemu or switchyard: check_l2_report tolerates some things under QEMU only
  check_l2_report "$_rlog.1" "$_vmm" || _rrc=1
  _st=$(sed -n 's/.* VMM-EXIT status=//p' "$_rlog")
  if [ "$_nr" = 1 ]; then
    [ "$_st" = 0 ] || { echo "CHECK FAILED: $_rl exited with status ${_st:-?}, want 0"; _rrc=1; }
    grep -q ' RIG-L2 init ' "$_rlog.2" && { echo "CHECK FAILED: $_rl booted L2 again despite -no-reboot"; _rrc=1; }
    _ev=$(grep -c '"event": *"SHUTDOWN", *"data": *{"guest": *true, *"reason": *"guest-reset"}' $_rq.log)
    [ "$_ev" = 1 ] || { echo "CHECK FAILED: $_ev SHUTDOWN events with guest-reset, want 1"; _rrc=1; }
    grep -q '"RESET"' $_rq.log && { echo "CHECK FAILED: $_rl sent RESET despite -no-reboot"; _rrc=1; }
    return $_rrc
  fi
  check_l2_report "$_rlog.2" "$_vmm" || _rrc=1
  # SeaBIOS under QEMU resets the machine once more when it finds itself rebooted (it restores
  # its pristine image), so QEMU sends two; Switchyard, with no firmware in the guest, one.
  _ev=$(grep -c '"event": *"RESET", *"data": *{"guest": *true, *"reason": *"guest-reset"}' $_rq.log)
  _want=1; [ "$_vmm" = qemu ] && _want=2
  [ "$_ev" = $_want ] || { echo "CHECK FAILED: $_ev RESET events with guest-reset, want $_want"; _rrc=1; }
  # The same tree both times, line by line (devices with their resources, and lspci -tvnn).
  grep -E ' RIG-L2 (dev|lspci) ' "$_rlog.1" | cut -d' ' -f2- >"$_rlog.tree1"
  grep -E ' RIG-L2 (dev|lspci) ' "$_rlog.2" | cut -d' ' -f2- >"$_rlog.tree2"
  if [ ! -s "$_rlog.tree1" ] || ! grep -q ' RIG-L2 lspci ' "$_rlog.1"; then
    echo "CHECK FAILED: $_rl: no lspci tree in the first boot's report"; _rrc=1
  elif ! cmp -s "$_rlog.tree1" "$_rlog.tree2"; then
    echo "CHECK FAILED: $_rl: the second boot's tree differs from the first's:"
    diff "$_rlog.tree1" "$_rlog.tree2" | head -n 20
    _rrc=1
  else
    echo "ok: $_rl: the same $(wc -l <"$_rlog.tree1") device and lspci lines after the reboot"
  fi
  return $_rrc
}

rc=0
# QEMU's L2 command line says -no-reboot; this comparison run reboots.
reboot_session qemu_reboot 0 $(qemu_l2_command | sed 's/ -no-reboot//') || rc=1
reboot_session switchyard_reboot 0 /switchyard -machine q35 -accel kvm -m 512 -smp $L2_SMP \
  -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY || rc=1
reboot_session switchyard_noreboot 1 /switchyard -machine q35 -accel kvm -m 512 -smp $L2_SMP -no-reboot \
  -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY || rc=1
exit $rc
