import Foundation
import Machine
import Synchronization
import VMMBase

/// QEMU's qtest protocol (system/qtest.c) over one machine: a line-based request/response
/// protocol in which the test plays the CPU (port and memory accesses), owns the virtual
/// clock, and can intercept the IOAPIC's inputs to see `IRQ raise N` / `IRQ lower N`.
///
/// Replies follow QEMU byte for byte where QEMU answers (`OK`, `OK 0x%04x` for in*,
/// `OK 0x%016x` for read*, `FAIL ...`). Where QEMU would abort on bad arguments (it asserts),
/// Switchyard answers `ERR <reason>` and carries on.
public final class QTestServer: Sendable {
    public let machine: Machine
    /// Whether clock_step/clock_set exist: QEMU offers them only with the qtest accelerator.
    public let virtualClock: Bool
    /// The longest line accepted; longer ones get `ERR` and are skipped to their newline.
    public let lineLimit: Int
    private let log: QTestLog?

    private struct State {
        var clock: Int64 = 0
        var interceptedDevice: String?
        var levels: [UInt32: Bool] = [:]
        var connection: SocketConnection?
    }
    private let state = Mutex(State())
    private let observerToken = Mutex<Int?>(nil)

    /// The IOAPIC's QOM paths as QEMU's object_resolve_path finds them on q35.
    static let ioapicPaths: Set<String> = ["ioapic", "/machine/ioapic"]

    public init(machine: Machine, virtualClock: Bool, log: QTestLog? = nil, lineLimit: Int = 16 << 20) {
        self.machine = machine
        self.virtualClock = virtualClock
        self.log = log
        self.lineLimit = lineLimit
        let token = machine.interrupts.addObserver { [weak self] event in
            if case .level(let gsi, let high) = event { self?.lineChanged(gsi.number, high: high) }
        }
        observerToken.withLock { $0 = token }
    }

    deinit {
        if let token = observerToken.withLock({ $0 }) { machine.interrupts.removeObserver(token) }
    }

    /// The virtual clock in nanoseconds.
    public var clock: Int64 { state.withLock { $0.clock } }

    // MARK: Connection

    /// Serves one connection until it closes.
    public func serve(_ connection: SocketConnection) {
        opened(connection)
        defer { closed() }
        var buffer: [UInt8] = []
        var discarding = false
        while let bytes = connection.read() {
            var start = bytes.startIndex
            while let newline = bytes[start...].firstIndex(of: 0x0A) {
                if discarding {
                    discarding = false
                } else {
                    buffer += bytes[start..<newline]
                    process(line: buffer)
                }
                buffer.removeAll(keepingCapacity: true)
                start = newline + 1
            }
            if !discarding { buffer += bytes[start...] }
            if buffer.count > lineLimit {
                buffer.removeAll()
                discarding = true
                send("ERR line longer than \(lineLimit) bytes\n")
            }
        }
    }

    func opened(_ connection: SocketConnection?) {
        state.withLock {
            $0.connection = connection
            $0.levels = [:]
        }
        log?.opened()
    }

    func closed() {
        state.withLock { $0.connection = nil }
        log?.closed()
    }

    /// Sends (and logs) text to the connected test; with no connection, `outputSink` gets it.
    private func send(_ text: String, _ delivery: SocketConnection.Delivery = .reply) {
        log?.sent(text)
        let connection = state.withLock { $0.connection }
        if let connection { connection.write(text, delivery) } else { outputSink.withLock { $0.append(text) } }
    }

    /// What was sent while no socket was connected (tests drive `process(line:)` directly).
    private let outputSink = Mutex<[String]>([])
    public func takeOutput() -> [String] { outputSink.withLock { let o = $0; $0.removeAll(); return o } }

    private func lineChanged(_ number: UInt32, high: Bool) {
        let changed = state.withLock { s -> Bool in
            guard s.interceptedDevice != nil, number < 256, s.levels[number, default: false] != high else { return false }
            s.levels[number] = high
            return true
        }
        if changed { send("IRQ \(high ? "raise" : "lower") \(number)\n", .unsolicited) }
    }

