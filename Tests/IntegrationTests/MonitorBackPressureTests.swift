import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A running switchyard against clients that misbehave on real sockets: one that stops
/// reading, one that sends garbage, one that asks for the impossible. The machine and the other
/// clients must carry on, and SIGTERM must always end the process.
@Suite("Monitor back-pressure and hostile clients", .serialized)
struct MonitorBackPressureTests {
    /// A qtest-driven machine with a QMP server socket; the qtest connection must stay open.
    static func start(_ extra: [String] = [], stderrPath: String? = nil) throws -> QTestSession {
        try QTestSession(switchyardBinary, ["-machine", "q35", "-accel", "qtest", "-display", "none"] + extra,
                         monitor: .qmp(negotiated: false), name: "qtest-bp", stderrPath: stderrPath)
    }

    /// A negotiated client that never reads (with a small receive buffer, so the kernel holds
    /// little for it), and a driver that makes `pairs` stop/cont pairs, each broadcasting STOP
    /// and RESUME (~75 bytes each) to both. False if a pair failed.
    static func floodASilentClient(at path: String, pairs: Int) throws -> (silent: QMPTestClient, ok: Bool) {
        let silent = try QMPTestClient(path: path)
        try silent.negotiate()
        var small: Int32 = 4096
        setsockopt(silent.socket.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        let driver = try QMPTestClient(path: path)
        try driver.negotiate()
        for _ in 0..<pairs {
            guard try driver.execute("stop") == "{\"return\": {}}", try driver.execute("cont") == "{\"return\": {}}" else {
                return (silent, false)
            }
        }
        return (silent, true)
    }

    /// Events broadcast to a client that never reads: it is dropped once its unread output
    /// passes the limit; the broadcaster never blocks, and `quit` from a third client works.
    @Test func aClientThatStopsReadingIsDroppedNotWaitedFor() throws {
        let log = NSTemporaryDirectory() + "sy-bp-\(getpid())-\(UUID().uuidString.prefix(6)).log"
        let vm = try Self.start(stderrPath: log)
        let (child, qt, path) = (vm.child, vm.qtest, vm.qmpPath!)
        defer { withExtendedLifetime((qt, vm)) { child.stop(grace: 2) } }
        // 12,000 pairs are ~1.8 MB, past the 1 MiB limit plus what the socket buffers hold.
        let (silent, ok) = try Self.floodASilentClient(at: path, pairs: 12_000)
        #expect(ok, "a stop/cont pair failed: the broadcast blocked the monitor")
        // The silent client was cut off: what it finally reads ends in end-of-stream.
        #expect(silent.socket.waitForClose(), "the client that stopped reading was not dropped")
        let third = try QMPTestClient(path: path)
        try third.negotiate()
        #expect(try third.execute("query-status").hasPrefix("{\"return\": {\"status\": \"running\""))
        #expect(try third.execute("quit") == "{\"return\": {}}")
        #expect(child.waitForExit(seconds: 10) == 0)
        let messages = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(messages.contains("dropping a client that stopped reading"), "stderr: \(messages)")
        try? FileManager.default.removeItem(atPath: log)
    }

    /// SIGTERM ends the process promptly even while a client has output it will never read.
    @Test func sigtermEndsTheProcessWithAStuckClient() throws {
        let vm = try Self.start()
        let (child, qt, path) = (vm.child, vm.qtest, vm.qmpPath!)
        defer { withExtendedLifetime((qt, vm)) { child.stop(grace: 0) } }
        // Fills the silent client's socket; it stays connected with output pending.
        let (silent, ok) = try Self.floodASilentClient(at: path, pairs: 3_000)
        #expect(ok)
        let started = Date()
        kill(child.process.processIdentifier, SIGTERM)
        #expect(child.waitForExit(seconds: 5) == 0)
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(!FileManager.default.fileExists(atPath: path), "QMP socket left behind")
        withExtendedLifetime(silent) {}  // connected, unread, to the end
    }

    /// 1 MiB of NUL bytes on one line is one error, not one per byte; a client that sends
    /// nothing but garbage is disconnected; others never notice.
    @Test func garbageGetsOneErrorPerLineAndEndlessGarbageIsDisconnected() throws {
        let vm = try Self.start()
        let (child, qt, path) = (vm.child, vm.qtest, vm.qmpPath!)
        defer { withExtendedLifetime((qt, vm)) { child.stop() } }
        let bystander = try QMPTestClient(path: path)
        try bystander.negotiate()
        let client = try QMPTestClient(path: path)
        try client.negotiate()
        try client.socket.send([UInt8](repeating: 0, count: 1 << 20) + [0x0A])
        let first = try client.nextReply()
        #expect(first.contains("JSON parse error"), "\(first.prefix(200))")
        // The very next reply is the command's: no further errors were queued for the line.
        #expect(try client.execute("query-status").hasPrefix("{\"return\": {\"status\": \"running\""))
        // Words of garbage on one line are one error too.
        #expect(try client.send(raw: "foo bar baz qux\n").contains("invalid keyword 'foo'"))
        #expect(try client.execute("query-version").hasPrefix("{\"return\": {\"qemu\""))

        // Garbage and nothing else: disconnected after a bounded number of errors.
        let pest = try QMPTestClient(path: path)
        try pest.negotiate()
        try pest.socket.send(String(repeating: "garbage\n", count: 100))
        var errors = 0
        var closing = false
        while let line = pest.socket.readLine() {
            if line.contains("closing the connection") { closing = true } else if line.contains("JSON parse error") { errors += 1 }
        }
        #expect(closing)
        #expect(errors > 0 && errors < 100, "\(errors) errors before the disconnect")
        #expect(try bystander.execute("query-status").hasPrefix("{\"return\": {\"status\": \"running\""))
    }

    /// Bad ids and sizes are refused with an error naming the rule; none of them traps.
    @Test func badIDsAndSizesAreRefused() throws {
        for id in ["", "a/b", "1abc", "x y", "device[0]"] {
            let result = try run(switchyardBinary, ["lspci", "-nodefaults", "-device", "pci-testdev,id=\(id)"])
            #expect(result.status == 2 && result.err.contains("is not an identifier"), "id '\(id)': \(result.err)")
        }
        let long = try run(switchyardBinary, ["lspci", "-nodefaults", "-device", "pci-testdev,id=a" + String(repeating: "b", count: 100_000)])
        #expect(long.status == 2 && long.err.contains("is not an identifier") && long.err.utf8.count < 1000)
        for size in ["9999999T", "8388608T", "17592186044415M", "600G"] {
            for prefix in [["-machine", "q35", "-accel", "qtest"], ["lspci"]] {
                let result = try run(switchyardBinary, prefix + ["-m", size])
                #expect(result.status == 2 && result.err.contains("-m \(size): too large") && result.err.contains("at most -m 510G"),
                        "\(prefix) -m \(size): status \(result.status), \(result.err)")
            }
        }
        #expect(try run(switchyardBinary, ["lspci", "-m", "510G", "-nodefaults"]).status == 0)

        // Over QMP: the same rule, and addr cannot smuggle in another property.
        let vm = try Self.start(["-device", "pcie-root-port,id=rp1,chassis=1,slot=1"])
        let (child, qt, path) = (vm.child, vm.qtest, vm.qmpPath!)
        defer { withExtendedLifetime((qt, vm)) { child.stop() } }
        let client = try QMPTestClient(path: path)
        try client.negotiate()
        for id in ["", "a/b", "\\n", String(repeating: "z", count: 200)] {
            let reply = try client.execute("device_add", "{\"driver\": \"pci-testdev\", \"bus\": \"rp1\", \"id\": \"\(id)\"}")
            #expect(reply.contains("Parameter 'id' expects an identifier"), "\(id.prefix(20)): \(reply.prefix(200))")
        }
        let smuggled = try client.execute("device_add", "{\"driver\": \"pci-testdev\", \"bus\": \"rp1\", \"addr\": \"0.1,id=zz\"}")
        #expect(smuggled.contains("Property 'addr' expects a PCI address"), "\(smuggled)")
        #expect(try client.execute("device_del", "{\"id\": \"zz\"}").contains("DeviceNotFound"))
    }

