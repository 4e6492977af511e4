import Chipset
import Foundation
import PCI
import Testing
import VMMBase

/// The committed QEMU 10 dumps of the four port models (Tests/Oracle/qemu_ports.py).
enum PortFixtures {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let directory = repository.appendingPathComponent("DeviceTables/fixtures/qemu10-ports")
    static let script = repository.appendingPathComponent("Tests/Oracle/qemu_ports.py")
    static let ports = PCIePortFactory.drivers
    static let probeSuffixes = [".after-ff", ".after-00", ".after-restore"]

    /// Parses lspci -xxxx text: a header line, then rows "off: xx xx ...".
    static func parse(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = []
        for line in text.split(separator: "\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            bytes += line[line.index(after: colon)...].split(separator: " ").compactMap { UInt8($0, radix: 16) }
        }
        return bytes
    }

    static func load(_ name: String, in directory: URL = directory) throws -> [UInt8] {
        let bytes = parse(try String(contentsOf: directory.appendingPathComponent(name + ".txt"), encoding: .utf8))
        #expect(bytes.count == 4096, "\(name).txt holds \(bytes.count) bytes")
        return bytes
    }

    struct AllowEntry {
        let port: String
        let offset: Int?  // nil: unclaimed bytes
        /// The bits of the byte that may differ ("0x6d:0x10"); all eight when not given.
        let bits: UInt8
        let aspect: String
    }

    static let allowlist: [AllowEntry] = {
        let url = repository.appendingPathComponent("DeviceTables/fixtures/ports-allowlist.txt")
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            if line.hasPrefix("#") { return nil }
            let fields = line.split(separator: " ", maxSplits: 3)
            guard fields.count == 4 else { return nil }
            let location = fields[1].split(separator: ":")
            let offset = location[0] == "unclaimed" ? nil : Int(location[0].dropFirst(2), radix: 16)
            let bits = location.count == 2 ? UInt8(location[1].dropFirst(2), radix: 16) ?? 0xFF : 0xFF
            return AllowEntry(port: String(fields[0]), offset: offset, bits: bits, aspect: String(fields[2]))
        }
    }()

    static func make(_ driver: String) throws -> any PCIBridgeFunction {
        try PCIePortFactory.make(driver: driver, id: driver, properties: [:])
    }

    /// True when the byte at `offset` is allowed to differ in `aspect` on `port`.
    /// Whether bytes differing in `differing` bits at `offset` are allowed.
    static func allowed(_ port: String, _ offset: Int, _ aspect: String, model: ConfigSpace, differing: UInt8 = 0xFF) -> Bool {
        allowlist.contains { entry in
            guard entry.port == "*" || entry.port == port, entry.aspect == aspect else { return false }
            if let o = entry.offset { return o == offset && differing & ~entry.bits == 0 }
            return offset >= Reg.firstCapability
                && !model.capabilities.contains { ($0.offset..<($0.offset + $0.length)).contains(offset) }
        }
    }

    /// The oracle's probe, replayed on a model: per byte, remember, write 0xff, read, write
    /// 0x00, read, write the remembered value, read.
    static func probe(_ function: any PCIFunction) -> [[UInt8]] {
        var results = [[UInt8]](repeating: [], count: 3)
        for offset in 0..<4096 {
            let original = function.configRead(offset, width: .byte)
            _ = function.configWrite(offset, width: .byte, value: 0xFF)
            results[0].append(UInt8(function.configRead(offset, width: .byte)))
            _ = function.configWrite(offset, width: .byte, value: 0x00)
            results[1].append(UInt8(function.configRead(offset, width: .byte)))
            _ = function.configWrite(offset, width: .byte, value: original)
            results[2].append(UInt8(function.configRead(offset, width: .byte)))
        }
        return results
    }

    static func hexDiff(_ offsets: [Int], ours: [UInt8], theirs: [UInt8]) -> String {
        offsets.prefix(24).map { String(format: "0x%03x ours %02x qemu %02x", $0, ours[$0], theirs[$0]) }
            .joined(separator: "; ")
    }
}