    // MARK: Commands

    struct ArgumentError: Error { let message: String }

    /// Handles one command line (without its newline).
    public func process(line: [UInt8]) {
        let words = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        log?.received(words)
        do {
            send(try execute(words))
        } catch {
            send("ERR \(error.message)\n")
        }
    }

    private func execute(_ words: [String]) throws(ArgumentError) -> String {
        let command = words[0]
        func arg(_ i: Int) throws(ArgumentError) -> String {
            guard i < words.count else { throw ArgumentError(message: "'\(command)' needs \(i) argument\(i == 1 ? "" : "s")") }
            return words[i]
        }
        func unsigned(_ i: Int) throws(ArgumentError) -> UInt64 {
            let text = try arg(i)
            guard let v = CInteger.unsigned(text) else { throw ArgumentError(message: "invalid number '\(text)' for '\(command)'") }
            return v
        }
        func signed(_ i: Int) throws(ArgumentError) -> Int64 {
            let text = try arg(i)
            guard let v = CInteger.signed(text) else { throw ArgumentError(message: "invalid number '\(text)' for '\(command)'") }
            return v
        }
        func port() throws(ArgumentError) -> UInt16 {
            let a = try unsigned(1)
            guard a <= 0xFFFF else { throw ArgumentError(message: "port 0x\(String(a, radix: 16)) is above 0xffff") }
            return UInt16(a)
        }
        func size(_ i: Int) throws(ArgumentError) -> Int {
            let n = try unsigned(i)
            guard n <= UInt64(Self.maximumTransfer) else {
                throw ArgumentError(message: "size \(n) is larger than \(Self.maximumTransfer) bytes")
            }
            // The range may end at 2^64 - 1 but not wrap to address 0, as readq/writeq do not.
            if n > 0, let address = CInteger.unsigned(words[1]), address > UInt64.max - (n - 1) {
                throw ArgumentError(message: "\(n) bytes at 0x\(String(address, radix: 16)) would wrap past the end of the address space")
            }
            return Int(n)
        }
        let widths: [Character: AccessWidth] = ["b": .byte, "w": .word, "l": .dword, "q": .qword]

        switch command {
        case "outb", "outw", "outl":
            let p = try port(), value = try unsigned(2), width = widths[command.last!]!
            machine.portWrite(p, width: width, value: width.truncate(value))
            return "OK\n"
        case "inb", "inw", "inl":
            let p = try port()
            let value = machine.portRead(p, width: widths[command.last!]!)
            return "OK 0x\(Self.hex(value, digits: 4))\n"
        case "writeb", "writew", "writel", "writeq":
            let address = try unsigned(1), value = try unsigned(2), width = widths[command.last!]!
            machine.mmioWrite(address, width: width, value: width.truncate(value))
            return "OK\n"
        case "readb", "readw", "readl", "readq":
            let address = try unsigned(1)
            let value = machine.mmioRead(address, width: widths[command.last!]!)
            return "OK 0x\(Self.hex(value, digits: 16))\n"
        case "read":
            let address = try unsigned(1), length = try size(2)
            guard length > 0 else { throw ArgumentError(message: "read of 0 bytes") }
            let data = readMemory(address, count: length)
            return "OK 0x" + Self.hexDump(data) + "\n"
        case "b64read":
            let address = try unsigned(1), length = try size(2)
            return "OK \(Data(readMemory(address, count: length)).base64EncodedString())\n"
        case "write":
            let address = try unsigned(1), length = try size(2), data = Array(try arg(3).utf8)
            guard data.count >= 3 else { return "ERR invalid argument size\n" }
            var bytes = [UInt8](repeating: 0, count: length)
            for i in 0..<length where i * 2 + 4 <= data.count {
                guard let high = Self.nibble(data[i * 2 + 2]), let low = Self.nibble(data[i * 2 + 3]) else {
                    throw ArgumentError(message: "invalid hex digit in write data")
                }
                bytes[i] = high << 4 | low
            }
            writeMemory(address, bytes)
            return "OK\n"
        case "b64write":
            let address = try unsigned(1), length = try size(2), text = try arg(3)
            guard text.utf8.count >= 3 else { return "ERR invalid argument size\n" }
            guard let decoded = Data(base64Encoded: Self.padBase64(text)) else {
                throw ArgumentError(message: "invalid base64 data")
            }
            if decoded.count != length {
                log?.note("b64write: data length mismatch (told \(length), found \(decoded.count))\n")
            }
            var bytes = Array(decoded.prefix(length))
            bytes += [UInt8](repeating: 0, count: length - bytes.count)
            writeMemory(address, bytes)
            return "OK\n"
        case "memset":
            let address = try unsigned(1), length = try size(2), pattern = try unsigned(3)
            if length > 0 { writeMemory(address, [UInt8](repeating: UInt8(truncatingIfNeeded: pattern), count: length)) }
            return "OK\n"
        case "endianness":
            return "OK little\n"
        case "clock_step" where virtualClock:
            guard words.count > 1 else {
                return "FAIL cannot advance clock to the next deadline because there is no pending deadline\n"
            }
            let ns = try signed(1)
            return state.withLock { s in
                let old = s.clock
                let (target, overflow) = old.addingReportingOverflow(ns)
                if !overflow && target > old { s.clock = target }
                return s.clock > old ? "OK \(s.clock)\n" : "FAIL could not advance time\n"
            }
        case "clock_set" where virtualClock:
            let ns = try signed(1)
            return state.withLock { s in
                if ns > s.clock { s.clock = ns }
                return "\(s.clock == ns ? "OK" : "FAIL") \(s.clock)\n"
            }
        case "module_load":
            _ = try arg(2)
            return "FAIL\n"
        case "irq_intercept_in", "irq_intercept_out":
            let path = try arg(1)
            guard Self.ioapicPaths.contains(path) else { return "FAIL Unknown device\n" }
            let named = words.count > 2
            let outbound = command == "irq_intercept_out"
            if named && !outbound { return "FAIL Interception of named in-GPIOs not yet supported\n" }
            return state.withLock { s in
                if let device = s.interceptedDevice { return device == "ioapic" ? "OK\n" : "FAIL IRQ intercept already enabled\n" }
                // The IOAPIC has inputs only: intercepting its outputs installs nothing.
                guard !outbound else { return "FAIL No intercepts installed\n" }
                s.interceptedDevice = "ioapic"
                return "OK\n"
            }
        case "set_irq_in":
            let path = try arg(1)
            _ = try arg(4)
            guard Self.ioapicPaths.contains(path) else { return "FAIL Unknown device\n" }
            guard words[2] == "unnamed-gpio-in" else { return "FAIL Unknown GPIO list '\(words[2])'\n" }
            let number = try signed(3), level = try signed(4)
            guard (0..<Int64(Machine.ioapicInputs)).contains(number) else {
                throw ArgumentError(message: "ioapic has inputs 0-\(Machine.ioapicInputs - 1), not \(number)")
            }
            machine.setIOAPICInput(UInt32(number), high: level != 0)
            return "OK\n"
        default:
            return "FAIL Unknown command '\(command)'\n"
        }
    }

