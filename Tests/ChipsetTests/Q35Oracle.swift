import Chipset
import Foundation
import PCI
import VMMBase

/// The QEMU oracle's two documents (written by Tests/Oracle/qemu_q35.py) and the replay of
/// everything they record against our models.
struct OracleDocuments {
    /// Config space bytes per function ("00:1f.0") at reset.
    var reset: [String: [UInt8]] = [:]
    var facts: [String: [String]] = [:]
    var probes: [Probe] = []
    var sequences: [(name: String, steps: [Step])] = []

    struct Probe {
        var function: String
        var offset: Int
        var reset: UInt8
        var afterFF: UInt8
        var after00: UInt8
        var writable: UInt8
        var writeOneToClear: UInt8
        var fresh: Bool
    }

    enum Step {
        case write(function: String, offset: Int, width: AccessWidth, value: UInt32)
        case read(function: String, offset: Int, width: AccessWidth, value: UInt32)
        case memory(address: UInt64, value: UInt32)
    }

    static let mch = "00:00.0"
    static let lpc = "00:1f.0"

    init(lspci: String, wmask: String) throws {
        var current: String?
        for line in lspci.split(separator: "\n", omittingEmptySubsequences: true) {
            let fields = line.split(separator: " ")
            guard let first = fields.first else { continue }
            if first.count == 7, first.contains(".") {  // "00:1f.0 Class 0601: 8086:2918"
                current = String(first)
                reset[String(first)] = []
            } else if let current, first.hasSuffix(":"), let row = Int(first.dropLast(), radix: 16) {
                let bytes = try fields.dropFirst().map { try Self.hex8($0) }
                guard row == reset[current]!.count else { throw OracleError.malformed(String(line)) }
                reset[current]! += bytes
            } else {
                throw OracleError.malformed(String(line))
            }
        }
        var sequenceIndex: [String: Int] = [:]
        for line in wmask.split(separator: "\n", omittingEmptySubsequences: true) where !line.hasPrefix("#") {
            let f = line.split(separator: " ").map(String.init)
            switch f[0] {
            case "fact":
                facts[f[1], default: []].append(f.dropFirst(2).joined(separator: " "))
            case "note":
                break
            case "probe":
                probes.append(Probe(function: f[1], offset: try Self.parseHex(f[2]), reset: try Self.hex8(f[3]),
                                    afterFF: try Self.hex8(f[4]), after00: try Self.hex8(f[5]),
                                    writable: try Self.hex8(f[6]), writeOneToClear: try Self.hex8(f[7]),
                                    fresh: f[8] == "1"))
            case "seq":
                let step: Step
                switch f[2] {
                case "w", "r":
                    let width = AccessWidth(bytes: try Self.parseHex(f[5]))!
                    let value = UInt32(try Self.parseHex(f[6]))
                    step = f[2] == "w"
                        ? .write(function: f[3], offset: try Self.parseHex(f[4]), width: width, value: value)
                        : .read(function: f[3], offset: try Self.parseHex(f[4]), width: width, value: value)
                case "m":
                    step = .memory(address: UInt64(try Self.parseHex(f[3])), value: UInt32(try Self.parseHex(f[5])))
                default:
                    throw OracleError.malformed(String(line))
                }
                if let i = sequenceIndex[f[1]] {
                    sequences[i].steps.append(step)
                } else {
                    sequenceIndex[f[1]] = sequences.count
                    sequences.append((f[1], [step]))
                }
            default:
                throw OracleError.malformed(String(line))
            }
        }
    }

    static func load(directory: URL, prefix: String) throws -> OracleDocuments {
        let lspci = try String(contentsOf: directory.appendingPathComponent(prefix + "-q35-reset.lspci"), encoding: .utf8)
        let wmask = try String(contentsOf: directory.appendingPathComponent(prefix + "-q35-wmask.txt"), encoding: .utf8)
        return try OracleDocuments(lspci: lspci, wmask: wmask)
    }

    private static func parseHex<S: StringProtocol>(_ s: S) throws -> Int {
        guard let v = Int(s, radix: 16) else { throw OracleError.malformed(String(s)) }
        return v
    }

    private static func hex8<S: StringProtocol>(_ s: S) throws -> UInt8 {
        guard s.count == 2, let v = UInt8(s, radix: 16) else { throw OracleError.malformed(String(s)) }
        return v
    }
}

enum OracleError: Error, CustomStringConvertible {
    case malformed(String)
    var description: String {
        switch self { case .malformed(let line): "malformed oracle line: \(line)" }
    }
}

/// Our two q35 functions, wired as QEMU's bus 0 would see them for the accesses the oracle
/// makes: config cycles by function name and 32-bit memory reads through ECAM and RCBA.
struct Q35Pair {
    let mch = Q35HostBridge()
    let lpc = ICH9LPC()

    func function(_ name: String) -> (any PCIFunction)? {
        switch name {
        case OracleDocuments.mch: mch
        case OracleDocuments.lpc: lpc
        default: nil
        }
    }

