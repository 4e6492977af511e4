import Foundation
import TestRequirements
import Testing
import VMMBase
@testable import Firmware

// Real outside tools read what we generate: iasl (acpica-tools), dtc and dt-validate (dtschema).

private let descriptionNames = Descriptions.all.map(\.0)
private func description(_ name: String) -> PlatformDescription { Descriptions.all.first { $0.0 == name }!.1 }

/// Generated tables written and disassembled in a temporary directory.
private struct Disassembly {
    let dir: TempDir
    let tables: FirmwareTables
    var dsl: [String: String] = [:]
    var logs: [String: Tool.Result] = [:]

    init(_ d: PlatformDescription, iasl: String) throws {
        dir = try TempDir()
        tables = try FirmwareTables.build(d)
        try tables.write(to: dir.url)
        for t in tables.tables where t.signature != "RSD PTR " {
            let sig = t.signature
            logs[sig] = Tool.run(iasl, ["-d", t.fileName], in: dir.url)
            dsl[sig] = try? String(contentsOf: dir.url.appendingPathComponent(sig + ".dsl"), encoding: .utf8)
        }
    }
}

private func problemLines(_ output: String) -> [String] {
    output.components(separatedBy: "\n").filter {
        let l = $0.lowercased()
        return l.contains("warning") || l.contains("error") || l.contains("does not contain a valid")
    }
}

/// (descriptor keyword, Range Minimum, Range Maximum) for each address descriptor in the
/// first ResourceTemplate after `marker` in iasl's output.
private func addressDescriptors(in dsl: String, after marker: String) -> [(String, UInt64, UInt64)] {
    guard let start = dsl.range(of: marker) else { return [] }
    let text = dsl[start.upperBound...]
    let end = text.range(of: "})")?.lowerBound ?? text.endIndex
    var result: [(String, UInt64, UInt64)] = []
    var kind = ""
    var minimum: UInt64 = 0
    for line in text[..<end].components(separatedBy: "\n") {
        let t = line.trimmingCharacters(in: .whitespaces)
        if let k = ["WordBusNumber", "WordIO", "DWordMemory", "QWordMemory", "DWordIO", "IO"].first(where: { t.hasPrefix($0 + " (") }) {
            kind = k
        }
        let value = t.split(separator: ",").first.flatMap { UInt64($0.dropFirst(2), radix: 16) }
        if t.contains("// Range Minimum"), let v = value { minimum = v }
        if t.contains("// Range Maximum"), let v = value { result.append((kind, minimum, v)) }
    }
    return result
}

private func integer(_ token: String) -> UInt64? {
    switch token {
    case "Zero": return 0
    case "One": return 1
    default: return token.hasPrefix("0x") ? UInt64(token.dropFirst(2), radix: 16) : UInt64(token)
    }
}

@Suite("Generated firmware read by real tools")
struct ToolTests {
    @Test("iasl -d disassembles every table without errors or warnings", .requires(Tool.iasl != nil, "iasl not installed"),
          arguments: descriptionNames)
    func disassemble(name: String) throws {
        let dis = try Disassembly(description(name), iasl: Tool.iasl!)
        for (sig, log) in dis.logs.sorted(by: { $0.key < $1.key }) {
            #expect(log.status == 0, "\(name) \(sig): iasl exit \(log.status)\n\(log.output)")
            #expect(problemLines(log.output).isEmpty, "\(name) \(sig): \(problemLines(log.output))")
            #expect(dis.dsl[sig] != nil, "\(name) \(sig): no .dsl written")
            if let text = dis.dsl[sig] {
                #expect(problemLines(text).isEmpty, "\(name) \(sig).dsl: \(problemLines(text))")
            }
        }
        #expect(Set(dis.logs.keys).isSuperset(of: ["XSDT", "FACP", "FACS", "DSDT", "APIC", "MCFG"]))
        if name == "dmar" { #expect(dis.logs["DMAR"] != nil && dis.logs["HPET"] == nil) }
    }

    @Test("The disassembled DSDT recompiles with iasl: 0 errors, 0 warnings", .requires(Tool.iasl != nil, "iasl not installed"),
          arguments: descriptionNames)
    func recompileDSDT(name: String) throws {
        let dis = try Disassembly(description(name), iasl: Tool.iasl!)
        let sub = dis.dir.url.appendingPathComponent("recompile")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        try #require(dis.dsl["DSDT"] != nil)
        try dis.dsl["DSDT"]!.write(to: sub.appendingPathComponent("DSDT.dsl"), atomically: true, encoding: .utf8)
        let r = Tool.run(Tool.iasl!, ["DSDT.dsl"], in: sub)
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("Compilation successful. 0 Errors, 0 Warnings"), "\(r.output)")
        #expect(FileManager.default.fileExists(atPath: sub.appendingPathComponent("DSDT.aml").path))
    }

