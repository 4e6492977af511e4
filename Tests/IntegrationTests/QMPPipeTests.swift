import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// QMP over `-chardev pipe` (P.in read, P.out written: FIFOs the caller made), what a busybox
/// shell can drive with plain redirections: the nested rig's switchyard-hotplug scenario uses it.
@Suite("QMP on a pipe chardev")
struct QMPPipeTests {
    /// One end of a FIFO, opened read-write so neither side waits for the other to open it;
    /// reads give up after 20 s.
    final class FIFO {
        let fd: Int32
        private var buffer: [UInt8] = []

        init(_ path: String) throws {
            fd = open(path, O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { throw TestFailure("cannot open \(path): errno \(errno)") }
        }

        deinit { close(fd) }

        func write(_ text: String) throws {
            let bytes = Array(text.utf8)
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            guard n == bytes.count else { throw TestFailure("write failed: errno \(errno)") }
        }

        func readLine() -> String? {
            while true {
                if let i = buffer.firstIndex(of: 0x0A) {
                    defer { buffer.removeFirst(i + 1) }
                    return String(decoding: buffer[..<i], as: UTF8.self)
                }
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 20_000) == 1 else { return nil }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { return nil }
                buffer += chunk[..<n]
            }
        }
    }

    @Test func greetingCapabilitiesStatusAndQuit() throws {
        let base = NSTemporaryDirectory() + "sy-\(getpid())-\(UUID().uuidString.prefix(8))-qmp"
        for suffix in [".in", ".out"] {
            guard mkfifo(base + suffix, 0o600) == 0 else { throw TestFailure("mkfifo \(base)\(suffix): errno \(errno)") }
        }
        defer { unlink(base + ".in"); unlink(base + ".out") }
        let child = try ChildProcess(switchyardBinary, [
            "-machine", "q35", "-accel", "qtest", "-nodefaults", "-display", "none",
            "-chardev", "pipe,id=mon0,path=\(base)", "-mon", "chardev=mon0,mode=control",
        ])
        defer { child.stop() }
        let toVMM = try FIFO(base + ".in"), fromVMM = try FIFO(base + ".out")
        let greeting = try #require(fromVMM.readLine())
        #expect(greeting.hasPrefix("{\"QMP\": {\"version\": {\"qemu\": {"))
        try toVMM.write("{\"execute\": \"query-status\"}\n")
        #expect(fromVMM.readLine()?.contains("\"class\": \"CommandNotFound\"") == true)
        try toVMM.write("{\"execute\": \"qmp_capabilities\"}\n")
        #expect(fromVMM.readLine() == "{\"return\": {}}")
        try toVMM.write("{\"execute\": \"query-status\", \"id\": 7}\n")
        let status = try #require(fromVMM.readLine())
        #expect(status.contains("\"status\": \"running\"") && status.contains("\"running\": true") && status.hasSuffix("\"id\": 7}"))
        try toVMM.write("{\"execute\": \"quit\"}\n")
        var lines: [String] = []
        while lines.count < 2, let line = fromVMM.readLine() { lines.append(line) }
        #expect(lines.contains("{\"return\": {}}") && lines.contains { $0.contains("\"event\": \"SHUTDOWN\"") })
        #expect(child.waitForExit(seconds: 10) == 0)
    }

    @Test func missingFIFOsAreAnErrorNamingTheOption() throws {
        let base = NSTemporaryDirectory() + "sy-\(getpid())-\(UUID().uuidString.prefix(8))-nofifo"
        let result = try run(switchyardBinary, [
            "-machine", "q35", "-accel", "qtest", "-chardev", "pipe,id=m,path=\(base)", "-mon", "chardev=m,mode=control",
        ])
        #expect(result.status != 0)
        #expect(result.err.contains("-chardev pipe,path=\(base): cannot open \(base).in and \(base).out"))
    }
}
