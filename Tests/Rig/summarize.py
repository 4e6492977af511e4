#!/usr/bin/env python3
"""Reads a rig log (run.sh: host seconds, then the L1 serial line) and prints the scenario's
result and timings. Exit status: 0 PASS, 77 SKIP, 1 FAIL or no result."""
import re
import sys


def main(path: str) -> int:
    times: dict[str, float] = {}
    result = None
    l1_init = l1_kvm = None
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"\s*(\d+\.\d+) (.*)", line.rstrip("\n"))
            if not m:
                continue
            host, text = float(m.group(1)), m.group(2)
            if text.startswith("RIG-L1 init ") and l1_init is None:
                l1_init = host
            elif text.startswith("RIG-L1 modules-loaded") and l1_kvm is None:
                l1_kvm = host
            elif mt := re.match(r"RIG-TIME (\S+)=(-?[\d.]+)", text):
                times[mt.group(1)] = float(mt.group(2))
            elif mr := re.match(r"RIG-RESULT scenario=(\S+) status=(\w+)", text):
                result = (mr.group(1), mr.group(2), host)
    print("-- rig summary:", path)
    if l1_init is not None:
        print(f"   l1_boot_to_init (host): {l1_init:.2f} s")
    if l1_kvm is not None and l1_init is not None:
        print(f"   l1_kvm_modules_loaded (host): {l1_kvm - l1_init:.2f} s after init")
    for name, value in times.items():
        if name.endswith("_us_per_cfg_access"):  # cfg-exits: microseconds per config access
            print(f"   {name}: {value:.0f} us")
        elif "per_cfg_access" in name or "ratio" in name:  # cfg-exits: counts per access, ratios
            print(f"   {name}: {value:.3f}")
        elif "_kernel_" in name:  # hot-plug steps by the guest kernel's clock: ms matter
            print(f"   {name}: {value * 1000:.0f} ms")
        elif name.endswith("_ms"):  # already milliseconds (ping averages)
            print(f"   {name}: {value:.2f} ms")
        elif name.endswith("_MiBps"):
            print(f"   {name}: {value:.1f} MiB/s")
        elif name.endswith(("_per_s", "_iops")):  # transactions or I/Os per second
            print(f"   {name}: {value:.0f} /s")
        else:
            print(f"   {name}: {value:.2f} s")
    for what in ("boot_to_init", "total"):
        q = times.get(f"qemu_{what}")
        for label in ("switchyard", "switchyard_pvh"):
            s = times.get(f"{label}_{what}")
            if q and s:
                print(f"   {label}/qemu {what}: {s / q:.2f}")
    if result is None:
        print("   result: none (L1 crashed or timed out)")
        return 1
    scenario, status, host = result
    print(f"   result: {scenario} {status} (L1 wall {host:.2f} s)")
    return {"PASS": 0, "SKIP": 77}.get(status, 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
