import Firmware
import Testing
import VMMBase

@Suite struct LinuxBootE820Tests {
    typealias F = LinuxBootFixtures

    static func checkSortedDisjoint(_ map: [E820Entry]) {
        for (a, b) in zip(map, map.dropFirst()) {
            #expect(a.range.last < b.range.base, "\(a) and \(b) out of order or overlapping")
        }
    }

    @Test func q35LikeMap() throws {
        let map = try F.memory.e820Map()
        Self.checkSortedDisjoint(map)
        let expected: [(UInt64, UInt64, E820Type)] = [
            (0, 0xA_0000, .ram),
            (0xA_0000, 0x6_0000, .reserved),
            (0x10_0000, 0x8000_0000 - 0x10_0000, .ram),
            (0xB000_0000, 0x1000_0000, .reserved),
            (0xFEC0_0000, 0x1000, .reserved),
            (0xFED0_0000, 0x1000, .reserved),
            (0xFEE0_0000, 0x1000, .reserved),
            (0x1_0000_0000, 0x8000_0000, .ram),
        ]
        #expect(map.map { [$0.base, $0.size, UInt64($0.type.rawValue)] }
                == expected.map { [$0.0, $0.1, UInt64($0.2.rawValue)] })
        // The PCI hole is not RAM, and nothing but the named MMIO sits in it.
        let hole = AddressRange(base: 0x8000_0000, last: 0xFFFF_FFFF)!
        #expect(!map.contains { $0.type == .ram && $0.range.overlaps(hole) })
        #expect(map.filter { $0.range.overlaps(hole) }.count == 4)
    }

    @Test func noHighRAM() throws {
        let map = try MemoryLayoutDescription(lowRAMTop: 0x2000_0000).e820Map()
        #expect(map.count == 3)
        #expect(map.last?.range == AddressRange(base: 0x10_0000, last: 0x1FFF_FFFF))
    }

    @Test func carveOutsSplitRAM() throws {
        let desc = MemoryLayoutDescription(lowRAMTop: 0x4000_0000, reserved: [
            ReservedRange(name: "ACPI", base: 0x3FF0_0000, size: 0x8_0000, kind: .carveOut(.acpiReclaimable)),
            ReservedRange(name: "NVS", base: 0x3FF8_0000, size: 0x8_0000, kind: .carveOut(.acpiNVS)),
            ReservedRange(name: "fw", base: 0x20_0000, size: 0x1000, kind: .carveOut(.reserved)),
        ])
        let map = try desc.e820Map()
        Self.checkSortedDisjoint(map)
        #expect(map.map(\.type) == [.ram, .reserved, .ram, .reserved, .ram, .acpiReclaimable, .acpiNVS])
        #expect(map[2].range == AddressRange(base: 0x10_0000, last: 0x1F_FFFF))
        #expect(map[4].range == AddressRange(base: 0x20_1000, last: 0x3FEF_FFFF))
        let ram = map.filter { $0.type == .ram }.reduce(UInt64(0)) { $0 + $1.size }
        #expect(ram == 0xA_0000 + 0x4000_0000 - 0x10_0000 - 0x10_0000 - 0x1000)
    }

    @Test func invalidDescriptions() {
        let hostile: [(MemoryLayoutDescription, MemoryLayoutError)] = [
            (.init(lowRAMTop: 0x10_0000), .invalidLowRAMTop(0x10_0000)),
            (.init(lowRAMTop: 0x1_0000_1000), .invalidLowRAMTop(0x1_0000_1000)),
            (.init(lowRAMTop: 0x1000_0800), .invalidLowRAMTop(0x1000_0800)),
            (.init(lowRAMTop: 0x1000_0000, highRAMSize: 0x123), .invalidHighRAMSize(0x123)),
            (.init(lowRAMTop: 0x1000_0000, highRAMSize: UInt64.max & ~0xFFF), .invalidHighRAMSize(UInt64.max & ~0xFFF)),
            (.init(lowRAMTop: 0x1000_0000, reserved: [.init(name: "x", base: 0xF000_0000, size: 0)]),
             .emptyOrWrappingRange(name: "x", base: 0xF000_0000, size: 0)),
            (.init(lowRAMTop: 0x1000_0000, reserved: [.init(name: "x", base: .max - 10, size: 100)]),
             .emptyOrWrappingRange(name: "x", base: .max - 10, size: 100)),
            (.init(lowRAMTop: 0x1000_0000, reserved: [F.ecam, .init(name: "y", base: 0xBFFF_F000, size: 0x2000)]),
             .rangesOverlap("ECAM", "y")),
            (.init(lowRAMTop: 0xC000_0000, reserved: [F.ecam]), .mmioOverlapsRAM(name: "ECAM")),
            (.init(lowRAMTop: 0x1000_0000, highRAMSize: 0x1000, reserved: [.init(name: "z", base: 0x1_0000_0000, size: 0x10)]),
             .mmioOverlapsRAM(name: "z")),
            (.init(lowRAMTop: 0x1000_0000, reserved: [.init(name: "vga", base: 0xB_8000, size: 0x8000)]),
             .rangesOverlap("legacy hole", "vga")),
            (.init(lowRAMTop: 0x1000_0000, reserved: [.init(name: "acpi", base: 0x0FFF_F000, size: 0x2000, kind: .carveOut(.acpiReclaimable))]),
             .carveOutOutsideRAM(name: "acpi")),
            (.init(lowRAMTop: 0x1000_0000, reserved: [.init(name: "r", base: 0x20_0000, size: 0x1000, kind: .carveOut(.ram))]),
             .carveOutIsRAM(name: "r")),
        ]
        for (desc, error) in hostile {
            #expect(throws: error) { try desc.e820Map() }
        }
    }

    @Test func entryEncoding() {
        let e = E820Entry(range: AddressRange(base: 0x1_0000_0000, size: 0x8000_0000)!, type: .acpiNVS)
        #expect(e.encoded == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 4, 0, 0, 0])
    }
}
