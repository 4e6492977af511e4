# Helpers shared by the L1 scenarios (busybox sh). Times come from /proc/uptime (10 ms steps).

# Seconds since L1 booted, e.g. 12.34.
now() { read _up _ </proc/uptime; echo "$_up"; }

# Centiseconds from a seconds value with two decimals ("12.34" -> 1234), octal-safe.
centi() { echo $(( ${1%.*} * 100 + 1${1#*.} - 100 )); }

# Seconds between two now() values, with two decimals.
elapsed() {
  _d=$(( $(centi "$2") - $(centi "$1") ))
  printf '%d.%02d' $((_d / 100)) $((_d % 100))
}

# Prefixes each line of stdin with the L1 time it arrived.
stamp() { while IFS= read -r _line; do read _up _ </proc/uptime; echo "$_up $_line"; done; }

# wait_for FILE REGEX TIMEOUT_S: polls FILE until a line matches; prints that line's stamp
# (first field). Returns 1 on timeout, 2 when FILE shows the VMM exited first.
wait_for() {
  _deadline=$(( $(centi "$(now)") + $3 * 100 ))
  while :; do
    _hit=$(grep -m1 -E -e "$2" -e '^[0-9.]+ VMM-EXIT' "$1" 2>/dev/null)
    if [ -n "$_hit" ]; then
      if echo "$_hit" | grep -q -E -e "$2"; then echo "${_hit%% *}"; return 0; fi
      echo "VMM exited while waiting for /$2/ in $1" >&2; return 2
    fi
    [ "$(centi "$(now)")" -ge "$_deadline" ] && return 1
    sleep 0.05
  done
}

# One timing figure, picked up by run.sh's summary.
report_time() { echo "RIG-TIME $1=$2"; }

# The L2 guest: the same kernel as L1 and a busybox initramfs (see l2/init).
L2_KERNEL=/l2/vmlinuz
L2_INITRD=/l2/initrd.gz
l2_append() { echo "console=ttyS0 quiet panic=-1 pci=noearly tsc=reliable no_timer_check rig.l2=$1$L2_FORWARD"; }

# The PCI topology every VMM under test gets: four root ports (rp1 holds an endpoint, rp3 and
# rp4 are empty hot-plug targets), a switch (upstream up1 under rp2, downstream dn1 with an
# endpoint and an empty dn2), a PCI-PCI bridge with SHPC (br1) with an endpoint, and a root
# complex endpoint on pcie.0. pci-testdev is QEMU's 1b36:0005.
TOPOLOGY="
-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1
-device pcie-root-port,id=rp2,bus=pcie.0,chassis=2,slot=2
-device pcie-root-port,id=rp3,bus=pcie.0,chassis=3,slot=3
-device pcie-root-port,id=rp4,bus=pcie.0,chassis=4,slot=4
-device pci-testdev,id=t1,bus=rp1
-device x3130-upstream,id=up1,bus=rp2
-device xio3130-downstream,id=dn1,bus=up1,chassis=5,slot=0
-device xio3130-downstream,id=dn2,bus=up1,chassis=6,slot=1
-device pci-testdev,id=t2,bus=dn1
-device pci-bridge,id=br1,bus=pcie.0,chassis_nr=7
-device pci-testdev,id=t3,bus=br1,addr=1
-device pci-testdev,id=t0,bus=pcie.0
"
# What L2 must see with that topology.
EXPECT_TESTDEVS=4      # 1b36:0005
EXPECT_PCIEPORT=7      # rp1-4, up1, dn1, dn2
EXPECT_SHPCHP=1        # br1
EXPECT_PCIEHP=6        # rp1-4, dn1, dn2

# Options from L1's kernel command line (run.sh --append): rig.l2bios=qboot boots L2 QEMU with
# qboot instead of SeaBIOS; rig.l2kernel=bzimage gives both VMMs the compressed kernel instead
# of the ELF vmlinux (PVH entry, no decompression: seconds faster nested); rig.l2gaps=S is
# passed on to L2, whose init then lists the kernel messages that came S seconds or more after
# the last; rig.l2smp=N gives L2 N vCPUs under both VMMs (switchyard-boot checks that L2 brings
# them up).
L2_BIOS_ARGS=""
L2_FORWARD=""
L2_SMP=${RIG_L2_SMP:-1}
# The kernel each VMM boots by default: the PVH vmlinux (both QEMU and Switchyard boot it).
L2_VMLINUX=/l2/vmlinux
L2_QEMU_KERNEL=$L2_VMLINUX
[ -e $L2_VMLINUX ] || L2_QEMU_KERNEL=$L2_KERNEL
L2_SWITCHYARD_KERNEL=$L2_QEMU_KERNEL
for _arg in $(cat /proc/cmdline); do
  case "$_arg" in
    rig.l2bios=qboot) L2_BIOS_ARGS="-bios /usr/share/qemu/qboot.rom" ;;
    rig.l2kernel=bzimage) L2_QEMU_KERNEL=$L2_KERNEL L2_SWITCHYARD_KERNEL=$L2_KERNEL ;;
    rig.l2gaps=*) L2_FORWARD="$L2_FORWARD $_arg" ;;
    # L2's TCP congestion control (e.g. rig.l2tcp=tcp_cubic.hystart=0: no HyStart), the same
    # for every VMM in the boot.
    rig.l2tcp=*) L2_FORWARD="$L2_FORWARD ${_arg#rig.l2tcp=}" ;;
    rig.l2smp=*) L2_SMP=${_arg#rig.l2smp=} ;;
  esac
done

# QEMU for L2: q35 on KVM, native PCIe hot-plug (ACPI hot-plug off for ports and bridges).
qemu_l2_command() { # [KERNEL]
  echo qemu-system-x86_64 $L2_BIOS_ARGS -accel kvm -cpu host -M q35 -m 512 -smp $L2_SMP -nodefaults -display none \
    -no-reboot -serial stdio \
    -global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off \
    -kernel ${1:-$L2_QEMU_KERNEL} -initrd $L2_INITRD $TOPOLOGY
}

# start_vmm LOG CMD...: runs the VMM in the background, its stdout (the L2 serial console)
# time-stamped into LOG; the kernel command line comes from $L2_APPEND_LINE. Sets VMM_START.
start_vmm() {
  _log=$1; shift
  : >"$_log"
  VMM_START=$(now)
  (
    "$@" -append "$L2_APPEND_LINE" </dev/null 2>"$_log.err" &
    echo $! >/tmp/l2.pid
    wait $!
    echo "VMM-EXIT status=$?"
  ) | stamp >"$_log" &
  VMM_PIPE_PID=$!
}

# wait_vmm_exit LOG TIMEOUT_S: waits for the VMM to exit, kills it after the timeout.
wait_vmm_exit() {
  if ! wait_for "$1" '^[0-9.]+ VMM-EXIT' "$2" >/dev/null; then
    echo "VMM still running after $2 s: killing it"
    [ -f /tmp/l2.pid ] && vmm_threads "$(cat /tmp/l2.pid)"
    [ -f /tmp/l2.pid ] && kill -9 "$(cat /tmp/l2.pid)" 2>/dev/null
    wait_for "$1" '^[0-9.]+ VMM-EXIT' 5 >/dev/null
  fi
  rm -f /tmp/l2.pid
}

# vmm_threads PID: what each thread of a VMM that did not end is doing, before it is killed: its
# name, state and kernel stack's top frames. vCPU threads all in KVM_RUN mean L2 itself stopped
# (in the guest); one waiting in a futex means the VMM is stuck on a lock of its own.
vmm_threads() {
  for _t in /proc/$1/task/*; do
    [ -d "$_t" ] || continue
    _st=$(sed -n 's/^State:[[:space:]]*//p' "$_t/status" 2>/dev/null)
    _stack=$(head -n 4 "$_t/stack" 2>/dev/null | sed 's/^\[<[0-9a-f]*>\] //; s/+0x[0-9a-f/x]*//' | tr '\n' ' ')
    echo "  thread ${_t##*/} $(cat "$_t/comm" 2>/dev/null) [$_st] wchan=$(cat "$_t/wchan" 2>/dev/null) stack: ${_stack:-?}"
  done
}

# check_vmm_exit LOG LABEL: the VMM must have exited by itself with status 0 (L2 powers off at
# the end of every mode; -no-reboot for QEMU). Prints the failure and returns 1 otherwise.
check_vmm_exit() {
  _st=$(sed -n 's/^[0-9.]* VMM-EXIT status=//p' "$1" | head -n 1)
  [ "$_st" = 0 ] && return 0
  echo "CHECK FAILED: $2: the VMM exited with status ${_st:-?} (want 0)"
  return 1
}

# Prints the L2 console lines with their L1 times made relative to VMM_START.
show_l2_log() { # LOG
  _s=$(centi "$VMM_START")
  while IFS= read -r _l; do
    _t=${_l%% *}; _rest=${_l#* }
    case "$_t" in [0-9]*.[0-9]*) ;; *) echo "  $_l"; continue ;; esac
    _d=$(( $(centi "$_t") - _s ))
    printf '  +%d.%02d %s\n' $((_d / 100)) $((_d % 100)) "$_rest"
  done <"$1"
  [ -s "$1.err" ] && sed 's/^/  stderr: /' "$1.err" | head -n 20
  return 0
}

