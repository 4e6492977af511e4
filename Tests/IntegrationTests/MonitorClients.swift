import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A test-side Unix socket: blocking, with a receive timeout so a broken peer fails a test
/// instead of hanging it.
final class TestSocket {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(fd: Int32, timeoutSeconds: Int = 20) {
        self.fd = fd
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    static func connect(_ path: String, attempts: Int = 100) throws -> TestSocket {
        for _ in 0..<attempts {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = address(path)
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if rc == 0 { return TestSocket(fd: fd) }
            close(fd)
            usleep(50_000)
        }
        throw TestFailure("cannot connect to \(path)")
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestFailure("send failed: errno \(errno)") }
            done += n
        }
    }

    /// The next line without its newline; nil at end of stream or timeout.
    func readLine() -> String? {
        while true {
            if let i = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<i], as: UTF8.self)
                buffer.removeFirst(i + 1)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return nil }
            buffer += chunk[..<n]
        }
    }

    /// True when the peer closed (read returns end of stream) within the timeout.
    func waitForClose() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return true }
            if n < 0 { return false }
        }
    }
}

/// A listening socket a child process connects to (QEMU's and Switchyard's `-qtest unix:PATH`).
final class TestListener {
    let path: String
    let fd: Int32

    init(name: String) throws {
        path = NSTemporaryDirectory() + "sy-\(getpid())-\(UUID().uuidString.prefix(8))-\(name).sock"
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = TestSocket.address(path)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0, listen(fd, 4) == 0 else { throw TestFailure("cannot listen on \(path): errno \(errno)") }
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// Waits up to `seconds` for the child to connect.
    func accept(seconds: Int32 = 20) throws -> TestSocket {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, seconds * 1000) == 1 else { throw TestFailure("nobody connected to \(path) in \(seconds) s") }
        let client = Glibc.accept(fd, nil, nil)
        guard client >= 0 else { throw TestFailure("accept failed: errno \(errno)") }
        return TestSocket(fd: client)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A child process that is always reaped: `stop()` (or deinit) terminates it if still running.
final class ChildProcess {
    let process = Process()

    /// Standard error goes to `stderrPath` when given (read it after exit), else nowhere;
    /// `environment` replaces the inherited one when given.
    init(_ executable: String, _ arguments: [String], stderrPath: String? = nil,
         environment: [String: String]? = nil) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let stderrPath {
            _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
            process.standardError = FileHandle(forWritingAtPath: stderrPath)
        } else {
            process.standardError = FileHandle.nullDevice
        }
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// Waits up to `seconds` for the process to exit on its own; its status, or nil.
    func waitForExit(seconds: Double = 10) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { return nil }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Ends the process: SIGTERM, then SIGKILL after `grace` seconds (0: SIGKILL at once).
    func stop(grace: Double = 5) {
        if process.isRunning {
            if grace > 0 { process.terminate() }
            if grace == 0 || waitForExit(seconds: grace) == nil { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
    }

    deinit { stop() }
}

/// A qtest client over a socket: commands out, replies in; `IRQ ...` notices are collected
/// apart, as libqtest does.
final class QTestClient {
    let socket: TestSocket
    private(set) var irqs: [String] = []

    init(_ socket: TestSocket) { self.socket = socket }

    @discardableResult
    func command(_ line: String) throws -> String {
        try socket.send(line + "\n")
        while let reply = socket.readLine() {
            if reply.hasPrefix("IRQ ") { irqs.append(reply); continue }
            return reply
        }
        throw TestFailure("no reply to '\(line.prefix(80))'")
    }

    func takeIRQs() -> [String] { defer { irqs.removeAll() }; return irqs }

    /// Config read through CF8/CFC.
    func configRead(bus: Int = 0, device: Int, function: Int = 0, offset: Int) throws -> String {
        try command("outl 0xcf8 0x\(String(0x8000_0000 | bus << 16 | device << 11 | function << 8 | offset & 0xFC, radix: 16))")
        return try command("inl 0xcfc")
    }

    func configWrite(bus: Int = 0, device: Int, function: Int = 0, offset: Int, width: String, value: UInt32) throws {
        try command("outl 0xcf8 0x\(String(0x8000_0000 | bus << 16 | device << 11 | function << 8 | offset & 0xFC, radix: 16))")
        let port = 0xCFC + (offset & 3)
        try command("out\(width) 0x\(String(port, radix: 16)) 0x\(String(value, radix: 16))")
    }
}

/// A QMP client that reads line-delimited replies (Switchyard and QEMU end each with \n).
final class QMPTestClient {
    let socket: TestSocket
    private(set) var events: [String] = []
    let greeting: String

    init(path: String) throws {
        socket = try TestSocket.connect(path)
        guard let g = socket.readLine() else { throw TestFailure("no QMP greeting") }
        greeting = g
    }

    /// Sends raw text and returns the next non-event line.
    func send(raw text: String) throws -> String {
        try socket.send(text)
        return try nextReply()
    }

    func nextReply() throws -> String {
        while let raw = socket.readLine() {
            let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : raw  // QEMU ends lines with CRLF
            if line.contains("\"event\"") { events.append(line); continue }
            return line
        }
        throw TestFailure("no QMP reply")
    }

    func execute(_ command: String, _ arguments: String? = nil) throws -> String {
        let args = arguments.map { ", \"arguments\": \($0)" } ?? ""
        return try send(raw: "{\"execute\": \"\(command)\"\(args)}\n")
    }

    func negotiate() throws {
        let reply = try execute("qmp_capabilities")
        guard reply == "{\"return\": {}}" else { throw TestFailure("negotiation failed: \(reply)") }
    }
}

/// A path for a socket Switchyard listens on.
func temporarySocketPath(_ name: String) -> String {
    NSTemporaryDirectory() + "sy-\(getpid())-\(UUID().uuidString.prefix(8))-\(name).sock"
}

/// A VMM (Switchyard or QEMU, same options) driven the way libqtest drives QEMU: the test
/// listens, the VMM connects with `-qtest unix:PATH`; optionally with a QMP server socket that a
/// client has already negotiated. The one way the suites start a machine under qtest.
final class QTestSession {
    let child: ChildProcess
    let qtest: QTestClient
    /// The QMP server socket, when asked for.
    let qmpPath: String?
    /// A negotiated client on `qmpPath`, when asked for.
    let qmp: QMPTestClient?
    private let listener: TestListener

    enum Monitor {
        case none
        /// `-qmp unix:PATH,server=on,wait=off`.
        case qmp(negotiated: Bool)
        /// `-chardev socket,...,server=on,wait=off -mon chardev=...,mode=control` (the same monitor, spelled the long way).
        case chardev
    }

    /// Starts `executable` with `arguments`, the qtest socket (logging to `qtestLog`) and
    /// `monitor`; `stderrPath` keeps its standard error. Kills it (after `grace` seconds of SIGTERM) on `stop()` or deinit.
    init(_ executable: String, _ arguments: [String], monitor: Monitor = .none, name: String = "qtest",
         qtestLog: String = "none", stderrPath: String? = nil, grace: Double = 5) throws {
        listener = try TestListener(name: name)
        var monitorArguments: [String] = []
        var path: String?
        switch monitor {
        case .none: break
        case .qmp:
            path = temporarySocketPath(name + "-qmp")
            monitorArguments = ["-qmp", "unix:\(path!),server=on,wait=off"]
        case .chardev:
            path = temporarySocketPath(name + "-qmp")
            monitorArguments = ["-chardev", "socket,id=mon0,path=\(path!),server=on,wait=off", "-mon", "chardev=mon0,mode=control"]
        }
        qmpPath = path
        self.grace = grace
        child = try ChildProcess(executable, arguments + monitorArguments + ["-qtest", "unix:\(listener.path)", "-qtest-log", qtestLog],
                                 stderrPath: stderrPath)
        qtest = QTestClient(try listener.accept())
        if case .qmp(negotiated: true) = monitor, let path {
            let client = try QMPTestClient(path: path)
            try client.negotiate()
            qmp = client
        } else {
            qmp = nil
        }
    }

    private let grace: Double

    /// Ends the VMM (closing the qtest connection alone would too, as QEMU's does).
    func stop() {
        child.stop(grace: grace)
        if let qmpPath { unlink(qmpPath) }
    }

    deinit { stop() }
}