    /// iasl 20200925 refuses `-d` on any binary RSDP ("does not contain a valid ACPI table", also
    /// for one it compiled itself), so the RSDP is checked the other way: iasl compiles the same
    /// fields from data-table source, computing both checksums, and must produce our bytes.
    @Test("iasl compiles the RSDP's fields to the same 36 bytes", .requires(Tool.iasl != nil, "iasl not installed"))
    func rsdpRoundTrip() throws {
        let t = try FirmwareTables.build(Descriptions.plain)
        let dir = try TempDir()
        let oem = String(decoding: t.rsdp.bytes[9..<15], as: UTF8.self)
        let source = """
        [0008]                          Signature : "RSD PTR "
        [0001]                           Checksum : 00
        [0006]                             Oem ID : "\(oem)"
        [0001]                           Revision : 02
        [0004]                       RSDT Address : 00000000
        [0004]                             Length : 00000024
        [0008]                       XSDT Address : \(hex(t.xsdt.address, 16))
        [0001]                  Extended Checksum : 00
        [0003]                           Reserved : 000000

        """
        try source.write(to: dir.url.appendingPathComponent("rsdp.asl"), atomically: true, encoding: .utf8)
        let r = Tool.run(Tool.iasl!, ["rsdp.asl"], in: dir.url)
        #expect(r.status == 0, "\(r.output)")
        let compiled = try [UInt8](Data(contentsOf: dir.url.appendingPathComponent("rsdp.aml")))
        #expect(compiled == t.rsdp.bytes)
    }

    @Test("_CRS windows, MCFG ranges and _PRT entries in the disassembly match the description",
          .requires(Tool.iasl != nil, "iasl not installed"), arguments: descriptionNames)
    func semantics(name: String) throws {
        let d = description(name)
        let dis = try Disassembly(d, iasl: Tool.iasl!)
        let dsdt = try #require(dis.dsl["DSDT"])

        var expected: [(String, UInt64, UInt64)] = [
            ("WordBusNumber", UInt64(d.pci.ecam.busRange.lowerBound), UInt64(d.pci.ecam.busRange.upperBound)),
            ("IO", 0xCF8, 0xCF8),
            ("WordIO", 0, 0xCF7),
        ]
        if let io = d.pci.ioWindow { expected.append(("WordIO", io.base, io.last)) }
        expected.append(("DWordMemory", 0xA0000, 0xBFFFF))
        expected.append(("DWordMemory", d.pci.mem32Window.base, d.pci.mem32Window.last))
        if let w = d.pci.mem64Window { expected.append(("QWordMemory", w.base, w.last)) }
        let found = addressDescriptors(in: dsdt, after: "Name (_CRS, ResourceTemplate ()")
        #expect(found.map(\.0) == expected.map(\.0))
        #expect(found.map(\.1) == expected.map(\.1))
        #expect(found.map(\.2) == expected.map(\.2))

        // The ECAM window is also a motherboard resource (PNP0C02), as Linux wants it.
        let ecam = try #require(d.pci.ecam.range)
        let reserved = dsdt.components(separatedBy: "Device (ECMR)").dropFirst().first ?? ""
        #expect(reserved.contains("_HID, EisaId (\"PNP0C02\")"))
        #expect(reserved.contains("Memory32Fixed (ReadWrite,\n                    0x\(hex(ecam.base, 8).uppercased()),")
                || reserved.contains("0x\(hex(ecam.base, 8).uppercased()),         // Address Base"), "\(reserved.prefix(400))")
        #expect(reserved.contains("0x\(hex(ecam.size!, 8).uppercased()),         // Address Length"), "\(reserved.prefix(400))")