# KVM's exit counters in L1's debugfs, summed over L1's VMs (one runs at a time).
# kvm_counters_ready mounts debugfs and arms the histogram below; false when the kernel keeps no
# such statistics. Exits that reached the VMM (user space) are not in those statistics: KVM
# handles some exits itself (in-kernel devices, coalesced writes). L1's tracepoint
# kvm_userspace_exit counts them, for any VMM alike, through a histogram trigger whose "Hits:"
# total is the count. kvm_snap prints "exits mmio_exits io_exits user_exits".
KSTAT=/sys/kernel/debug/kvm
TRACE=/sys/kernel/debug/tracing/events/kvm/kvm_userspace_exit
kvm_counters_ready() {
  mount -t debugfs none /sys/kernel/debug 2>/dev/null
  [ -r $KSTAT/exits ] && [ -r $KSTAT/mmio_exits ] && [ -r $KSTAT/io_exits ] || return 1
  [ -w $TRACE/trigger ] && ! grep -q '^hist' $TRACE/trigger && echo 'hist:keys=common_pid' >$TRACE/trigger 2>/dev/null
  return 0
}
user_exits() { _h=$(sed -n 's/^ *Hits: *//p' $TRACE/hist 2>/dev/null); echo "${_h:-0}"; }
kvm_snap() { read _e <$KSTAT/exits; read _m <$KSTAT/mmio_exits; read _i <$KSTAT/io_exits; echo "$_e $_m $_i $(user_exits)"; }

