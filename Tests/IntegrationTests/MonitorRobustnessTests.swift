import Foundation
import Testing

/// Hostile input on the QMP and qtest sockets of a running switchyard: every bad message gets
/// an answer in the protocol's own form, the monitors stay up, and other clients carry on.
@Suite("Bad input on the monitor sockets", .serialized)
struct MonitorRobustnessTests {
    static func start() throws -> QTestSession {
        try QTestSession(switchyardBinary, ["-machine", "q35", "-accel", "qtest", "-nodefaults", "-display", "none"],
                         monitor: .chardev, name: "qtest-bad")
    }

    static func isError(_ reply: String, _ desc: String? = nil, class errorClass: String = "GenericError") -> Bool {
        guard reply.hasPrefix("{\"error\": {\"class\": \"\(errorClass)\"") else { return false }
        return desc.map { reply.contains("\"desc\": \"\($0)\"") } ?? true
    }

    @Test func qmpBadInput() throws {
        // The qtest connection must stay open: its closing ends the process.
        let vm = try Self.start()
        let (child, qt, path) = (vm.child, vm.qtest, vm.qmpPath!)
        defer { withExtendedLifetime((qt, vm)) { child.stop() } }
        let bystander = try QMPTestClient(path: path)
        try bystander.negotiate()
        let client = try QMPTestClient(path: path)
        #expect(client.greeting.hasPrefix("{\"QMP\": {\"version\": {\"qemu\": {"))

        // Before negotiation only qmp_capabilities exists.
        #expect(Self.isError(try client.execute("query-status"), "Expecting capabilities negotiation with 'qmp_capabilities'",
                             class: "CommandNotFound"))
        try client.negotiate()
        #expect(Self.isError(try client.execute("no-such-command"), "The command no-such-command has not been found",
                             class: "CommandNotFound"))
        #expect(Self.isError(try client.execute("device_del", "{\"id\": 42}"), "Invalid parameter type for 'id', expected: string"))
        #expect(Self.isError(try client.execute("device_del"), "Parameter 'id' is missing"))
        #expect(Self.isError(try client.execute("device_del", "{\"id\": \"x\"}"), "Device 'x' not found", class: "DeviceNotFound"))
        #expect(Self.isError(try client.execute("query-pci", "{\"bus\": 0}"), "Parameter 'bus' is unexpected"))
        #expect(Self.isError(try client.send(raw: "[1, 2]\n"), "QMP input must be a JSON object"))
        #expect(Self.isError(try client.send(raw: "{\"execute\": 1}\n"), "QMP input member 'execute' must be a string"))
        #expect(Self.isError(try client.send(raw: "{\"execute\": \"quit\", \"arguments\": []}\n"),
                             "QMP input member 'arguments' must be an object"))
        #expect(Self.isError(try client.send(raw: "{\"foo\": 1}\n"), "QMP input member 'foo' is unexpected"))
        #expect(Self.isError(try client.send(raw: "foo\n"), "JSON parse error, invalid keyword 'foo'"))
        #expect(Self.isError(try client.send(raw: "{\"execute\": \"query-status\",}\n"), "JSON parse error, expecting value"))
        // The id comes back with errors too.
        let withID = try client.send(raw: "{\"execute\": \"nope\", \"id\": {\"n\": [1]}}\n")
        #expect(withID.hasSuffix(", \"id\": {\"n\": [1]}}"))

        // A command name of almost 1 MiB: a well-formed message, a CommandNotFound.
        let longName = String(repeating: "a", count: (1 << 20) - 64)
        let long = try client.send(raw: "{\"execute\": \"\(longName)\"}\n")
        #expect(Self.isError(long, class: "CommandNotFound") && long.count > 1 << 19)
        // A 2 MiB line: over the message limit, one parse error, then the stream resynchronizes.
        let huge = try client.send(raw: "{\"execute\": \"" + String(repeating: "b", count: 2 << 20) + "\"}\n")
        #expect(Self.isError(huge) && huge.contains("JSON parse error"))
        #expect(try client.execute("query-status").hasPrefix("{\"return\": {\"status\": \"running\""))

        // Binary garbage: one parse error for the line (not one per byte); the connection survives.
        try client.socket.send([0xFF, 0x00, 0x01, 0xFE, 0x0A])
        let garbage = client.socket.readLine() ?? ""
        #expect(Self.isError(garbage) && garbage.contains("JSON parse error, stray"), "\(garbage)")
        #expect(try client.execute("query-version").hasPrefix("{\"return\": {\"qemu\""))

        // Clients that vanish mid-command.
        for partial in ["{\"execute\": \"query-", "{\"execute\": \"query-pci\"", "{\"exec"] {
            let vanishing = try QMPTestClient(path: path)
            try vanishing.socket.send(partial)
        }
        let midNegotiation = try TestSocket.connect(path)
        _ = midNegotiation.readLine()
        try midNegotiation.send("{\"execute\": \"qmp_capabilities\"")

        // The bystander saw none of it.
        #expect(try bystander.execute("query-status") == "{\"return\": {\"status\": \"running\", \"running\": true}}")
        #expect(try bystander.execute("query-pci").hasPrefix("{\"return\": [{\"bus\": 0, \"devices\": ["))
        #expect(bystander.events.isEmpty)
    }

    @Test func qtestBadInput() throws {
        let vm = try Self.start()
        let (child, qt, path) = (vm.child, vm.qtest, vm.qmpPath!)
        defer { withExtendedLifetime(vm) {} }
        defer { child.stop() }
        let bystander = try QMPTestClient(path: path)
        try bystander.negotiate()

        #expect(try qt.command("no_such_command") == "FAIL Unknown command 'no_such_command'")
        #expect(try qt.command("") == "FAIL Unknown command ''")
        #expect(try qt.command("outb") == "ERR 'outb' needs 1 argument")
        #expect(try qt.command("outb 0x80") == "ERR 'outb' needs 2 arguments")
        #expect(try qt.command("inb 0x10000") == "ERR port 0x10000 is above 0xffff")
        #expect(try qt.command("readl zz") == "ERR invalid number 'zz' for 'readl'")
        #expect(try qt.command("writel 0x1000 0x1g") == "ERR invalid number '0x1g' for 'writel'")
        #expect(try qt.command("read 0x1000 0") == "ERR read of 0 bytes")
        #expect(try qt.command("read 0x1000 0x100000000").hasPrefix("ERR size 4294967296 is larger than"))
        #expect(try qt.command("write 0x1000 2 0xzz") == "ERR invalid hex digit in write data")
        #expect(try qt.command("b64write 0x1000 2 !!!!") == "ERR invalid base64 data")
        #expect(try qt.command("clock_set -") == "ERR invalid number '-' for 'clock_set'")
        #expect(try qt.command("irq_intercept_in ioapic name") == "FAIL Interception of named in-GPIOs not yet supported")
        #expect(try qt.command("irq_intercept_out ioapic") == "FAIL No intercepts installed")
        #expect(try qt.command("set_irq_in ioapic unnamed-gpio-in 99 1") == "ERR ioapic has inputs 0-23, not 99")

        // A 1 MiB line is a (long) unknown command, echoed whole as QEMU does.
        let word = String(repeating: "A", count: 1 << 20)
        #expect(try qt.command(word) == "FAIL Unknown command '\(word)'")
        // Binary garbage is an unknown command too; the protocol carries on.
        try qt.socket.send([0xFF, 0xFE, 0x00, 0x20, 0x01, 0x0A])
        #expect(qt.socket.readLine()?.hasPrefix("FAIL Unknown command '") == true)
        #expect(try qt.command("endianness") == "OK little")
        #expect(try bystander.execute("query-status").hasPrefix("{\"return\": {\"status\": \"running\""))

        // The qtest client vanishing mid-command ends the process, as it ends the test.
        try qt.socket.send("outl 0xcf8 0x8000")
        shutdown(qt.socket.fd, Int32(SHUT_RDWR))
        #expect(child.waitForExit(seconds: 10) == 0)
        #expect(!FileManager.default.fileExists(atPath: path), "QMP socket left behind")
    }

    /// libqtest's arrangement: the test listens for QMP too, and the VMM connects to it.
    @Test func qmpAsAClientLikeLibqtest() throws {
        let qmpListener = try TestListener(name: "qmp-client")
        let child = try ChildProcess(switchyardBinary, [
            "-machine", "q35", "-accel", "qtest", "-display", "none", "-S",
            "-chardev", "socket,path=\(qmpListener.path),id=char0", "-mon", "chardev=char0,mode=control",
        ])
        defer { child.stop() }
        let socket = try qmpListener.accept()
        #expect(socket.readLine()?.hasPrefix("{\"QMP\": {\"version\"") == true)
        try socket.send("{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"query-status\"}\n{\"execute\": \"quit\"}\n")
        #expect(socket.readLine() == "{\"return\": {}}")
        #expect(socket.readLine() == "{\"return\": {\"status\": \"prelaunch\", \"running\": false}}")
        #expect(socket.readLine()?.contains("\"event\": \"SHUTDOWN\"") == true)
        #expect(socket.readLine() == "{\"return\": {}}")
        #expect(child.waitForExit(seconds: 10) == 0)
    }

    @Test func commandLineErrorsNameTheOption() throws {
        for (arguments, message) in [
            (["-machine", "pc"], "-machine pc: unsupported machine type"),
            (["-accel", "tcg"], "-accel tcg: TCG is not supported"),
            (["-machine", "q35", "-frobnicate"], "unknown option '-frobnicate'"),
            (["-m", "lots"], "-m lots: needs a memory size"),
            (["-qmp", "tcp:localhost:4444"], "-qmp tcp:localhost:4444: only unix:PATH sockets are supported"),
            (["-mon", "chardev=nope,mode=control"], "no -chardev with id 'nope'"),
            (["-device", "pci-testdev,addr=0x40"], "-device pci-testdev,addr=0x40: bad device"),
            (["-smp", "0"], "-smp: cpus=0 must be a number from 1 to 255"),
            (["-machine", "q35", "-qtest"], "option -qtest needs a value"),
        ] {
            let result = try run(switchyardBinary, arguments)
            #expect(result.status == 2, "\(arguments)")
            #expect(result.err.contains(message), "\(arguments): \(result.err)")
        }
        let help = try run(switchyardBinary, ["--help"])
        #expect(help.status == 0 && help.out.contains("-qtest unix:PATH") && help.out.contains("lspci"))
    }
}
