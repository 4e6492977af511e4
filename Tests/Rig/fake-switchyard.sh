#!/bin/sh
# A stand-in for the switchyard binary that checks the switchyard-boot scenario itself: it takes
# the command line the scenario gives Switchyard (-machine q35 -accel kvm -m 512 -kernel
# -initrd -append -device...) and runs QEMU with it, its serial console on standard output.
#   Tests/Rig/run.sh --switchyard Tests/Rig/fake-switchyard.sh switchyard-boot
# Its figures are QEMU's, so the switchyard/qemu ratios it yields should be about 1.
case "$1" in
  -h|--help) echo "fake switchyard (QEMU underneath): -machine -accel -m -kernel -initrd -append -device"; exit 0 ;;
esac
exec qemu-system-x86_64 -nodefaults -display none -serial stdio -no-reboot -cpu host \
  -global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off "$@"
