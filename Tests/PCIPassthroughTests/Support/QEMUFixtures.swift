import Foundation
import PCI
import PCIPassthrough
import Synchronization
import TestRequirements
import VFIO
import VMMBase

/// Config spaces and BAR sizing answers QEMU 10 gave (DeviceTables/vfio-twins, captured by
/// Tests/Oracle/qemu_vfio_twins.py; the same files build the VFIO twins).
enum QEMUFixtures {
    /// QEMU 10's `name` (igb, nvme) behind a root port, as a twin identity.
    static func identity(_ name: String) throws -> VFIOTwinIdentity { try VFIOTwinIdentity.captured("qemu10-\(name)") }

    /// Its 4 KiB config space.
    static func config(_ name: String) throws -> [UInt8] { try identity(name).config }

    /// QEMU's read-back after all ones was written to each BAR (0x10-0x24) and the ROM BAR (0x30).
    static func sizingAnswers(_ name: String) throws -> [Int: UInt32] {
        let path = VFIOTwinIdentity.capturedDirectory + "/qemu10-\(name).bars.txt"
        var answers: [Int: UInt32] = [:]
        for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ")
            if f.count == 6, f[0] == "bar", let index = Int(f[1]), let value = UInt32(f[5], radix: 16) {
                answers[ConfigSpace.barOffset(index)] = value
            } else if f.count == 5, f[0] == "rom", let value = UInt32(f[4], radix: 16) {
                answers[Reg.romType0] = value
            } else {
                throw FixtureError("\(path): cannot read '\(line)'")
            }
        }
        return answers
    }

    /// The BAR sizes VFIO's region info reports for the device (the twin's regions).
    static func regionSizes(_ name: String) throws -> [UInt64] {
        let bars = try identity(name).bars
        return (0..<6).map { index in bars.first { $0.index == index }?.size ?? 0 }
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
