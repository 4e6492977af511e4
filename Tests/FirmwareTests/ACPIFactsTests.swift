import Foundation
import Testing
@testable import Firmware

// What the generated ACPI tables must say by the ACPI specification's table layout, read from
// the bytes. QEMU's own q35 tables are the other oracle (IntegrationTests/QEMUACPITests) and iasl
// the reader (ToolTests). Firmware/acpi/q35/*.dsl are documentation only
// (scripts/render-firmware.sh); nothing compares against them.

private let descriptionNames = Descriptions.all.map(\.0)
private func description(_ name: String) -> PlatformDescription { Descriptions.all.first { $0.0 == name }!.1 }

private func le(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> UInt64 {
    (0..<count).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
}

@Suite("ACPI tables against the ACPI specification")
struct ACPISpecificationTests {
    /// ACPI 6.x 5.2: an x86 platform that is not hardware-reduced has an RSDP pointing at the
    /// XSDT, an FADT with FACS and DSDT, a MADT when it has APICs (5.2.12); ECAM needs an MCFG
    /// (PCI Firmware Specification 3.x, 4.1.2); an HPET or VT-d needs its table when described.
    @Test("Every required table is generated and reachable through the pointers the spec defines",
          arguments: descriptionNames)
    func requiredTablesAreReachable(name: String) throws {
        let d = description(name)
        let t = try FirmwareTables.build(d)
        let byAddress = Dictionary(t.tables.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        func signature(at address: UInt64) -> String? {
            byAddress[address].map { String(decoding: $0.bytes.prefix(4), as: UTF8.self) }
        }

        // RSDP (5.2.5.3): "RSD PTR ", checksum over 20 bytes, revision 2, length 36, extended
        // checksum over 36 bytes, XSDT address at 24.
        let rsdp = t.rsdp.bytes
        #expect(String(decoding: rsdp.prefix(8), as: UTF8.self) == "RSD PTR ")
        #expect(rsdp.prefix(20).reduce(0, &+) == 0 && rsdp.prefix(36).reduce(0, &+) == 0)
        #expect(rsdp[15] == 2 && le(rsdp, 20, 4) == 36)
        let xsdtAddress = le(rsdp, 24, 8)
        #expect(signature(at: xsdtAddress) == "XSDT")

        // Every table with a standard header: its length field is its size, its bytes sum to 0.
        for table in t.tables where table.signature != "RSD PTR " && table.signature != "FACS" {
            #expect(Int(le(table.bytes, 4, 4)) == table.bytes.count, "\(table.signature) length")
            #expect(table.bytes.reduce(0, &+) == 0, "\(table.signature) checksum")
        }

        // XSDT (5.2.8): 64-bit pointers from offset 36.
        let xsdt = try #require(byAddress[xsdtAddress]).bytes
        let listed = stride(from: 36, to: xsdt.count, by: 8).map { signature(at: le(xsdt, $0, 8)) ?? "?" }
        var required: Set<String> = ["FACP", "APIC", "MCFG"]
        if d.hpet != nil { required.insert("HPET") }
        if d.dmar != nil { required.insert("DMAR") }
        #expect(Set(listed) == required, "XSDT lists \(listed)")

        // FADT (5.2.9): X_FIRMWARE_CTRL at 132 and X_DSDT at 140 point at the FACS and DSDT;
        // the 32-bit fields at 36 and 40 agree; not hardware-reduced (flags bit 20, offset 112).
        let fadt = t.fadt.bytes
        #expect(signature(at: le(fadt, 132, 8)) == "FACS" && le(fadt, 36, 4) == le(fadt, 132, 8))
        #expect(signature(at: le(fadt, 140, 8)) == "DSDT" && le(fadt, 40, 4) == le(fadt, 140, 8))
        #expect(le(fadt, 112, 4) & 1 << 20 == 0, "HW_REDUCED_ACPI set")
        // FACS (5.2.10): 64 bytes, no checksum.
        #expect(String(decoding: t.facs.bytes.prefix(4), as: UTF8.self) == "FACS" && le(t.facs.bytes, 4, 4) == 64)
    }
}
