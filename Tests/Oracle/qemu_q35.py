#!/usr/bin/env python3
"""Differential oracle for Switchyard's q35 chipset: asks a real QEMU what its
q35 machine looks like at reset and how its MCH (00:00.0) and ICH9 LPC
(00:1f.0) config registers react to writes.

QEMU is started with no vCPU running (-S) and driven over the qtest text
protocol: QEMU connects to a Unix socket that this script listens on, and
the script issues port and memory accesses (outl 0xcf8 / inl 0xcfc, readl...).
Debian's QEMU has no qtest accelerator, so TCG is used with the CPU stopped;
the chipset is in its reset state.

Usage:
  qemu_q35.py --out-dir DIR     write DIR/qemu-<ver>-q35-reset.lspci and
                                DIR/qemu-<ver>-q35-wmask.txt
  qemu_q35.py --print lspci|wmask
                                print one of the two documents on stdout
Environment: QEMU (default qemu-system-x86_64).

Standard library only.
"""

import argparse
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

QEMU = os.environ.get("QEMU", "qemu-system-x86_64")

MCH = (0, 0, 0)
LPC = (0, 0x1F, 0)

# Bytes whose probe leaves state behind that a restore cannot undo (a lock
# bit, a query/answer handshake). Each is probed in a freshly started QEMU so
# that its result does not depend on the order of probing.
#   MCH 0x9c  F_SMBASE: writing 0xff is a query that answers 0x01 and
#             narrows the write mask to the lock bit; a lock sticks until reset.
#   MCH 0x9d  SMRAM: writing D_LCK locks SMRAM and ESMRAMC until reset.
#   LPC 0xa0  GEN_PMCON_1: SMI_LOCK (bit 4) sticks until reset.
FRESH = {MCH: {0x9C, 0x9D}, LPC: {0xA0}}

# Bytes whose probe has side effects on the platform while it runs; they are
# restored afterwards and need no fresh machine, but are noted in the output.
SIDE_EFFECTS = {
    MCH: {
        **{o: "PCIEXBAR: writing 0xff to byte 0 sets EN with the reserved length 11b, "
              "which QEMU ignores (keeps the previous ECAM mapping)" for o in [0x60]},
        **{o: "PCIEXBAR address bits; ECAM stays disabled while EN=0" for o in range(0x61, 0x68)},
        **{o: "PAM: remaps part of 0xc0000-0xfffff while probed" for o in range(0x90, 0x97)},
        0x9E: "ESMRAMC: TSEG enable/size (no effect while SMRAM.G_SMRAME=0)",
        0x50: "EXT_TSEG_MBYTES low byte (a word write of 0xffff is a query)",
        0x51: "EXT_TSEG_MBYTES high byte",
    },
    LPC: {
        **{o: "PMBASE: relocates the ACPI PM I/O block (only decoded while ACPI_CNTL.ACPI_EN=1)"
           for o in range(0x40, 0x44)},
        0x44: "ACPI_CNTL: ACPI_EN and SCI IRQ select; 0xff selects a reserved SCI IRQ",
        **{o: "PIRQ route: fires INTx routing notifiers" for o in list(range(0x60, 0x64)) + list(range(0x68, 0x6C))},
        **{o: "RCBA: maps/unmaps the 16 KiB chipset configuration block" for o in range(0xF0, 0xF4)},
        0xA1: "GEN_PMCON_1 high byte",
    },
}


class QTestError(Exception):
    pass


