#!/usr/bin/env python3
"""Extracts the uncompressed ELF vmlinux from a bzImage (xz, gzip or zstd payload).
QEMU boots an ELF vmlinux through its PVH entry point, which skips the kernel's own
decompressor: seconds under TCG and under nested KVM.
usage: extract-vmlinux.py BZIMAGE OUTPUT   (exit 1 when no ELF payload is found)"""
import gzip
import lzma
import shutil
import subprocess
import sys


def candidates(data: bytes):
    for magic, kind in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd")):
        start = data.find(magic)
        while start != -1:
            yield kind, start
            start = data.find(magic, start + 1)


def decompress(kind: str, payload: bytes) -> bytes:
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=__import__("io").BytesIO(payload)).read()
    if shutil.which("zstd"):
        return subprocess.run(["zstd", "-qdc"], input=payload, capture_output=True).stdout
    return b""


def main(src: str, dst: str) -> int:
    data = open(src, "rb").read()
    for kind, start in candidates(data):
        try:
            out = decompress(kind, data[start:])
        except Exception:
            continue
        if out[:4] == b"\x7fELF":
            with open(dst, "wb") as f:
                f.write(out)
            return 0
    print(f"extract-vmlinux.py: no ELF payload in {src}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
