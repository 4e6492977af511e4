import Firmware
import Foundation
import TestRequirements
import Testing

// The generated ACPI tables against QEMU 10's own q35 tables for the same machine, both read by
// iasl: the same tables, the same FADT/FACS/MADT/HPET/MCFG fields and the same devices in the
// DSDT, each allowed difference with its reason.

/// QEMU's q35 ACPI tables, read the way firmware reads them: QEMU runs q35 with its vCPU stopped
/// under qtest, the test plays SeaBIOS's part (PCIEXBAR at 0xB0000000, PMBASE 0x600 with ACPI
/// decoding on, which the tables describe), then reads the fw_cfg file "etc/acpi/tables" by fw_cfg
/// DMA into guest RAM and reads that RAM back. The blob holds the tables back to back (before
/// QEMU's table loader patches their pointers and checksums).
enum QEMUFirmwareTables {
    /// Signature -> bytes of the first table with that signature.
    static func read(qemu: String, cpus: Int, memory: String) throws -> [String: [UInt8]] {
        let listener = try TestListener(name: "acpi-qtest")
        let child = try ChildProcess(qemu, ["-machine", "q35", "-accel", "tcg", "-S", "-nodefaults", "-display", "none",
                                            "-m", memory, "-smp", String(cpus), "-serial", "null",
                                            "-qtest", "unix:" + listener.path, "-qtest-log", "none"])
        defer { child.stop(grace: 0) }
        let qtest = QTestClient(try listener.accept())
        // MCH 00:00.0 PCIEXBAR (0x60): 256 MiB at 0xB0000000, enabled; LPC 00:1f.0 PMBASE (0x40)
        // and ACPI_CNTL (0x44, ACPI_EN), as SeaBIOS programs them.
        try qtest.configWrite(device: 0, offset: 0x64, width: "l", value: 0)
        try qtest.configWrite(device: 0, offset: 0x60, width: "l", value: 0xB000_0001)
        try qtest.configWrite(device: 0x1F, offset: 0x40, width: "l", value: 0x601)
        try qtest.configWrite(device: 0x1F, offset: 0x44, width: "b", value: 0x80)

        // The fw_cfg directory (selector 0x19): a big-endian count, then 64-byte entries
        // (size BE32, selector BE16, reserved, name[56]).
        let directory = try fwCfgDMA(qtest, selector: 0x19, count: 4 + 64 * 64)
        var file: (selector: UInt16, size: Int)?
        for i in 0..<min(Int(bigEndian(directory, 0, 4)), 64) {
            let entry = Array(directory[4 + 64 * i ..< 4 + 64 * (i + 1)])
            if String(decoding: entry[8...].prefix { $0 != 0 }, as: UTF8.self) == "etc/acpi/tables" {
                file = (UInt16(bigEndian(entry, 4, 2)), Int(bigEndian(entry, 0, 4)))
            }
        }
        guard let file else { throw TestFailure("QEMU's fw_cfg has no etc/acpi/tables") }
        let blob = try fwCfgDMA(qtest, selector: file.selector, count: file.size)

        // Packed tables; the FACS (64 bytes, no standard header) comes first.
        var tables: [String: [UInt8]] = [:]
        var at = 0
        while at + 8 <= blob.count {
            let signature = String(decoding: blob[at ..< at + 4], as: UTF8.self)
            let length = Int(blob[at + 4]) | Int(blob[at + 5]) << 8 | Int(blob[at + 6]) << 16 | Int(blob[at + 7]) << 24
            let plausible = signature.allSatisfy { $0.isUppercase || $0.isNumber }
                && (signature == "FACS" ? length == 64 : (36...blob.count - at).contains(length))
            guard plausible else { at += 1; continue }
            if tables[signature] == nil { tables[signature] = Array(blob[at ..< at + length]) }
            at += length
        }
        return tables
    }

