#!/bin/sh
# switchyard-hotplug: qemu-hotplug's cycles (same topology, same figures) under QEMU first and
# then under /switchyard in the same L1 boot, so the two compare side by side. Switchyard then
# boots L2 once more for a surprise removal from the root port (device_del x-surprise: the port
# offers Hot-Plug Surprise, so pciehp removes the device without its 5 s button wait). Not from
# the switch downstream port: it has an attention button and no DLL Link Active reporting, so
# pciehp enables neither Presence Detect Changed nor a link event that could announce it, and
# L2 never notices the removal (seen in the rig: no interrupt, the device stays in sysfs).
# Both VMMs boot the PVH vmlinux (rig.l2kernel=bzimage: both the bzImage). The two native
# sessions must agree line by line: L2's function counts at each step, QMP replies, events.
# Skips (exit 77) when the image has no /switchyard or its help has no -chardev pipe.
. /rig/lib.sh
if [ ! -x /switchyard ]; then
  echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77
fi
if ! /switchyard --help 2>&1 | grep -q -e '-chardev pipe'; then
  echo "SKIP: /switchyard has no -chardev pipe (QMP on FIFOs) yet"; exit 77
fi
rc=0
hotplug_session qemu $(qemu_l2_command) || rc=1
SWITCHYARD="/switchyard -machine q35 -accel kvm -m 512 -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $TOPOLOGY"
hotplug_session switchyard $SWITCHYARD || rc=1
compare_hotplug_sessions qemu switchyard || rc=1
# The third boot: one surprise removal from rp3, plugged while the VM is stopped (QMP stop:
# the guest must not see the device before cont).
HOTPLUG_TARGETS="rootport:rp3:" HOTPLUG_DEL_EXTRA=',"x-surprise":true' HOTPLUG_PAUSE_FIRST=1
hotplug_session switchyard_surprise $SWITCHYARD || rc=1
exit $rc