    /// A device without an id lives in its own namespace: it cannot take a user's id, and
    /// DEVICE_DELETED names it by its QOM path, as QEMU does.
    @Test func anonymousDevicesHaveTheirOwnNamespace() throws {
        // The user's pci-bridge-1 is the first bridge; an anonymous bridge must not shadow it.
        let tree = try run(switchyardBinary, ["lspci", "-t", "-nodefaults", "-device", "pci-bridge,id=pci-bridge-1,chassis_nr=1",
                                              "-device", "pci-bridge,chassis_nr=2", "-device", "pci-testdev,bus=pci-bridge-1"])
        #expect(tree.status == 0 && tree.out.contains("+-01.0-[01]----00.0") && tree.out.contains("+-02.0-[02]--\n"), "\(tree.out)")

        let vm = try Self.start(["-device", "pcie-root-port,id=rp1,chassis=1,slot=1", "-device", "pcie-root-port,chassis=1,slot=2"])
        let (child, qt, path) = (vm.child, vm.qtest, vm.qmpPath!)
        defer { withExtendedLifetime((qt, vm)) { child.stop() } }
        let client = try QMPTestClient(path: path)
        try client.negotiate()
        #expect(try client.execute("device_add", "{\"driver\": \"pci-testdev\", \"bus\": \"rp1\"}") == "{\"return\": {}}")
        // A user id that looks like a generated one of the old scheme is just an id.
        #expect(try client.execute("device_add", "{\"driver\": \"pci-testdev\", \"id\": \"pci-testdev-1\", \"bus\": \"rp1\", \"addr\": \"0.1\"}") == "{\"return\": {}}")
        // The anonymous root port is device[0], the anonymous test device device[1]; the user's
        // pci-testdev-1 is a neighbour in the same slot, so the slot's removal deletes both.
        #expect(try client.execute("device_del", "{\"id\": \"device[1]\"}").contains("DeviceNotFound"))
        #expect(try client.execute("device_del", "{\"id\": \"/machine/peripheral-anon/device[1]\", \"x-surprise\": true}") == "{\"return\": {}}")
        let deadline = Date().addingTimeInterval(5)
        while client.events.filter({ $0.contains("DEVICE_DELETED") }).count < 2 && Date() < deadline {
            _ = try client.execute("query-status")
        }
        let deleted = client.events.filter { $0.contains("DEVICE_DELETED") }
        #expect(deleted.contains { $0.contains("\"data\": {\"path\": \"/machine/peripheral-anon/device[1]\"}") }, "\(deleted)")
        #expect(deleted.contains { $0.contains("\"data\": {\"device\": \"pci-testdev-1\", \"path\": \"/machine/peripheral/pci-testdev-1\"}") }, "\(deleted)")
    }

