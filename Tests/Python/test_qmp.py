#!/usr/bin/env python3
"""Switchyard's QMP monitor driven by a client nobody here wrote: QEMU's own `qemu.qmp`.

Usage: test_qmp.py SWITCHYARD [--hotplug-driver DRIVER]

Starts SWITCHYARD QEMU-style with a listening QMP socket, then: negotiation (done by the
library), query-version/status/commands/pci, device_add and device_del error paths with QEMU's
error classes, two clients at once with events reaching both, and quit. With
--hotplug-driver (a hot-pluggable port driver that exists in this build), the device_add
success path and device_del are exercised too. Exit status 0 means every check passed.
"""
import asyncio
import os
import subprocess
import sys
import tempfile

try:
    from qemu.qmp import QMPClient, ExecuteError
except ImportError:  # the Swift test that runs this checks first; be explicit anyway
    print("SKIP: the qemu.qmp Python library is not installed (pip install qemu.qmp)")
    sys.exit(77)

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print("FAIL:", what)


async def expect_error(qmp, command, arguments, error_class, desc):
    try:
        await qmp.execute(command, arguments)
    except ExecuteError as e:
        check(e.error_class == error_class, f"{command} {arguments}: class {e.error_class!r}, want {error_class!r}")
        check(str(e) == desc, f"{command} {arguments}: desc {str(e)!r}, want {desc!r}")
        return
    check(False, f"{command} {arguments}: succeeded, want {error_class}")


async def next_event(qmp, name, timeout=5.0):
    while True:
        event = await asyncio.wait_for(qmp.events.get(), timeout)
        if event["event"] == name:
            return event


def find(devices, slot, function=0):
    return next((d for d in devices if d["slot"] == slot and d["function"] == function), None)


