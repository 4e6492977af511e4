#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Foundation
import HostOS
import Machine
import Testing
import VMMBase
@testable import Control

@Suite("JSON for QMP")
struct JSONTests {
    @Test func parsesAndSerializesInQEMUStyle() throws {
        let v = try JSONParser.parse(Array(#"{"execute": "x", "arguments": {"a": [1, -2, true, null, 'q'], "b": "\u00e9\n"}}"#.utf8))
        #expect(v["execute"] == "x")
        #expect(v["arguments"]?["a"] == [1, -2, true, .null, "q"])
        #expect(v.serialized == #"{"execute": "x", "arguments": {"a": [1, -2, true, null, "q"], "b": "\u00E9\n"}}"#)
        #expect(JSONValue.int(-1).serialized == "-1")
    }

    /// QEMU's parser keeps an integer past Int64 but within UInt64 exact (QNum's uint), and
    /// makes a double of one past both (json-parser.c's literal parsing).
    @Test func integersPastInt64StayExactUpToUInt64() throws {
        #expect(try JSONParser.parse(Array("9223372036854775807".utf8)) == .int(Int64.max))
        #expect(try JSONParser.parse(Array("9223372036854775808".utf8)) == .unsigned(1 << 63))
        #expect(try JSONParser.parse(Array("18446744073709551615".utf8)) == .unsigned(UInt64.max))
        #expect(try JSONParser.parse(Array("18446744073709551616".utf8)) == .double(18446744073709551616))
        #expect(try JSONParser.parse(Array("-9223372036854775809".utf8)) == .double(-9_223_372_036_854_775_808.0))
        #expect(JSONValue.unsigned(UInt64.max).serialized == "18446744073709551615")
    }

    @Test func errorsUseQEMUWording() {
        func error(_ text: String) -> String? {
            do { _ = try JSONParser.parse(Array(text.utf8)); return nil } catch { return error.description }
        }
        #expect(error("foo") == "invalid keyword 'foo'")
        #expect(error(#"{"a": 1,}"#) == "expecting value")
        #expect(error("[1,]") == "expecting value")
        #expect(error(#"{"a" 1}"#)?.hasPrefix("expecting ':'") == true)
        #expect(error(#""\ud800""#)?.contains("surrogate") == true)
        #expect(error(String(repeating: "[", count: 2000) + String(repeating: "]", count: 2000)) == "nesting limit exceeded")
    }

    @Test func splitterFramesMessagesAndRecovers() {
        var s = JSONStreamSplitter(limit: 64)
        var items = s.feed(Array(#"{"a": "}{"} [1] 12 {"b""#.utf8))
        #expect(items == [.text(Array(#"{"a": "}{"}"#.utf8)), .text(Array("[1]".utf8)), .text(Array("12".utf8))])
        items = s.feed(Array(": 2}\n".utf8))
        #expect(items == [.text(Array(#"{"b": 2}"#.utf8))])
        items = s.feed([0xFF, 0x0A])
        #expect(items == [.error("stray '\u{FFFD}'")])
        items = s.feed(Array(("{\"x\": \"" + String(repeating: "z", count: 100) + "\"}\n{}").utf8))
        #expect(items.count == 2 && items[1] == .text(Array("{}".utf8)))
        if case .error(let m) = items[0] { #expect(m.hasPrefix("token size limit exceeded")) } else { Issue.record("no error") }
    }
}

@Suite("QMP monitor in process")
struct QMPMonitorTests {
    static func monitor(_ devices: [DeviceSpec] = [], paused: Bool = false) throws -> QMPMonitor {
        QMPMonitor(controller: VMController(machine: try Machine(MachineConfiguration(devices: devices)), startPaused: paused))
    }

    static func run(_ m: QMPMonitor, _ s: QMPSession, _ text: String) -> String {
        m.handle(text: Array(text.utf8), in: s)?.serialized ?? "<none>"
    }

    @Test func negotiationAndQueries() throws {
        let m = try Self.monitor(paused: true)
        let s = m.openSession()
        #expect(s.takeOutput() == ["{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 1, \"major\": 0}, \"package\": \"switchyard 0.1.0\"}, \"capabilities\": []}}\n"])
        #expect(Self.run(m, s, #"{"execute": "query-status"}"#) ==
                #"{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}"#)
        #expect(Self.run(m, s, #"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#) ==
                #"{"error": {"class": "GenericError", "desc": "Capability 'oob' not available"}}"#)
        #expect(Self.run(m, s, #"{"execute": "qmp_capabilities", "id": 7}"#) == #"{"return": {}, "id": 7}"#)
        #expect(Self.run(m, s, #"{"execute": "query-status"}"#) == #"{"return": {"status": "prelaunch", "running": false}}"#)
        #expect(Self.run(m, s, #"{"execute": "cont"}"#) == #"{"return": {}}"#)
        let out = s.takeOutput()
        #expect(out.count == 1 && out[0].contains("\"event\": \"RESUME\"") && !out[0].contains("\"data\""))
        #expect(Self.run(m, s, #"{"execute": "query-status"}"#) == #"{"return": {"status": "running", "running": true}}"#)
    }

    /// QEMU broadcasts STOP and RESUME to every monitor, once per change of the run state,
    /// whichever monitor (or the VM itself) made it.
    @Test func stopAndResumeReachEveryMonitorOncePerChange() throws {
        let controller = VMController(machine: try Machine(MachineConfiguration()), startPaused: false)
        let monitors = [QMPMonitor(controller: controller), QMPMonitor(controller: controller)]
        let sessions = monitors.map { $0.openSession() }
        for (m, s) in zip(monitors, sessions) { _ = Self.run(m, s, #"{"execute": "qmp_capabilities"}"#); _ = s.takeOutput() }
        func events() -> [[String]] {
            sessions.map { $0.takeOutput().compactMap { try? JSONParser.parse(Array($0.utf8))["event"]?.stringValue } }
        }
        #expect(Self.run(monitors[0], sessions[0], #"{"execute": "stop"}"#) == #"{"return": {}}"#)
        #expect(events() == [["STOP"], ["STOP"]])
        #expect(Self.run(monitors[1], sessions[1], #"{"execute": "stop"}"#) == #"{"return": {}}"#)
        #expect(events() == [[], []], "stopping a stopped VM is no change")
        controller.setRunState(.paused)
        #expect(events() == [[], []])
        #expect(Self.run(monitors[1], sessions[1], #"{"execute": "cont"}"#) == #"{"return": {}}"#)
        #expect(events() == [["RESUME"], ["RESUME"]])
        controller.setRunState(.paused)  // as on an assigned device's error
        #expect(events() == [["STOP"], ["STOP"]])
    }

    @Test func queryPCIShowsChipsetAndBridges() throws {
        let m = try Self.monitor([DeviceSpec(driver: "pci-bridge", id: "br1", devfn: 3 << 3),
                                  DeviceSpec(driver: "pci-testdev", id: "t1", bus: "br1", devfn: 1 << 3)])
        try m.machine.runFirmware()
        let s = m.openSession()
        _ = Self.run(m, s, #"{"execute": "qmp_capabilities"}"#)
        let reply = try JSONParser.parse(Array(Self.run(m, s, #"{"execute": "query-pci"}"#).utf8))
        let devices = reply["return"]?.arrayValue?.first?["devices"]?.arrayValue ?? []
        #expect(devices.map { $0["slot"]?.intValue } == [0, 3, 31, 31, 31])  // MCH, bridge, LPC, AHCI, SMBus
        #expect(devices[0]["class_info"] == ["class": 0x600, "desc": "Host bridge"])
        let bridge = devices[1]
        #expect(bridge["qdev_id"] == "br1")
        #expect(bridge["pci_bridge"]?["bus"]?["secondary"] == 1)
        let behind = bridge["pci_bridge"]?["devices"]?.arrayValue ?? []
        #expect(behind.count == 1 && behind.first?["qdev_id"] == "t1" && behind.first?["bus"] == 1)
        let regions = behind.first?["regions"]?.arrayValue ?? []
        #expect(regions.map { $0["bar"]?.intValue } == [0, 1, 2])
        #expect(regions.allSatisfy { ($0["address"]?.intValue ?? -1) > 0 })   // firmware assigned them
        #expect(regions[2]["mem_type_64"] == true && regions[2]["prefetch"] == true && regions[0]["type"] == "io")
        #expect(behind.first?["irq_pin"] == 1 && behind.first?["id"]?["subsystem-vendor"] == 0x1AF4)
    }

    @Test func deviceAddAndDelErrorsInQEMUWords() throws {
        let m = try Self.monitor([DeviceSpec(driver: "pci-bridge", id: "br1", devfn: 3 << 3, properties: ["shpc": "off"])])
        let s = m.openSession()
        _ = Self.run(m, s, #"{"execute": "qmp_capabilities"}"#)
        func desc(_ t: String) -> String? { try? JSONParser.parse(Array(Self.run(m, s, t).utf8))["error"]?["desc"]?.stringValue }
        #expect(desc(#"{"execute": "device_add", "arguments": {"driver": "pci-testdev", "bus": "br1"}}"#)
                == "Bus 'br1' does not support hotplugging")
        #expect(desc(#"{"execute": "device_add", "arguments": {"driver": "pci-testdev", "addr": "0x40"}}"#)?
                .contains("addr=0x40") == true)
        #expect(desc(#"{"execute": "device_add", "arguments": {"driver": "pci-testdev", "x": {"y": 1}}}"#)
                == "Invalid parameter type for 'x', expected: string")
        #expect(desc(#"{"execute": "device_add", "arguments": {"driver": "pci-testdev", "romfile": "efi.rom"}}"#)?
                .contains("loads no option ROMs") == true)
        #expect(desc(#"{"execute": "device_add", "arguments": {"driver": "pci-testdev", "multifunction": "maybe"}}"#)
                == "Parameter 'multifunction' expects 'on' or 'off'")
        #expect(desc(#"{"execute": "device_del", "arguments": {"id": "br1"}}"#) == "Bus 'pcie.0' does not support hotplugging")
        #expect(Self.run(m, s, #"{"execute": "device_del", "arguments": {"id": "zz"}}"#) ==
                #"{"error": {"class": "DeviceNotFound", "desc": "Device 'zz' not found"}}"#)
    }

    /// device_del x-surprise (Switchyard's): at once on a port with Hot-Plug Surprise; refused
    /// by a port without it and by an SHPC slot.
    @Test func deviceDelSurprise() throws {
        let m = try Self.monitor([
            DeviceSpec(driver: "pcie-root-port", id: "rp1", devfn: 3 << 3, properties: ["chassis": "1", "slot": "1"]),
            DeviceSpec(driver: "pcie-root-port", id: "rp2", devfn: 4 << 3,
                       properties: ["chassis": "2", "slot": "2", "x-hotplug-surprise": "off"]),
            DeviceSpec(driver: "pci-bridge", id: "br1", devfn: 5 << 3, properties: ["chassis_nr": "3"]),
        ])
        let s = m.openSession()
        _ = Self.run(m, s, #"{"execute": "qmp_capabilities"}"#)
        for (id, bus) in [("a", "rp1"), ("b", "rp2"), ("c", "br1")] {
            #expect(Self.run(m, s, #"{"execute": "device_add", "arguments": {"driver": "pci-testdev", "id": "\#(id)", "bus": "\#(bus)"}}"#)
                    == #"{"return": {}}"#)
        }
        _ = s.takeOutput()
        #expect(Self.run(m, s, #"{"execute": "device_del", "arguments": {"id": "a", "x-surprise": true}}"#) == #"{"return": {}}"#)
        #expect(s.takeOutput().contains { $0.contains(#""event": "DEVICE_DELETED", "data": {"device": "a""#) })
        for id in ["b", "c"] {
            let reply = Self.run(m, s, #"{"execute": "device_del", "arguments": {"id": "\#(id)", "x-surprise": true}}"#)
            #expect(reply.contains("does not advertise hot-plug surprise"), "\(reply)")
        }
        #expect(Self.run(m, s, #"{"execute": "device_del", "arguments": {"id": "b", "x-surprise": 1}}"#)
                == #"{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'x-surprise', expected: boolean"}}"#)
    }

    @Test func deviceAddPassesPropertiesThrough() throws {
        let spec = try QMPCommands.deviceSpec(QMPArguments(
            [("driver", "pcie-root-port"), ("id", "rp1"), ("bus", "pcie.0"), ("addr", 0x1A), ("chassis", 1), ("slot", "2"),
             ("multifunction", true)],
            schema: .open(required: [])))
        #expect(spec == DeviceSpec(driver: "pcie-root-port", id: "rp1", bus: "pcie.0", devfn: 0x1A, multifunction: true,
                                   properties: ["chassis": "1", "slot": "2"]))
        let text = try QMPCommands.deviceSpec(QMPArguments([("driver", "pci-testdev"), ("addr", "0x3.0x1")], schema: .open(required: [])))
        #expect(text.devfn == UInt8(0x19))  // slot 3, function 1
    }

    /// DEVICE_DELETED goes, in QEMU's shape, to every negotiated session and to no other.
    @Test func deviceDeletedReachesNegotiatedSessions() throws {
        let m = try Self.monitor()
        let a = m.openSession(), b = m.openSession(), late = m.openSession()
        for s in [a, b] { _ = Self.run(m, s, #"{"execute": "qmp_capabilities"}"#) }
        for s in [a, b, late] { _ = s.takeOutput() }
        m.publish(.deviceDeleted(id: "hp0", path: "/machine/peripheral/hp0"))
        for s in [a, b] {
            let out = s.takeOutput()
            #expect(out.count == 1)
            let event = try JSONParser.parse(Array(out[0].utf8))
            #expect(event["event"] == "DEVICE_DELETED")
            #expect(event["data"] == ["device": "hp0", "path": "/machine/peripheral/hp0"])
            #expect(event["timestamp"]?["seconds"]?.intValue ?? 0 > 1_600_000_000)
            #expect((0..<1_000_000).contains(event["timestamp"]?["microseconds"]?.intValue ?? -1))
        }
        #expect(late.takeOutput().isEmpty)
        m.closeSession(b)
    }

    @Test func quitRepliesThenRequestsExit() throws {
        let m = try Self.monitor()
        let s = m.openSession()
        _ = Self.run(m, s, #"{"execute": "qmp_capabilities"}"#)
        _ = s.takeOutput()
        #expect(m.handle(text: Array(#"{"execute": "quit"}"#.utf8), in: s) == nil)   // sent before exit
        let out = s.takeOutput()
        #expect(out.count == 2 && out[0].contains("\"SHUTDOWN\"") && out[1] == "{\"return\": {}}\n")
        #expect(m.controller.exitRequested && m.controller.waitForExit() == 0)
        #expect(m.controller.runState == .shutdown)
    }

    @Test func systemResetClearsFirmwareState() throws {
        let m = try Self.monitor([DeviceSpec(driver: "pci-bridge", id: "br1", devfn: 3 << 3)])
        try m.machine.runFirmware()
        #expect(m.machine.hostBridge.ecamWindow != nil)
        let s = m.openSession()
        _ = Self.run(m, s, #"{"execute": "qmp_capabilities"}"#)
        _ = s.takeOutput()
        // The reset acts and RESET goes out before the reply, as on QEMU (ResetTests).
        #expect(Self.run(m, s, #"{"execute": "system_reset"}"#) == "<none>")
        #expect(m.machine.hostBridge.ecamWindow == nil)
        #expect(m.machine.mmioRead(0xB000_0000, width: .dword) != 0x29C0_8086)   // ECAM gone
        let out = s.takeOutput()
        #expect(out.count == 2 && out[0].contains("\"reason\": \"host-qmp-system-reset\"") && out[1] == "{\"return\": {}}\n")
        #expect(!m.controller.exitRequested)
    }
}

@Suite("qtest server in process")
struct QTestServerTests {
    @Test func repliesAndNumbers() throws {
        let server = QTestServer(machine: try Machine(MachineConfiguration()), virtualClock: true)
        func run(_ line: String) -> String {
            server.process(line: Array(line.utf8))
            return server.takeOutput().joined()
        }
        #expect(run("outl 0xcf8 0x80000000") == "OK\n")
        #expect(run("inw 0xcfc") == "OK 0x8086\n")
        #expect(run("inb 0xcfc") == "OK 0x0086\n")
        #expect(run("writeb 0x10 -1") == "OK\n")                   // strtoul: -1 wraps, truncated to a byte
        #expect(run("readb 0x10") == "OK 0x00000000000000ff\n")
        #expect(run("writew 0x20 010") == "OK\n")                  // leading 0: octal
        #expect(run("readw 0x20") == "OK 0x0000000000000008\n")
        #expect(run("b64read 0x20 0") == "OK \n")
        #expect(run("b64write 0x30 2 AQID") == "OK\n")             // longer data is truncated
        #expect(run("read 0x30 3") == "OK 0x010200\n")
        #expect(run("clock_step 9223372036854775807") == "OK 9223372036854775807\n")
        #expect(run("clock_step 1") == "FAIL could not advance time\n")
    }

    @Test func cIntegers() {
        #expect(CInteger.unsigned("0x10") == 16)
        #expect(CInteger.unsigned("017") == 15)
        #expect(CInteger.unsigned("0") == 0)
        #expect(CInteger.unsigned("-1") == UInt64.max)
        #expect(CInteger.unsigned("18446744073709551616") == nil)
        #expect(CInteger.unsigned("08") == nil)
        #expect(CInteger.unsigned("") == nil)
        #expect(CInteger.signed("-9223372036854775808") == Int64.min)
        #expect(CInteger.signed("9223372036854775808") == nil)
    }
}

@Suite("QEMU-style command line")
struct QEMUInvocationTests {
    @Test func parsesTheSupportedSubset() throws {
        let inv = try QEMUInvocation.parse([
            "-machine", "q35,accel=qtest", "-m", "size=256M", "-smp", "4,cores=2", "-nodefaults", "-S", "-display", "none",
            "-device", "pci-bridge,id=br1,chassis_nr=1", "-qmp", "unix:/tmp/a.sock,server=on,wait=off",
            "-chardev", "socket,id=c0,path=/tmp/b.sock", "-mon", "chardev=c0,mode=control",
            "-qtest", "unix:/tmp/q.sock", "-qtest-log", "/dev/null",
            "-kernel", "vmlinuz", "-initrd", "initrd.img", "-append", "console=ttyS0",
        ])
        #expect(inv.accelerator == .qtest && inv.startPaused && inv.cpus == 4)
        #expect(inv.machine.memorySize == 256 << 20)
        #expect(inv.machine.devices == [DeviceSpec(driver: "pci-bridge", id: "br1", properties: ["chassis_nr": "1"])])
        #expect(inv.qmp == [SocketEndpoint(path: "/tmp/a.sock", server: true, wait: false), SocketEndpoint(path: "/tmp/b.sock")])
        #expect(inv.qtest == SocketEndpoint(path: "/tmp/q.sock"))
        #expect(inv.qtestLog == "/dev/null" && inv.kernel == "vmlinuz" && inv.initrd == "initrd.img" && inv.append == "console=ttyS0")
        #expect(try QEMUInvocation.parse(["-accel", "tcg:kvm"]).accelerator == .kvm)
        #expect(try QEMUInvocation.parse(["--machine", "pc-q35-9.2"]).accelerator == .kvm)
        #expect(try QEMUInvocation.parse(["-qmp", "unix:/x,server,nowait"]).qmp == [SocketEndpoint(path: "/x", server: true, wait: false)])
    }

    @Test func pipeChardevMonitors() throws {
        let inv = try QEMUInvocation.parse(["-chardev", "pipe,id=m0,path=/tmp/qmp", "-mon", "chardev=m0,mode=control"])
        #expect(inv.qmpPipes == ["/tmp/qmp"] && inv.qmp.isEmpty)
        #expect(throws: InvocationError("-chardev pipe,id=m0: needs path=")) {
            try QEMUInvocation.parse(["-chardev", "pipe,id=m0"])
        }
        #expect(throws: InvocationError("-chardev pipe,id=m0,path=/p,server=on: unsupported property 'server' for a pipe")) {
            try QEMUInvocation.parse(["-chardev", "pipe,id=m0,path=/p,server=on"])
        }
        #expect(throws: InvocationError("-chardev file,id=f,path=/p: only socket and pipe chardevs are supported")) {
            try QEMUInvocation.parse(["-chardev", "file,id=f,path=/p"])
        }
        #expect(throws: InvocationError("-mon chardev=m1: no -chardev with id 'm1'")) {
            try QEMUInvocation.parse(["-chardev", "pipe,id=m0,path=/p", "-mon", "chardev=m1,mode=control"])
        }
    }

    @Test func linuxBootOptions() throws {
        let boot = try QEMUInvocation.parse(["-machine", "q35", "-accel", "kvm", "-kernel", "bzImage", "-no-reboot"])
        #expect(boot.bootsLinux && boot.acpi && boot.noReboot && boot.serial == nil)
        let plain = try QEMUInvocation.parse(["-machine", "q35,accel=kvm,acpi=off", "-serial", "stdio", "-kernel", "k"])
        #expect(plain.bootsLinux && !plain.acpi && plain.serial == .stdio)
        #expect(try !QEMUInvocation.parse(["-accel", "qtest", "-kernel", "k"]).bootsLinux)
        #expect(try QEMUInvocation.parse(["-serial", "none"]).serial == QEMUInvocation.SerialTarget.none)
        #expect(throws: InvocationError("-serial pty: use stdio, none, unix:PATH[,server=on][,wait=off], pipe:PATH or chardev:ID")) {
            try QEMUInvocation.parse(["-serial", "pty"])
        }
        let socket = try QEMUInvocation.parse(["-serial", "unix:/tmp/com1,server=on,wait=off"])
        #expect(socket.serial == .socket(SocketEndpoint(path: "/tmp/com1", server: true, wait: false)))
        let viaChardev = try QEMUInvocation.parse(["-chardev", "socket,id=s0,path=/tmp/c,server=on,wait=off", "-serial", "chardev:s0"])
        #expect(viaChardev.serial == .socket(SocketEndpoint(path: "/tmp/c", server: true, wait: false)) && viaChardev.qmp.isEmpty)
        #expect(try QEMUInvocation.parse(["-serial", "pipe:/tmp/p"]).serial == .pipe("/tmp/p"))
        #expect(throws: InvocationError("-serial chardev:s9: no -chardev with id 's9'")) {
            try QEMUInvocation.parse(["-serial", "chardev:s9"])
        }
        #expect(throws: InvocationError("-serial chardev:m: chardev 'm' is already a QMP monitor; give COM1 its own -chardev")) {
            try QEMUInvocation.parse(["-chardev", "pipe,id=m,path=/p", "-mon", "chardev=m,mode=control", "-serial", "chardev:m"])
        }
        #expect(throws: InvocationError("-serial stdio: only one -serial (COM1) is supported")) {
            try QEMUInvocation.parse(["-serial", "none", "-serial", "stdio"])
        }
        #expect(QEMUInvocation.usage.contains("-kernel FILE"))
    }

    /// QEMU's -machine kernel-irqchip (OnOffSplit): on is the default under KVM; off would need
    /// local APICs in user space, which Switchyard has not, so it is refused with the fix.
    @Test func kernelIRQChipOption() throws {
        #expect(try QEMUInvocation.parse(["-machine", "q35", "-accel", "kvm"]).kernelIRQChip == .on)
        #expect(try QEMUInvocation.parse(["-machine", "q35,kernel-irqchip=split"]).kernelIRQChip == .split)
        #expect(try QEMUInvocation.parse(["-M", "q35,accel=kvm,kernel-irqchip=on"]).kernelIRQChip == .on)
        #expect(throws: InvocationError("-machine kernel-irqchip=off: Switchyard has no userspace local APIC; use kernel-irqchip=on (the default) or kernel-irqchip=split")) {
            try QEMUInvocation.parse(["-machine", "q35,kernel-irqchip=off"])
        }
        #expect(throws: InvocationError("-machine kernel-irqchip=maybe: Parameter 'kernel-irqchip' does not accept value 'maybe' (on, split; off is not supported)")) {
            try QEMUInvocation.parse(["-machine", "q35,kernel-irqchip=maybe"])
        }
        #expect(QEMUInvocation.usage.contains("kernel-irqchip=on|split"))
    }

    @Test func runStateObserversSeeEveryChange() throws {
        let controller = VMController(machine: try Machine(MachineConfiguration(devices: [])), startPaused: true)
        let seen = Mutex<[String]>([])
        controller.observeRunState { old, new in seen.withLock { $0.append("\(old.rawValue)>\(new.rawValue)") } }
        controller.setRunState(.running)
        controller.setRunState(.paused)
        #expect(seen.withLock { $0 } == ["prelaunch>running", "running>paused"])
    }

    @Test func errorsNameTheOption() {
        func message(_ a: [String]) -> String {
            do { _ = try QEMUInvocation.parse(a); return "" } catch { return error.description }
        }
        #expect(message(["-accel", "tcg"]).hasPrefix("-accel tcg: TCG is not supported"))
        #expect(message(["-accel", "hvf"]) == "-accel hvf: unknown accelerator; Switchyard supports kvm and qtest")
        #expect(message(["-machine", "q35,smm=off"]) == "-machine: unsupported property 'smm'")
        #expect(message(["-display", "gtk"]) == "-display gtk: only '-display none' is supported")
        #expect(message(["-chardev", "socket,id=c0"]).contains("needs path="))
        #expect(message(["-chardev", "file,id=c0,path=/x"]).contains("only socket and pipe chardevs"))
        #expect(message(["-mon", "chardev=c0,mode=readline"]).contains("only mode=control"))
        #expect(message(["-append", "x"]) == "-initrd and -append need -kernel")
        #expect(message(["-qtest", "unix:/a", "-qtest", "unix:/b"]) == "-qtest given twice")
        #expect(message(["-qtest", "unix:/a,reconnect=1"]).contains("unsupported property 'reconnect=1'"))
        #expect(message(["stray"]).hasPrefix("unexpected argument 'stray'"))
        #expect(message(["-m"]) == "option -m needs a value")
    }
}

@Suite("Monitor plumbing under load")
struct MonitorPlumbingTests {
    /// Garbage is one error per line however long the line: a megabyte of NUL bytes costs one
    /// reply, and the text after the newline frames normally.
    @Test func garbageLinesAreOneErrorEach() {
        var s = JSONStreamSplitter(limit: 64)
        let items = s.feed([UInt8](repeating: 0, count: 100_000) + [0x0A] + Array("{}\n".utf8))
        #expect(items == [.error("stray '\u{0}'"), .text(Array("{}".utf8))])
        var t = JSONStreamSplitter(limit: 64)
        t.append(Array("foo bar\n{}".utf8))
        #expect(t.next() == .text(Array("foo".utf8)))
        t.skipLine()  // "foo" did not parse: the rest of its line goes
        #expect(t.next() == .text(Array("{}".utf8)))
        t.append(Array("baz\n[1]".utf8))
        #expect(t.next() == .text(Array("baz".utf8)))
        t.skipLine()  // "baz" ended its line: nothing more to skip
        #expect(t.next() == .text(Array("[1]".utf8)))
    }

