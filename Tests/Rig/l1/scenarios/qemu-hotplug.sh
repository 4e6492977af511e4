#!/bin/sh
# qemu-hotplug: QEMU in L1 boots L2 with native hot-plug (PCIe for ports, SHPC for the PCI-PCI
# bridge; ACPI hot-plug off) and QMP on a pair of FIFOs (busybox nc has no -U). Once L2 is up,
# one cycle per hot-plug controller: device_add a pci-testdev into an empty slot, wait until L2
# sees it in /sys/bus/pci/devices, device_del it, wait for DEVICE_DELETED and for L2 to see it
# gone. Latencies are L1 times from the QMP command to the L2 console line (or QMP event).
. /rig/lib.sh
hotplug_session qemu $(qemu_l2_command)
