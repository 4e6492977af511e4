#!/usr/bin/env python3
"""Differential oracle: QEMU's pci-bridge (1b36:0001) and pcie-pci-bridge (1b36:000e).

Starts qemu-system-x86_64 (q35, TCG, stopped, no firmware run) with a qtest socket, then plays
firmware through that socket: programs PCIEXBAR for ECAM, dumps each bridge's config space,
probes per-byte write masks (write 0xff, read, write 0x00, read, restore), dumps the SHPC
register block through the capability's DWORD select/data window and through BAR 0, and
records a few SHPC command results.

Usage: qemu_bridges.py OUTDIR      writes the fixtures into OUTDIR
       qemu_bridges.py --print     prints them
Python 3 standard library only.
"""
import os
import socket
import subprocess
import sys
import tempfile

ECAM = 0xB0000000
SHPC_BAR = 0xC0000000

DEVICES = [
    # (name, devfn, qemu -device argument, config size)
    ("pci-bridge", 3 << 3, "pci-bridge,chassis_nr=1,addr=0x3,id=b1", 256),
    ("pcie-pci-bridge", 4 << 3, "pcie-pci-bridge,addr=0x4,id=b2", 4096),
    ("pci-bridge-shpc-off", 5 << 3, "pci-bridge,chassis_nr=2,shpc=off,addr=0x5,id=b3", 256),
    ("pci-bridge-msi-off", 6 << 3, "pci-bridge,chassis_nr=3,msi=off,addr=0x6,id=b4", 256),
    ("pcie-pci-bridge-msi-off", 7 << 3, "pcie-pci-bridge,msi=off,addr=0x7,id=b5", 4096),
]


class Stuck(Exception):
    """QEMU stopped answering (QEMU 10 under -S occasionally stalls on a config write)."""


class QTest:
    def __init__(self, devices):
        self.devices = devices
        self.start()

    def restart(self):
        self.close()
        self.start()
        self.enable_ecam()

    def start(self):
        devices = self.devices
        self.dir = tempfile.mkdtemp(prefix="qemu-bridges-")
        path = os.path.join(self.dir, "qtest.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        args = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-S", "-nodefaults",
                "-display", "none", "-monitor", "none", "-serial", "none", "-qtest", "unix:" + path] + (["-qtest-log", os.environ.get("QTEST_LOG", "/dev/null")])
        for d in devices:
            args += ["-device", d]
        # qtest logs every command to stderr unless -qtest-log says otherwise; an unread pipe
        # would fill and stall QEMU, so stderr goes to a file.
        self.errfile = open(os.path.join(self.dir, "stderr"), "w+")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.errfile)
        listener.settimeout(30)
        try:
            self.sock, _ = listener.accept()
        except socket.timeout:
            self.errfile.seek(0)
            err = self.errfile.read()
            raise SystemExit("QEMU did not connect: " + err)
        listener.close()
        self.sock.settimeout(3)
        self.file = self.sock.makefile("rw", newline="\n")

    def cmd(self, line):
        self.file.write(line + "\n")
        self.file.flush()
        while True:
            try:
                reply = self.file.readline()
            except (socket.timeout, TimeoutError):
                raise Stuck(line)
            if not reply:
                raise SystemExit("QEMU closed the qtest socket after: " + line)
            reply = reply.strip()
            if reply.startswith("IRQ"):
                continue
            if not reply.startswith("OK"):
                raise SystemExit("qtest error for %r: %r" % (line, reply))
            parts = reply.split()
            return int(parts[1], 16) if len(parts) > 1 else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.proc.kill()
        self.proc.wait()

    # Port I/O config mechanism #1, used once to enable ECAM.
    def cf8_write(self, bus, devfn, off, value):
        self.cmd("outl 0xcf8 0x%x" % (0x80000000 | bus << 16 | devfn << 8 | off))
        self.cmd("outl 0xcfc 0x%x" % value)

    def enable_ecam(self):
        self.cf8_write(0, 0, 0x64, 0)
        self.cf8_write(0, 0, 0x60, ECAM | 1)

    def addr(self, devfn, off, bus=0):
        return ECAM | bus << 20 | devfn << 12 | off

    def rb(self, devfn, off):
        return self.cmd("readb 0x%x" % self.addr(devfn, off))

    def wb(self, devfn, off, v):
        self.cmd("writeb 0x%x 0x%x" % (self.addr(devfn, off), v))

    def rl(self, devfn, off):
        return self.cmd("readl 0x%x" % self.addr(devfn, off))

    def wl(self, devfn, off, v):
        self.cmd("writel 0x%x 0x%x" % (self.addr(devfn, off), v))

    def mem_rl(self, a):
        return self.cmd("readl 0x%x" % a)

    def mem_wl(self, a, v):
        self.cmd("writel 0x%x 0x%x" % (a, v))

    def mem_rb(self, a):
        return self.cmd("readb 0x%x" % a)