    /// qtest's write and memset stop at the end of the address space instead of wrapping to 0,
    /// and a memset of 64 MiB lands in RAM whole.
    @Test func qtestRangesDoNotWrapAndLargeMemsetsLand() throws {
        let vm = try Self.start(["-m", "256M"])
        let (child, qt) = (vm.child, vm.qtest)
        defer { withExtendedLifetime(vm) { child.stop() } }
        #expect(try qt.command("writeb 0x0 0x5a") == "OK")
        #expect(try qt.command("write 0xffffffffffffffff 2 0x1122").hasPrefix("ERR 2 bytes at 0xffffffffffffffff would wrap"))
        #expect(try qt.command("memset 0xfffffffffffffff0 0x20 0xaa").hasPrefix("ERR 32 bytes at 0xfffffffffffffff0 would wrap"))
        #expect(try qt.command("readb 0x0") == "OK 0x000000000000005a", "address 0 was written by a wrapping range")
        #expect(try qt.command("memset 0x100000 0x4000000 0xa5") == "OK")
        for address in ["0x100000", "0x2000000", "0x40fffff"] {
            #expect(try qt.command("readb \(address)") == "OK 0x00000000000000a5", "\(address)")
        }
        #expect(try qt.command("readb 0x4100000") == "OK 0x0000000000000000")
        #expect(try qt.command("read 0x40ffffe 4") == "OK 0xa5a50000")
    }
}

