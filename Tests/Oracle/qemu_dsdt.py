#!/usr/bin/env python3
"""QEMU's DSDT for a q35 machine: starts qemu-system-x86_64 (TCG, paused, no firmware run) with
the given arguments and -qtest on a unix socket this script listens on, reads the fw_cfg file
etc/acpi/tables through the fw_cfg I/O ports (selector 0x510, data 0x511), and writes the DSDT
found in it to OUTFILE (the AML bytes, for iasl -d).

Usage: qemu_dsdt.py OUTFILE QEMU-ARGUMENT...      (Python 3 standard library only)
"""

import os
import socket
import struct
import subprocess
import sys
import tempfile

FW_CFG_FILE_DIR = 0x19


def main():
    out, extra = sys.argv[1], sys.argv[2:]
    work = tempfile.mkdtemp(prefix="qemu-dsdt-")
    path = os.path.join(work, "qtest.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(30)
    args = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-S", "-nodefaults", "-display", "none",
            "-monitor", "none", "-serial", "none", "-qtest", "unix:" + path, "-qtest-log", "/dev/null"] + extra
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        sock, _ = listener.accept()
        sock.settimeout(30)
        pending = b""

        def command(line):
            nonlocal pending
            sock.sendall(line.encode() + b"\n")
            while b"\n" not in pending:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("QEMU closed the qtest socket")
                pending += chunk
            reply, pending = pending.split(b"\n", 1)
            reply = reply.decode()
            if not reply.startswith("OK"):
                raise RuntimeError("qtest: %s -> %s" % (line, reply))
            return reply

        def select(key):
            command("outw 0x510 0x%x" % key)

        def read(count):
            return bytes(int(command("inb 0x511").split()[1], 16) for _ in range(count))

        select(FW_CFG_FILE_DIR)
        (entries,) = struct.unpack(">I", read(4))
        key = size = None
        for _ in range(entries):
            file_size, file_key, _, name = struct.unpack(">IHH56s", read(64))
            if name.rstrip(b"\0") == b"etc/acpi/tables":
                key, size = file_key, file_size
        if key is None:
            raise RuntimeError("fw_cfg has no etc/acpi/tables")
        select(key)
        blob = read(size)
        # The blob is the tables back to back (each 4-byte aligned at most); find the DSDT header.
        at = blob.find(b"DSDT")
        if at < 0:
            raise RuntimeError("no DSDT in etc/acpi/tables")
        (length,) = struct.unpack("<I", blob[at + 4:at + 8])
        with open(out, "wb") as f:
            f.write(blob[at:at + length])
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
