#!/bin/sh
# switchyard-acpihp: qemu-acpihp under QEMU, then the same under /switchyard with the same
# -global, in one L1 boot; each must pass its own checks, and the two facts files (driver
# bindings, hot-plug slots, acpiphp's slot count, each cycle's device, DEVICE_DELETED) must
# agree line by line. Skips (exit 77) when the image has no /switchyard or its help has no
# -global.
. /rig/lib.sh
if [ ! -x /switchyard ]; then
  echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77
fi
if ! /switchyard --help 2>&1 | grep -q -e 'acpi-pci-hotplug-with-bridge-support'; then
  echo "SKIP: /switchyard has no -global ICH9-LPC.acpi-pci-hotplug-with-bridge-support yet"; exit 77
fi
rc=0
acpihp_session qemu_acpihp $(qemu_acpihp_command) || rc=1
acpihp_session switchyard_acpihp /switchyard -machine q35 -accel kvm -m 512 -kernel $L2_SWITCHYARD_KERNEL \
  -initrd $L2_INITRD $ACPIHP_GLOBAL $TOPOLOGY || rc=1
echo "--- acpihp facts, QEMU (<) against Switchyard (>):"
if diff /tmp/acpihp-qemu_acpihp.facts /tmp/acpihp-switchyard_acpihp.facts; then
  echo "ok: the two VMMs agree on every line ($(grep -c . /tmp/acpihp-qemu_acpihp.facts) lines)"
else
  echo "CHECK FAILED: QEMU and Switchyard differ (lines above)"; rc=1
fi
exit $rc
