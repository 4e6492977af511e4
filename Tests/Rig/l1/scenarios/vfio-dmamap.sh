#!/bin/sh
# vfio-dmamap: the time to map 1 GiB and 4 GiB of guest RAM for an assigned device (VFIO's
# MAP_DMA pins every page), under Switchyard and under QEMU in one L1 boot (make rig-full only:
# a benchmark, not a proof). Each VMM starts paused (-S: no guest code runs) with the e1000
# assigned, and the time from its start to its first QMP reply is taken (both map all of guest
# RAM while they build the machine, before they answer a command); the same start without the
# device is subtracted: what is left is the assignment, mostly the maps. Three starts of each
# kind, the median kept; the time from quit to exit (the unmaps) is printed. Figures: RIG-TIME VMM_dmamap_SIZE (seconds) and the ratios
# Switchyard/QEMU (above 1: Switchyard slower).
. /rig/lib.sh
[ -x /switchyard ] || { echo "SKIP: no /switchyard in this initramfs (build-initramfs.sh --switchyard PATH)"; exit 77; }
. /rig/scenarios/host-lib.sh
fails=0

nic=$(pci_by_id 8086:100e) || { echo "CHECK FAILED: no e1000 8086:100e in L1 (is vfio-dmamap.l0 used?)"; exit 1; }
/switchyard host bind $nic || { echo "CHECK FAILED: host bind $nic"; exit 1; }
echo "L1 memory: $(sed -n 's/^MemTotal: *//p' /proc/meminfo), transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled)"

# start_time LABEL CMD...: seconds from the VMM's start to its reply to qmp_capabilities (QEMU
# sends its greeting before it builds the machine, but answers commands only from its main
# loop, after; Switchyard answers once its machine is built too); then quits it and sets
# QUIT_TIME to the seconds from quit to the process's end (the unmaps). Prints nothing (and
# returns 1) when no reply came within 300 s.
start_time() {
  _gl=$1 _t1=""; shift
  _q=/tmp/qmp-dm-$_gl
  rm -f $_q.in $_q.out; mkfifo $_q.in $_q.out
  stamp <$_q.out >$_q.log &
  _t0=$(now)
  "$@" -S -chardev pipe,id=qmp,path=$_q -mon chardev=qmp,mode=control </dev/null >/tmp/dm-$_gl.out 2>&1 &
  _gp=$!
  exec 4<>$_q.in
  if wait_for $_q.log '"QMP"' 300 >/dev/null; then
    echo '{"execute":"qmp_capabilities"}' >&4
    _t1=$(wait_for $_q.log '"return"' 300)
  fi
  [ -n "${_t1:-}" ] || { kill -9 $_gp 2>/dev/null; exec 4>&-; sed 's/^/  /' /tmp/dm-$_gl.out | tail -n 5 >&2; return 1; }
  # How much of its memory is in transparent huge pages once the maps are made (pinning 2 MiB
  # pages is far cheaper than 4 KiB ones).
  sed -n 's/^AnonHugePages: *//p' /proc/$_gp/smaps_rollup 2>/dev/null >/tmp/dm-thp-$_gl
  _tq=$(now)
  echo '{"execute":"quit"}' >&4
  _i=0; while kill -0 $_gp 2>/dev/null && [ $_i -lt 1200 ]; do sleep 0.1; _i=$((_i + 1)); done
  kill -9 $_gp 2>/dev/null
  exec 4>&-
  elapsed "$_tq" "$(now)" >/tmp/dm-quit-$_gl
  elapsed "$_t0" "$_t1"
}

median3() { printf '%s\n%s\n%s\n' "$1" "$2" "$3" | sort -n | sed -n 2p; }

RP="-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1"
for mem in 1024 4096; do
  for vmm in switchyard qemu; do
    if [ $vmm = switchyard ]; then
      base="/switchyard -machine q35 -accel kvm -m $mem -kernel $L2_SWITCHYARD_KERNEL -initrd $L2_INITRD $RP"
    else
      base="qemu-system-x86_64 -accel kvm -cpu host -M q35 -m $mem -nodefaults -display none -kernel $L2_QEMU_KERNEL -initrd $L2_INITRD $RP"
    fi
    for kind in bare vfio; do
      extra=""; [ $kind = vfio ] && extra="-device vfio-pci,host=$nic,bus=rp1"
      t=""
      for run in 1 2 3; do
        v=$(start_time "$vmm-$mem-$kind-$run" $base $extra) || { echo "CHECK FAILED: $vmm -m $mem ($kind): no QMP reply"; fails=$((fails + 1)); v=""; }
        echo "$vmm -m $mem $kind run $run: ${v:-none} s to the first QMP reply, $(cat /tmp/dm-quit-$vmm-$mem-$kind-$run 2>/dev/null) s from quit to exit, AnonHugePages $(cat /tmp/dm-thp-$vmm-$mem-$kind-$run 2>/dev/null)"
        t="$t ${v:-0}"
      done
      eval "t_${vmm}_${kind}=\$(median3 $t)"
    done
    eval "b=\$t_${vmm}_bare v=\$t_${vmm}_vfio"
    d=$(( $(centi "$v") - $(centi "$b") ))
    [ $d -lt 0 ] && d=0
    fig=$(printf '%d.%02d' $((d / 100)) $((d % 100)))
    report_time "${vmm}_dmamap_$((mem / 1024))GiB" "$fig"
    echo "$vmm -m $mem: assignment ${fig} s (median start to first reply with the device $v s, without $b s)"
    eval "a_${vmm}=$d"
  done
  if [ "$a_qemu" -gt 0 ]; then
    report_time "ratio_dmamap_$((mem / 1024))GiB_switchyard_over_qemu" "$(awk "BEGIN { printf \"%.2f\", $a_switchyard / $a_qemu }")"
  fi
done
check "$nic still on vfio-pci" [ "$(driver_of $nic)" = vfio-pci ]
[ $fails = 0 ]
