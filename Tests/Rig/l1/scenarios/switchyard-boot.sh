#!/bin/sh
# switchyard-boot: /switchyard (when the initramfs has it) boots L2 with the same topology as
# qemu-boot; QEMU boots it first in the same run so the two timings compare as a ratio. Both
# boot the bzImage; then Switchyard boots the PVH vmlinux too (no decompressor). Each boot must
# end with the VMM's exit status 0, and what L2 found under Switchyard (functions, drivers,
# hot-plug slots, the real lspci -tvnn, resource errors) must equal, line by line, what it
# found under QEMU. Switchyard runs under its seccomp sandbox (the -accel kvm default); one
# more PVH boot with -sandbox off gives the sandbox's cost as a ratio. sandbox-probe shows
# L1's Landlock holding a vCPU thread to the files set-up granted.
# Skips (exit 77) when the binary is absent or has no Linux boot (-kernel) support yet.
. /rig/lib.sh
if [ ! -x /switchyard ]; then
  echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77
fi
/switchyard --help >/tmp/sy-help.txt 2>&1
if ! grep -q -e '-kernel' /tmp/sy-help.txt; then
  echo "SKIP: /switchyard has no -kernel option yet (Linux boot support); its help says:"
  head -n 5 /tmp/sy-help.txt | sed 's/^/  /'
  exit 77
fi
rc=0
# QEMU and Switchyard get the same bzImage (the 64-bit boot protocol, xz decompressor included).
boot_and_check qemu /tmp/l2-qemu.log $(qemu_l2_command $L2_KERNEL) || rc=1
# Switchyard gets the same devices; its serial console is its standard output.
boot_and_check switchyard /tmp/l2-sy.log /switchyard -machine q35 -accel kvm -m 512 -smp $L2_SMP \
  -kernel $L2_KERNEL -initrd $L2_INITRD $TOPOLOGY || rc=1
# Then Switchyard boots the uncompressed ELF vmlinux through its PVH entry (figures switchyard_pvh_*).
if [ -e $L2_VMLINUX ]; then
  boot_and_check switchyard_pvh /tmp/l2-sy-pvh.log /switchyard -machine q35 -accel kvm -m 512 -smp $L2_SMP \
    -kernel $L2_VMLINUX -initrd $L2_INITRD $TOPOLOGY || rc=1
  # The same boot without the seccomp sandbox (on by default with -accel kvm): the ratio of
  # switchyard_pvh_total to switchyard_pvh_nosandbox_total is what the sandbox costs.
  # (make rig-full only: rig.full=1 on L1's command line; make test keeps under 45 minutes.)
  grep -q rig.full=1 /proc/cmdline && { boot_and_check switchyard_pvh_nosandbox /tmp/l2-sy-pvh-nosandbox.log /switchyard -machine q35 -accel kvm -m 512 \
    -smp $L2_SMP -sandbox off -kernel $L2_VMLINUX -initrd $L2_INITRD $TOPOLOGY || rc=1; }
else
  echo "CHECK FAILED: no $L2_VMLINUX in this initramfs for the PVH boot"; rc=1
fi
# L1's kernel (Debian 6.1) has Landlock: a locked-down vCPU thread opens the -kernel file set-up
# granted it, and /etc/passwd fails with the kernel's EACCES (Permission denied).
p=$(/switchyard sandbox-probe vcpu open-etc-passwd -kernel $L2_KERNEL 2>&1)
case $p in
  *"returned -1 (Permission denied"*) echo "ok: sandbox: a vCPU thread's open of an ungranted file: $p" ;;
  *) echo "CHECK FAILED: sandbox: a vCPU thread opened an ungranted file (no Landlock?): $p"; rc=1 ;;
esac
p=$(/switchyard sandbox-probe vcpu open-kernel -kernel $L2_KERNEL 2>&1)
case $p in
  *"returned -1"*|"") echo "CHECK FAILED: sandbox: a vCPU thread cannot open the granted -kernel: $p"; rc=1 ;;
  *) echo "ok: sandbox: the granted -kernel opens: $p" ;;
esac
# Same devices, same kernel: L2 must find the same functions, drivers, slots and lspci tree.
compare_l2_reports /tmp/l2-qemu.log qemu /tmp/l2-sy.log switchyard || rc=1
[ -e $L2_VMLINUX ] && { compare_l2_reports /tmp/l2-qemu.log qemu /tmp/l2-sy-pvh.log switchyard_pvh || rc=1; }
exit $rc