    private static func bigEndian(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> UInt64 {
        bytes[offset ..< offset + count].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// fw_cfg DMA (QEMU's docs/specs/fw_cfg.rst): a big-endian control block {control, length,
    /// address} in guest RAM; writing its address to the DMA register (0x514, big-endian; writing
    /// the low half at 0x518 starts the transfer) copies `count` bytes of the item to `buffer`.
    private static func fwCfgDMA(_ qtest: QTestClient, selector: UInt16, count: Int,
                                 control: UInt32 = 0x1000, buffer: UInt64 = 0x10000) throws -> [UInt8] {
        let select: UInt32 = 0x08, read: UInt32 = 0x02
        let word = UInt32(selector) << 16 | select | read
        let block = String(format: "%08x%08x%016llx", word, UInt32(count), buffer)
        try qtest.command("write 0x\(String(control, radix: 16)) 16 0x\(block)")
        try qtest.command("outl 0x514 0")
        try qtest.command("outl 0x518 0x\(String(control.byteSwapped, radix: 16))")
        let reply = try qtest.command("read 0x\(String(buffer, radix: 16)) 0x\(String(count, radix: 16))")
        guard reply.hasPrefix("OK 0x") else { throw TestFailure("fw_cfg read: \(reply.prefix(80))") }
        let hex = Array(reply.utf8.dropFirst(5))
        guard hex.count == 2 * count else { throw TestFailure("short fw_cfg read: \(hex.count / 2) of \(count) bytes") }
        func digit(_ c: UInt8) -> UInt8 { c <= UInt8(ascii: "9") ? c - UInt8(ascii: "0") : (c | 0x20) - UInt8(ascii: "a") + 10 }
        return (0..<count).map { digit(hex[2 * $0]) << 4 | digit(hex[2 * $0 + 1]) }
    }
}

/// One field iasl printed: "[024h 0036   4]   PM1A Event Block Address : 00000600" becomes
/// ("PM1A Event Block Address", "00000600"); a field inside a Generic Address Structure is
/// named after it ("Reset Register.Address").
private struct Field: Equatable, CustomStringConvertible {
    let label: String
    let value: String
    var description: String { "\(label) : \(value)" }
}

private func fields(_ dsl: String) -> [Field] {
    var result: [Field] = []
    var structure = ""
    for line in dsl.components(separatedBy: "\n") where line.hasPrefix("[") {
        guard let close = line.firstIndex(of: "]"), let colon = line.range(of: " : ") else { continue }
        let label = line[line.index(after: close) ..< colon.lowerBound].trimmingCharacters(in: .whitespaces)
        let value = line[colon.upperBound...].trimmingCharacters(in: .whitespaces)
        if value.hasPrefix("[Generic Address Structure]") { structure = label; continue }
        if !["Space ID", "Bit Width", "Bit Offset", "Encoded Access Width", "Address"].contains(label) { structure = "" }
        result.append(Field(label: structure.isEmpty ? label : structure + "." + label, value: value))
    }
    return result
}

/// The standard header's fields: identity and bookkeeping that differ by design between VMMs.
private let headerLabels: Set<String> = ["Signature", "Table Length", "Revision", "Checksum", "Oem ID", "Oem Table ID",
                                         "Oem Revision", "Asl Compiler ID", "Asl Compiler Revision"]

/// iasl -d of each table; signature -> .dsl text.
private func disassemble(_ tables: [String: [UInt8]], iasl: String) throws -> [String: String] {
    let dir = NSTemporaryDirectory() + "switchyard-acpi-\(getpid())-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var result: [String: String] = [:]
    for (signature, bytes) in tables {
        let file = "\(dir)/\(signature).dat"
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        _ = try run(iasl, ["-d", file])
        result[signature] = try? String(contentsOfFile: "\(dir)/\(signature).dsl", encoding: .utf8)
    }
    return result
}

@Suite("ACPI tables against QEMU's q35")
struct QEMUACPITests {
    static let qemu = ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let iasl = ["/usr/bin/iasl", "/usr/local/bin/iasl"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let missing = "needs qemu-system-x86_64 (QEMU 10, scripts/setup.sh) and iasl (acpica-tools)"

    /// QEMU's tables and ours for the same machine (q35, 2 CPUs, 2 GiB, COM1), disassembled by
    /// iasl; read once for the suite.
    struct Comparison: Sendable {
        let qemu: [String: String], ours: [String: String]
        let qemuSignatures: Set<String>, ourSignatures: Set<String>
    }
    static let comparison = Result { () throws -> Comparison in
        let theirs = try QEMUFirmwareTables.read(qemu: qemu!, cpus: 2, memory: "2G")
        var mine: [String: [UInt8]] = [:]
        for t in try FirmwareTables.build(.q35(cpuCount: 2, memorySize: 2 << 30)).tables where t.signature != "RSD PTR " { mine[t.signature] = t.bytes }
        return Comparison(qemu: try disassemble(theirs, iasl: iasl!), ours: try disassemble(mine, iasl: iasl!),
                          qemuSignatures: Set(theirs.keys), ourSignatures: Set(mine.keys))
    }
    static func both() throws -> (qemu: [String: String], ours: [String: String], qemuSignatures: Set<String>, ourSignatures: Set<String>) {
        let c = try comparison.get()
        return (c.qemu, c.ours, c.qemuSignatures, c.ourSignatures)
    }

    /// Tables QEMU has and we do not, with the reason; and ours that QEMU lacks.
    static let qemuOnlyTables: [String: String] = [
        "WAET": "Windows ACPI Emulated devices table: tells Windows its RTC and PM timer need no workarounds; Linux ignores it",
        "RSDT": "QEMU's root table has 32-bit pointers (ACPI 1.0); ours is the XSDT",
    ]
    static let ourOnlyTables: Set<String> = ["XSDT"]

    @Test("Every table QEMU's q35 has, we generate too", .requires(qemu != nil && iasl != nil, missing),
          .timeLimit(.minutes(3)))
    func sameTables() throws {
        let (_, _, theirs, ours) = try Self.both()
        #expect(theirs.contains("MCFG") && theirs.contains("FACP"), "QEMU's tables were not read: \(theirs)")
        #expect(theirs.subtracting(Self.qemuOnlyTables.keys).subtracting(ours).isEmpty,
                "QEMU has \(theirs.subtracting(ours).sorted()), we do not")
        #expect(ours.subtracting(theirs).subtracting(Self.ourOnlyTables).isEmpty,
                "we have \(ours.subtracting(theirs).sorted()), QEMU does not")
        for (table, reason) in Self.qemuOnlyTables { #expect(theirs.contains(table), "\(table) no longer needs its reason: \(reason)") }
    }

    /// Fields of QEMU's tables (as iasl prints them) that may differ from ours, with the reason.
    static let differingFields: [String: [String: String]] = [
        "FACP": [
            "FACS Address": "QEMU's pointers are filled in by its table loader later",
            "DSDT Address": "QEMU's pointers are filled in by its table loader later",
            "Model": "INT_MODEL is ACPI 1.0 only; ACPI 2.0+ reserves the byte and asks for 0, QEMU keeps 1",
            "Boot Flags (decoded below)": "we also set LEGACY_DEVICES (bit 0): the machine has ISA devices (COM1, RTC, i8042)",
            "Reset Register.Encoded Access Width": "QEMU's FADT is revision 3, where this byte is reserved; ours says byte access",
            "Value to cause reset": "QEMU writes 0x0F, we write 0x06 (ICH9 RST_CNT: SYS_RST|RST_CPU, a hard reset); both reset",
        ],
        "FACS": ["Version": "QEMU's FACS is version 0 (ACPI 1.0), ours version 2 (64-bit waking vector, ACPI 2.0+)"],
    ]

    /// iasl's decoding of FADT, MADT, HPET, MCFG and FACS: every field QEMU's table has (ours,
    /// a later revision, may have more), in order, with the same value, header fields aside.
    @Test("FADT, FACS, MADT, HPET and MCFG fields equal QEMU's", .requires(qemu != nil && iasl != nil, missing),
          .timeLimit(.minutes(3)))
    func sameFields() throws {
        let (theirs, ours, _, _) = try Self.both()
        for table in ["FACP", "FACS", "APIC", "HPET", "MCFG"] {
            let q = fields(try #require(theirs[table], "QEMU has no \(table)")).filter { !headerLabels.contains($0.label) }
            let o = fields(try #require(ours[table], "we have no \(table)")).filter { !headerLabels.contains($0.label) }
            #expect(q.count > 3 && o.count >= q.count, "\(table): QEMU \(q.count) fields, ours \(o.count)")
            let allowed = Self.differingFields[table] ?? [:]
            var differences: [String] = []
            var allowedSeen: Set<String> = []
            for (a, b) in zip(q, o) {
                if a.label != b.label { differences.append("QEMU \(a) / ours \(b)"); continue }
                if a.value == b.value { continue }
                if allowed[a.label] != nil { allowedSeen.insert(a.label); continue }
                differences.append("\(a.label): QEMU \(a.value), ours \(b.value)")
            }
            #expect(differences.isEmpty, "\(table):\n\(differences.joined(separator: "\n"))")
            for label in Set(allowed.keys).subtracting(allowedSeen) {
                #expect(Bool(false), "\(table) \(label) is equal now; drop its reason: \(allowed[label]!)")
            }
        }
    }

    /// Device _HIDs in QEMU's DSDT that ours may lack, with the reason.
    static let qemuOnlyDevices: [String: String] = [
        "ACPI0010": "QEMU's CPU hot-plug container; CPUs are not hot-pluggable here",
        "QEMU0002": "QEMU's fw_cfg device; there is no fw_cfg here",
        "PNP0C01": "QEMU's system-board reservation of its own I/O (fw_cfg, CPU hot-plug ports)",
    ]

    /// Every kind of device QEMU's DSDT describes for q35 (host bridge, RTC, i8042 keyboard and
    /// mouse, COM1, HPET, the 16 PCI interrupt links, the GPE block), ours describes as many times.
    @Test("The DSDT describes every device QEMU's q35 DSDT does", .requires(qemu != nil && iasl != nil, missing),
          .timeLimit(.minutes(3)))
    func sameDevices() throws {
        let (theirs, ours, _, _) = try Self.both()
        func hids(_ dsl: String) throws -> [String: Int] {
            let regex = try NSRegularExpression(pattern: #"Name \(_HID, (?:EisaId \()?"([A-Z0-9]+)""#)
            var count: [String: Int] = [:]
            for m in regex.matches(in: dsl, range: NSRange(dsl.startIndex..., in: dsl)) {
                count[String(dsl[Range(m.range(at: 1), in: dsl)!]), default: 0] += 1
            }
            return count
        }
        let q = try hids(try #require(theirs["DSDT"])), o = try hids(try #require(ours["DSDT"]))
        #expect(q["PNP0A08"] == 1 && q["PNP0C0F"] == 16, "QEMU's DSDT was not read: \(q)")
        for (hid, n) in q.sorted(by: { $0.key < $1.key }) where Self.qemuOnlyDevices[hid] == nil {
            // QEMU's extra PNP0A06 containers are its CPU and memory hot-plug ones (not modelled).
            let want = hid == "PNP0A06" ? 1 : n
            #expect((o[hid] ?? 0) >= want, "\(hid): QEMU describes \(n), we describe \(o[hid] ?? 0)")
        }
        for (hid, reason) in Self.qemuOnlyDevices { #expect(q[hid] != nil, "\(hid) no longer needs its reason: \(reason)") }
    }
}
