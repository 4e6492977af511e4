#!/usr/bin/env bash
# Runs the ConfigAccess benchmarks (release build) and prints the median wall-clock time and
# mallocs per config access for each case, plus the ratios N=4096 / N=1 for ECAM and CF8/CFC
# and N=1024 / N=1 for ECAM on the PCIe topology; the time per BAR move (an address-space commit)
# with 1, 256 and 4096 mapped BARs and its ratio N=4096 / N=1; then the HotPlug benchmarks,
# VFIO DMA maps and virtio-net's tap transmit and receive datapaths against raw writev and readv (needs root).
# Usage: Benchmarks/report.sh [--smoke] [extra `swift package benchmark` options, e.g. --filter ECAM]
#   --smoke: every benchmark for one or two short iterations (make test: the package builds and
#   every workload runs; the figures mean nothing).
# The full tool output is kept in Benchmarks/.build/config-access-report.txt.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = --smoke ]; then export SWITCHYARD_BENCH_SMOKE=1; shift; fi
mkdir -p .build
out=.build/config-access-report.txt
# A table with no rows fails the run, unless options (a --filter) may have left its rows out.
strict=1; [ $# -eq 0 ] || strict=0

# jemalloc is not needed: Package.swift enables only the benchmark package's MallocInterposer
# trait (not its default RuntimeInterposer, whose package is not available here). To build
# without the malloc interposer too, use the package's documented switch:
#   BENCHMARK_DISABLE_MALLOC_INTERPOSER=1 Benchmarks/report.sh
# "instructions" needs perf_event counters; where the kernel offers none it shows n/a.
swift package --allow-writing-to-package-directory benchmark run \
    --target ConfigAccess --no-progress --time-units nanoseconds "$@" | tee "$out" >/dev/null

# The text table: a benchmark's name on its own line, then rows "│ Metric │ p0 │ p25 │ p50 │ ...".
# Rows marked "*" are scaled by the inner loop, i.e. per access.
awk -v strict="$strict" -F'│' '
    function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
    /^(ECAM|CF8-CFC|PCIe ECAM|BAR MMIO) read / { name = $0; next }
    /^BAR move / { name = ""; next }
    name != "" && /Time \(wall clock\)/ { ns[name] = trim($5) + 0; order[++n] = name }
    name != "" && /Instructions/         { ins[name] = trim($5) }
    name != "" && /Malloc \(total\)/      { mal[name] = trim($5) }
    END {
        if (n == 0) { print "no config-access results parsed; see the raw output"; exit strict }
        printf "%-36s %10s %14s %14s\n", "benchmark (median of samples)", "ns/access", "instructions", "mallocs/access"
        for (i = 1; i <= n; i++) {
            b = order[i]
            printf "%-36s %10.0f %14s %14s\n", b, ns[b], (b in ins ? ins[b] : "n/a"), (b in mal ? mal[b] : "n/a")
        }
        print ""
        split("ECAM:4096 CF8-CFC:4096 PCIe_ECAM:1024 BAR_MMIO:4096", paths, " ")
        for (p = 1; p <= 4; p++) {
            split(paths[p], pn, ":"); gsub(/_/, " ", pn[1])
            one = pn[1] " read N=1"; big = pn[1] " read N=" pn[2]; mid = pn[1] " read N=256"
            if ((one in ns) && (big in ns) && ns[one] > 0)
                printf "%-10s N=%s/N=1 = %.2f   (N=256/N=1 = %.2f)\n", pn[1], pn[2], ns[big] / ns[one], ns[mid] / ns[one]
        }
    }' "$out"

# BAR moves (same run): time per commit as the number of mapped BARs grows (linear growth is
# N=4096/N=256 = 16), and the KVM memory-slot ioctls one move costs (n/a without /dev/kvm).
awk -v strict="$strict" -F'│' '
    function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
    /^BAR move N=/ { name = $0; next }
    /^[A-Za-z]/ { name = ""; next }
    name != "" && /Time \(wall clock\)/ { ns[name] = trim($5) + 0; order[++k] = name }
    name != "" && /KVM slot ioctls/ { slots[name] = trim($5) }
    END {
        if (k == 0) { print "no BAR-move results parsed; see the raw output"; exit strict }
        print ""
        printf "%-32s %12s %16s\n", "benchmark (median)", "us per move", "slot ioctls/move"
        for (i = 1; i <= k; i++) printf "%-32s %12.1f %16s\n", order[i], ns[order[i]] / 1000, (order[i] in slots ? slots[order[i]] : "n/a")
        one = "BAR move N=1"; big = "BAR move N=4096"; mid = "BAR move N=256"
        if ((one in ns) && (big in ns) && ns[one] > 0)
            printf "BAR move   N=4096/N=1 = %.2f   (N=256/N=1 = %.2f)\n", ns[big] / ns[one], ns[mid] / ns[one]
        if ((mid in ns) && (big in ns) && ns[mid] > 0)
            printf "BAR move   N=4096/N=256 = %.2f   (linear: 16)\n", ns[big] / ns[mid]
    }' "$out"

# Hot-plug and enumerate N endpoints: time per device and growth.
hp=.build/hotplug-report.txt
swift package --allow-writing-to-package-directory benchmark run \
    --target HotPlug --no-progress --time-units microseconds "$@" | tee "$hp" >/dev/null
echo
awk -v strict="$strict" -F'│' '
    function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
    /^HotPlug\+enumerate N=/ { name = $0; split(name, parts, "N="); n[name] = parts[2] + 0; next }
    name != "" && /Time \(wall clock\)/ { us[name] = trim($5) + 0; order[++k] = name; name = "" }
    END {
        if (k == 0) { print "no hot-plug results parsed; see the raw output"; exit strict }
        printf "%-32s %12s %14s\n", "benchmark (median)", "total us", "us per device"
        for (i = 1; i <= k; i++) { b = order[i]; printf "%-32s %12.0f %14.2f\n", b, us[b], us[b] / n[b] }
        small = order[1]; large = order[1]
        for (i = 2; i <= k; i++) { if (n[order[i]] < n[small]) small = order[i]; if (n[order[i]] > n[large]) large = order[i] }
        printf "per-device cost, N=%d over N=%d: %.2fx\n", n[large], n[small], (us[large] / n[large]) / (us[small] / n[small])
    }' "$hp"

# VFIO DMA maps of a 1 GiB and a 4 GiB guest against the twin (our side only; VFIODMA.swift).
vd=.build/vfio-dma-report.txt
swift package --allow-writing-to-package-directory benchmark run \
    --target VFIODMA --no-progress --time-units microseconds "$@" | tee "$vd" >/dev/null
echo
awk -v strict="$strict" -F'│' '
    function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
    /^VFIO DMA map\+unmap [0-9]+ GiB/ { name = $0; split(name, parts, " "); g[name] = parts[4] + 0; next }
    name != "" && /Time \(wall clock\)/ { us[name] = trim($5) + 0; order[++k] = name; name = "" }
    END {
        if (k == 0) { print "no VFIO DMA results parsed; see the raw output"; exit strict }
        printf "%-32s %12s\n", "benchmark (median)", "us"
        for (i = 1; i <= k; i++) { b = order[i]; printf "%-32s %12.1f\n", b, us[b] }
        for (i = 1; i <= k; i++) { if (g[order[i]] == 1) one = order[i]; if (g[order[i]] == 4) four = order[i] }
        if (one != "" && four != "" && us[one] > 0) printf "4 GiB over 1 GiB (same run): %.2fx\n", us[four] / us[one]
    }' "$vd"

# virtio-net's transmit and receive datapaths over a tap against raw writev/readv on a tap, 256
# frames per iteration (TapDatapath.swift): packets/s from the medians and datapath/raw from the
# same run.
td=.build/tap-datapath-report.txt
swift package --allow-writing-to-package-directory benchmark run \
    --target TapDatapath --no-progress --time-units microseconds "$@" | tee "$td" >/dev/null
echo
awk -v strict="$strict" -F'│' '
    function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
    /^Tap (TX|RX) [0-9]+ B / { name = $0; next }
    name != "" && /Time \(wall clock\)/ { us[name] = trim($5) + 0; order[++k] = name; name = "" }
    END {
        if (k == 0) { print "no tap datapath results parsed; see the raw output"; exit strict }
        printf "%-32s %14s %12s\n", "benchmark (median)", "us per 256", "packets/s"
        for (i = 1; i <= k; i++) { b = order[i]; printf "%-32s %14.1f %12.0f\n", b, us[b], (us[b] > 0 ? 256e6 / us[b] : 0) }
        split("64 1500", sizes, " ")
        for (s = 1; s <= 2; s++) {
            for (w = 1; w <= 2; w++) {
                dir = (w == 1 ? "TX" : "RX"); call = (w == 1 ? "writev" : "readv")
                d = "Tap " dir " " sizes[s] " B datapath"; r = "Tap " dir " " sizes[s] " B raw " call
                o = "Tap " dir " " sizes[s] " B raw other thread"
                if ((d in us) && (r in us) && us[d] > 0)
                    printf "%s %4s B: datapath/raw %s = %.2fx (goal 0.8x)", dir, sizes[s], call, us[r] / us[d]
                if ((d in us) && (o in us) && us[d] > 0)
                    printf "; datapath/raw on an I/O thread of its own = %.2fx", us[o] / us[d]
                if (d in us) printf "\n"
            }
        }
    }' "$td"
