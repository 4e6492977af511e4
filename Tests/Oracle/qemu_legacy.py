#!/usr/bin/env python3
"""Differential oracle for Switchyard's legacy PC devices: drives a real QEMU q35
(-nodefaults plus COM1 on a null chardev, CPU stopped so its virtual clock reads 0)
through a fixed sequence of port accesses and prints the transcript:

  w PORT WIDTH VALUE               a write
  r PORT WIDTH VALUE MASK LABEL    a read, what QEMU answered, the bits that count

Tests/MachineTests replays it against our machine; DeviceTables/legacy-allowlist.txt
lists the labels allowed to differ, with reasons. Reuses qemu_q35.QEMUMachine.
Standard library only.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qemu_q35  # noqa: E402


class LegacyQEMU(qemu_q35.QEMUMachine):
    """QEMUMachine with COM1 present (-serial null instead of -serial none)."""

    def __init__(self):
        real = qemu_q35.subprocess.Popen

        def popen(argv, **kw):
            argv = list(argv)
            argv[argv.index("-serial") + 1] = "null"
            return real(argv, **kw)

        qemu_q35.subprocess.Popen = popen
        try:
            super().__init__()
        finally:
            qemu_q35.subprocess.Popen = real


class Transcript:
    def __init__(self, m):
        self.m = m
        self.lines = []

    def w(self, port, width, value):
        {1: self.m.outb, 2: self.m.outw, 4: self.m.outl}[width](port, value)
        self.lines.append(f"w {port:04x} {width} {value:x}")

    def r(self, label, port, width=1, mask=None):
        value = {1: self.m.inb, 2: self.m.inw, 4: self.m.inl}[width](port)
        mask = (1 << (8 * width)) - 1 if mask is None else mask
        self.lines.append(f"r {port:04x} {width} {value:x} {mask:x} {label}")
        return value

    def cfg_write(self, dev, fn, offset, width, value):
        self.w(0xCF8, 4, 0x80000000 | dev << 11 | fn << 8 | (offset & 0xFC))
        self.w(0xCFC + (offset & 3), width, value)


def run(t):
    # 16550A UART at COM1.
    for i, name in enumerate(["rbr", "ier", "iir", "lcr", "mcr", "lsr", "msr", "scr"]):
        t.r(f"uart.reset.{name}", 0x3F8 + i)
    t.r("uart.com2-absent", 0x2F8)
    t.w(0x3FB, 1, 0x80)
    t.r("uart.dll", 0x3F8)
    t.r("uart.dlm", 0x3F9)
    t.w(0x3FB, 1, 0x03)
    t.w(0x3FA, 1, 0xC7)
    t.r("uart.iir.fifo", 0x3FA)
    t.w(0x3F9, 1, 0x02)
    t.r("uart.iir.thri", 0x3FA)
    t.r("uart.iir.thri-read-clears", 0x3FA)
    t.w(0x3FC, 1, 0x1A)
    t.r("uart.msr.loopback", 0x3FE)
    t.w(0x3F8, 1, 0x41)
    t.r("uart.lsr.after-loop-tx", 0x3FD)
    t.r("uart.iir.after-loop-tx", 0x3FA)
    t.w(0x3F9, 1, 0x01)
    t.r("uart.iir.rx-below-trigger", 0x3FA)
    t.r("uart.rbr.loopback", 0x3F8)
    t.r("uart.lsr.drained", 0x3FD)
    t.r("uart.word-read", 0x3F8, 2)
    t.r("uart.dword-read", 0x3F8, 4)
    t.w(0x3FC, 1, 0x08)
    t.w(0x3F9, 1, 0x00)

    # MC146818 RTC and CMOS.
    t.r("rtc.index-port", 0x70)
    for reg, label in [(0x0A, "rtc.reg-a"), (0x0B, "rtc.reg-b"), (0x0C, "rtc.reg-c"), (0x0D, "rtc.reg-d")]:
        t.w(0x70, 1, reg)
        # Register A's UIP depends on the host time's sub-second phase.
        t.r(label, 0x71, mask=0x7F if reg == 0x0A else None)
    t.w(0x70, 1, 0x8B)
    t.r("rtc.reg-b.nmi-masked-index", 0x71)
    for reg in [0x0F, 0x10, 0x12, 0x14, 0x15, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34, 0x35,
                0x38, 0x3D, 0x5B, 0x5C, 0x5D, 0x5F]:
        t.w(0x70, 1, reg)
        t.r(f"cmos.{reg:02x}", 0x71)
    t.r("rtc.port-72", 0x72)

    # i8042.
    t.r("i8042.status.reset", 0x64)
    t.w(0x64, 1, 0xAA)
    t.r("i8042.status.selftest", 0x64)
    t.r("i8042.selftest", 0x60)
    t.r("i8042.status.after-read", 0x64)
    t.w(0x64, 1, 0x20)
    t.r("i8042.ctr", 0x60)
    t.w(0x64, 1, 0xAB)
    t.r("i8042.kbd-test", 0x60)
    t.w(0x64, 1, 0xA9)
    t.r("i8042.aux-test", 0x60)
    t.w(0x64, 1, 0xD0)
    t.r("i8042.outport", 0x60)
    t.w(0x64, 1, 0xD3)
    t.w(0x60, 1, 0x5A)
    t.r("i8042.status.aux-loop", 0x64)
    t.r("i8042.aux-loop", 0x60)
    t.w(0x60, 1, 0xF2)
    t.r("i8042.kbd-id.ack", 0x60)
    t.r("i8042.kbd-id.1", 0x60)
    t.r("i8042.kbd-id.2", 0x60)
    t.r("i8042.empty-read", 0x60)

    # RST_CNT and APM.
    t.r("rcr.reset", 0xCF9)
    t.w(0xCF9, 1, 0x0A)
    t.r("rcr.sys-full", 0xCF9)
    t.w(0xCF9, 1, 0x00)
    t.r("apm.cnt", 0xB2)
    t.r("apm.sts", 0xB3)

    # ICH9 PM block at PMBASE 0x600 once ACPI_CNTL.ACPI_EN is set.
    t.r("pm.undecoded", 0x600, 4)
    t.cfg_write(0x1F, 0, 0x40, 4, 0x601)
    t.cfg_write(0x1F, 0, 0x44, 1, 0x80)
    for off in [0x00, 0x04, 0x08, 0x0C, 0x10, 0x20, 0x24, 0x28, 0x2C, 0x30, 0x34, 0x38]:
        t.r(f"pm.+{off:02x}", 0x600 + off, 4)
    t.r("pm.tco.+60", 0x660, 4)
    t.r("pm.pm1cnt.word", 0x604, 2)
    t.w(0xB2, 1, 0x02)
    t.r("pm.pm1cnt.acpi-enabled", 0x604, 2)
    t.r("apm.cnt.after-enable", 0xB2)
    t.w(0x600, 2, 0x0001)
    t.r("pm.pm1sts.tmr-cleared", 0x600, 2)
    t.w(0x602, 2, 0x0121)
    t.r("pm.pm1en", 0x602, 2)
    t.w(0x628, 1, 0x02)
    t.r("pm.gpe0en", 0x628, 4)
    t.w(0x620, 1, 0xFF)
    t.r("pm.gpe0sts", 0x620, 4)
    t.w(0x630, 4, 0x20)
    t.r("pm.smi-en", 0x630, 4)
    t.w(0x634, 4, 0xFFFFFFFF)
    t.r("pm.smi-sts.read-only", 0x634, 4)
    t.w(0xB2, 1, 0x03)
    t.r("pm.pm1cnt.acpi-disabled", 0x604, 2)

    # ACPI PCI hot-plug block.
    for off, name in [(0, "up"), (4, "down"), (8, "ej"), (0xC, "rmv"), (0x10, "sel"), (0x14, "aidx")]:
        t.r(f"pcihp.{name}", 0xCC0 + off, 4)
    t.w(0xCD0, 4, 5)
    t.r("pcihp.sel.5", 0xCD0, 4)
    t.r("pcihp.rmv.5", 0xCCC, 4)
    t.w(0xCD0, 4, 0x1000)
    t.r("pcihp.sel.out-of-range", 0xCD0, 4)
    t.r("pcihp.rmv.out-of-range", 0xCCC, 4)
    t.w(0xCD0, 4, 0)
    t.r("pcihp.byte-read", 0xCD0, 1)
    t.r("pcihp.word-read", 0xCD0, 2)
    t.r("pcihp.above", 0xCD8, 4)


def main():
    with LegacyQEMU() as m:
        t = Transcript(m)
        run(t)
    print(f"# QEMU {qemu_q35.qemu_version()} q35 -nodefaults -serial null, CPU stopped")
    print("\n".join(t.lines))


if __name__ == "__main__":
    main()
