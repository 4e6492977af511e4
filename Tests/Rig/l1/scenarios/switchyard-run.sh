#!/bin/sh
# switchyard-run: what `make run` shows on a host whose KVM cannot boot a 64-bit guest. In L1,
# where KVM can, `switchyard kvm-probe` must say so; then `switchyard run --kernel --initrd`
# boots L2 on the built-in default machine, prints the guest's own lspci -tvnn and times a
# hot-plug into root port rp1, an unplug (attention button) and a surprise unplug.
. /rig/lib.sh
if [ ! -x /switchyard ]; then
  echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77
fi
if ! /switchyard --help 2>&1 | grep -q -e '--kernel [A-Z]'; then
  echo "SKIP: this /switchyard's run command cannot boot a guest (no --kernel)"; exit 77
fi
if ! /switchyard kvm-probe; then
  echo "FAIL: kvm-probe says L1's KVM cannot boot a 64-bit guest, but L1 has nested SVM"; exit 1
fi
{ /switchyard run --kernel $L2_SWITCHYARD_KERNEL --initrd $L2_INITRD; echo "VMM-EXIT $?"; } 2>&1 | tee /tmp/run.log
rc=0
check() { # DESCRIPTION REGEX
  if grep -q -E -e "$2" /tmp/run.log; then echo "ok: $1"; else echo "FAIL: $1 (no /$2/)"; rc=1; fi
}
check "switchyard run exited with 0" '^VMM-EXIT 0$'
check "the guest's lspci shows the q35 host bridge" '^guest: lspci .*\[8086:29c0\]'
check "the guest's lspci shows the ICH9 LPC" '^guest: lspci .*\[8086:2918\]'
check "the guest's lspci shows root port rp1 (00:04.0) with its own bus" '^guest: lspci .*-04\.0-\[02\]--'
check "the guest's lspci shows test endpoints" '^guest: lspci .*\[1b36:0005\]'
check "the guest saw the plug" '^guest: plugged cycle=1'
check "the guest saw the surprise removal" '^guest: unplugged cycle=2'
# The tree the real lspci drew inside the guest is the tree Switchyard's own model draws
# (`switchyard run` without a kernel: firmware enumeration, no vCPU), names included.
/switchyard run -m 512 | grep -v '^switchyard:' >/tmp/model-tree.txt
sed -n 's/^guest: lspci //p' /tmp/run.log >/tmp/guest-tree.txt
if [ -s /tmp/guest-tree.txt ] && cmp -s /tmp/model-tree.txt /tmp/guest-tree.txt; then
  echo "ok: the guest's lspci -tvnn equals Switchyard's model tree"
else
  echo "FAIL: the guest's lspci -tvnn differs from Switchyard's model tree:"; diff /tmp/model-tree.txt /tmp/guest-tree.txt; rc=1
fi
figure() { # NAME LINE-START
  v=$(sed -n "s/^$2 *\([0-9.]*\) s.*/\1/p" /tmp/run.log | head -n 1)
  [ -n "$v" ] && report_time "$1" "$v"
}
figure switchyard_run_boot_to_init 'boot to guest init'
figure switchyard_run_plug 'plug, guest sees it'
figure switchyard_run_replug 'plug again, guest sees it'
v=$(sed -n 's/^unplug (attention button) *guest lets go after \([0-9.]*\) s, DEVICE_DELETED after \([0-9.]*\) s/\1 \2/p' /tmp/run.log)
[ -n "$v" ] && { report_time switchyard_run_unplug_guest "${v% *}"; report_time switchyard_run_unplug_device_deleted "${v#* }"; }
v=$(sed -n 's/^unplug (surprise removal) *guest sees it gone after \([0-9.]*\) s, DEVICE_DELETED after \([0-9.]*\) s/\1 \2/p' /tmp/run.log)
[ -n "$v" ] && { report_time switchyard_run_surprise_guest "${v% *}"; report_time switchyard_run_surprise_device_deleted "${v#* }"; }
exit $rc
