#!/usr/bin/env bash
# Boots L1 (the Debian kernel under QEMU TCG with -cpu max, which emulates AMD SVM) with the rig's
# initramfs and runs one scenario inside it; the serial console goes to a log with host times.
# usage: run.sh [--switchyard PATH] [--timeout SECONDS] [--smp N] [--bzimage] [--append ARGS] [--no-skip] SCENARIO...
#   --bzimage boots L1 from the compressed kernel instead of the extracted vmlinux (PVH)
#   --append adds to L1's kernel command line, e.g. rig.l2bios=qboot (see l1/lib.sh)
#   --no-skip counts a skipped scenario as failed (make rig-test: nothing may go untested)
#   SCENARIO: kvm-check, qemu-boot, qemu-hotplug, switchyard-boot, switchyard-smp,
#             switchyard-split, switchyard-hotplug, switchyard-soak, switchyard-run, cfg-exits, switchyard-coldplug, qemu-acpihp,
#             switchyard-acpihp, switchyard-reboot, switchyard-sriov, iommu-check, host-tools,
#             host-tools-noir, virtio-net, virtio-net-vf, switchyard-intx, vfio-nvme, vfio-igb, vfio-busreset, vfio-refusals, vfio-dmamap, or all (every one above),
#             or quick (all but qemu-boot, qemu-hotplug, qemu-acpihp, cfg-exits, vfio-dmamap: make test);
#             vfio-iommufd (make rig-iommufd) boots a kernel of build-kernel.sh's, in no set
# Each scenario boots its own L1; a scenario's NAME.l0 next to it adds L0 devices (l0-sets.sh).
# Exit status: one scenario: 0 passed, 77 skipped, 1 failed (or
# timed out); several: 0 when none failed. Logs: .rig/logs/SCENARIO-TIME.log
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${RIG_CACHE:-$REPO/.rig}
timeout_s=${RIG_TIMEOUT:-300}
smp=${RIG_L1_SMP:-1}
build_args=()
l1_append_extra=""
l1_kernel=vmlinux   # PVH entry: no decompression under TCG (--bzimage: the kernel as shipped)
scenarios=()
no_skip=0
while [ $# -gt 0 ]; do
  case "$1" in
    --switchyard) build_args+=(--switchyard "$2"); shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --bzimage) l1_kernel=vmlinuz; shift ;;
    --append) l1_append_extra="$l1_append_extra $2"; shift 2 ;;
    --no-skip) no_skip=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    all) scenarios+=(kvm-check qemu-boot qemu-hotplug switchyard-boot switchyard-smp switchyard-split switchyard-hotplug switchyard-soak switchyard-run cfg-exits switchyard-coldplug qemu-acpihp switchyard-acpihp switchyard-reboot switchyard-sriov iommu-check host-tools host-tools-noir virtio-net virtio-net-vf switchyard-intx vfio-nvme vfio-igb vfio-busreset vfio-refusals vfio-dmamap); shift ;;
    # quick (make test): every scenario that proves Switchyard, without the QEMU-only references
    # (qemu-boot, qemu-hotplug, qemu-acpihp) and cfg-exits' measurement, which `all` keeps.
    quick) scenarios+=(kvm-check switchyard-boot switchyard-smp switchyard-split switchyard-hotplug switchyard-soak switchyard-run switchyard-coldplug switchyard-acpihp switchyard-reboot switchyard-sriov iommu-check host-tools host-tools-noir virtio-net virtio-net-vf switchyard-intx vfio-nvme vfio-igb vfio-busreset vfio-refusals); shift ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) scenarios+=("$1"); shift ;;
  esac