    /// The most bytes one read/write/memset moves.
    public static let maximumTransfer = 64 << 20

    private func readMemory(_ address: UInt64, count: Int) -> [UInt8] { machine.readMemory(address, count: count) }

    private func writeMemory(_ address: UInt64, _ bytes: [UInt8]) { machine.writeMemory(address, bytes) }

    static func hex(_ value: UInt64, digits: Int) -> String {
        let s = String(value, radix: 16)
        return s.count >= digits ? s : String(repeating: "0", count: digits - s.count) + s
    }

    static func hexDump(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// GLib's decoder accepts base64 without its '=' padding; Foundation's does not.
    static func padBase64(_ text: String) -> String {
        let remainder = text.utf8.count % 4
        return remainder == 0 ? text : text + String(repeating: "=", count: 4 - remainder)
    }
}

/// Numbers as C's strtoul/strtoll with base 0 read them (0x hex, leading-0 octal, decimal, an
/// optional sign), the whole word or nothing, as QEMU's qemu_strtou64 requires.
enum CInteger {
    static func magnitude(_ text: Substring) -> UInt64? {
        var t = text
        var radix = 10
        if t.hasPrefix("0x") || t.hasPrefix("0X") {
            radix = 16
            t = t.dropFirst(2)
        } else if t.count > 1 && t.hasPrefix("0") {
            radix = 8
            t = t.dropFirst()
        }
        guard !t.isEmpty, t.allSatisfy({ $0.isASCII && $0.isHexDigit }) else { return nil }
        return UInt64(t, radix: radix)
    }