    /// Callers that ask together share computations, and nobody gets an answer computed
    /// before they asked.
    @Test func concurrentQueriesShareFreshComputations() {
        let computations = Mutex(0)
        let asked = Mutex(0)
        let sharing = FreshResultSharing<Int> {
            let n = computations.withLock { $0 += 1; return $0 }
            // Each computation lasts until all ten callers have asked (and 50 ms more), so the
            // bound below does not depend on how fast threads start on a loaded host.
            for _ in 0..<10_000 where asked.withLock({ $0 }) < 10 { usleep(1_000) }
            usleep(50_000)
            return n
        }
        let group = DispatchGroup()
        let results = Mutex<[Int]>([])
        for _ in 0..<10 {
            group.enter()
            Thread {
                asked.withLock { $0 += 1 }
                let v = sharing.value()
                results.withLock { $0.append(v) }
                group.leave()
            }.start()
        }
        group.wait()
        #expect(results.withLock { $0.count } == 10)
        #expect(computations.withLock { $0 } <= 3, "10 concurrent callers took \(computations.withLock { $0 }) computations")
        // Asked after the last one finished: a new computation.
        let before = computations.withLock { $0 }
        #expect(sharing.value() == before + 1)
    }

    /// A large reply that its client reads slowly does not get the client dropped when an
    /// event arrives meanwhile: only unread events count against the limit.
    @Test func aLargeReplyReadSlowlyDoesNotDropItsClient() throws {
        var fds: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let peer = fds[1]
        defer { close(peer) }
        let connection = SocketConnection(FileDescriptor(adopting: fds[0]), outputLimit: 1 << 20, dropLog: nil)
        let reply = [UInt8](repeating: UInt8(ascii: "r"), count: 3 << 20) + [0x0A]
        #expect(connection.write(bytes: reply, .reply))
        #expect(connection.write("EVENT\n", .unsolicited), "the event dropped a client that is reading its reply")
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while received.count < reply.count + 6 {
            let n = chunk.withUnsafeMutableBytes { recv(peer, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { break }
            received += chunk[..<n]
        }
        #expect(received.count == reply.count + 6)
        #expect(received.suffix(6) == Array("EVENT\n".utf8))
        connection.close()
    }

    /// Many clients connecting at once all get in, even before the accept loop catches up.
    @Test func aBurstOfConnectsIsNotRefused() throws {
        let path = NSTemporaryDirectory() + "sy-backlog-\(getpid()).sock"
        let listener = try SocketListener(path: path)
        defer { listener.stop() }
        var refused = 0
        var fds: [Int32] = []
        for _ in 0..<64 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (i, b) in path.utf8.enumerated() { raw[i] = b }
            }
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if rc != 0 { refused += 1 }
            fds.append(fd)
        }
        for fd in fds { close(fd) }
        #expect(refused == 0, "\(refused) of 64 simultaneous connects refused")
    }
}