    func memoryRead(_ address: UInt64) -> UInt32 {
        if let ecam = mch.ecamWindow, address >= ecam.base, address - ecam.base < ecam.size {
            let offset = address - ecam.base
            let bus = offset >> 20, device = (offset >> 15) & 0x1F, function = (offset >> 12) & 0x7
            let name = "\(hex(bus, 2)):\(hex(device, 2)).\(hex(function, 1))"
            // The oracle only reads functions we model, or absent ones (all ones).
            return self.function(name)?.configRead(Int(offset & 0xFFF), width: .dword) ?? 0xFFFF_FFFF
        }
        if let rcba = lpc.rcba, address >= rcba, address - rcba < UInt64(ICH9LPC.ChipsetConfig.size) {
            return UInt32(lpc.chipsetConfigRead(address - rcba, width: .dword))
        }
        // Nothing else the oracle reads is mapped; QEMU (TCG) reads unassigned memory as 0.
        return 0
    }
}

extension OracleDocuments {
    /// Every way our models differ from what QEMU recorded, as readable lines.
    func differences() -> [String] {
        var issues: [String] = []
        let pair = Q35Pair()

        // Functions present at reset with -nodefaults: we model the MCH and LPC; QEMU also
        // has AHCI (00:1f.2) and SMBus (00:1f.3), which belong to other models.
        for name in [Self.mch, Self.lpc] {
            guard let theirs = reset[name] else { issues.append("\(name): missing from the lspci dump"); continue }
            let ours = pair.function(name)!.configSnapshot()
            if theirs.count != ours.size { issues.append("\(name): size \(ours.size), QEMU \(theirs.count)") }
            for o in 0..<min(theirs.count, ours.size) where ours.bytes[o] != theirs[o] {
                issues.append("\(name) reset byte 0x\(hex(o, 2)): ours \(hex(ours.bytes[o], 2)), QEMU \(hex(theirs[o], 2))")
            }
        }

        if facts["ecam-enabled-at-reset"] != ["0"] || pair.mch.ecamWindow != nil {
            issues.append("ECAM enabled at reset: QEMU \(facts["ecam-enabled-at-reset"] ?? []), ours \(String(describing: pair.mch.ecamWindow))")
        }
        for fact in facts["extended-config-0x100"] ?? [] {
            let f = fact.split(separator: " ")
            let ours = pair.function(String(f[0]))?.configRead(0x100, width: .dword)
            if ours != UInt32(f[1], radix: 16) { issues.append("\(f[0]) config 0x100: ours \(String(describing: ours)), QEMU \(f[1])") }
        }

        for p in probes {
            // A freshly reset model per byte, whether or not QEMU needed a fresh machine.
            let fresh = Q35Pair()
            guard let fn = fresh.function(p.function) else { issues.append("probe of unknown \(p.function)"); continue }
            let snapshot = fn.configSnapshot()
            let reset = UInt8(fn.configRead(p.offset, width: .byte))
            _ = fn.configWrite(p.offset, width: .byte, value: 0xFF)
            let ff = UInt8(fn.configRead(p.offset, width: .byte))
            _ = fn.configWrite(p.offset, width: .byte, value: 0x00)
            let zero = UInt8(fn.configRead(p.offset, width: .byte))
            if (reset, ff, zero) != (p.reset, p.afterFF, p.after00) {
                issues.append("\(p.function) 0x\(hex(p.offset, 2)) probe: ours \(hex(reset, 2)) \(hex(ff, 2)) \(hex(zero, 2)), "
                              + "QEMU \(hex(p.reset, 2)) \(hex(p.afterFF, 2)) \(hex(p.after00, 2))")
            }
            // The masks themselves, where a probe shows them directly (a stateful byte's
            // probe changes its own mask on the way).
            if !p.fresh, snapshot.writable[p.offset] != p.writable {
                issues.append("\(p.function) 0x\(hex(p.offset, 2)) writable mask: ours \(hex(snapshot.writable[p.offset], 2)), "
                              + "QEMU \(hex(p.writable, 2))")
            }
            if snapshot.writeOneToClear[p.offset] & p.reset != p.writeOneToClear {
                issues.append("\(p.function) 0x\(hex(p.offset, 2)) visible W1C: ours "
                              + "\(hex(snapshot.writeOneToClear[p.offset] & p.reset, 2)), QEMU \(hex(p.writeOneToClear, 2))")
            }
        }

        for (name, steps) in sequences {
            let fresh = Q35Pair()
            for (i, step) in steps.enumerated() {
                switch step {
                case .write(let f, let offset, let width, let value):
                    _ = fresh.function(f)?.configWrite(offset, width: width, value: value)
                case .read(let f, let offset, let width, let value):
                    let ours = fresh.function(f)?.configRead(offset, width: width)
                    if ours != value {
                        issues.append("seq \(name) step \(i): \(f) read 0x\(hex(offset, 3)): ours "
                                      + "\(ours.map { hex($0, 8) } ?? "absent"), QEMU \(hex(value, 8))")
                    }
                case .memory(let address, let value):
                    let ours = fresh.memoryRead(address)
                    if ours != value {
                        issues.append("seq \(name) step \(i): memory 0x\(hex(address, 16)): ours \(hex(ours, 8)), QEMU \(hex(value, 8))")
                    }
                }
            }
        }
        return issues
    }
}

enum RepositoryPaths {
    /// The package root, found from this file's path (Tests/ChipsetTests/<file>).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let fixtures = root.appendingPathComponent("DeviceTables/fixtures")
    static let oracleScript = root.appendingPathComponent("Tests/Oracle/qemu_q35.py")

    static func executable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    static var oracleAvailable: Bool {
        executable("qemu-system-x86_64") != nil && executable("python3") != nil
    }
}
