import Foundation
import Testing
import VMMBase
@testable import Firmware

private func sum(_ bytes: some Sequence<UInt8>) -> UInt8 { bytes.reduce(0) { $0 &+ $1 } }
private func le(_ b: [UInt8], _ at: Int, _ n: Int) -> UInt64 { LittleEndian.load(b, at: at, count: n) }

@Suite("Firmware tables")
struct FirmwareTablesTests {
    @Test("Every checksum is right; RSDP has both", arguments: Descriptions.all.map(\.0))
    func checksums(name: String) throws {
        let t = try FirmwareTables.build(Descriptions.all.first { $0.0 == name }!.1)
        #expect(sum(t.rsdp.bytes[0..<20]) == 0)
        #expect(sum(t.rsdp.bytes) == 0)
        #expect(t.rsdp.bytes.count == 36 && t.rsdp.bytes[15] == 2)
        for table in t.tables where table.signature != "RSD PTR " && table.signature != "FACS" {
            #expect(sum(table.bytes) == 0, "\(table.signature)")
            #expect(Int(le(table.bytes, 4, 4)) == table.bytes.count, "\(table.signature) length")
        }
    }

    @Test("Pointers: RSDP -> XSDT -> FADT/MADT/MCFG/..., FADT -> FACS and DSDT")
    func pointers() throws {
        let t = try FirmwareTables.build(Descriptions.dmar)
        #expect(le(t.rsdp.bytes, 24, 8) == t.xsdt.address)
        let entries = (0..<(t.xsdt.bytes.count - 36) / 8).map { le(t.xsdt.bytes, 36 + 8 * $0, 8) }
        #expect(entries == [t.fadt.address, t.madt.address, t.mcfg.address, t.dmar!.address])
        #expect(le(t.fadt.bytes, 140, 8) == t.dsdt.address)
        #expect(le(t.fadt.bytes, 132, 8) == t.facs.address)
        #expect(t.facs.address % 64 == 0)
        let image = t.image
        #expect(Array(image[Int(t.dsdt.address - t.rsdp.address)...].prefix(4)) == Array("DSDT".utf8))
    }

    @Test("FADT carries ICH9 PM blocks at PMBASE 0x600, reset 0xCF9, SCI 9")
    func fadtValues() throws {
        let f = try FirmwareTables.build(Descriptions.plain).fadt.bytes
        #expect(f.count == 276 && f[8] == 6)
        #expect(le(f, 46, 2) == 9)
        #expect(le(f, 56, 4) == 0x600 && le(f, 64, 4) == 0x604 && le(f, 76, 4) == 0x608 && le(f, 80, 4) == 0x620)
        #expect(f[88] == 4 && f[89] == 2 && f[91] == 4 && f[92] == 16)
        #expect(f[116] == 1 && f[117] == 8 && le(f, 120, 8) == 0xCF9 && f[128] == 0x06)
        #expect(le(f, 112, 4) & (1 << 10) != 0)   // RESET_REG_SUP
    }

    @Test("MADT: x2APIC entries above APIC ID 254, IOAPIC, IRQ0->GSI2 and level/high overrides")
    func madt() throws {
        let m = try FirmwareTables.build(Descriptions.dmar).madt.bytes
        var types: [UInt8] = []
        var off = 44
        var overrides: [(UInt8, UInt32, UInt16)] = []
        while off < m.count {
            types.append(m[off])
            if m[off] == 2 { overrides.append((m[off + 3], UInt32(le(m, off + 4, 4)), UInt16(le(m, off + 8, 2)))) }
            if m[off] == 1 { #expect(le(m, off + 4, 4) == 0xFEC0_0000 && le(m, off + 8, 4) == 0) }
            off += Int(m[off + 1])
        }
        #expect(off == m.count)
        #expect(types == [0, 0, 0, 9, 1, 2, 2, 2, 2, 2, 4, 0x0A])
        #expect(overrides.map(\.0) == [0, 5, 9, 10, 11])
        #expect(overrides[0].1 == 2 && overrides[0].2 == 0)
        #expect(overrides[2].1 == 9 && overrides[2].2 == 0x0D)
    }

    @Test("DMAR: HAW-1, INTR_REMAP, DRHD INCLUDE_PCI_ALL, IOAPIC scope at QEMU's FF:00.0")
    func dmar() throws {
        var d = Descriptions.dmar
        d.dmar!.x2apicOptOut = true
        let b = try FirmwareTables.build(d).dmar!.bytes
        #expect(b[36] == 47 && b[37] == 0x03)
        #expect(le(b, 48, 2) == 0 && b[52] == 1 && le(b, 56, 8) == 0xFED9_0000)
        #expect(Array(b[64..<72]) == [3, 8, 0, 0, 0, 0xFF, 0, 0])
    }

    @Test("The device tree parses with libfdt's header check")
    func deviceTreeHeader() throws {
        for (_, d) in Descriptions.all {
            try FDTWriter.check(try FirmwareTables.build(d).deviceTree)
        }
    }

    @Test("write(to:) writes each table and machine.dtb")
    func writeFiles() throws {
        let dir = try TempDir()
        try FirmwareTables.build(Descriptions.plain).write(to: dir.url)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.url.path).sorted()
        #expect(names == ["APIC.bin", "DSDT.bin", "FACP.bin", "FACS.bin", "HPET.bin", "MCFG.bin", "RSDP.bin", "XSDT.bin", "machine.dtb"])
    }

