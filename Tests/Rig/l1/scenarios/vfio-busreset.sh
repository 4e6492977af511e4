#!/bin/sh
# vfio-busreset: an assigned device whose only reset is its bus's. L1 has L0's e1000 behind a
# root port of its own (vfio-busreset.l0): no FLR, no PM, so Linux's reset_method for it is
# "bus". `switchyard host bind` gives it to vfio-pci and Switchyard assigns it to L2
# (rig.l2=busreset rig.l2reboot=1). L2 enables the function, reads the receive descriptor base
# register (RDBAL, BAR 0 + 0x2800; 0 after a reset), sets it to a marker
# and reboots itself; the VMM resets the machine and with it the function (VFIO_DEVICE_RESET,
# which vfio-pci offers for it because the function is alone on its bus, and carries out as a
# secondary bus reset of its port: Linux's "bus" method). The second boot must read 0
# where the first left the marker: the device was reset, which nothing but that bus reset does
# while the VMM holds it. Also checked from outside the VMM: the reset method L1's kernel sees,
# the function still on vfio-pci after the VMM exits.
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh
fails=0

nic=$(pci_by_id 8086:100e) || { echo "CHECK FAILED: no e1000 8086:100e in L1 (is vfio-busreset.l0 used?)"; exit 1; }
echo "e1000 $nic, reset methods: $(cat /sys/bus/pci/devices/$nic/reset_method 2>&1)"
check "L1's kernel has only the bus reset for $nic" [ "$(cat /sys/bus/pci/devices/$nic/reset_method)" = bus ]
/switchyard host bind $nic || { echo "CHECK FAILED: host bind $nic"; exit 1; }
check "$nic bound to vfio-pci" [ "$(driver_of $nic)" = vfio-pci ]

log=/tmp/l2-busreset.log
L2_APPEND_LINE="$(l2_append busreset) rig.l2reboot=1"
start_vmm "$log" /switchyard -machine q35 -accel kvm -m 512 -smp $L2_SMP -kernel $L2_SWITCHYARD_KERNEL \
  -initrd $L2_INITRD -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1 -device vfio-pci,host=$nic,bus=rp1,id=nic0
wait_for "$log" ' RIG-L2 poweroff' 240 >/dev/null || echo "L2 did not finish (no poweroff line)"
wait_vmm_exit "$log" 30
echo "--- L2 console, times relative to VMM start:"
show_l2_log "$log"
check_vmm_exit "$log" switchyard || fails=$((fails + 1))
sed -n 's/.* RIG-L2 busreset //p' "$log" | tr -d '\r' >/tmp/busreset.txt
first=$(sed -n '1s/.*rdbal=\(0x[0-9A-Fa-f]*\).*/\1/p' /tmp/busreset.txt)
set_to=$(sed -n 's/^set rdbal=\(0x[0-9A-Fa-f]*\).*/\1/p' /tmp/busreset.txt | head -n 1)
after=$(sed -n 's/^boot .*rdbal=\(0x[0-9A-Fa-f]*\).*/\1/p' /tmp/busreset.txt | sed -n 2p)
check "L2 set RDBAL to the marker before its reboot (read back $set_to)" [ "$set_to" = 0x12345600 ]
check "L2 rebooted" grep -q ' RIG-L2 rebooted' "$log"
check "after the reboot RDBAL is 0 again (first boot read $first, set $set_to, second boot read $after): the bus reset reached the device" \
  [ "$after" = 0x00000000 ]
check "$nic still on vfio-pci after the VMM exited" [ "$(driver_of $nic)" = vfio-pci ]
[ $fails = 0 ]