# phase_exits LOG PREFIX: L2 marks an idle phase and an io phase, each "PREFIX phase NAME begin"
# ... "PREFIX phase NAME end" followed by 2 s of sleep; L1's counters are snapshotted at each
# marker. Prints the io phase's "exits mmio_exits io_exits user_exits" less the idle phase's
# rate over the io phase's length (the caller divides by what the phase moved). Fails, saying
# which, when a marker does not come within 120 s.
phase_exits() {
  for _ph in idle io; do
    wait_for "$1" " $2 phase $_ph begin" 120 >/dev/null || { echo "L2 began no $_ph phase" >&2; return 1; }
    eval "_a_$_ph=\"\$(now) \$(kvm_snap)\""
    wait_for "$1" " $2 phase $_ph end" 120 >/dev/null || { echo "L2 did not end its $_ph phase" >&2; return 1; }
    eval "_b_$_ph=\"\$(now) \$(kvm_snap)\""
  done
  # Fields: time exits mmio io user, at idle begin (1-5), idle end (6-10), io begin (11-15), io end (16-20).
  echo "$_a_idle $_b_idle $_a_io $_b_io" | awk '{
    ti = $6 - $1; tio = $16 - $11
    for (k = 2; k <= 5; k++) { rate = ($(k + 5) - $k) / ti; printf "%.1f%s", $(k + 15) - $(k + 10) - rate * tio, k < 5 ? " " : "\n" }
  }'
}

# show_run LABEL LOG [QMPLOG]: L2's console and the QMP replies and events of one run, times
# relative to VMM_START.
show_run() {
  echo "--- L2 console ($1), times relative to VMM start:"
  show_l2_log "$2"
  [ -n "${3:-}" ] || return 0
  echo "--- QMP ($1), times relative to VMM start:"
  show_l2_log "$3" | cut -c1-200
}