        let mcfg = try #require(dis.dsl["MCFG"])
        func field(_ label: String) -> UInt64? {
            guard let line = mcfg.components(separatedBy: "\n").first(where: { $0.contains(label + " :") }) else { return nil }
            return UInt64(line.components(separatedBy: ": ").last!.trimmingCharacters(in: .whitespaces), radix: 16)
        }
        #expect(field("Base Address") == d.pci.ecam.base)
        #expect(field("Segment Group Number") == UInt64(d.pci.ecam.segment))
        #expect(field("Start Bus Number") == UInt64(d.pci.ecam.busRange.lowerBound))
        #expect(field("End Bus Number") == UInt64(d.pci.ecam.busRange.upperBound))

        // _PRT: PRTP (PIC mode, LNKx) then PRTA (APIC mode, GSIx), 128 entries each.
        let flat = dsdt.components(separatedBy: .whitespacesAndNewlines).joined()
        let regex = try NSRegularExpression(pattern: #"Package\(0x04\)\{(0x[0-9A-F]+|Zero|One),(0x[0-9A-F]+|Zero|One|0x0[0-3]),(LNK[A-H]|GSI[A-H]),Zero\}"#)
        var entries: [(UInt64, UInt64, String)] = []
        for m in regex.matches(in: flat, range: NSRange(flat.startIndex..., in: flat)) {
            let g = (1...3).map { String(flat[Range(m.range(at: $0), in: flat)!]) }
            entries.append((integer(g[0]) ?? .max, integer(g[1]) ?? .max, g[2]))
        }
        #expect(entries.count == 256)
        let letters = Array("ABCDEFGH")
        for (i, e) in entries.enumerated() {
            let slot = UInt8((i % 128) / 4), pin = UInt8(i % 4)
            let pirq = Int(d.pci.pirqRouting.pirq(slot: slot, pin: pin))
            let want = (i < 128 ? "LNK" : "GSI") + String(letters[pirq])
            #expect(e.0 == UInt64(slot) << 16 | 0xFFFF && e.1 == UInt64(pin) && e.2 == want, "entry \(i): \(e)")
        }
        // GSI links carry GSIs 16-23.
        for (i, l) in letters.enumerated() {
            #expect(dsdt.contains("Device (GSI\(l))"))
            #expect(dsdt.contains("0x000000\(hex(d.interrupts.pirqGSIBase + UInt32(i), 2).uppercased()),\n"))
        }
    }

