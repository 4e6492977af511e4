import Foundation
import PCI
import PCIPassthrough
import Synchronization
import TestRequirements
import VMMBase

/// Config spaces and BAR sizing answers QEMU 10 gave (Tests/Oracle/qemu_endpoints.py).
enum QEMUFixtures {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("DeviceTables/fixtures")

    /// The 4 KiB config space of QEMU's `name` (igb, nvme) behind a root port.
    static func config(_ name: String) throws -> [UInt8] {
        let text = try String(contentsOf: directory.appendingPathComponent("qemu10-\(name)-behind-root-port.lspci"), encoding: .utf8)
        let bytes = RealLspci.bytes(ofDump: text)
        guard bytes.count == ConfigSpace.expressSize else { throw FixtureError("\(name): \(bytes.count) bytes") }
        return bytes
    }

    /// QEMU's read-back after all ones was written to each BAR (0x10-0x24) and the ROM (0x30).
    static func sizingAnswers(_ name: String) throws -> [Int: UInt32] {
        let text = try String(contentsOf: directory.appendingPathComponent("qemu10-endpoint-bar-sizing.txt"), encoding: .utf8)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + " ") }) else {
            throw FixtureError("no sizing line for \(name)")
        }
        var answers: [Int: UInt32] = [:]
        for pair in line.split(separator: " ").dropFirst() {
            let parts = pair.split(separator: "=")
            guard parts.count == 2, let offset = Int(parts[0], radix: 16), let value = UInt32(parts[1], radix: 16) else {
                throw FixtureError("bad pair \(pair)")
            }
            answers[offset] = value
        }
        return answers
    }

    /// The BAR sizes a VFIO region info would report for the device, from QEMU's sizing answers
    /// (PCI Local Bus 3.0, 6.2.5.1: the size is the two's complement of the address bits).
    static func regionSizes(_ name: String) throws -> [UInt64] {
        let answers = try sizingAnswers(name)
        var sizes = [UInt64](repeating: 0, count: 6)
        var index = 0
        while index < 6 {
            let low = UInt64(answers[0x10 + 4 * index] ?? 0)
            let is64 = low & 1 == 0 && (low >> 1) & 3 == 2
            let mask = low & (low & 1 == 1 ? ~UInt64(0x3) : ~UInt64(0xF))
            if mask != 0 {
                let high = is64 ? UInt64(answers[0x14 + 4 * index] ?? 0) : 0xFFFF_FFFF
                sizes[index] = ~(high << 32 | mask) &+ 1
            }
            index += is64 ? 2 : 1
        }
        return sizes
    }

    struct FixtureError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}

/// The device side of the overlay in tests: config bytes that take writes as they come
/// (a real device's own masks are not the overlay's business) and remember every write.
final class CapturedDevice: HostConfigAccess {
    private let state: Mutex<(bytes: [UInt8], writes: [(offset: Int, width: AccessWidth, value: UInt32)])>

    init(_ bytes: [UInt8]) { state = Mutex((bytes, [])) }

    var writes: [(offset: Int, width: AccessWidth, value: UInt32)] { state.withLock { $0.writes } }

    func poke(_ offset: Int, width: Int, value: UInt64) {
        state.withLock { LittleEndian.store(value, into: &$0.bytes, at: offset, count: width) }
    }

    func readConfig(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { UInt32(LittleEndian.load($0.bytes, at: offset, count: width.bytes)) }
    }

    func writeConfig(_ offset: Int, width: AccessWidth, value: UInt32) {
        state.withLock {
            $0.writes.append((offset, width, value))
            LittleEndian.store(UInt64(value), into: &$0.bytes, at: offset, count: width.bytes)
        }
    }
}
