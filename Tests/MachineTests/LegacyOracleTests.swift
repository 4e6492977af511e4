import Chipset
import Foundation
import Machine
import Testing
import VMMBase

/// Replays QEMU's answers (Tests/Oracle/qemu_legacy.py, run live) to a sequence of port
/// accesses to the legacy devices against our machine.
@Suite struct LegacyOracleTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func executable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static var available: Bool { executable("qemu-system-x86_64") != nil && executable("python3") != nil }

    static func allowlist() throws -> [String: String] {
        let text = try String(contentsOf: root.appendingPathComponent("DeviceTables/legacy-allowlist.txt"), encoding: .utf8)
        var entries: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { entries[String(parts[0])] = String(parts[1]) }
        }
        return entries
    }

    @Test("the allowlist gives a reason for every entry")
    func allowlistHasReasons() throws {
        for (label, reason) in try Self.allowlist() { #expect(reason.count > 10, "\(label)") }
    }

    @Test(.enabled(if: LegacyOracleTests.available, "needs qemu-system-x86_64 and python3"))
    func legacyPortsMatchQEMU() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.executable("python3")!)
        process.arguments = [Self.root.appendingPathComponent("Tests/Oracle/qemu_legacy.py").path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0)
        let transcript = String(decoding: data, as: UTF8.self)

        let allow = try Self.allowlist()
        // QEMU's vCPU is stopped, so its virtual clock (PM timer, UART timeouts) reads 0.
        let machine = try Machine(MachineConfiguration(devices: []), clock: ManualClock(unixSeconds: 1_700_000_000))
        var differences: [String] = [], reads = 0, allowedSeen: Set<String> = []
        for line in transcript.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ").map(String.init)
            let port = UInt16(f[1], radix: 16)!, width = AccessWidth(bytes: Int(f[2])!)!, value = UInt64(f[3], radix: 16)!
            if f[0] == "w" {
                machine.portWrite(port, width: width, value: value)
                continue
            }
            reads += 1
            let mask = UInt64(f[4], radix: 16)!, label = f[5]
            let ours = machine.portRead(port, width: width)
            if ours & mask != value & mask {
                if allow[label] != nil { allowedSeen.insert(label); continue }
                differences.append("\(label) (port 0x\(f[1]) width \(f[2])): ours 0x\(String(ours, radix: 16)), QEMU 0x\(f[3])")
            }
        }
        #expect(reads > 50)
        #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")
        // Allowlist entries that no longer differ should be removed.
        #expect(Set(allow.keys).subtracting(allowedSeen).isEmpty, "stale allowlist entries: \(Set(allow.keys).subtracting(allowedSeen))")
    }
}
