import Foundation
import Testing

/// The same qtest script against QEMU and Switchyard: replies to port and memory accesses
/// that both should answer identically must match, except for the differences listed with a
/// reason in DeviceTables/qtest-allowlist.txt.
///
/// Debian's QEMU has no qtest accelerator; `-accel tcg -S` gives the same reset-state chipset
/// (no instruction runs), and qtest's port and memory commands work with any accelerator.
@Suite("qtest differential against QEMU")
struct QTestDifferentialTests {
    /// A named probe: commands whose last reply is compared.
    struct Probe {
        let name: String
        let commands: [String]
    }

    static var qemu: String? {
        ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"]
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func configAddress(_ device: Int, _ function: Int, _ offset: Int, bus: Int = 0) -> String {
        "outl 0xcf8 0x" + String(0x8000_0000 | bus << 16 | device << 11 | function << 8 | offset & 0xFC, radix: 16)
    }

    static var probes: [Probe] {
        var probes: [Probe] = []
        func hex2(_ v: Int) -> String { v < 16 ? "0\(String(v, radix: 16))" : String(v, radix: 16) }
        // The standard header of MCH, LPC, the functions QEMU's q35 always has, and absent ones.
        for (device, function) in [(0, 0), (0x1F, 0), (0x1F, 2), (0x1F, 3), (0x1F, 1), (0x1F, 7), (1, 0), (5, 0), (0x1E, 0)] {
            let bdf = "00:\(hex2(device)).\(function)"
            for offset in stride(from: 0, to: 0x40, by: 4) {
                probes.append(Probe(name: "cfg \(bdf) 0x\(hex2(offset)) l",
                                    commands: [configAddress(device, function, offset), "inl 0xcfc"]))
            }
            probes.append(Probe(name: "cfg \(bdf) 0x02 w", commands: [configAddress(device, function, 0), "inw 0xcfe"]))
            probes.append(Probe(name: "cfg \(bdf) 0x0e b", commands: [configAddress(device, function, 0xC), "inb 0xcfe"]))
            probes.append(Probe(name: "cfg \(bdf) 0x0b b", commands: [configAddress(device, function, 8), "inb 0xcff"]))
        }
        // A bus no bridge forwards to.
        probes.append(Probe(name: "cfg 01:00.0 0x00 l", commands: [configAddress(0, 0, 0, bus: 1), "inl 0xcfc"]))
        probes.append(Probe(name: "cfg ff:1f.7 0x00 l", commands: [configAddress(0x1F, 7, 0, bus: 0xFF), "inl 0xcfc"]))
        // CONFIG_ADDRESS latch and readback, and data reads with the enable bit clear.
        probes += [
            Probe(name: "cf8 readback after 0x80000000", commands: ["outl 0xcf8 0x80000000", "inl 0xcf8"]),
            Probe(name: "cf8 readback after 0x8000f804", commands: ["outl 0xcf8 0x8000f804", "inl 0xcf8"]),
            Probe(name: "cf8 readback after 0x12345678", commands: ["outl 0xcf8 0x12345678", "inl 0xcf8"]),
            Probe(name: "cf8 readback after 0xffffffff", commands: ["outl 0xcf8 0xffffffff", "inl 0xcf8"]),
            Probe(name: "cf8 word write ignored", commands: ["outl 0xcf8 0x80000000", "outw 0xcf8 0x1234", "inl 0xcf8"]),
            Probe(name: "cf8 byte write ignored", commands: ["outl 0xcf8 0x80000000", "outb 0xcf8 0x12", "inl 0xcf8"]),
            Probe(name: "cf8 word read", commands: ["outl 0xcf8 0x8000f800", "inw 0xcf8"]),
            Probe(name: "cf8 byte read at 0xcfb", commands: ["outl 0xcf8 0x8000f800", "inb 0xcfb"]),
            Probe(name: "cfc disabled", commands: ["outl 0xcf8 0x0000f800", "inl 0xcfc"]),
            Probe(name: "cfc byte at 0xcfd", commands: ["outl 0xcf8 0x8000f808", "inb 0xcfd"]),
            Probe(name: "cfc word at 0xcfe", commands: ["outl 0xcf8 0x8000f808", "inw 0xcfe"]),
            Probe(name: "cfg write to read-only vendor ID", commands: [configAddress(0, 0, 0), "outw 0xcfc 0x1234", "inl 0xcfc"]),
        ]
        // RAM below 640 KiB: reset contents, and writes read back at every width.
        probes += [
            Probe(name: "mem ram reset contents", commands: ["read 0x1000 32"]),
            Probe(name: "mem ram writel/readl", commands: ["writel 0x2000 0xdeadbeef", "readl 0x2000"]),
            Probe(name: "mem ram readq", commands: ["writel 0x2000 0xdeadbeef", "readq 0x2000"]),
            Probe(name: "mem ram readb", commands: ["writel 0x2000 0xdeadbeef", "readb 0x2002"]),
            Probe(name: "mem ram writeq/readw", commands: ["writeq 0x3000 0x1122334455667788", "readw 0x3006"]),
            Probe(name: "mem ram write/read", commands: ["write 0x4000 6 0x0102030405", "read 0x4000 6"]),
            Probe(name: "mem ram b64", commands: ["b64write 0x5000 4 3q2+7w==", "b64read 0x5000 6"]),
            Probe(name: "mem ram memset", commands: ["memset 0x6000 5 0x1a5", "read 0x5fff 7"]),
            Probe(name: "mem ram top of 128M", commands: ["writel 0x7fffffc 0x55aa55aa", "readl 0x7fffffc"]),
            Probe(name: "mem unassigned above RAM", commands: ["readl 0x8000000"]),
            Probe(name: "mem unassigned below ECAM", commands: ["readl 0xa0000000"]),
            Probe(name: "endianness", commands: ["endianness"]),
            Probe(name: "unknown command", commands: ["no_such_command 1"]),
            Probe(name: "module_load", commands: ["module_load block nonexistent"]),
            Probe(name: "irq_intercept_in unknown", commands: ["irq_intercept_in /machine/nosuch"]),
            Probe(name: "irq_intercept_in ioapic", commands: ["irq_intercept_in ioapic"]),
        ]
        return probes
    }

    /// One allowlist line: `PROBE-PATTERN[ bits MASK]: REASON`. Without `bits`, any
    /// difference in a matching probe's reply is allowed; with it, only the bits of MASK may
    /// differ (replies compared as the numbers qtest prints).
    struct AllowEntry {
        let pattern: String
        let bits: UInt64?
        let reason: String

        var line: String { pattern + (bits.map { " bits 0x" + String($0, radix: 16) } ?? "") }

        func matches(_ name: String) -> Bool {
            let parts = pattern.components(separatedBy: "*")
            guard parts.count > 1 else { return pattern == name }
            guard name.hasPrefix(parts[0]), name.hasSuffix(parts[parts.count - 1]) else { return false }
            var rest = Substring(name.dropFirst(parts[0].count))
            for part in parts.dropFirst().dropLast() {
                guard let r = rest.range(of: part) else { return false }
                rest = rest[r.upperBound...]
            }
            return rest.count >= parts[parts.count - 1].count
        }

        /// The bits in which two "OK 0x..." replies differ; nil when either is not a number.
        static func differingBits(_ a: String, _ b: String) -> UInt64? {
            func number(_ reply: String) -> UInt64? {
                let parts = reply.split(separator: " ")
                guard parts.count == 2, parts[0] == "OK", parts[1].hasPrefix("0x") else { return nil }
                return UInt64(parts[1].dropFirst(2), radix: 16)
            }
            guard let x = number(a), let y = number(b) else { return nil }
            return x ^ y
        }
    }

    /// The allowlist applied to one suite's probes. Every entry that names a probe of the
    /// suite must explain a difference there, and a `bits` entry must explain every bit of
    /// its mask somewhere: an entry that hides nothing is stale and fails the suite.
    struct Allowlist {
        let entries: [AllowEntry]
        private var explained: [Int: UInt64] = [:]

        init(_ entries: [AllowEntry]) { self.entries = entries }

        /// Whether the difference between `ours` and `theirs` at probe `name` is allowed.
        mutating func allows(_ name: String, ours: String, theirs: String) -> Bool {
            for (index, entry) in entries.enumerated() where entry.matches(name) {
                guard let mask = entry.bits else {
                    explained[index, default: 0] |= 1
                    return true
                }
                guard let differing = AllowEntry.differingBits(ours, theirs), differing & ~mask == 0 else { continue }
                explained[index, default: 0] |= differing
                return true
            }
            return false
        }

        /// Entries naming one of `probeNames` that explained nothing (or not all their bits).
        func stale(probeNames: [String]) -> [String] {
            entries.enumerated().compactMap { index, entry in
                guard probeNames.contains(where: entry.matches) else { return nil }
                let seen = explained[index] ?? 0
                if let mask = entry.bits {
                    return seen == mask ? nil : "'\(entry.line)' explains bits 0x\(String(seen, radix: 16)) only"
                }
                return seen != 0 ? nil : "'\(entry.line)' matched no difference"
            }
        }
    }

    static func allowlist() throws -> [AllowEntry] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("DeviceTables/qtest-allowlist.txt"), encoding: .utf8)
        return text.split(separator: "\n").compactMap { line in
            let l = line.trimmingCharacters(in: .whitespaces)
            guard !l.isEmpty, !l.hasPrefix("#"), let colon = l.range(of: ": ") else { return nil }
            var pattern = String(l[..<colon.lowerBound])
            var bits: UInt64?
            if let marker = pattern.range(of: " bits 0x", options: .backwards),
               let mask = UInt64(pattern[marker.upperBound...], radix: 16) {
                bits = mask
                pattern = String(pattern[..<marker.lowerBound])
            }
            return AllowEntry(pattern: pattern, bits: bits, reason: String(l[colon.upperBound...]))
        }
    }

    /// Runs every probe against a program started with `arguments(socketSpec)`.
    static func replies(_ executable: String, grace: Double, _ arguments: (String) -> [String]) throws -> [String] {
        try replies(to: probes.map(\.commands), executable, grace: grace, arguments)
    }

    /// Starts `executable` with `arguments(socketSpec)`, runs each command group over qtest and
    /// returns the last reply of each group.
    static func replies(to groups: [[String]], _ executable: String, grace: Double,
                        _ arguments: (String) -> [String]) throws -> [String] {
        let listener = try TestListener(name: "diff")
        let child = try ChildProcess(executable, arguments("unix:\(listener.path)"))
        defer { child.stop(grace: grace) }
        let qt = QTestClient(try listener.accept())
        return try groups.map { commands in
            var last = ""
            for command in commands { last = try qt.command(command) }
            return last
        }
    }

    @Test(.enabled(if: qemu != nil, "qemu-system-x86_64 is not installed"))
    func switchyardAnswersAsQEMUDoes() throws {
        let allow = try Self.allowlist()
        #expect(allow.allSatisfy { !$0.reason.isEmpty })
        let ours = try Self.replies(switchyardBinary, grace: 5) {
            ["-machine", "q35", "-accel", "qtest", "-nodefaults", "-display", "none", "-m", "128M",
             "-qtest", $0, "-qtest-log", "none"]
        }
        // QEMU connects as a client and creates no files: it can be killed outright.
        let theirs = try Self.replies(Self.qemu!, grace: 0) {
            ["-machine", "q35", "-accel", "tcg", "-S", "-nodefaults", "-display", "none", "-monitor", "none",
             "-serial", "none", "-m", "128M", "-qtest", $0, "-qtest-log", "none"]
        }
        var allowlist = Allowlist(allow)
        var compared = 0
        for (probe, (a, b)) in zip(Self.probes, zip(ours, theirs)) {
            compared += 1
            guard a != b, !allowlist.allows(probe.name, ours: a, theirs: b) else { continue }
            Issue.record("\(probe.name): switchyard '\(a)', QEMU '\(b)' (\(probe.commands.joined(separator: "; ")))")
        }
        #expect(compared == Self.probes.count)
        for stale in allowlist.stale(probeNames: Self.probes.map(\.name)) {
            Issue.record("qtest-allowlist: \(stale); remove it (or narrow it) now that the behaviour agrees")
        }
    }
}