    /// The objects the specifications require of a PCIe host bridge (PCI Firmware Spec 3.x
    /// 4.1.5 and ACPI 6.x 6.1/6.2/6.5.10: PNP0A08 with PNP0A03 compatibility, _SEG, _BBN, _UID,
    /// _CRS, _PRT, _OSC) and the S5 sleep object Linux powers off through (7.4.2).
    @Test("The DSDT has the objects the ACPI and PCI firmware specifications require",
          .requires(Tool.iasl != nil, "iasl is not installed (acpica-tools; scripts/setup.sh installs it)"),
          arguments: descriptionNames)
    func dsdtRequiredObjects(name: String) throws {
        let dsdt = try #require(try Disassembly(description(name), iasl: Tool.iasl!).dsl["DSDT"])
        let pci0 = try #require(dsdt.components(separatedBy: "Device (PCI0)").dropFirst().first)
        #expect(pci0.contains("Name (_HID, EisaId (\"PNP0A08\")"))
        #expect(pci0.contains("Name (_CID, EisaId (\"PNP0A03\")"))
        for object in ["_SEG", "_BBN", "_UID", "_CRS", "_PRT"] {
            #expect(pci0.contains("Name (\(object),") || pci0.contains("Method (\(object),"), "PCI0 lacks \(object)")
        }
        #expect(pci0.contains("Method (_OSC, 4, "), "PCI0 lacks _OSC (4 arguments)")
        #expect(dsdt.contains("Name (\\_S5, Package") || dsdt.contains("Name (_S5, Package"), "no \\_S5")
    }

    @Test("Hot-plug AML: slots, eject and the GPE handler follow the description",
          .requires(Tool.iasl != nil, "iasl not installed"))
    func hotplugAML() throws {
        let d = Descriptions.topology
        let dsdt = try #require(try Disassembly(d, iasl: Tool.iasl!).dsl["DSDT"])
        let hotplugBuses = d.pci.buses.filter { $0.acpiHotplugSelector != nil }
        #expect(dsdt.components(separatedBy: "Name (BSEL, ").count - 1 == hotplugBuses.count)
        // 34 hot-plug PCIe links with one slot each, bus 38 with 30 (one bridge, one fixed device), bus 39 with 32.
        #expect(dsdt.components(separatedBy: "PCEJ (BSEL, _SUN)").count - 1 == 34 + 30 + 32)
        #expect(dsdt.contains("OperationRegion (PCST, SystemIO, 0x0CC0, 0x08)"))
        #expect(dsdt.contains("Method (_E01, 0, NotSerialized)"))
        #expect(dsdt.contains("\\_SB.PCI0.PCNT ()"))
        // _OSC withholds native hot-plug (0x1C) when ACPI hot-plug is used; the plain machine grants 0x1D.
        #expect(dsdt.contains("CTRL &= 0x1C"))
        let plain = try #require(try Disassembly(Descriptions.plain, iasl: Tool.iasl!).dsl["DSDT"])
        #expect(plain.contains("CTRL &= 0x1D"))
        #expect(!plain.contains("PCEJ"))
    }

    @Test("dtc reads the device tree without warnings", .requires(Tool.dtc != nil, "dtc not installed"),
          arguments: descriptionNames)
    func dtcReads(name: String) throws {
        let dir = try TempDir()
        try FirmwareTables.build(description(name)).write(to: dir.url)
        let r = Tool.run(Tool.dtc!, ["-I", "dtb", "-O", "dts", "-o", "machine.dts", "machine.dtb"], in: dir.url)
        #expect(r.status == 0 && r.output.isEmpty, "\(r.output)")
        let dts = try String(contentsOf: dir.url.appendingPathComponent("machine.dts"), encoding: .utf8)
        #expect(dts.contains("compatible = \"pci-host-ecam-generic\""))
        #expect(dts.contains("compatible = \"ns16550a\""))
        #expect(dts.contains("interrupt-map-mask = <0xf800 0x00 0x00 0x07>"))
        #expect(dts.contains("msi-map") == (name == "dmar"))
    }

    /// dt-validate exits 0 even when a schema fails, so any message about the blob is a failure.
    @Test("dt-validate accepts the device tree", .requires(Tool.dtValidate != nil,
          "dt-validate (PyPI dtschema) not installed or cannot load its schemas offline"), arguments: descriptionNames)
    func dtValidate(name: String) throws {
        let dir = try TempDir()
        try FirmwareTables.build(description(name)).write(to: dir.url)
        let r = Tool.run(Tool.dtValidate!, ["machine.dtb"], in: dir.url)
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(r.output)")
    }
}