    @Test("q35 PIRQ routing matches QEMU's build_q35_routing_table")
    func pirqRouting() {
        let r = PlatformDescription.PIRQRouting.q35
        // Slot 0: E F G H; slot 1: F G H E; slot 3: H E F G; slot 0x18: E...; 0x19-0x1d: A B C D; 0x1e: E; 0x1f: A.
        #expect((0..<4).map { r.pirq(slot: 0, pin: $0) } == [4, 5, 6, 7])
        #expect((0..<4).map { r.pirq(slot: 1, pin: $0) } == [5, 6, 7, 4])
        #expect((0..<4).map { r.pirq(slot: 3, pin: $0) } == [7, 4, 5, 6])
        #expect((0..<4).map { r.pirq(slot: 0x17, pin: $0) } == [7, 4, 5, 6])
        #expect((0..<4).map { r.pirq(slot: 0x18, pin: $0) } == [4, 5, 6, 7])
        #expect((0..<4).map { r.pirq(slot: 0x1D, pin: $0) } == [0, 1, 2, 3])
        #expect((0..<4).map { r.pirq(slot: 0x1E, pin: $0) } == [4, 5, 6, 7])
        #expect((0..<4).map { r.pirq(slot: 0x1F, pin: $0) } == [0, 1, 2, 3])
    }
}

@Suite("Bad descriptions")
struct BadDescriptionTests {
    typealias Bus = PlatformDescription.Bus
    typealias Device = PlatformDescription.Device

    private func expectError(_ expected: FirmwareError, _ d: PlatformDescription,
                             sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: expected, sourceLocation: sourceLocation) { try FirmwareTables.build(d) }
    }

    @Test func duplicateDevfn() {
        var d = Descriptions.plain
        d.pci.buses[0].devices.append(Device(devfn: 0xF8))
        expectError(.duplicateDevfn(bus: 0, devfn: 0xF8), d)
    }

    @Test func busOutsideECAM() {
        var d = Descriptions.topology
        d.pci.ecam.busRange = 0...31
        expectError(.busOutsideECAM(bus: 32, ecam: 0...31), d)
    }

    @Test func overlappingWindows() {
        var d = Descriptions.plain
        d.pci.mem32Window = AddressRange(base: 0xA000_0000, last: 0xFEBF_FFFF)!
        #expect(throws: FirmwareError.self) { try FirmwareTables.build(d) }
        do { try d.validate() } catch { guard case .overlappingWindows = error else { Issue.record("\(error)"); return } }
        var io = Descriptions.plain
        io.pci.ioWindow = AddressRange(base: 0x0800, last: 0x0FFF)
        #expect(throws: FirmwareError.self) { try FirmwareTables.build(io) }
        var ram = Descriptions.plain
        ram.memory.append(AddressRange(base: 0x80_0000_0000, size: 1 << 30)!)
        #expect(throws: FirmwareError.self) { try FirmwareTables.build(ram) }
    }

    @Test func tooManyHotplugBuses() {
        var d = Descriptions.plain
        d.acpiHotplug = .init()
        // The selector register addresses 256 buses per segment (QEMU's ACPI_PCIHP_MAX_HOTPLUG_BUS).
        d.pci.buses[0].acpiHotplugSelector = 256
        expectError(.tooManyHotplugBuses(segment: 0, count: 257, limit: 256), d)
    }

    @Test func downstreamLinkCarriesOnlyDevice0() {
        var d = Descriptions.topology
        let i = d.pci.buses.firstIndex { $0.number == 3 }!
        d.pci.buses[i].devices.append(Device(devfn: 0x08))
        expectError(.deviceOnDownstreamLink(bus: 3, devfn: 0x08), d)
    }

    @Test func brokenHierarchy() {
        var d = Descriptions.topology
        d.pci.buses.removeAll { $0.number == 33 }
        expectError(.unknownSecondaryBus(bridge: PCIAddress(bus: 1, devfn: 0), bus: 33), d)
        var twice = Descriptions.topology
        twice.pci.buses[0].devices.append(Device(devfn: 0x30, secondaryBus: 3))
        expectError(.busReachedTwice(3), twice)
        var orphan = Descriptions.plain
        orphan.pci.buses.append(Bus(number: 5, kind: .conventional))
        expectError(.unreachableBus(5), orphan)
        var dup = Descriptions.topology
        dup.pci.buses.append(Bus(number: 3, kind: .pcieDownstream))
        expectError(.duplicateBus(3), dup)
    }

    @Test func hotplugNeedsRegistersAndUniqueSelectors() {
        var d = Descriptions.topology
        d.acpiHotplug = nil
        expectError(.hotplugRegistersMissing, d)
        var dup = Descriptions.topology
        for i in dup.pci.buses.indices where dup.pci.buses[i].acpiHotplugSelector != nil {
            dup.pci.buses[i].acpiHotplugSelector = 7
        }
        expectError(.duplicateHotplugSelector(7), dup)
    }

    @Test func otherInputs() {
        var d = Descriptions.plain
        d.cpus = []
        expectError(.noCPUs, d)
        d = Descriptions.plain
        d.cpus.append(.init(apicID: 0))
        expectError(.duplicateAPICID(0), d)
        d = Descriptions.plain
        d.oem.oemID = "TOOLONGID"
        expectError(.invalidOEMField(field: "oemID", value: "TOOLONGID"), d)
        d = Descriptions.plain
        d.hpet = .init(base: 0x1_0000_0000)
        #expect(throws: FirmwareError.self) { try FirmwareTables.build(d) }
        d = Descriptions.plain
        d.layout.size = 0x100
        #expect(throws: FirmwareError.self) { try FirmwareTables.build(d) }
    }
}