/// A device hot-plugged into a slot whose power the guest switched off answers no config
/// cycle until the guest powers the slot on (PCIe Base: no link without slot power), as on QEMU.
@Suite struct UnpoweredSlotTests {
    @Test func aDevicePluggedIntoAnUnpoweredSlotStaysHiddenUntilPowerOn() throws {
        let vm = try MonitorBackPressureTests.start(["-device", "pcie-root-port,id=rp1,chassis=1,slot=1,addr=1"])
        let (child, qt, path) = (vm.child, vm.qtest, vm.qmpPath!)
        defer { withExtendedLifetime((qt, vm)) { child.stop() } }
        // The guest numbers the port's secondary bus 1 and finds its PCI Express capability.
        try qt.configWrite(device: 1, offset: 0x18, width: "l", value: 0x0001_0100)
        var capability = Int(UInt32(try qt.configRead(device: 1, offset: 0x34).dropFirst(5), radix: 16) ?? 0 & 0xFC)
        while capability != 0 {
            let header = UInt32(try qt.configRead(device: 1, offset: capability).dropFirst(5), radix: 16) ?? 0
            if header & 0xFF == 0x10 { break }
            capability = Int(header >> 8 & 0xFC)
        }
        #expect(capability != 0, "no PCI Express capability")
        let slotControl = capability + 0x18
        // Power off, power indicator off (what pciehp leaves on an empty slot).
        try qt.configWrite(device: 1, offset: slotControl, width: "w", value: 1 << 10 | 0b11 << 8 | 0b11 << 6)
        let client = try QMPTestClient(path: path)
        try client.negotiate()
        #expect(try client.execute("device_add", "{\"driver\": \"pci-testdev\", \"id\": \"t1\", \"bus\": \"rp1\"}") == "{\"return\": {}}")
        #expect(try qt.configRead(bus: 1, device: 0, offset: 0) == "OK 0xffffffff", "a device behind an unpowered slot answered")
        // Power on, indicator on: the link comes up and the device answers.
        try qt.configWrite(device: 1, offset: slotControl, width: "w", value: 0b01 << 8 | 0b11 << 6)
        #expect(try qt.configRead(bus: 1, device: 0, offset: 0) == "OK 0x51b36")
    }
}

/// A failed device_add takes back only what it added, seen from outside: through QMP and
/// config cycles, as a guest would see it.
@Suite struct FailedHotPlugTests {
    @Test func aFailedDeviceAddLeavesItsNeighbourAlone() throws {
        let vm = try MonitorBackPressureTests.start(["-device", "pci-bridge,id=ppb1,chassis_nr=1,addr=3"])
        let (child, qt, path) = (vm.child, vm.qtest, vm.qmpPath!)
        defer { withExtendedLifetime((qt, vm)) { child.stop() } }
        let client = try QMPTestClient(path: path)
        try client.negotiate()
        // Function 1 goes in silently (as on QEMU); a reset makes the SHPC count slot 3 as
        // occupied, so plugging function 0 there fails.
        #expect(try client.execute("device_add", "{\"driver\": \"pci-testdev\", \"id\": \"fn1\", \"bus\": \"ppb1\", \"addr\": \"3.1\"}") == "{\"return\": {}}")
        #expect(try client.execute("system_reset") == "{\"return\": {}}")
        let failed = try client.execute("device_add", "{\"driver\": \"pci-testdev\", \"id\": \"fn0\", \"bus\": \"ppb1\", \"addr\": \"3.0\"}")
        #expect(failed.contains("\"error\"") && failed.contains("occupied"), "\(failed)")
        // fn0 never existed; fn1 is still there (device_del finds it), and nothing was deleted.
        #expect(try client.execute("query-status").hasPrefix("{\"return\""))
        #expect(!client.events.contains { $0.contains("DEVICE_DELETED") }, "\(client.events)")
        #expect(try client.execute("device_del", "{\"id\": \"fn0\"}").contains("DeviceNotFound"))
        #expect(!(try client.execute("device_del", "{\"id\": \"fn1\"}").contains("DeviceNotFound")), "the neighbour fn1 was removed")
    }
}
