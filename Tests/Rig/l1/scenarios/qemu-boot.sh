#!/bin/sh
# qemu-boot: QEMU in L1 boots L2 on q35 with KVM and the rig topology (lib.sh); L2 prints the
# PCI functions, drivers and hot-plug services it found; the checks compare them with TOPOLOGY.
. /rig/lib.sh
boot_and_check qemu /tmp/l2-qemu.log $(qemu_l2_command)
