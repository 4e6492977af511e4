#!/bin/sh
# vfio-busreset: assigned devices whose only reset is their bus's, in two sessions. L1 has L0's
# e1000 (no FLR, no PM) alone behind a root port and as a two-function device behind another
# (vfio-busreset.l0). Each session: `switchyard host bind` gives the function to vfio-pci (the
# pair's whole group: --group) and Switchyard assigns it to L2 (rig.l2=busreset
# rig.l2reboot=1). L2 enables the function, reads the receive descriptor base register (RDBAL,
# BAR 0 + 0x2800; 0 after a reset), sets it to a marker and reboots itself; the VMM resets the
# machine and with it the function. The second boot must read 0 where the first left the
# marker: the device was reset, which nothing but a bus reset does while the VMM holds it.
# - alone: Linux's reset_method is "bus", vfio-pci offers VFIO_DEVICE_RESET and carries it out
#   as a secondary bus reset of the port;
# - function 0 of the pair: a bus reset would reach function 1 too, so vfio-pci offers no
#   VFIO_DEVICE_RESET, and the VMM resets the bus itself with VFIO_DEVICE_PCI_HOT_RESET,
#   proving it holds the group of every function the reset reaches (the VMM's standard error
#   must name no failed reset).
# Also checked from outside the VMM: the reset methods L1's kernel sees, the functions still on
# vfio-pci after the VMM exits.
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh
fails=0

# busreset_session LABEL BDF: one boot of L2 with BDF assigned, the checks above.
busreset_session() {
  _log=/tmp/l2-busreset-$1.log
  L2_APPEND_LINE="$(l2_append busreset) rig.l2reboot=1"
  start_vmm "$_log" /switchyard -machine q35 -accel kvm -m 512 -smp $L2_SMP -kernel $L2_SWITCHYARD_KERNEL \
    -initrd $L2_INITRD -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1 -device vfio-pci,host=$2,bus=rp1,id=nic0
  wait_for "$_log" ' RIG-L2 poweroff' 240 >/dev/null || echo "$1: L2 did not finish (no poweroff line)"
  wait_vmm_exit "$_log" 30
  echo "--- L2 console ($1), times relative to VMM start:"
  show_l2_log "$_log"
  check_vmm_exit "$_log" "switchyard ($1)" || fails=$((fails + 1))
  sed -n 's/.* RIG-L2 busreset //p' "$_log" | tr -d '\r' >/tmp/busreset-$1.txt
  _first=$(sed -n '1s/.*rdbal=\(0x[0-9A-Fa-f]*\).*/\1/p' /tmp/busreset-$1.txt)
  _set=$(sed -n 's/^set rdbal=\(0x[0-9A-Fa-f]*\).*/\1/p' /tmp/busreset-$1.txt | head -n 1)
  _after=$(sed -n 's/^boot .*rdbal=\(0x[0-9A-Fa-f]*\).*/\1/p' /tmp/busreset-$1.txt | sed -n 2p)
  check "$1: L2 set RDBAL to the marker before its reboot (read back $_set)" [ "$_set" = 0x12345600 ]
  check "$1: L2 rebooted" grep -q ' RIG-L2 rebooted' "$_log"
  check "$1: after the reboot RDBAL is 0 again (first boot read $_first, set $_set, second boot read $_after): the bus reset reached the device" \
    [ "$_after" = 0x00000000 ]
  check "$1: $2 still on vfio-pci after the VMM exited" [ "$(driver_of $2)" = vfio-pci ]
  check "$1: the VMM reported no failed reset" sh -c "! grep -q -e 'cannot be reset' -e 'bus reset is not done' -e 'VFIO_DEVICE_PCI_HOT_RESET' -e 'VFIO_DEVICE_RESET' $_log.err"
}

# The pair is the e1000 with a function 1; the lone one is the other.
lone="" pair0="" pair1=""
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor):$(cat $d/device)" = 0x8086:0x100e ] || continue
  case ${d##*/} in *.1) pair1=${d##*/} ;; esac
done
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor):$(cat $d/device)" = 0x8086:0x100e ] || continue
  b=${d##*/}
  if [ -n "$pair1" ] && [ "${b%.*}" = "${pair1%.*}" ]; then [ "$b" = "$pair1" ] || pair0=$b; else lone=$b; fi
done
[ -n "$lone" ] || { echo "CHECK FAILED: no lone e1000 8086:100e in L1 (is vfio-busreset.l0 used?)"; exit 1; }
[ -n "$pair0" ] && [ -n "$pair1" ] || { echo "CHECK FAILED: no two-function e1000 in L1 (is vfio-busreset.l0 used?)"; exit 1; }

echo "lone e1000 $lone, reset methods: $(cat /sys/bus/pci/devices/$lone/reset_method 2>&1)"
check "L1's kernel has only the bus reset for $lone" [ "$(cat /sys/bus/pci/devices/$lone/reset_method)" = bus ]
/switchyard host bind $lone || { echo "CHECK FAILED: host bind $lone"; exit 1; }
check "$lone bound to vfio-pci" [ "$(driver_of $lone)" = vfio-pci ]
busreset_session lone $lone

# Function 0's reset_method still says "bus": Linux lists the methods when it adds function 0,
# before function 1 is on the bus. Trying it fails once function 1 is there, so vfio-pci offers
# no VFIO_DEVICE_RESET (2026-12-07, first run: the VMM took the hot-reset path, and Linux
# refused it with EINVAL while function 1 had no driver: vfio-pci resets a bus only when every
# function on it is its own; `host bind --group` now binds driverless members too).
echo "two-function e1000 $pair0 and $pair1 (IOMMU groups $(group_of $pair0), $(group_of $pair1)), reset methods of $pair0: $(cat /sys/bus/pci/devices/$pair0/reset_method 2>&1)"
check "both functions are in one IOMMU group" [ "$(group_of $pair0)" = "$(group_of $pair1)" ]
/switchyard host bind $pair0 --group || { echo "CHECK FAILED: host bind $pair0 --group"; exit 1; }
check "$pair0 and $pair1 bound to vfio-pci (--group binds the driverless function 1 too)" [ "$(driver_of $pair0) $(driver_of $pair1)" = "vfio-pci vfio-pci" ]
busreset_session pair $pair0
check "$pair1 (in the reset's reach, not assigned) still on vfio-pci" [ "$(driver_of $pair1)" = vfio-pci ]
[ $fails = 0 ]