done
[ ${#scenarios[@]} -gt 0 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
for s in "${scenarios[@]}"; do
  [ -f "$HERE/l1/scenarios/$s.sh" ] || { echo "run.sh: no scenario $s (Tests/Rig/l1/scenarios/)" >&2; exit 2; }
done

images=$("$HERE/build-initramfs.sh" "${build_args[@]}")
mkdir -p "$CACHE/logs"

# Prefixes each line with seconds since $1 (bash's EPOCHREALTIME: no fork per line).
host_stamp() {
  local t0=${1//[.,]/} line d
  while IFS= read -r line; do
    d=$(( ${EPOCHREALTIME//[.,]/} - t0 ))
    printf '%4d.%02d %s\n' $((d / 1000000)) $((d % 1000000 / 10000)) "${line%$'\r'}"
  done
}

run_one() {
  local scenario=$1 log rc t0
  log=$CACHE/logs/$scenario-$(date +%Y%m%d-%H%M%S).log
  boot_logs[$scenario]+="$log "
  # The scenario's own L0 devices, L1 kernel arguments and time limit (l0-sets.sh), if any.
  . "$HERE/l0-sets.sh"
  if [ -f "$HERE/l1/scenarios/$scenario.l0" ]; then . "$HERE/l1/scenarios/$scenario.l0"; fi
  local timeout_s=${l1_timeout:-$timeout_s} smp=${l1_smp:-$smp} memory=${l1_memory:-2048} images=$images
  if [ -n "$l1_kernel_dir" ]; then
    # A kernel of build-kernel.sh's for this scenario's L1 and L2 (their own images).
    if [ ! -f "$l1_kernel_dir/done" ]; then
      echo "== rig: $scenario boots the kernel build-kernel.sh makes, and $l1_kernel_dir has none: make rig-iommufd builds it (about 25 minutes)"
      l1_froze=0
      return 1
    fi
    images=$("$HERE/build-initramfs.sh" "${build_args[@]}" --kernel-dir "$l1_kernel_dir") || {
      echo "== rig: $scenario: build-initramfs.sh failed for $l1_kernel_dir"
      l1_froze=0
      return 1
    }
  fi
  echo "== rig: $scenario (L1: TCG, -smp $smp, timeout ${timeout_s}s) log: $log"
  t0=$EPOCHREALTIME
  # L0's monitor, so that an L1 about to be killed can be looked at first (l0_snapshot).
  local monitor=$CACHE/l0-monitor.$$.sock watcher waker
  rm -f "$monitor"
  ( sleep $((timeout_s - 25)) && l0_snapshot "$monitor" "$log" "$log.l0" ) </dev/null >/dev/null 2>&1 &
  watcher=$!
  l1_wakeup_watchdog "$monitor" "$log.wake" </dev/null >/dev/null 2>&1 &
  waker=$!
  # The pipeline's status is tee's; QEMU's (124 or 137 when timeout ended it) is PIPESTATUS[0].
  timeout -k 10 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -M q35 -m "$memory" -smp "$smp" \
    -nodefaults -display none -serial stdio -no-reboot -nic none \
    -monitor "unix:$monitor,server=on,wait=off" \
    -kernel "$images/$l1_kernel" -initrd "$images/l1-initrd.img" "${l0_args[@]}" \
    -append "console=ttyS0 quiet panic=-1 rig.scenario=$scenario$l1_append$l1_append_extra" </dev/null 2>&1 |
    host_stamp "$t0" | tee "$log"
  rc=${PIPESTATUS[0]}
  pkill -P "$watcher" 2>/dev/null || true   # its sleep
  pkill -P "$waker" 2>/dev/null || true     # its python
  kill "$watcher" "$waker" 2>/dev/null || true
  wait "$watcher" "$waker" 2>/dev/null || true
  if [ -s "$log.wake" ]; then cat "$log.wake" | tee -a "$log"; fi
  rm -f "$log.wake"
  rm -f "$monitor"
  # tee writes at its own offset: the snapshot went to its own file, appended now.
  if [ -s "$log.l0" ]; then cat "$log.l0" >>"$log"; fi
  rm -f "$log.l0"
  l1_froze=0
  if grep -q 'QEMU TCG lost wake-up' "$log" && ! grep -q 'RIG-RESULT' "$log"; then l1_froze=1; fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "    rig: L1 killed after ${timeout_s}s" | tee -a "$log"
    # Every scenario bounds its own waits well inside the L1 timeout and then reports a result;
    # an L1 killed before any result stopped making progress itself (a TCG guest that froze, as
    # seen now and then right after L2 reached init, more often on a loaded host).
    grep -q 'RIG-RESULT' "$log" || l1_froze=1
  elif [ "$l1_froze" = 0 ] && ! grep -q 'RIG-RESULT' "$log"; then
    # (A freeze the watchdog ended was said above.) L0 ended on its own with no result: L1 reset or crashed (-no-reboot, panic=-1), as QEMU
    # TCG's nested SVM did once in a clean-clone run, right after the scenario started its
    # second L2. The scenario never got to a verdict, so this is no verdict either: boot a
    # fresh L1, as for a freeze. A VMM that takes L1 down every time still fails all boots.
    echo "    rig: L1 ended (status $rc) before $scenario reported its result" | tee -a "$log"
    l1_froze=1
  fi
  if [ "$l1_froze" = 0 ] && grep -q 'RIG-RESULT .*status=FAIL' "$log" &&
     grep -q 'CHECK FAILED: qemu[-:_]' "$log"; then
    # The reference, QEMU's own L2 in the same L1, failed a check of its own: it ran out of
    # its time (seen once on a loaded host, every L2 far behind), or it reset itself right after
    # a device_add (switchyard-split, 2026-12-06). Switchyard cannot make QEMU's L2 fail, so this
    # L1 gives no verdict and hides nothing of ours: boot a fresh L1.
    echo "    rig: QEMU's own L2 failed in this L1 as well: no verdict" | tee -a "$log"
    l1_froze=1
  elif [ "$l1_froze" = 0 ] && [ "$stall_retried" = 0 ] && grep -q 'RIG-RESULT .*status=FAIL' "$log" &&
       grep -q 'VMM still running after .*: killing it' "$log"; then
    # An L2 that stopped making progress and was killed (README, "An L2 that stalls": seen on
    # two-vCPU L2s, one vCPU halted in KVM and the other running guest code, the console
    # stopped mid-line). Its cause is not known: one more L1, once per scenario, and the
    # summary names the scenario. A stall that comes back fails.
    echo "    rig: an L2 stalled in this L1: one more L1, once (the summary names it)" | tee -a "$log"
    stall_retried=1
    l1_froze=1
  fi
  python3 "$HERE/summarize.py" "$log"
}

# l0_snapshot SOCKET LOG OUT: unless LOG has a result already, L1's CPU state from L0's monitor,
# twice 3 s apart, into OUT (a frozen L1 spinning in L2 shows a moving RIP and EFER without SVME,
# 0x1000; one halted shows HLT=1).
l0_snapshot() {
  grep -q 'RIG-RESULT' "$2" && return 0
  python3 "$HERE/l0-monitor.py" snapshot "$1" >"$3" 2>&1 || true
}

# l1_wakeup_watchdog SOCKET OUT: every 5 s, asks L0's monitor for L1's CPU state. Two states
# of QEMU TCG never end (README, "A frozen L1"), both with a vector pending in the LAPIC's IRR:
# the CPU halted with interrupts enabled (a lost wake-up; seen twice 3 s apart), or running at
# one fixed RIP, interrupts enabled or not (a livelock; seen in three polls in a row). An injected NMI ended neither, so
# the watchdog ends L0 at once (HMP quit) and says so in OUT; run_one then boots a fresh L1
# instead of waiting for the timeout.
l1_wakeup_watchdog() {
  python3 "$HERE/l0-monitor.py" watchdog "$1" >"$2" 2>/dev/null || true
}

# Boots per scenario when L1 freezes (RIG_MAX_BOOTS): on a loaded host switchyard-smp (L2 with two
# vCPUs on L1's one) was seen frozen in three boots in a row, each a TCG lost wake-up.
max_boots=${RIG_MAX_BOOTS:-5}
pass=0 fail=0 skip=0 last=1
failed=() stalled=()
declare -A boot_logs=()  # scenario -> its boots' logs, oldest first
for s in "${scenarios[@]}"; do
  last=0
  stall_retried=0
  run_one "$s" || last=$?
  boots=1
  while [ "$l1_froze" = 1 ] && [ $boots -lt $max_boots ]; do
    # A frozen L1 (QEMU TCG's lost wake-up or livelock, README "A frozen L1") is no verdict on
    # the scenario: boot a fresh one, up to $max_boots boots in all. A real hang fails them all.
    echo "    rig: no verdict from that L1 on $s (said above); booting a fresh L1 (boot $((boots + 1)) of $max_boots)"
    boots=$((boots + 1))
    last=0
    run_one "$s" || last=$?
  done
  [ "$stall_retried" = 1 ] && stalled+=("$s")
  if [ "$last" = 77 ] && [ $no_skip = 1 ]; then echo "    rig: $s skipped, counted as failed (--no-skip)"; last=1; fi
  case $last in 0) pass=$((pass + 1)) ;; 77) skip=$((skip + 1)) ;; *) fail=$((fail + 1)); failed+=("$s") ;; esac
done
# CI shows only the end of the output: each failed scenario's name and the end of its last log.
for s in "${failed[@]}"; do
  # The checks that failed in each boot of it (a retried scenario's first boot too), then the
  # end of its last log.
  for boot_log in ${boot_logs[$s]:-}; do
    echo "---- rig: $s, failed checks in $(basename "$boot_log"):"
    grep -E 'CHECK FAILED|still running after|RIG-RESULT|    rig: ' "$boot_log" | head -12 || true
  done
  log=$(ls -t "$CACHE/logs/$s"-*.log 2>/dev/null | head -1)
  echo "---- rig: $s FAILED; the end of $log:"
  # (L1 kernel lines only when they report a fault: the scenario's own lines say what failed.)
  [ -n "$log" ] && awk '!/^ *[0-9.]+ \[ *[0-9.]+\] / || /Oops|BUG|panic|RIP:|general protection/' "$log" | tail -15 || true
done
[ ${#stalled[@]} = 0 ] || echo "rig: an L2 stalled and was run again in a fresh L1 (README, \"An L2 that stalls\"): ${stalled[*]}"
echo "rig: $pass passed, $fail failed, $skip skipped${failed[*]:+ (failed: ${failed[*]})}"
if [ ${#scenarios[@]} = 1 ]; then exit "$last"; fi
[ $fail = 0 ]
