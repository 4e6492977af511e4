#!/usr/bin/env python3
"""Differential oracle: QEMU 10's igb (8086:10c9, an SR-IOV PF) and nvme behind root ports.

Starts qemu-system-x86_64 (q35, TCG, stopped) with a qtest socket, enables ECAM, gives each
root port a bus number, dumps each endpoint's 4 KiB config space in `lspci -xxxx` format (the
bytes a VFIO config region would give us for such a device) and records QEMU's answer to BAR
sizing (all ones written to each BAR and the ROM BAR, read back, restored).

Usage: qemu_endpoints.py OUTDIR    writes qemu10-<name>-behind-root-port.lspci and
                                   qemu10-endpoint-bar-sizing.txt into OUTDIR
Python 3 standard library only.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qemu_bridges as qb  # noqa: E402  (its QTest session and ECAM helpers)

ENDPOINTS = [
    # (name, bus, root port devfn, -device arguments)
    ("igb", 1, 2 << 3, ["pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2", "igb,bus=rp1,id=n1"]),
    ("nvme", 2, 3 << 3, ["pcie-root-port,id=rp2,chassis=1,slot=2,addr=0x3", "nvme,serial=sy1,bus=rp2,id=n2"]),
]
SIZING_OFFSETS = [0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x30]


def main(outdir):
    q = qb.QTest([arg for e in ENDPOINTS for arg in e[3]])
    q.enable_ecam()
    sizing = []
    for name, bus, port, _ in ENDPOINTS:
        q.wl(port, 0x18, bus << 16 | bus << 8)  # secondary = subordinate = bus
        base = qb.ECAM | bus << 20
        data = [q.mem_rb(base | o) for o in range(4096)]
        text = "%02x:00.0 Class 0000: %02x%02x:%02x%02x\n" % (bus, data[1], data[0], data[3], data[2])
        for row in range(0, 4096, 16):
            text += "%03x: " % row + " ".join("%02x" % b for b in data[row:row + 16]) + "\n"
        with open(os.path.join(outdir, "qemu10-%s-behind-root-port.lspci" % name), "w") as f:
            f.write(text)
        answers = []
        for off in SIZING_OFFSETS:
            old = q.mem_rl(base | off)
            q.mem_wl(base | off, 0xFFFFFFFF)
            answers.append("%02x=%08x" % (off, q.mem_rl(base | off)))
            q.mem_wl(base | off, old)
        sizing.append(name + " " + " ".join(answers))
    q.close()
    with open(os.path.join(outdir, "qemu10-endpoint-bar-sizing.txt"), "w") as f:
        f.write("# QEMU 10: BAR and ROM BAR values read back after writing all ones (offset=value)\n")
        f.write("\n".join(sizing) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