# check_l2_report LOG LABEL: compares what L2 saw with the topology; prints each failed check
# and returns the number of failures.
check_l2_report() {
  _f=0 _clabel=${2:-}
  _n=$(grep -c ' RIG-L2 dev .* 1b36:0005 ' "$1")
  [ "$_n" = "$EXPECT_TESTDEVS" ] || { echo "CHECK FAILED: $_n pci-testdev functions, want $EXPECT_TESTDEVS"; _f=$((_f + 1)); }
  _n=$(sed -n 's/.* RIG-L2 driver pcieport bound=\([0-9]*\).*/\1/p' "$1")
  [ "$_n" = "$EXPECT_PCIEPORT" ] || { echo "CHECK FAILED: pcieport bound to ${_n:-?} ports, want $EXPECT_PCIEPORT"; _f=$((_f + 1)); }
  _n=$(sed -n 's/.* RIG-L2 driver shpchp bound=\([0-9]*\).*/\1/p' "$1")
  [ "$_n" = "$EXPECT_SHPCHP" ] || { echo "CHECK FAILED: shpchp bound to ${_n:-?} bridges, want $EXPECT_SHPCHP"; _f=$((_f + 1)); }
  _cpus=$(sed -n 's/.* RIG-L2 cpus online=\([0-9-]*\).*/\1/p' "$1")
  _want=0; [ "$L2_SMP" -gt 1 ] && _want="0-$((L2_SMP - 1))"
  [ "$_cpus" = "$_want" ] || { echo "CHECK FAILED: L2's online CPUs are '${_cpus:-?}', want $_want (-smp $L2_SMP)"; _f=$((_f + 1)); }
  _n=$(sed -n 's/.* RIG-L2 pciehp services=\([0-9]*\).*/\1/p' "$1")
  [ "$_n" = "$EXPECT_PCIEHP" ] || { echo "CHECK FAILED: ${_n:-?} pciehp slots, want $EXPECT_PCIEHP"; _f=$((_f + 1)); }
  # Bridge I/O windows that could not be assigned are tolerated under QEMU only (SeaBIOS leaves
  # the empty switch downstream port dn2 without one, and Linux cannot grow the switch's
  # window to make room); Switchyard's firmware gives every hot-plug port a 4 KiB I/O window
  # when the port space has room, as it has here. Any other assignment failure is an error.
  _n=$(sed -n 's/.* RIG-L2 pcierrors=\([0-9]*\) io_windows=\([0-9]*\).*/\1 \2/p' "$1")
  if [ -z "$_n" ]; then
    echo "CHECK FAILED: L2 printed no resource-assignment summary"; _f=$((_f + 1))
  elif [ $((${_n% *} - ${_n#* })) != 0 ]; then
    echo "CHECK FAILED: $((${_n% *} - ${_n#* })) resource-assignment errors (besides bridge I/O windows) in L2's dmesg"
    _f=$((_f + 1))
  elif [ "${_n#* }" != 0 ] && [ "$_clabel" = qemu ]; then
    echo "note: ${_n#* } bridge I/O window(s) not assigned in L2 (tolerated under QEMU)"
  elif [ "${_n#* }" != 0 ]; then
    echo "CHECK FAILED: ${_n#* } bridge I/O window(s) not assigned in L2"; _f=$((_f + 1))
  fi
  return $_f
}

# boot_and_check LABEL LOG CMD...: boots L2 in report mode under a VMM, prints its log, the
# timings (prefixed with LABEL) and the checks. Returns non-zero when a check fails.
boot_and_check() {
  _label=$1 _blog=$2; shift 2
  L2_APPEND_LINE="$(l2_append report) rig.l2lspci=1"
  start_vmm "$_blog" "$@"
  _rc=0
  if _ti=$(wait_for "$_blog" ' RIG-L2 init ' 90); then
    report_time "${_label}_boot_to_init" "$(elapsed "$VMM_START" "$_ti")"
    _ku=$(sed -n 's/.* RIG-L2 init uptime=//p' "$_blog")
    report_time "${_label}_kernel_uptime_at_init" "$_ku"
    if _tr=$(wait_for "$_blog" ' RIG-L2 report-done' 60); then
      report_time "${_label}_report" "$(elapsed "$_ti" "$_tr")"
    else
      echo "CHECK FAILED: $_label: L2 did not finish its report"; _rc=1
    fi
  else
    echo "CHECK FAILED: $_label: L2 did not reach init within 90 s"; _rc=1
  fi
  wait_vmm_exit "$_blog" 20
  _te=$(grep -m1 ' VMM-EXIT' "$_blog" | cut -d' ' -f1)
  [ -n "$_te" ] && report_time "${_label}_total" "$(elapsed "$VMM_START" "$_te")"
  echo "--- L2 console ($_label), times relative to VMM start:"
  show_l2_log "$_blog"
  check_vmm_exit "$_blog" "$_label" || _rc=1
  [ $_rc = 0 ] || return 1
  check_l2_report "$_blog" "$_label"
}

# l2_facts LOG: what L2 reported that must not depend on the VMM: each function (address, IDs,
# class, driver, sysfs path; not its resources, which each firmware places its own way), the
# drivers bound, the pciehp slots, the online CPUs, the real lspci -tvnn tree, and the resource
# errors besides bridge I/O windows (tolerated under QEMU), without their kernel time stamps.
l2_facts() {
  sed -n -e 's/^[0-9.]* RIG-L2 \(dev .*\) res=.*/\1/p' \
         -e 's/^[0-9.]* RIG-L2 \(driver .*\)/\1/p' -e 's/^[0-9.]* RIG-L2 \(pciehp .*\)/\1/p' \
         -e 's/^[0-9.]* RIG-L2 \(cpus .*\)/\1/p' -e 's/^[0-9.]* RIG-L2 \(lspci .*\)/\1/p' "$1"
  sed -n 's/^[0-9.]* RIG-L2 pcierr \(\[ *[0-9.]*\] \)\{0,1\}/pcierr /p' "$1" | grep -v 'bridge window \[io'
  return 0
}

# compare_l2_reports LOG-A LABEL-A LOG-B LABEL-B: L2's facts (l2_facts) under two VMMs, line by
# line; prints the differences and returns 1 when there are any (or when A reported nothing).
compare_l2_reports() {
  l2_facts "$1" >/tmp/facts-$2.txt
  l2_facts "$3" >/tmp/facts-$4.txt
  if [ ! -s /tmp/facts-$2.txt ]; then echo "CHECK FAILED: $2: no L2 report to compare with $4"; return 1; fi
  if cmp -s /tmp/facts-$2.txt /tmp/facts-$4.txt; then
    echo "ok: L2 under $4 reports what it reports under $2 ($(wc -l </tmp/facts-$2.txt) lines: functions, drivers, slots, lspci tree, errors)"
    return 0
  fi
  echo "CHECK FAILED: L2 under $4 differs from L2 under $2 (- $2, + $4):"
  diff /tmp/facts-$2.txt /tmp/facts-$4.txt | grep '^[-+][^-+]' | head -n 40
  return 1
}

# The hot-plug cycles, one per controller: NAME:BUS:EXTRA-JSON (device_add's extra arguments).
# The root port rp3 (pciehp), the switch downstream port dn2 (pciehp), the bridge br1 (shpchp).
HOTPLUG_TARGETS="rootport:rp3: switchport:dn2: shpc:br1:,\"addr\":\"2\""
# device_del's extra arguments, e.g. ',"x-surprise":true' (Switchyard: surprise removal).
HOTPLUG_DEL_EXTRA=""

# hotplug_session LABEL CMD...: boots L2 in watch mode under a VMM whose QMP is on the FIFO
# pair /tmp/qmp-LABEL.in/.out (-chardev pipe: busybox nc has no -U), then for each of
# $HOTPLUG_TARGETS: device_add a pci-testdev, wait until L2 sees it, device_del it, wait for
# DEVICE_DELETED and for L2 to see it gone. Reports LABEL_boot_to_init and, per target,
# LABEL_NAME_plug, LABEL_NAME_unplug_device_deleted, LABEL_NAME_unplug_guest (L1 times from the
# QMP command to the L2 console line or the QMP event). Prints the logs; returns 1 on failure.
hotplug_session() {
  _hl=$1; shift
  _hlog=/tmp/l2-hotplug-$_hl.log _hq=/tmp/qmp-$_hl _hrc=0
  set -- "$@" -chardev pipe,id=qmp,path=$_hq -mon chardev=qmp,mode=control
  _hn=0; for _t in $HOTPLUG_TARGETS; do _hn=$((_hn + 1)); done
  rm -f $_hq.in $_hq.out
  mkfifo $_hq.in $_hq.out
  stamp <$_hq.out >$_hq.log &
  L2_APPEND_LINE="$(l2_append hotplug) rig.l2cycles=$_hn${HOTPLUG_APPEND:-}"
  start_vmm "$_hlog" "$@"
  : >/tmp/hp-t0-$_hl
  _hotplug_cycles || _hrc=1
  exec 3>&-
  wait_vmm_exit "$_hlog" 20
  echo "--- L2 console ($_hl), times relative to VMM start:"
  show_l2_log "$_hlog"
  kernel_figures "$_hl" "$_hlog" /tmp/hp-t0-$_hl
  echo "--- QMP replies and events ($_hl), times relative to VMM start:"
  show_l2_log $_hq.log | cut -c1-200
  grep -q ' RIG-L2 hotplug-timeout' "$_hlog" && { echo "$_hl: L2's hot-plug watch timed out"; _hrc=1; }
  grep -q ' "error"' $_hq.log && { echo "$_hl: QMP returned an error"; _hrc=1; }
  check_vmm_exit "$_hlog" "$_hl" || _hrc=1
  return $_hrc
}

# compare_hotplug_sessions LABEL-A LABEL-B: what L2 counted at each step of two hot-plug
# sessions (functions before, after each plug and each unplug) and the QMP replies to every
# command (without their time stamps and event times), line by line.
compare_hotplug_sessions() {
  for _l in $1 $2; do
    sed -n 's/^[0-9.]* RIG-L2 \(ready devices=[0-9]*\|plugged cycle=[0-9]* devices=[0-9]*\|unplugged cycle=[0-9]* devices=[0-9]*\).*/\1/p' \
      /tmp/l2-hotplug-$_l.log >/tmp/hpfacts-$_l.txt
    # QEMU ends its QMP lines with CRLF, Switchyard with LF.
    tr -d '\r' </tmp/qmp-$_l.log |
      sed -n -e 's/^[0-9.]* \({"return".*\)/qmp \1/p' -e 's/^[0-9.]* {.*"event": *"\([A-Z_]*\)".*"device": *"\([^"]*\)".*/event \1 \2/p' \
      >>/tmp/hpfacts-$_l.txt
  done
  if [ -s /tmp/hpfacts-$1.txt ] && cmp -s /tmp/hpfacts-$1.txt /tmp/hpfacts-$2.txt; then
    echo "ok: the hot-plug session under $2 matches $1 ($(wc -l </tmp/hpfacts-$1.txt) lines: L2's counts, QMP replies, events)"
    return 0
  fi
  echo "CHECK FAILED: the hot-plug session under $2 differs from $1 (- $1, + $2):"
  diff /tmp/hpfacts-$1.txt /tmp/hpfacts-$2.txt | grep '^[-+][^-+]' | head -n 40
  return 1
}

_qmp() { echo "$1" >&3; echo "qmp> $1"; }

# kernel_figures LABEL LOG T0FILE: where the time of each hot-plug step went inside L2, from the
# kernel's own timestamps rather than the agent's. L2 writes a marker into its kernel log before
# each cycle and prints a console line right after it ("sync cycle=N"; the marker's kernel time
# is on the next "ready" line as ksync=): L1's arrival stamp of that line minus ksync maps kernel
# time to L1 time (L1's clock has 10 ms steps, and the console line's own delay, a few ms, makes
# the figures a little late, never early). Each "kmsg cycle=N [T] ..." line becomes an L1 time
# and belongs to the latest QMP command before it (T0FILE: "N NAME PHASE T0" lines);
# LABEL_NAME_PHASE_kernel_first and _kernel_last are its first and last hot-plug kernel message
# after that command: the VMM's injection plus the guest kernel, without the agent. Prints each
# message with its offset.
kernel_figures() {
  awk -v label="$1" '
    FILENAME == ARGV[1] { n = ++steps; t0[n] = $4 + 0; what[n] = $2 "_" $3; cyc[n] = $1; next }
    / RIG-L2 sync cycle=/ { split($0, f, "cycle="); c = f[2] + 0; if (!(c in arrive)) arrive[c] = $1; next }
    / RIG-L2 ready / && /ksync=/ {
      c = 1
      if ($0 !~ /ready devices=/ && match($0, /cycle=[0-9]+ /)) c = substr($0, RSTART + 6, RLENGTH - 7) + 0
      split($0, f, "ksync="); ksync[c] = f[2] + 0; next }
    / RIG-L2 kmsg cycle=/ {
      split($0, f, "kmsg cycle="); c = f[2] + 0
      if (!(c in arrive) || !(c in ksync) || !match($0, /\[ *[0-9]+\.[0-9]+\]/)) next
      t = substr($0, RSTART + 1, RLENGTH - 2) + arrive[c] - ksync[c]
      msgs++; mt[msgs] = t; mtext[msgs] = substr($0, RSTART + RLENGTH + 1, 90)
    }
    END {
      for (i = 1; i <= msgs; i++) {
        s = 0
        for (n = 1; n <= steps; n++) if (t0[n] <= mt[i] && (s == 0 || t0[n] >= t0[s])) s = n
        if (s == 0) continue
        d = mt[i] - t0[s]
        printf "  %s cycle %d %s kernel +%.3f s: %s\n", label, cyc[s], what[s], d, mtext[i]
        if (!(s in first) || d < first[s]) first[s] = d
        if (!(s in last) || d > last[s]) last[s] = d
      }
      for (n = 1; n <= steps; n++) if (n in first) {
        printf "RIG-TIME %s_%s_kernel_first=%.3f\n", label, what[n], first[n]
        printf "RIG-TIME %s_%s_kernel_last=%.3f\n", label, what[n], last[n]
      }
    }' "$3" "$2"
}

_hotplug_cycles() {
  _ti=$(wait_for "$_hlog" ' RIG-L2 init ' "${L2_INIT_WAIT:-90}") || { echo "$_hl: L2 did not reach init"; return 1; }
  report_time "${_hl}_boot_to_init" "$(elapsed "$VMM_START" "$_ti")"
  wait_for "$_hlog" ' RIG-L2 ready devices=' 60 >/dev/null || { echo "$_hl: L2 not ready"; return 1; }
  # Read-write: opening never waits for a reader (a VMM that died would otherwise hang L1 here).
  exec 3<>$_hq.in
  wait_for $_hq.log '"QMP"' 10 >/dev/null || { echo "$_hl: no QMP greeting"; return 1; }
  _qmp '{"execute":"qmp_capabilities"}'
  wait_for $_hq.log '"return"' 10 >/dev/null || { echo "$_hl: qmp_capabilities failed"; return 1; }
  _n=1
  for _t in $HOTPLUG_TARGETS; do
    _name=${_t%%:*}; _rest=${_t#*:}; _bus=${_rest%%:*}; _extra=${_rest#*:}
    if [ "$_n" = 1 ]; then _ready=' RIG-L2 ready devices='; else _ready=" RIG-L2 ready cycle=$_n "; fi
    wait_for "$_hlog" "$_ready" 60 >/dev/null || { echo "$_hl: L2 not ready for cycle $_n ($_name)"; return 1; }
    if [ "${HOTPLUG_PAUSE_FIRST:-0}" = 1 ]; then
      # QMP stop, then device_add: a stopped guest must not see the device until cont.
      _qmp '{"execute":"stop"}'
      wait_for $_hq.log '"event": *"STOP"' 10 >/dev/null || { echo "$_hl: no STOP event after stop"; return 1; }
      _qmp "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"pci-testdev\",\"id\":\"hp$_n\",\"bus\":\"$_bus\"$_extra}}"
      sleep 2
      if grep -q " RIG-L2 plugged cycle=$_n " "$_hlog"; then echo "$_hl: L2 saw hp$_n while the VM was stopped"; return 1; fi
      echo "ok: stopped for 2 s, L2 did not run"
      _t0=$(now)
      _qmp '{"execute":"cont"}'
      echo "$_n $_name plug $_t0" >>/tmp/hp-t0-$_hl
      _t1=$(wait_for "$_hlog" " RIG-L2 plugged cycle=$_n " 30) || { echo "$_hl: L2 did not see the device after cont"; return 1; }
      report_time "${_hl}_${_name}_plug_after_cont" "$(elapsed "$_t0" "$_t1")"
    else
      _t0=$(now)
      _qmp "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"pci-testdev\",\"id\":\"hp$_n\",\"bus\":\"$_bus\"$_extra}}"
      echo "$_n $_name plug $_t0" >>/tmp/hp-t0-$_hl
      _t1=$(wait_for "$_hlog" " RIG-L2 plugged cycle=$_n " 30) || { echo "$_hl: L2 did not see the device plugged into $_bus"; return 1; }
      report_time "${_hl}_${_name}_plug" "$(elapsed "$_t0" "$_t1")"
    fi
    # HOTPLUG_SETTLE=S: wait S seconds first (QEMU refuses device_del while the slot's power
    # indicator still blinks from the plug: "guest is busy").
    [ -n "${HOTPLUG_SETTLE:-}" ] && sleep "$HOTPLUG_SETTLE"
    _t0=$(now)
    _qmp "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"hp$_n\"$HOTPLUG_DEL_EXTRA}}"
    echo "$_n $_name unplug $_t0" >>/tmp/hp-t0-$_hl
    _t1=$(wait_for $_hq.log "DEVICE_DELETED.*\"hp$_n\"" 30) || { echo "$_hl: no DEVICE_DELETED for hp$_n within 30 s"; return 1; }
    report_time "${_hl}_${_name}_unplug_device_deleted" "$(elapsed "$_t0" "$_t1")"
    _t1=$(wait_for "$_hlog" " RIG-L2 unplugged cycle=$_n " 30) || { echo "$_hl: L2 did not see hp$_n leave $_bus"; return 1; }
    report_time "${_hl}_${_name}_unplug_guest" "$(elapsed "$_t0" "$_t1")"
    _n=$((_n + 1))
  done
}

# ACPI PCI hot-plug (the acpihp scenarios): QEMU 10's default path, `-global
# ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on`, under either VMM. One cycle into a root port
# (rp3), one into the switch downstream port (dn2), one into a pci-bridge slot (br1 addr 2); L2's
# acpiphp handles each through _E01 (device check, eject request) and the slot's _EJ0.
ACPIHP_GLOBAL="-global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on"
ACPIHP_TARGETS="rootport:rp3: switchport:dn2: bridge:br1:,\"addr\":\"2\""
qemu_acpihp_command() {
  qemu_l2_command | sed 's/acpi-pci-hotplug-with-bridge-support=off/acpi-pci-hotplug-with-bridge-support=on/'
}

# acpihp_facts LABEL: what one VMM's acpihp session showed, one fact a line, without times,
# resource addresses or kernel timestamps, so that two VMMs' files compare line by line:
# L2's driver bindings, hot-plug slots, acpiphp's slot count, each cycle's devices, and the
# DEVICE_DELETED events. Written to /tmp/acpihp-LABEL.facts.
acpihp_facts() {
  {
    sed -n 's/^[0-9.]* RIG-L2 //p' /tmp/l2-hotplug-$1.log |
      grep -E '^(driver |pciehp |pcislots |acpiphp |ready |plugged |unplugged |devices=)' |
      sed -e 's/ uptime=[0-9.]*//' -e 's/ ksync=[0-9.]*//'
    # The functions each cycle added (the lines between "plugged" and "unplugged").
    sed -n '/ RIG-L2 plugged /,/ RIG-L2 unplugged /s/^[0-9.]* RIG-L2 \(dev .*\) res=.*/cycle \1/p' /tmp/l2-hotplug-$1.log
    grep -o 'DEVICE_DELETED.*"device": *"hp[0-9]*"' /tmp/qmp-$1.log | sed 's/.*"device": *"\(hp[0-9]*\)"/DEVICE_DELETED \1/'
  } >/tmp/acpihp-$1.facts
}

# acpihp_check LABEL: L2 bound acpiphp (slots registered, pciehp not bound: _OSC kept native
# hot-plug) and every cycle's device left with DEVICE_DELETED. Prints each failure; returns
# their count.
acpihp_check() {
  _f=0 _af=/tmp/acpihp-$1.facts
  echo "--- acpihp facts ($1):"; sed 's/^/  /' $_af | cut -c1-240
  _n=$(sed -n 's/^acpiphp registered=//p' $_af)
  [ "${_n:-0}" -gt 0 ] || { echo "CHECK FAILED ($1): acpiphp registered no slot in L2"; _f=$((_f + 1)); }
  _n=$(sed -n 's/^pciehp services=\([0-9]*\).*/\1/p' $_af)
  [ "$_n" = 0 ] || { echo "CHECK FAILED ($1): pciehp bound ${_n:-?} ports; with ACPI hot-plug it must bind none"; _f=$((_f + 1)); }
  _want=0; for _t in $ACPIHP_TARGETS; do _want=$((_want + 1)); done
  _n=$(grep -c '^DEVICE_DELETED ' $_af)
  [ "$_n" = "$_want" ] || { echo "CHECK FAILED ($1): $_n DEVICE_DELETED events, want $_want"; _f=$((_f + 1)); }
  _n=$(grep -c '^unplugged ' $_af)
  [ "$_n" = "$_want" ] || { echo "CHECK FAILED ($1): L2 saw $_n of $_want devices leave"; _f=$((_f + 1)); }
  return $_f
}

# acpihp_session LABEL CMD...: hotplug_session over $ACPIHP_TARGETS, then the facts and checks.
acpihp_session() {
  _al=$1 _saved=$HOTPLUG_TARGETS _arc=0
  HOTPLUG_TARGETS=$ACPIHP_TARGETS
  # acpiphp's notify handler logs only at debug level: dynamic debug turns that on, so its
  # "Device check" and "Eject request" lines carry the kernel's time of each ACPI event.
  HOTPLUG_APPEND=' dyndbg="file acpiphp_glue.c +p"'
  hotplug_session "$@" || _arc=1
  HOTPLUG_TARGETS=$_saved HOTPLUG_APPEND=""
  acpihp_facts "$_al"
  acpihp_check "$_al" || _arc=1
  return $_arc
}
