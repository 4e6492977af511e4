#!/usr/bin/env python3
"""L0's human monitor, asked about L1's CPU (run.sh; README "A frozen L1").

usage: l0-monitor.py snapshot SOCKET   L1's CPU state twice, 3 s apart
       l0-monitor.py watchdog SOCKET   every 5 s, look for QEMU TCG's lost wake-up or livelock
                                       with an interrupt pending in L1's LAPIC; end L0 (quit)
                                       and say so when found
"""
import re
import socket
import sys
import time


def ask(path, cmds, pause, timeout):
    """Sends HMP commands and returns the monitor's answers, without its echo and prompts."""
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.settimeout(timeout)
    except OSError:
        return ""
    out = b""
    try:
        for c in cmds:
            s.sendall(c.encode() + b"\n")
            time.sleep(pause)
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except OSError:
        pass
    s.close()
    # The monitor echoes what it is sent with line-editing escapes: keep only its answers.
    lines = re.sub(r"\x1b\[[0-9]*[A-Za-z]", "", out.decode(errors="replace")).splitlines()
    return "\n".join(l for l in lines if not l.startswith("(qemu)") and "QEMU 10" not in l)


def snapshot(path):
    for n in (1, 2):
        print(f"---- L0 monitor snapshot {n} ({time.strftime('%H:%M:%S')}) ----")
        print(ask(path, ["info cpus", "info registers", "x/4i $pc", "info lapic", "info pic"], 0.5, 2))
        time.sleep(3)


def pending_state(path):
    """(halted, rip) when L1 has a vector in its IRR, else None. A halted CPU counts only with
    interrupts enabled (halted with them off is no wake-up lost); a CPU stuck at one RIP counts
    either way: one was seen spinning with IF clear and the timer vector pending for minutes."""
    text = ask(path, ["info registers", "info lapic"], 0.3, 1)
    irr = re.search(r"^IRR\s+(.*)$", text, re.M)
    flags = re.search(r"RFL=([0-9a-f]+)", text)
    rip = re.search(r"RIP=([0-9a-f]+)", text)
    if not (irr and re.search(r"\d", irr.group(1)) and flags and rip):
        return None
    halted = "HLT=1" in text
    if halted and not int(flags.group(1), 16) & 0x200:
        return None
    return (halted, rip.group(1))


def watchdog(path):
    """A halted CPU seen twice 3 s apart, or one running at a fixed RIP in three polls in a
    row, both with a vector pending, never ends under TCG (an injected NMI ended neither)."""
    t0, seen = time.time(), []
    while True:
        time.sleep(5)
        now = pending_state(path)
        if now and now[0]:
            time.sleep(3)
            if pending_state(path) == now:
                kind = "halted"
                break
        seen = (seen + [now])[-3:]
        if len(seen) == 3 and seen[0] is not None and not seen[0][0] and seen.count(seen[0]) == 3:
            kind = "running at one RIP"
            break
    print(f"    rig: L1 {kind} with an interrupt pending in its LAPIC at {time.time() - t0:.0f} s "
          "(QEMU TCG lost wake-up); ended it", flush=True)
    ask(path, ["quit"], 0.3, 1)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("snapshot", "watchdog"):
        sys.exit(__doc__)
    {"snapshot": snapshot, "watchdog": watchdog}[sys.argv[1]](sys.argv[2])
