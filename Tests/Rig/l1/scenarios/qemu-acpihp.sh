#!/bin/sh
# qemu-acpihp: QEMU in L1 boots L2 with ACPI PCI hot-plug on (QEMU 10's q35 default,
# -global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on) and the rig's topology. L2 must bind
# acpiphp (slots registered, no pciehp: _OSC keeps native hot-plug); then device_add/device_del
# of a pci-testdev into rp3, dn2 and br1 addr 2, each announced by GPE0 bit 1 (_E01) and removed
# by the slot's _EJ0. Figures as qemu-hotplug's, prefixed qemu_acpihp_.
. /rig/lib.sh
acpihp_session qemu_acpihp $(qemu_acpihp_command)