def _default_signals():
    """Gives QEMU ordinary signal handling: a parent such as a test runner may have
    blocked or ignored SIGTERM, which QEMU would inherit."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)


class QEMUMachine:
    """One QEMU process and its qtest connection."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="switchyard-oracle-")
        path = os.path.join(self.dir, "qtest.sock")
        self.stderr = open(os.path.join(self.dir, "stderr"), "w+")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.proc = subprocess.Popen(
            [QEMU, "-machine", "q35", "-accel", "tcg", "-S", "-nodefaults",
             "-display", "none", "-qtest", "unix:" + path, "-monitor", "none",
             "-serial", "none", "-qtest-log", "/dev/null"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
            preexec_fn=_default_signals)
        ready, _, _ = select.select([self.listener], [], [], 30)
        if not ready:
            self.close()
            raise QTestError("QEMU did not connect to the qtest socket")
        self.conn, _ = self.listener.accept()
        self.buf = b""

    def close(self):
        try:
            if getattr(self, "conn", None):
                self.conn.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.listener.close()
            self.stderr.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.conn.recv(4096)
            if not chunk:
                self.stderr.seek(0)
                err = self.stderr.read()
                raise QTestError("QEMU closed the qtest connection " + err)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def cmd(self, text):
        self.conn.sendall((text + "\n").encode())
        while True:
            line = self._line()
            if line.startswith("IRQ"):
                continue  # asynchronous interrupt event
            if not line.startswith("OK"):
                raise QTestError(f"{text!r} -> {line!r}")
            rest = line[2:].strip()
            return int(rest, 16) if rest else None

    # Port I/O.
    def outb(self, port, v): self.cmd(f"outb 0x{port:x} 0x{v:x}")
    def outw(self, port, v): self.cmd(f"outw 0x{port:x} 0x{v:x}")
    def outl(self, port, v): self.cmd(f"outl 0x{port:x} 0x{v:x}")
    def inb(self, port): return self.cmd(f"inb 0x{port:x}")
    def inw(self, port): return self.cmd(f"inw 0x{port:x}")
    def inl(self, port): return self.cmd(f"inl 0x{port:x}")
    def readl(self, addr): return self.cmd(f"readl 0x{addr:x}")

    # Configuration mechanism #1 (CF8/CFC).
    def _select(self, bdf, offset):
        bus, dev, fn = bdf
        self.outl(0xCF8, 0x80000000 | bus << 16 | dev << 11 | fn << 8 | (offset & 0xFC))

    def cfg_read(self, bdf, offset, width):
        self._select(bdf, offset)
        port = 0xCFC + (offset & 3)
        return {1: self.inb, 2: self.inw, 4: self.inl}[width](port)

    def cfg_write(self, bdf, offset, width, value):
        self._select(bdf, offset)
        port = 0xCFC + (offset & 3)
        {1: self.outb, 2: self.outw, 4: self.outl}[width](port, value)

    def dump(self, bdf, size=256):
        out = bytearray()
        for o in range(0, size, 4):
            out += self.cfg_read(bdf, o, 4).to_bytes(4, "little")
        return bytes(out)


def qemu_version():
    text = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"version (\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else "unknown", text.splitlines()[0]


def fmt_bdf(bdf):
    return f"{bdf[0]:02x}:{bdf[1]:02x}.{bdf[2]:x}"


def enumerate_bus0(m):
    found = []
    for dev in range(32):
        if m.cfg_read((0, dev, 0), 0, 2) == 0xFFFF:
            continue
        multi = m.cfg_read((0, dev, 0), 0x0E, 1) & 0x80
        for fn in range(8 if multi else 1):
            if m.cfg_read((0, dev, fn), 0, 2) != 0xFFFF:
                found.append((0, dev, fn))
    return found


def lspci_document(m):
    """lspci -xxx style dump of every function on bus 0 (256 bytes each:
    ECAM is disabled at reset, see the wmask document's facts)."""
    lines = []
    for bdf in enumerate_bus0(m):
        data = m.dump(bdf)
        cls = data[0x0B] << 8 | data[0x0A]
        vid = int.from_bytes(data[0:2], "little")
        did = int.from_bytes(data[2:4], "little")
        lines.append(f"{fmt_bdf(bdf)} Class {cls:04x}: {vid:04x}:{did:04x}")
        for row in range(0, len(data), 16):
            lines.append(f"{row:02x}: " + " ".join(f"{b:02x}" for b in data[row:row + 16]))
        lines.append("")
    return "\n".join(lines)


def probe_byte(m, bdf, offset):
    """Writes 0xff then 0x00 to one byte and reads back after each; restores
    the original value. Returns (reset, after_ff, after_00)."""
    orig = m.cfg_read(bdf, offset, 1)
    m.cfg_write(bdf, offset, 1, 0xFF)
    a = m.cfg_read(bdf, offset, 1)
    m.cfg_write(bdf, offset, 1, 0x00)
    b = m.cfg_read(bdf, offset, 1)
    m.cfg_write(bdf, offset, 1, orig)
    return orig, a, b


def probes():
    """Probe lines for MCH and LPC, 256 bytes each."""
    results = {}
    with QEMUMachine() as m:
        for bdf in (MCH, LPC):
            for o in range(256):
                if o not in FRESH[bdf]:
                    results[(bdf, o)] = probe_byte(m, bdf, o) + (False,)
    for bdf, offsets in FRESH.items():
        for o in sorted(offsets):
            with QEMUMachine() as m:
                results[(bdf, o)] = probe_byte(m, bdf, o) + (True,)
    return results


# Scripted sequences: each step is replayed by the Swift tests against our
# models. Steps: ("w", bdf, offset, width, value) config write;
# ("r", bdf, offset, width) config read; ("m", address) 32-bit memory read
# (used to see where ECAM decodes).
SEQUENCES = {
    "ecam-at-reset": [
        ("r", MCH, 0x60, 4), ("r", MCH, 0x64, 4), ("m", 0xB0000000),
    ],
    "ecam-256m": [
        ("w", MCH, 0x60, 4, 0xB0000001), ("m", 0xB0000000), ("m", 0xB0000000 + (0x1F << 15)),
        ("m", 0xB0000000 + 0x100), ("m", 0xB0000000 + (0x1F << 15) + 0x100),
        ("m", 0xB0000000 + (0xFF << 20)),
    ],
    "ecam-reserved-length-keeps-mapping": [
        ("w", MCH, 0x60, 4, 0xB0000001), ("w", MCH, 0x60, 4, 0xC0000007), ("r", MCH, 0x60, 4),
        ("m", 0xB0000000), ("m", 0xC0000000),
    ],
    "ecam-128m": [
        ("w", MCH, 0x60, 4, 0xE4000003), ("r", MCH, 0x60, 4), ("m", 0xE4000000), ("m", 0xE0000000),
        ("m", 0xE4000000 + (0x7F << 20)), ("m", 0xE4000000 + (0x80 << 20)),
    ],
    "ecam-64m": [
        ("w", MCH, 0x60, 4, 0xE2000005), ("m", 0xE2000000), ("m", 0xE0000000),
        ("m", 0xE2000000 + (0x3F << 20)), ("m", 0xE2000000 + (0x40 << 20)),
    ],
    # QEMU takes address bit 26 (not 27) for 128 MiB and bit 25 (not 26) for
    # 64 MiB windows; these show where such windows really decode.
    "ecam-128m-bit27": [
        ("w", MCH, 0x60, 4, 0xE8000003), ("m", 0xE8000000), ("m", 0xE0000000),
    ],
    "ecam-64m-bit26": [
        ("w", MCH, 0x60, 4, 0xE4000005), ("m", 0xE4000000), ("m", 0xE0000000),
        ("w", MCH, 0x60, 4, 0xE6000005), ("m", 0xE6000000), ("m", 0xE2000000),
    ],
    "ecam-above-4g": [
        ("w", MCH, 0x64, 4, 0x0000000F), ("w", MCH, 0x60, 4, 0x10000001), ("r", MCH, 0x64, 4),
        ("w", MCH, 0x64, 4, 0xFFFFFFFF), ("r", MCH, 0x64, 4),
    ],
    "ecam-disable": [
        ("w", MCH, 0x60, 4, 0xB0000001), ("m", 0xB0000000), ("w", MCH, 0x60, 4, 0xB0000000), ("m", 0xB0000000),
    ],
    "smram-lock": [
        ("w", MCH, 0x9D, 1, 0x4A), ("r", MCH, 0x9D, 1), ("w", MCH, 0x9E, 1, 0x87), ("r", MCH, 0x9E, 1),
        ("w", MCH, 0x9D, 1, 0x5A), ("r", MCH, 0x9D, 1), ("r", MCH, 0x9E, 1),
        ("w", MCH, 0x9D, 1, 0xFF), ("r", MCH, 0x9D, 1), ("w", MCH, 0x9D, 1, 0x00), ("r", MCH, 0x9D, 1),
        ("w", MCH, 0x9E, 1, 0x00), ("r", MCH, 0x9E, 1), ("w", MCH, 0x9C, 2, 0x0000), ("r", MCH, 0x9C, 4),
    ],
    "smram-word-write": [
        ("w", MCH, 0x9C, 4, 0xFFFFFFFF), ("r", MCH, 0x9C, 4), ("w", MCH, 0x9C, 4, 0), ("r", MCH, 0x9C, 4),
    ],
    "smbase": [
        ("w", MCH, 0x9C, 1, 0x02), ("r", MCH, 0x9C, 1), ("w", MCH, 0x9C, 1, 0xFF), ("r", MCH, 0x9C, 1),
        ("w", MCH, 0x9C, 1, 0x00), ("r", MCH, 0x9C, 1), ("w", MCH, 0x9C, 1, 0x02), ("r", MCH, 0x9C, 1),
        ("w", MCH, 0x9C, 1, 0x00), ("r", MCH, 0x9C, 1), ("w", MCH, 0x9C, 1, 0xFF), ("r", MCH, 0x9C, 1),
    ],
    "ext-tseg-query": [
        ("r", MCH, 0x50, 2), ("w", MCH, 0x50, 2, 0x1234), ("r", MCH, 0x50, 2),
        ("w", MCH, 0x50, 2, 0xFFFF), ("r", MCH, 0x50, 2), ("w", MCH, 0x50, 1, 0xFF), ("w", MCH, 0x51, 1, 0xFF),
        ("r", MCH, 0x50, 2),
    ],
    "pam": [
        ("w", MCH, 0x90, 4, 0x33221130), ("r", MCH, 0x90, 4), ("w", MCH, 0x94, 4, 0xFF332211), ("r", MCH, 0x94, 4),
    ],
    "smi-lock": [
        ("w", LPC, 0xA0, 2, 0x0010), ("r", LPC, 0xA0, 2), ("w", LPC, 0xA0, 2, 0x0000), ("r", LPC, 0xA0, 2),
        ("w", LPC, 0xA0, 2, 0xFFEF), ("r", LPC, 0xA0, 2),
    ],
    "pmbase": [
        ("w", LPC, 0x40, 4, 0xFFFFFFFF), ("r", LPC, 0x40, 4), ("w", LPC, 0x40, 4, 0x00000601), ("r", LPC, 0x40, 4),
        ("w", LPC, 0x44, 1, 0x80), ("r", LPC, 0x44, 4), ("w", LPC, 0x44, 4, 0xFFFFFFFF), ("r", LPC, 0x44, 4),
    ],
    "rcba": [
        ("w", LPC, 0xF0, 4, 0xFFFFFFFF), ("r", LPC, 0xF0, 4), ("w", LPC, 0xF0, 4, 0xFED1C001), ("r", LPC, 0xF0, 4),
        ("m", 0xFED1C000 + 0x3140), ("m", 0xFED1C000 + 0x3144), ("m", 0xFED1C000 + 0x3148),
        ("m", 0xFED1C000 + 0x314C), ("m", 0xFED1C000 + 0x3150), ("m", 0xFED1C000 + 0x3410),
    ],
    "pirq": [
        ("r", LPC, 0x60, 4), ("r", LPC, 0x68, 4), ("w", LPC, 0x60, 4, 0x0B0A0905), ("r", LPC, 0x60, 4),
        ("w", LPC, 0x68, 4, 0xFF7F8F10), ("r", LPC, 0x68, 4),
    ],
    "status-w1c": [
        ("w", MCH, 0x04, 4, 0xFFFFFFFF), ("r", MCH, 0x04, 4), ("w", LPC, 0x04, 4, 0xFFFFFFFF), ("r", LPC, 0x04, 4),
    ],
}


def run_sequences():
    out = []
    for name, steps in SEQUENCES.items():
        with QEMUMachine() as m:
            for step in steps:
                if step[0] == "w":
                    _, bdf, off, width, value = step
                    m.cfg_write(bdf, off, width, value)
                    out.append(f"seq {name} w {fmt_bdf(bdf)} {off:03x} {width} {value:08x}")
                elif step[0] == "r":
                    _, bdf, off, width = step
                    v = m.cfg_read(bdf, off, width)
                    out.append(f"seq {name} r {fmt_bdf(bdf)} {off:03x} {width} {v:08x}")
                else:
                    _, addr = step
                    v = m.readl(addr)
                    out.append(f"seq {name} m {addr:016x} 4 {v:08x}")
    return out


WMASK_HEADER = """\
# QEMU q35 write-mask oracle: MCH (00:00.0) and ICH9 LPC (00:1f.0).
# Generated by Tests/Oracle/qemu_q35.py from {version_line!s}
# (-machine q35 -accel tcg -S -nodefaults, vCPU never started, chipset at reset).
#
# Lines:
#   fact NAME VALUE...        an observation about the machine at reset
#   probe BDF OFF RESET FF 00 WRITABLE W1C FRESH
#       OFF (hex) is a config-space byte; RESET is its value at reset; FF and
#       00 are the values read back after writing 0xff and then 0x00 to that
#       byte alone (CF8/CFC, byte accesses). The byte is restored afterwards.
#       WRITABLE = FF & ~00 (bits that follow the written value).
#       W1C = RESET & ~FF & ~WRITABLE (set bits cleared by writing one);
#       write-1-to-clear bits that read 0 at reset cannot be seen this way.
#       FRESH is 1 when the byte was probed in its own freshly started QEMU
#       (its probe leaves lock or handshake state behind), else 0.
#       Consumers replay the same writes on a freshly reset model per byte.
#   seq NAME w BDF OFF WIDTH VALUE   a config write, in a fresh QEMU per NAME
#   seq NAME r BDF OFF WIDTH VALUE   a config read and the value QEMU returned
#   seq NAME m ADDRESS 4 VALUE       a 32-bit memory read (ECAM and RCBA decode)
#   note BDF OFF TEXT         a probed byte with platform side effects while probed
# All numbers are hexadecimal.
"""


def wmask_document(m_facts):
    version, version_line = qemu_version()
    lines = [WMASK_HEADER.format(version_line=version_line).rstrip("\n")]
    lines += m_facts
    for bdf, notes in SIDE_EFFECTS.items():
        for o in sorted(notes):
            lines.append(f"note {fmt_bdf(bdf)} {o:02x} {notes[o]}")
    for bdf, offsets in FRESH.items():
        for o in sorted(offsets):
            lines.append(f"note {fmt_bdf(bdf)} {o:02x} stateful: probed in a fresh QEMU")
    res = probes()
    for bdf in (MCH, LPC):
        for o in range(256):
            reset, a, b, fresh = res[(bdf, o)]
            writable = a & ~b & 0xFF
            w1c = reset & ~a & ~writable & 0xFF
            lines.append(f"probe {fmt_bdf(bdf)} {o:02x} {reset:02x} {a:02x} {b:02x} "
                         f"{writable:02x} {w1c:02x} {int(fresh)}")
    lines += run_sequences()
    return "\n".join(lines) + "\n"


def facts(m):
    out = []
    pciexbar = m.cfg_read(MCH, 0x60, 4) | m.cfg_read(MCH, 0x64, 4) << 32
    out.append(f"fact pciexbar-at-reset {pciexbar:016x}")
    out.append(f"fact ecam-enabled-at-reset {pciexbar & 1}")
    out.append("fact functions-on-bus0 " + " ".join(fmt_bdf(b) for b in enumerate_bus0(m)))
    # Config space size: enable ECAM at the default base and read 0x100.
    m.cfg_write(MCH, 0x60, 4, 0xB0000001)
    for bdf in (MCH, LPC):
        base = 0xB0000000 | bdf[1] << 15 | bdf[2] << 12
        same = all(m.readl(base + o) == m.cfg_read(bdf, o, 4) for o in range(0, 256, 4))
        ext = m.readl(base + 0x100)
        out.append(f"fact ecam-matches-cf8 {fmt_bdf(bdf)} {int(same)}")
        out.append(f"fact extended-config-0x100 {fmt_bdf(bdf)} {ext:08x}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir")
    ap.add_argument("--print", choices=["lspci", "wmask"])
    ap.add_argument("--probe", metavar="BUS:DEV.FN", action="append",
                    help="print 'offset reset after_ff after_00' for each of the function's 256 bytes")
    args = ap.parse_args()
    if args.probe:
        with QEMUMachine() as m:
            for text in args.probe:
                bus, rest = text.split(":")
                dev, fn = rest.split(".")
                bdf = (int(bus, 16), int(dev, 16), int(fn, 16))
                for offset in range(256):
                    orig, a, b = probe_byte(m, bdf, offset)
                    print(f"{fmt_bdf(bdf)} {offset:02x} {orig:02x} {a:02x} {b:02x}")
        return
    if not args.out_dir and not args.print:
        ap.error("give --out-dir, --print or --probe")
    if shutil.which(QEMU) is None:
        sys.exit(f"{QEMU} not found")
    version, _ = qemu_version()
    short = ".".join(version.split(".")[:2])
    with QEMUMachine() as m:
        lspci = lspci_document(m)
    with QEMUMachine() as m:
        fact_lines = facts(m)
    wmask = wmask_document(fact_lines) if args.out_dir or args.print == "wmask" else None
    if args.print == "lspci":
        sys.stdout.write(lspci)
    elif args.print == "wmask":
        sys.stdout.write(wmask)
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        with open(os.path.join(args.out_dir, f"qemu-{short}-q35-reset.lspci"), "w") as f:
            f.write(lspci)
        with open(os.path.join(args.out_dir, f"qemu-{short}-q35-wmask.txt"), "w") as f:
            f.write(wmask)


if __name__ == "__main__":
    main()
