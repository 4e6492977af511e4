#!/usr/bin/env python3
"""Device identities for Switchyard's VFIO twin (Sources/VFIO/Twin): what a host PCI function
looks like to vfio-pci, taken from QEMU 10's emulated devices, so that unit tests of device
assignment run against a real device's config space instead of one we made up.

For each device a fresh QEMU (q35, TCG, paused, no firmware) is started with the device behind a
pcie-root-port at 00:02.0, as the rig's L0 places it. The script enables ECAM (PCIEXBAR at
0xb0000000), gives the root port bus 1, and records the device at 01:00.0:

  NAME.config.txt  its 4 KiB config space after reset, as lspci -xxxx text (lspci -F reads it)
  NAME.bars.txt    the exact QEMU command line, then per BAR and the ROM BAR the register at
                   reset and what it reads after all ones were written (BAR sizing), restored after

Usage: qemu_vfio_twins.py OUTDIR [NAME ...]      (Python 3 standard library only)
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qemu_ports import QTest, cf8_write32, dump, ecam, lspci_text, ECAM_BASE  # noqa: E402

ROOT_PORT = "pcie-root-port,id=rp1,bus=pcie.0,addr=2.0,chassis=1,slot=1"

# name -> the -device arguments after the root port (the rig's L0 devices, RIG-RECIPES.md).
TWINS = {
    "qemu10-nvme": ["nvme-subsys,id=subsys0",
                    "nvme,bus=rp1,serial=deadbeef,subsys=subsys0,sriov_max_vfs=2,sriov_vq_flexible=4,"
                    "sriov_vi_flexible=2"],
    "qemu10-igb": ["igb,bus=rp1,mac=52:54:00:aa:00:01"],
}

BDF = (1, 0, 0)


def command_line(devices):
    args = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-S", "-nodefaults", "-display", "none",
            "-device", ROOT_PORT]
    for d in devices:
        args += ["-device", d]
    return " ".join(args)


def size_register(q, offset):
    addr = ecam(*BDF, offset)
    reset = q.cmd("readl 0x%x" % addr)
    q.cmd("writel 0x%x 0xffffffff" % addr)
    sizing = q.cmd("readl 0x%x" % addr)
    q.cmd("writel 0x%x 0x%x" % (addr, reset))
    return reset, sizing


def run(name, outdir):
    devices = TWINS[name]
    q = QTest([ROOT_PORT] + devices)
    try:
        cf8_write32(q, 0, 0, 0, 0x64, 0)
        cf8_write32(q, 0, 0, 0, 0x60, ECAM_BASE | 1)
        cf8_write32(q, 0, 2, 0, 0x18, 0 | 1 << 8 | 1 << 16)
        config = dump(q, BDF)
        if config[0:2] == b"\xff\xff":
            raise RuntimeError("%s not found at 01:00.0" % name)
        bars = [size_register(q, 0x10 + 4 * i) for i in range(6)]
        rom = size_register(q, 0x30)
    finally:
        q.close()
    version = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, name + ".config.txt"), "w") as f:
        f.write(lspci_text(BDF, config))
    with open(os.path.join(outdir, name + ".bars.txt"), "w") as f:
        f.write("# %s\n# %s\n" % (version, command_line(devices)))
        for i, (reset, sizing) in enumerate(bars):
            f.write("bar %d reset %08x sizing %08x\n" % (i, reset, sizing))
        f.write("rom reset %08x sizing %08x\n" % rom)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    outdir = sys.argv[1]
    names = sys.argv[2:] or list(TWINS)
    for name in names:
        if name not in TWINS:
            print("unknown twin %s; known: %s" % (name, ", ".join(TWINS)), file=sys.stderr)
            return 2
        run(name, outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
