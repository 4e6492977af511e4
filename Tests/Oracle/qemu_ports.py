#!/usr/bin/env python3
"""Differential oracle for Switchyard's PCI Express ports: asks QEMU how it lays out the config
space of pcie-root-port, ioh3420, x3130-upstream and xio3130-downstream with default properties.

For each port a fresh QEMU (q35, TCG, paused, no firmware) is started with -qtest pointing at a
unix socket this script listens on. The script programs PCIEXBAR itself (MCH 00:00.0 offset 0x60)
so that the full 4 KiB are reachable through ECAM, programs bus numbers on the bridges above the
port, and then

  1. dumps the port's 4 KiB config space as it is after reset  -> NAME.txt
  2. probes every byte: remember it, write 0xff, read back, write 0x00, read back, write the
     remembered value back, read back -> NAME.after-ff.txt, NAME.after-00.txt, NAME.after-restore.txt

Replaying the same probe sequence on a model and comparing the three read-backs per byte checks
writable, write-1-to-clear and read-only bits including side effects between registers (a Slot
Control write setting Command Completed), without having to guess QEMU's internal masks.

Each port sits in its own QEMU so that probing cannot unplug anything the probe still needs
(writing 0xff to a populated slot's Slot Control powers it off and ejects the device); probed
slots are empty.

Output is lspci -xxxx text: "BB:DD.F Class CCCC: VVVV:DDDD" then rows "000: xx xx ...".

Usage: qemu_ports.py OUTDIR [NAME ...]      (Python 3 standard library only)
"""

import os
import socket
import subprocess
import sys
import tempfile

ECAM_BASE = 0xB0000000

# name -> (extra -device arguments placing the chain, (bus, dev, fn) of the probed port,
#          bridges to program on the way: list of ((bus, dev, fn), secondary, subordinate))
# Root ports above a switch get chassis=1 so that their (chassis, slot) pair differs from the
# downstream port's default (0, 0); the probed ports keep every default.
SETUPS = {
    "pcie-root-port": (["pcie-root-port,id=p,bus=pcie.0,addr=2.0"], (0, 2, 0), []),
    "ioh3420": (["ioh3420,id=p,bus=pcie.0,addr=2.0"], (0, 2, 0), []),
    "x3130-upstream": (
        ["pcie-root-port,id=rp,bus=pcie.0,addr=2.0,chassis=1", "x3130-upstream,id=p,bus=rp"],
        (1, 0, 0), [((0, 2, 0), 1, 1)]),
    "xio3130-downstream": (
        ["pcie-root-port,id=rp,bus=pcie.0,addr=2.0,chassis=1", "x3130-upstream,id=up,bus=rp",
         "xio3130-downstream,id=p,bus=up"],
        (2, 0, 0), [((0, 2, 0), 1, 2), ((1, 0, 0), 2, 2)]),
}


class QTest:
    def __init__(self, devices):
        self.dir = tempfile.mkdtemp(prefix="qemu-ports-")
        self.log = open(os.path.join(self.dir, "qemu.log"), "w+")
        path = os.path.join(self.dir, "qtest.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(30)
        args = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-S", "-nodefaults",
                "-display", "none", "-monitor", "none", "-serial", "none", "-qtest", "unix:" + path, "-qtest-log", "/dev/null"]
        for d in devices:
            args += ["-device", d]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.log)
        try:
            self.sock, _ = self.listener.accept()
        except socket.timeout:
            self.proc.kill()
            self.log.seek(0)
            raise RuntimeError("QEMU did not connect: " + self.log.read())
        self.sock.settimeout(30)
        self.buf = b""

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\n")
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise RuntimeError("QEMU closed the qtest socket after: " + line)
                self.buf += chunk
            reply, self.buf = self.buf.split(b"\n", 1)
            reply = reply.decode()
            if reply.startswith("IRQ"):
                continue
            if not reply.startswith("OK"):
                raise RuntimeError("qtest %r -> %r" % (line, reply))
            parts = reply.split()
            return int(parts[1], 16) if len(parts) > 1 else None

    def close(self):
        try:
            self.sock.close()
        finally:
            self.proc.kill()
            self.proc.wait()
            self.listener.close()


def cf8_write32(q, bus, dev, fn, off, value):
    q.cmd("outl 0xcf8 0x%x" % (0x80000000 | bus << 16 | dev << 11 | fn << 8 | (off & 0xFC)))
    q.cmd("outl 0xcfc 0x%x" % value)


def ecam(bus, dev, fn, off):
    return ECAM_BASE | bus << 20 | dev << 15 | fn << 12 | off


def dump(q, bdf):
    data = bytearray()
    for off in range(0, 4096, 4):
        v = q.cmd("readl 0x%x" % ecam(*bdf, off))
        data += v.to_bytes(4, "little")
    return bytes(data)


def probe(q, bdf):
    after_ff, after_00, after_restore = bytearray(), bytearray(), bytearray()
    for off in range(4096):
        addr = ecam(*bdf, off)
        orig = q.cmd("readb 0x%x" % addr)
        q.cmd("writeb 0x%x 0xff" % addr)
        after_ff.append(q.cmd("readb 0x%x" % addr))
        q.cmd("writeb 0x%x 0x00" % addr)
        after_00.append(q.cmd("readb 0x%x" % addr))
        q.cmd("writeb 0x%x 0x%x" % (addr, orig))
        after_restore.append(q.cmd("readb 0x%x" % addr))
    return bytes(after_ff), bytes(after_00), bytes(after_restore)


def lspci_text(bdf, data):
    vendor = int.from_bytes(data[0:2], "little")
    device = int.from_bytes(data[2:4], "little")
    cls = int.from_bytes(data[0x0A:0x0C], "little")
    lines = ["%02x:%02x.%x Class %04x: %04x:%04x" % (bdf[0], bdf[1], bdf[2], cls, vendor, device)]
    for row in range(0, len(data), 16):
        lines.append("%03x: %s" % (row, " ".join("%02x" % b for b in data[row:row + 16])))
    return "\n".join(lines) + "\n"


def run(name, outdir):
    devices, bdf, bridges = SETUPS[name]
    q = QTest(devices)
    try:
        # PCIEXBAR: 256 MiB ECAM at 0xb0000000, enabled.
        cf8_write32(q, 0, 0, 0, 0x64, 0)
        cf8_write32(q, 0, 0, 0, 0x60, ECAM_BASE | 1)
        for (b, d, f), secondary, subordinate in bridges:
            cf8_write32(q, b, d, f, 0x18, b | secondary << 8 | subordinate << 16)
        reset = dump(q, bdf)
        if reset[0:2] == b"\xff\xff":
            raise RuntimeError("%s not found at %02x:%02x.%x" % ((name,) + bdf))
        after_ff, after_00, after_restore = probe(q, bdf)
    finally:
        q.close()
    os.makedirs(outdir, exist_ok=True)
    for suffix, data in (("", reset), (".after-ff", after_ff), (".after-00", after_00),
                         (".after-restore", after_restore)):
        with open(os.path.join(outdir, name + suffix + ".txt"), "w") as f:
            f.write(lspci_text(bdf, data))


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    outdir = sys.argv[1]
    names = sys.argv[2:] or list(SETUPS)
    for name in names:
        if name not in SETUPS:
            print("unknown port %s; known: %s" % (name, ", ".join(SETUPS)), file=sys.stderr)
            return 2
        run(name, outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
