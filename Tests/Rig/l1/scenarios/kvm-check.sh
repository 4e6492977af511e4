#!/bin/sh
# kvm-check: L1 has a usable /dev/kvm from kvm-amd with nested SVM and NPT.
. /rig/lib.sh
[ -c /dev/kvm ] || { echo "no /dev/kvm"; exit 1; }
echo "/dev/kvm: $(ls -l /dev/kvm)"
echo "kvm_amd nested=$(cat /sys/module/kvm_amd/parameters/nested) npt=$(cat /sys/module/kvm_amd/parameters/npt)"
grep -m1 -o -w svm /proc/cpuinfo >/dev/null || { echo "no svm flag in /proc/cpuinfo"; exit 1; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
# A KVM_CREATE_VM round trip: QEMU creates the machine stopped (-S) and quits through QMP.
printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"query-kvm"}' '{"execute":"quit"}' |
  timeout 30 qemu-system-x86_64 -accel kvm -M q35 -m 64 -nodefaults -display none -S \
    -qmp stdio >/tmp/kvmcheck.out 2>&1
if ! grep -q '"enabled": true, "present": true' /tmp/kvmcheck.out; then
  echo "qemu -accel kvm failed:"; cat /tmp/kvmcheck.out; exit 1
fi
echo "qemu -accel kvm created a VM: $(grep '"present"' /tmp/kvmcheck.out)"