def retry(q, step):
    """Runs a step that starts from reset state; on a stall, restarts QEMU and runs it again."""
    for attempt in range(5):
        try:
            return step()
        except Stuck:
            q.restart()
    raise SystemExit("QEMU kept stalling")


def dump(q, devfn, size):
    return [q.rb(devfn, o) for o in range(size)]


def find_cap(cfg, cap_id):
    ptr = cfg[0x34] & 0xFC
    seen = set()
    while ptr and ptr not in seen:
        seen.add(ptr)
        if cfg[ptr] == cap_id:
            return ptr
        ptr = cfg[ptr + 1] & 0xFC
    return None


def probe_masks(q, devfn, size, shpc_cap):
    """Per byte: bits that read back 1 after writing 0xff (set-able) and bits that read back
    0 after writing 0x00 (clear-able); writable = set-able & clear-able over the bits that
    differ. Restores each byte after probing. The SHPC data window is probed with DWORD
    select = 0 (Base Offset, read-only), so its writes have no side effect."""
    mask = [0] * size
    for o in range(size):
        for attempt in range(5):
            try:
                mask[o] = probe_byte(q, devfn, o, shpc_cap)
                break
            except Stuck:
                q.restart()
        else:
            raise SystemExit("QEMU kept stalling at offset 0x%x" % o)
    return mask


def probe_byte(q, devfn, o, shpc_cap):
    if shpc_cap is not None and o in range(shpc_cap + 4, shpc_cap + 8):
        q.wb(devfn, shpc_cap + 2, 0)
    old = q.rb(devfn, o)
    q.wb(devfn, o, 0xFF)
    hi = q.rb(devfn, o)
    q.wb(devfn, o, 0x00)
    lo = q.rb(devfn, o)
    q.wb(devfn, o, old)
    # A bit is writable when it followed both writes.
    return hi & ~lo & 0xFF


def fmt_space(title, data):
    lines = [title]
    for row in range(0, len(data), 16):
        lines.append("%03x: " % row + " ".join("%02x" % b for b in data[row:row + 16]))
    return "\n".join(lines) + "\n"


def shpc_window(q, devfn, cap, count):
    regs = []
    for sel in range(count):
        q.wb(devfn, cap + 2, sel)
        regs.append(q.rl(devfn, cap + 4))
    q.wb(devfn, cap + 2, 0)
    return regs


def fmt_dwords(title, regs):
    lines = [title]
    for i in range(0, len(regs), 4):
        lines.append("%03x: " % (i * 4) + " ".join("%08x" % r for r in regs[i:i + 4]))
    return "\n".join(lines) + "\n"


def bar_probe(q, devfn):
    """Sizes BAR 0 (64-bit memory), maps it at SHPC_BAR and enables memory decoding."""
    lo = q.rl(devfn, 0x10)
    q.wl(devfn, 0x10, 0xFFFFFFFF)
    q.wl(devfn, 0x14, 0xFFFFFFFF)
    size_lo = q.rl(devfn, 0x10)
    size_hi = q.rl(devfn, 0x14)
    q.wl(devfn, 0x10, SHPC_BAR)
    q.wl(devfn, 0x14, 0)
    q.wb(devfn, 0x04, q.rb(devfn, 0x04) | 0x02)
    sizing = size_hi << 32 | (size_lo & ~0xF)
    size = (~sizing + 1) & 0xFFFFFFFFFFFFFFFF
    return lo, size_lo, size_hi, size