    /// strtoull: a leading '-' negates in two's complement, as C does.
    static func unsigned(_ text: String) -> UInt64? {
        var t = Substring(text)
        var negative = false
        if t.hasPrefix("-") { negative = true; t = t.dropFirst() } else if t.hasPrefix("+") { t = t.dropFirst() }
        guard let m = magnitude(t) else { return nil }
        return negative ? 0 &- m : m
    }

    static func signed(_ text: String) -> Int64? {
        var t = Substring(text)
        var negative = false
        if t.hasPrefix("-") { negative = true; t = t.dropFirst() } else if t.hasPrefix("+") { t = t.dropFirst() }
        guard let m = magnitude(t) else { return nil }
        if negative { return m <= UInt64(Int64.max) + 1 ? Int64(truncatingIfNeeded: 0 &- m) : nil }
        return m <= UInt64(Int64.max) ? Int64(m) : nil
    }
}

/// The qtest log QEMU writes with -qtest-log: `[R +secs] words` for requests, `[S +secs] text`
/// for replies and IRQ notices, `[I secs] OPENED` / `[I +secs] CLOSED` for the connection.
/// Without -qtest-log QEMU logs to standard error; `none` turns logging off.
public final class QTestLog: Sendable {
    private let handle: FileHandle
    private let start = Mutex<ContinuousClock.Instant?>(nil)

    public init(handle: FileHandle) { self.handle = handle }

    /// Opens (truncating) `path`, or standard error when `path` is nil; nil for "none".
    public static func open(_ path: String?) throws -> QTestLog? {
        guard let path else { return QTestLog(handle: .standardError) }
        if path == "none" { return nil }
        guard FileManager.default.createFile(atPath: path, contents: nil) || FileManager.default.isWritableFile(atPath: path),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw QTestLogError(path: path)
        }
        try handle.truncate(atOffset: 0)
        return QTestLog(handle: handle)
    }

    private func elapsed() -> String? {
        guard let t = start.withLock({ $0 }) else { return nil }
        let d = ContinuousClock.now - t
        let micros = d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
        let frac = String(micros % 1_000_000)
        return "\(micros / 1_000_000).\(String(repeating: "0", count: 6 - frac.count))\(frac)"
    }

    private func write(_ text: String) { handle.write(Data(text.utf8)) }

    func opened() {
        start.withLock { $0 = .now }
        write("[I \(elapsed() ?? "0.000000")] OPENED\n")
    }

    func closed() {
        if let t = elapsed() { write("[I +\(t)] CLOSED\n") }
        start.withLock { $0 = nil }
    }

    func received(_ words: [String]) {
        guard let t = elapsed() else { return }
        write("[R +\(t)]" + words.map { " " + $0 }.joined() + "\n")
    }

    func sent(_ text: String) {
        guard let t = elapsed() else { return }
        write("[S +\(t)] \(text)")
    }

    func note(_ text: String) { sent(text) }
}

public struct QTestLogError: Error, CustomStringConvertible {
    public let path: String
    public var description: String { "cannot open qtest log '\(path)' for writing" }
}
