#!/bin/sh
# switchyard-sriov: SR-IOV VFs in a real guest. /switchyard boots L2 with the SR-IOV pci-testdev
# (sriov_max_vfs=12) behind the root port rp1, L2 in rig.l2=sriov mode (l2/init): Linux's
# pci-pf-stub binds to the PF by new_id, and sriov_numvfs enables $VFS VFs, disables them,
# enables them again, disables them, and enables them a last time; then L1 removes the PF with
# its VFs enabled (device_del, attention button). Checks, against SR-IOV 1.1 and the device's
# documented layout (First VF Offset 1, VF Stride 1, VF Device ID 1005, 4 KiB VF BAR 0):
# VF i at the PF's routing ID + 1 + i (past function 7 only with ARI, which Linux enables on
# rp1), named 1b36:1005 by Linux, its BAR 0 assigned at the PF's VF BAR 0 aperture + i * 4 KiB,
# each VF's BAR reaching its own registers, L2's lspci listing all $VFS; after sriov_numvfs=0 no
# VF is left; the PF's removal takes the PF and every VF out of L2 and ends in DEVICE_DELETED;
# Switchyard logs no guest error and exits with status 0. QEMU's pci-testdev has no SR-IOV, so
# this scenario runs under Switchyard only. Figures: sriov_boot_to_init, sriov_unplug_guest.
. /rig/lib.sh
if [ ! -x /switchyard ]; then
  echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77
fi

VFS=10
SRIOV_TOPOLOGY="-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1
-device pci-testdev,id=pf,bus=rp1,sriov_max_vfs=12"
log=/tmp/l2-sriov.log q=/tmp/qmp-sriov rc=0
rm -f $q.in $q.out
mkfifo $q.in $q.out
stamp <$q.out >$q.log &
L2_APPEND_LINE="$(l2_append sriov) rig.l2vfs=$VFS rig.l2drops=$((VFS + 1))"
start_vmm $log /switchyard -machine q35 -accel kvm -m 512 -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD \
  $SRIOV_TOPOLOGY -chardev pipe,id=qmp,path=$q -mon chardev=qmp,mode=control

_sriov_unplug() {
  _ti=$(wait_for $log ' RIG-L2 init ' 90) || { echo "L2 did not reach init"; return 1; }
  report_time sriov_boot_to_init "$(elapsed "$VMM_START" "$_ti")"
  exec 3>$q.in
  wait_for $q.log '"QMP"' 10 >/dev/null || { echo "no QMP greeting"; return 1; }
  _qmp '{"execute":"qmp_capabilities"}'
  wait_for $q.log '"return"' 10 >/dev/null || { echo "qmp_capabilities failed"; return 1; }
  wait_for $log ' RIG-L2 ready cycle=1 ' 120 >/dev/null || { echo "L2 did not get through its SR-IOV steps"; return 1; }
  _t0=$(now)
  _qmp '{"execute":"device_del","arguments":{"id":"pf"}}'
  wait_for $q.log 'DEVICE_DELETED.*"pf"' 30 >/dev/null || { echo "no DEVICE_DELETED for pf within 30 s"; return 1; }
  _t1=$(wait_for $log ' RIG-L2 unplugged cycle=1 ' 30) || { echo "L2 did not let the PF and its VFs go"; return 1; }
  report_time sriov_unplug_guest "$(elapsed "$_t0" "$_t1")"
}
_sriov_unplug || rc=1
exec 3>&-
wait_vmm_exit $log 30
show_run switchyard $log $q.log

fail() { echo "CHECK FAILED: $*"; rc=1; }
# The console's lines end in CR LF: checks read them without the CR.
tr -d '\r' <$log >$log.clean
log=$log.clean
line=$(grep -m1 ' RIG-L2 sriov pf=' $log)
pf=$(echo "$line" | sed -n 's/.* pf=\([^ ]*\) .*/\1/p')
echo "$line" | grep -q " totalvfs=12 drv=pci-pf-stub" || fail "PF line '$line', want TotalVFs 12 and pci-pf-stub bound"
pfbus=$(echo "$pf" | cut -d: -f2)
iov0=$(sed -n 's/.* RIG-L2 sriov iov0=\([0-9a-f]*\)-.*/\1/p' $log)
[ -n "$iov0" ] && [ "$iov0" != 0 ] || fail "the PF's VF BAR 0 aperture (resource 7) is not assigned"
base=$(sed -n 's/.* RIG-L2 sriov base devices=\([0-9]*\).*/\1/p' $log)
for c in 1 2; do
  i=0
  while [ $i -lt $VFS ]; do
    devfn=$((1 + i))  # the PF is function 0 of its link; First VF Offset 1, VF Stride 1
    want_addr=$(printf '0000:%s:%02x.%d' "$pfbus" $((devfn >> 3)) $((devfn & 7)))
    want_res=$(printf '%x-%x' $((0x$iov0 + i * 4096)) $((0x$iov0 + i * 4096 + 4095)))
    grep -q " RIG-L2 vf c=$c i=$i addr=$want_addr ids=1b36:1005 res0=$want_res\$" $log ||
      fail "c=$c VF $i: want addr=$want_addr ids=1b36:1005 res0=$want_res, L2 said '$(grep " RIG-L2 vf c=$c i=$i " $log | cut -d' ' -f4-)'"
    i=$((i + 1))
  done
  grep -q " RIG-L2 sriov mmio c=$c vfs=$VFS ok=$VFS\$" $log || fail "c=$c: not every VF's BAR 0 kept its own word"
  grep -q " RIG-L2 sriov disabled c=$c devices=$base virtfns=0\$" $log || fail "c=$c: VFs left after sriov_numvfs=0 (want $base functions)"
done
n=$(grep " RIG-L2 lspci $pfbus:" $log | grep -c '\[1b36:1005\]')
[ "$n" = $VFS ] || fail "L2's lspci lists $n VFs [1b36:1005] on bus $pfbus, want $VFS"
grep -q " RIG-L2 sriov enabled devices=$((base + VFS))\$" $log || fail "the last enable did not bring $VFS VFs"
grep -q ' RIG-L2 unplug-timeout' $log && fail "L2 still saw the PF or a VF 60 s after device_del"
grep -q ' "error"' $q.log && fail "QMP returned an error"
grep -q 'guest error' /tmp/l2-sriov.log.err && fail "Switchyard logged guest errors"
check_vmm_exit /tmp/l2-sriov.log switchyard || rc=1
[ $rc = 0 ] && echo "ok: $VFS VFs at their routing IDs with their BARs, twice disabled and re-enabled, removed with the PF"
exit $rc