def command_sequence(q, devfn, cap, log):
    """Drives commands through the SHPC BAR the way shpchp does (it maps BAR 0 and uses MMIO)
    and logs register values. Needs bar_probe() first."""
    def rd(off):
        return q.mem_rl(SHPC_BAR + off)

    def wr(off, v):
        q.mem_wl(SHPC_BAR + off, v)

    def state(label):
        log.append("%-34s cmd/status %08x int-loc %08x serr-int %08x slot1 %08x sec-bus %08x"
                   % (label, rd(0x14), rd(0x18), rd(0x20), rd(0x24), rd(0x10)))

    state("initial")
    wr(0x20, rd(0x20) & ~0xF)
    state("unmasked (serr-int = 0)")
    wr(0x24, 0x00FF0000)  # slot 1: clear latched events, unmask all
    state("slot1 events unmasked")
    wr(0x14, 0x00FF)
    state("cmd 0xff (invalid)")
    wr(0x20, rd(0x20) | 1 << 16)
    state("CC cleared")
    wr(0x14, 0x1F << 8 | 0x02)
    state("enable target 0x1f")
    wr(0x14, 0x00 << 8 | 0x02)
    state("enable target 0")
    wr(0x14, 0x01 << 8 | 0x01)
    state("power slot1 (empty)")
    wr(0x14, 0x01 << 8 | 0x10 | 0x08)
    state("attn on, pwr blink slot1")
    wr(0x14, 0x01 << 8 | 0x02)
    state("enable slot1")
    wr(0x14, 0x01 << 8 | 0x01)
    state("power-only slot1 while enabled")
    wr(0x14, 0x01 << 8 | 0x0C | 0x03)
    state("disable slot1, pwr led off")
    wr(0x14, 0x40)
    state("set speed 33 (0x40)")
    wr(0x14, 0x43)
    state("set speed 0x43")
    wr(0x14, 0x48)
    state("power-only-all")
    wr(0x14, 0x49)
    state("enable-all")
    wr(0x14, 0x01 << 8 | 0x0C | 0x03)
    state("disable slot1 again")
    wr(0x24, 0x00FF0000)
    state("slot1 latch cleared")
    log.append("BAR read beyond registers (+0xa0) %08x" % rd(0xA0))
    wr(0xA0, 0xFFFFFFFF)
    log.append("BAR +0xa0 after writing ones %08x" % rd(0xA0))
    log.append("BAR byte reads +0x14..+0x17: %s" % " ".join("%02x" % q.mem_rb(SHPC_BAR + o) for o in range(0x14, 0x18)))
    # The DWORD select/data window: a write goes to the selected register.
    q.wb(devfn, cap + 2, 8)
    q.wl(devfn, cap + 4, 0x0000000F)
    log.append("window write 0x0000000f to dword 8: reads back %08x (QEMU writes its own register "
               "bytes at cap+4 instead of the data)" % rd(0x20))
    q.wb(devfn, cap + 2, 0)


def collect():
    out = {}
    q = QTest([d[2] for d in DEVICES])
    try:
        q.enable_ecam()
        for name, devfn, _, size in DEVICES:
            title = "00:%02x.%d" % (devfn >> 3, devfn & 7)
            cfg = retry(q, lambda: dump(q, devfn, size))
            ident = "%s Class %02x%02x: %02x%02x:%02x%02x" % (title, cfg[0xB], cfg[0xA], cfg[1], cfg[0], cfg[3], cfg[2])
            out[name + ".config.txt"] = fmt_space(ident, cfg)
            cap = find_cap(cfg, 0x0C)
            masks = probe_masks(q, devfn, size, cap)
            out[name + ".wmask.txt"] = fmt_space(ident + " write mask", masks)
            assert retry(q, lambda: dump(q, devfn, size)) == cfg, "probing did not restore " + name
            lines = []
            if cap is not None:
                regs = retry(q, lambda: shpc_window(q, devfn, cap, 0x24 // 4 + 31))
                out[name + ".shpc.txt"] = fmt_dwords(ident + " SHPC registers (window)", regs)

                def bar_and_commands():
                    log = []
                    lo, slo, shi, bsize = bar_probe(q, devfn)
                    log.append("BAR0 reset %08x sizing %08x %08x size 0x%x" % (lo, slo, shi, bsize))
                    bar = [q.mem_rl(SHPC_BAR + o) for o in range(0, min(bsize, 4096), 4)]
                    log.append("BAR byte read at +0x15: %02x" % q.mem_rb(SHPC_BAR + 0x15))
                    command_sequence(q, devfn, cap, log)
                    return log, bsize, bar
                log, bsize, bar = retry(q, bar_and_commands)
                out[name + ".shpcbar.txt"] = fmt_dwords(ident + " SHPC BAR0 (%d bytes)" % bsize, bar)
                lines += log
            pm = find_cap(cfg, 0x01)
            if pm is not None:
                def pm_probe():
                    q.wb(devfn, pm + 4, 0x03)
                    d3 = q.rb(devfn, pm + 4)
                    q.wb(devfn, pm + 4, 0x00)
                    return "PMCSR after writing D3hot: %02x, after writing D0: %02x" % (d3, q.rb(devfn, pm + 4))
                lines.append(retry(q, pm_probe))
            out[name + ".facts.txt"] = "\n".join([ident] + lines) + "\n"
    finally:
        q.close()
    return out


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = collect()
    if sys.argv[1] == "--print":
        for k in sorted(out):
            print("==", k)
            print(out[k])
        return
    os.makedirs(sys.argv[1], exist_ok=True)
    for k, v in out.items():
        with open(os.path.join(sys.argv[1], "qemu10-" + k), "w") as f:
            f.write(v)


if __name__ == "__main__":
    main()