async def main(binary, hotplug_driver):
    workdir = tempfile.mkdtemp(prefix="sy-qmp-")
    path = os.path.join(workdir, "qmp.sock")
    args = [binary, "-machine", "q35", "-accel", "qtest", "-nodefaults", "-display", "none", "-S",
            "-device", "pci-bridge,id=br1,addr=0x3", "-device", "pci-testdev,id=t1,bus=br1,addr=0x1",
            "-qmp", f"unix:{path},server=on,wait=off"]
    if hotplug_driver:
        args += ["-device", f"{hotplug_driver},id=hp1,chassis=1,slot=1,addr=0x4"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.exists(path) or proc.poll() is not None:
                break
            await asyncio.sleep(0.025)
        check(proc.poll() is None, f"switchyard exited early with {proc.returncode}")
        if failures:
            return

        qmp = QMPClient("first")
        await qmp.connect(path)  # reads the greeting and negotiates capabilities
        greeting = qmp.greeting
        check(set(greeting.QMP.version["qemu"].keys()) >= {"major", "minor", "micro"}, "greeting version shape")

        version = await qmp.execute("query-version")
        check(isinstance(version["qemu"]["major"], int) and "package" in version, f"query-version: {version}")
        status = await qmp.execute("query-status")
        check(status == {"status": "prelaunch", "running": False}, f"query-status after -S: {status}")
        commands = {c["name"] for c in await qmp.execute("query-commands")}
        check({"qmp_capabilities", "query-pci", "device_add", "device_del", "quit"} <= commands,
              f"query-commands: {sorted(commands)}")

        buses = await qmp.execute("query-pci")
        check(len(buses) == 1 and buses[0]["bus"] == 0, f"query-pci buses: {buses}")
        devices = buses[0]["devices"]
        mch, lpc, bridge = find(devices, 0), find(devices, 31), find(devices, 3)
        check(mch and mch["id"] == {"device": 0x29C0, "vendor": 0x8086, "subsystem": 0x1100,
                                    "subsystem-vendor": 0x1AF4}, f"MCH: {mch}")
        check(mch and mch["class_info"] == {"class": 0x0600, "desc": "Host bridge"}, f"MCH class: {mch}")
        check(lpc and lpc["class_info"]["class"] == 0x0601 and lpc["qdev_id"] == "", f"LPC: {lpc}")
        check(bridge and bridge["qdev_id"] == "br1" and "pci_bridge" in bridge, f"bridge: {bridge}")
        if bridge:
            bus = bridge["pci_bridge"]["bus"]
            # Reset state, no firmware: the bridge's secondary bus is unnumbered, nothing behind it shows.
            check(bus["secondary"] == 0 and "devices" not in bridge["pci_bridge"], f"bridge bus: {bus}")
            check(set(bus.keys()) == {"number", "secondary", "subordinate", "io_range", "memory_range",
                                      "prefetchable_range"}, f"bridge bus keys: {sorted(bus)}")
            check(all(r.get("address") == -1 for r in bridge["regions"]), f"bridge regions: {bridge['regions']}")

        await expect_error(qmp, "device_add", {"id": "x"}, "GenericError", "Parameter 'driver' is missing")
        await expect_error(qmp, "device_add", {"driver": "no-such-device"}, "GenericError",
                           "'no-such-device' is not a valid device model name")
        await expect_error(qmp, "device_add", {"driver": "pci-testdev", "bus": "nobus"}, "GenericError",
                           "Bus 'nobus' not found")
        await expect_error(qmp, "device_add", {"driver": "pci-testdev", "id": "t1", "bus": "br1"}, "GenericError",
                           "Duplicate device ID 't1'")
        await expect_error(qmp, "device_add", {"driver": "pci-testdev", "id": "t9"}, "GenericError",
                           "Bus 'pcie.0' does not support hotplugging")
        await expect_error(qmp, "device_add", {"driver": "pci-testdev", "id": ["x"]}, "GenericError",
                           "Invalid parameter type for 'id', expected: string")
        await expect_error(qmp, "device_del", {"id": "nosuch"}, "DeviceNotFound", "Device 'nosuch' not found")
        await expect_error(qmp, "device_del", {"id": 5}, "GenericError",
                           "Invalid parameter type for 'id', expected: string")
        await expect_error(qmp, "device_del", {}, "GenericError", "Parameter 'id' is missing")
        await expect_error(qmp, "device_del", {"id": "t1", "x": 1}, "GenericError", "Parameter 'x' is unexpected")
        await expect_error(qmp, "no-such-command", None, "CommandNotFound", "The command no-such-command has not been found")
        await expect_error(qmp, "qmp_capabilities", None, "CommandNotFound",
                           "Capabilities negotiation is already complete, command ignored")

        # A second client at the same time; events go to both.
        second = QMPClient("second")
        await second.connect(path)
        check((await second.execute("query-status"))["status"] == "prelaunch", "second client query-status")
        await qmp.execute("cont")
        for client in (qmp, second):
            event = await next_event(client, "RESUME")
            check(set(event["timestamp"].keys()) == {"seconds", "microseconds"}, f"event timestamp: {event}")
        check((await second.execute("query-status")) == {"status": "running", "running": True}, "running after cont")
        await second.disconnect()

        if hotplug_driver:
            # Into a root port, then into a slot of a PCI-PCI bridge (SHPC). No guest ever
            # powered the root port's slot, so removal there completes at once, as in QEMU.
            await qmp.execute("device_add", {"driver": "pci-testdev", "id": "hpd", "bus": "hp1"})
            await qmp.execute("device_add", {"driver": "pci-testdev", "id": "hpb", "bus": "br1", "addr": "0x9"})
            await qmp.execute("device_del", {"id": "hpd"})
            event = await next_event(qmp, "DEVICE_DELETED", timeout=5.0)
            check(event["data"] == {"device": "hpd", "path": "/machine/peripheral/hpd"},
                  f"DEVICE_DELETED data: {event}")
            try:
                await qmp.execute("device_del", {"id": "hpd"})
                check(False, "device_del of a deleted device must fail")
            except Exception as error:
                check("not found" in str(error), f"device_del after removal: {error}")

        await qmp.execute("system_reset")
        event = await next_event(qmp, "RESET")
        check(event["data"] == {"guest": False, "reason": "host-qmp-system-reset"}, f"RESET: {event}")

        await qmp.execute("quit")
        event = await next_event(qmp, "SHUTDOWN")
        check(event["data"] == {"guest": False, "reason": "host-qmp-quit"}, f"SHUTDOWN: {event}")
        try:
            await qmp.disconnect()
        except EOFError:
            pass  # the server hung up after quit, as QEMU does
        try:
            code = proc.wait(timeout=10)
            check(code == 0, f"exit status after quit: {code}")
        except subprocess.TimeoutExpired:
            check(False, "switchyard still running 10 s after quit")
        check(not os.path.exists(path), "QMP socket file left behind after quit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(workdir)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    driver = None
    if "--hotplug-driver" in sys.argv:
        driver = sys.argv[sys.argv.index("--hotplug-driver") + 1]
    asyncio.run(main(sys.argv[1], driver))
    checks = "all checks passed" if not failures else f"{len(failures)} check(s) failed"
    print(f"test_qmp.py: {checks}")
    sys.exit(1 if failures else 0)