@Suite struct PortOracleTests {
    @Test(arguments: PortFixtures.ports)
    func resetConfigSpaceMatchesQEMU(_ port: String) throws {
        let qemu = try PortFixtures.load(port)
        let function = try PortFixtures.make(port)
        let model = function.configSnapshot()
        let ours = (0..<4096).map { UInt8(function.configRead($0, width: .byte)) }
        let differing = (0..<4096).filter {
            ours[$0] != qemu[$0] && !PortFixtures.allowed(port, $0, "reset", model: model, differing: ours[$0] ^ qemu[$0])
        }
        #expect(differing.isEmpty, "\(port): \(PortFixtures.hexDiff(differing, ours: ours, theirs: qemu))")
    }

    @Test(arguments: PortFixtures.ports)
    func writeBehaviourMatchesQEMUProbe(_ port: String) throws {
        let function = try PortFixtures.make(port)
        let model = function.configSnapshot()
        let ours = PortFixtures.probe(function)
        for (index, suffix) in PortFixtures.probeSuffixes.enumerated() {
            let qemu = try PortFixtures.load(port + suffix)
            let differing = (0..<4096).filter {
                ours[index][$0] != qemu[$0]
                    && !PortFixtures.allowed(port, $0, "probe", model: model, differing: ours[index][$0] ^ qemu[$0])
            }
            #expect(differing.isEmpty, "\(port)\(suffix): \(PortFixtures.hexDiff(differing, ours: ours[index], theirs: qemu))")
        }
    }

    @Test func everyAllowlistEntryIsStillNeeded() throws {
        // An entry that no longer hides a difference is stale and must go.
        for entry in PortFixtures.allowlist where entry.offset != nil {
            let ports = entry.port == "*" ? PortFixtures.ports : [entry.port]
            for port in ports {
                let offset = entry.offset!
                let function = try PortFixtures.make(port)
                let qemu: [[UInt8]]
                let ours: [[UInt8]]
                if entry.aspect == "reset" {
                    qemu = [try PortFixtures.load(port)]
                    ours = [(0..<4096).map { UInt8(function.configRead($0, width: .byte)) }]
                } else {
                    qemu = try PortFixtures.probeSuffixes.map { try PortFixtures.load(port + $0) }
                    ours = PortFixtures.probe(function)
                }
                // Every bit the entry allows must differ somewhere, or the entry is (partly) stale.
                let differing = zip(ours, qemu).reduce(UInt8(0)) { $0 | ($1.0[offset] ^ $1.1[offset]) }
                #expect(differing & entry.bits == entry.bits,
                        "allowlist entry \(port) 0x\(String(offset, radix: 16)) \(entry.aspect) hides bits 0x\(String(entry.bits, radix: 16)), differing only 0x\(String(differing, radix: 16))")
            }
        }
    }

    static var qemuAvailable: Bool {
        ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"].contains {
            FileManager.default.isExecutableFile(atPath: $0)
        } && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
    }

    /// Re-runs the oracle against the installed QEMU so that the committed fixtures cannot
    /// silently go stale.
    @Test(.enabled(if: PortOracleTests.qemuAvailable, "needs qemu-system-x86_64 and python3 to re-run the QEMU oracle"),
          .timeLimit(.minutes(2)))
    func liveQEMUStillMatchesFixtures() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("ports-oracle-\(getpid())")
        defer { try? FileManager.default.removeItem(at: out) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [PortFixtures.script.path, out.path]
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "qemu_ports.py failed")
        for port in PortFixtures.ports {
            for suffix in [""] + PortFixtures.probeSuffixes {
                let fresh = try PortFixtures.load(port + suffix, in: out)
                let committed = try PortFixtures.load(port + suffix)
                let differing = (0..<4096).filter { fresh[$0] != committed[$0] }
                #expect(differing.isEmpty,
                        "\(port)\(suffix): QEMU now differs from the fixture: \(PortFixtures.hexDiff(differing, ours: committed, theirs: fresh))")
            }
        }
    }
}
