import VMMBase

// The guest's e820 memory map, built from a small description of where RAM is and which ranges
// are claimed by devices or firmware. The map is what the kernel believes about memory: RAM it
// may use, and everything else it must leave alone.

/// An e820 entry type (`E820_TYPE_*`).
public enum E820Type: UInt32, Sendable {
    case ram = 1
    case reserved = 2
    case acpiReclaimable = 3
    case acpiNVS = 4
    case unusable = 5
    case persistentMemory = 7
}

public struct E820Entry: Equatable, Sendable, CustomStringConvertible {
    public let range: AddressRange
    public let type: E820Type
    public init(range: AddressRange, type: E820Type) {
        self.range = range
        self.type = type
    }
    public var base: UInt64 { range.base }
    /// Entries never span the whole 64-bit space (the description forbids it), so size fits.
    public var size: UInt64 { range.last - range.base + 1 }

    /// The 20-byte `struct boot_e820_entry`: addr (u64), size (u64), type (u32).
    public var encoded: [UInt8] {
        var b = BootParamsBuffer(count: 20)
        b.store64(base, at: 0)
        b.store64(size, at: 8)
        b.store32(type.rawValue, at: 16)
        return b.bytes
    }

    public var description: String { "\(range) \(type)" }
}

/// A range some device or firmware owns, described by the Machine.
public struct ReservedRange: Equatable, Sendable {
    public enum Kind: Sendable, Equatable {
        /// Device registers (ECAM, IOAPIC, LAPIC, HPET, ...): must lie outside RAM. Reported as
        /// reserved so the kernel never places a resource over it.
        case mmio
        /// Firmware data inside RAM, carved out of it with the given e820 type
        /// (`.reserved`, `.acpiReclaimable`, `.acpiNVS`, ...).
        case carveOut(E820Type)
    }

    public let name: String
    public let base: UInt64
    public let size: UInt64
    public let kind: Kind

    public init(name: String, base: UInt64, size: UInt64, kind: Kind = .mmio) {
        self.name = name
        self.base = base
        self.size = size
        self.kind = kind
    }
}

/// Invalid memory descriptions.
public enum MemoryLayoutError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Low RAM must end above 1 MiB, at or below 4 GiB, on a 4 KiB boundary.
    case invalidLowRAMTop(UInt64)
    /// High RAM must be a multiple of 4 KiB and end inside the 64-bit space.
    case invalidHighRAMSize(UInt64)
    case emptyOrWrappingRange(name: String, base: UInt64, size: UInt64)
    case rangesOverlap(String, String)
    /// An MMIO range overlaps RAM (or the legacy hole, which stays reserved as a whole).
    case mmioOverlapsRAM(name: String)
    /// A carve-out must lie wholly inside RAM.
    case carveOutOutsideRAM(name: String)
    /// A carve-out's type must not be `.ram`.
    case carveOutIsRAM(name: String)

    public var description: String {
        switch self {
        case let .invalidLowRAMTop(t): return "low RAM top 0x\(String(t, radix: 16)) invalid (1 MiB < top <= 4 GiB, 4 KiB aligned)"
        case let .invalidHighRAMSize(s): return "high RAM size 0x\(String(s, radix: 16)) invalid"
        case let .emptyOrWrappingRange(n, b, s): return "range \(n) at 0x\(String(b, radix: 16)) size 0x\(String(s, radix: 16)) is empty or wraps"
        case let .rangesOverlap(a, b): return "ranges \(a) and \(b) overlap"
        case let .mmioOverlapsRAM(n): return "MMIO range \(n) overlaps RAM or the legacy hole"
        case let .carveOutOutsideRAM(n): return "carve-out \(n) is not wholly inside RAM"
        case let .carveOutIsRAM(n): return "carve-out \(n) has type RAM"
        }
    }
}

/// Where RAM is: below 640 KiB, from 1 MiB to `lowRAMTop`, and `highRAMSize` bytes from 4 GiB;
/// plus ranges devices and firmware own. The space from `lowRAMTop` to 4 GiB is the PCI hole:
/// not RAM, and absent from the map except for the reserved ranges inside it.
public struct MemoryLayoutDescription: Equatable, Sendable {
    public static let legacyHole = AddressRange(base: 0xA_0000, last: 0xF_FFFF)!
    public static let conventionalRAM = AddressRange(base: 0, last: 0x9_FFFF)!
    public static let highMemoryStart: UInt64 = 0x10_0000
    public static let highRAMBase: UInt64 = 1 << 32

    /// End (exclusive) of RAM below 4 GiB.
    public var lowRAMTop: UInt64
    /// Bytes of RAM from 4 GiB.
    public var highRAMSize: UInt64
    public var reserved: [ReservedRange]

    public init(lowRAMTop: UInt64, highRAMSize: UInt64 = 0, reserved: [ReservedRange] = []) {
        self.lowRAMTop = lowRAMTop
        self.highRAMSize = highRAMSize
        self.reserved = reserved
    }

    /// The RAM ranges, before carve-outs.
    func ramRanges() throws(MemoryLayoutError) -> [AddressRange] {
        guard lowRAMTop > Self.highMemoryStart, lowRAMTop <= Self.highRAMBase, lowRAMTop & 0xFFF == 0 else {
            throw .invalidLowRAMTop(lowRAMTop)
        }
        var ram = [Self.conventionalRAM, AddressRange(base: Self.highMemoryStart, last: lowRAMTop - 1)!]
        if highRAMSize != 0 {
            guard highRAMSize & 0xFFF == 0,
                  let high = AddressRange(base: Self.highRAMBase, size: highRAMSize),
                  high.last != .max else { throw .invalidHighRAMSize(highRAMSize) }
            ram.append(high)
        }
        return ram
    }

    /// The e820 map: sorted, non-overlapping, RAM with carve-outs removed, the legacy hole and
    /// every reserved range present, the PCI hole absent.
    public func e820Map() throws(MemoryLayoutError) -> [E820Entry] {
        let ram = try ramRanges()
        var claimed: [(name: String, range: AddressRange, type: E820Type)] = [
            ("legacy hole", Self.legacyHole, .reserved),
        ]
        for r in reserved {
            guard let range = AddressRange(base: r.base, size: r.size), range.last != .max else {
                throw .emptyOrWrappingRange(name: r.name, base: r.base, size: r.size)
            }
            for c in claimed where c.range.overlaps(range) { throw .rangesOverlap(c.name, r.name) }
            switch r.kind {
            case .mmio:
                if ram.contains(where: { $0.overlaps(range) }) { throw .mmioOverlapsRAM(name: r.name) }
                claimed.append((r.name, range, .reserved))
            case let .carveOut(type):
                guard type != .ram else { throw .carveOutIsRAM(name: r.name) }
                guard ram.contains(where: { $0.contains(range) }) else { throw .carveOutOutsideRAM(name: r.name) }
                claimed.append((r.name, range, type))
            }
        }

        var entries = claimed.map { E820Entry(range: $0.range, type: $0.type) }
        for block in ram {
            // RAM minus the carve-outs inside it (claimed ranges are disjoint, so sort and walk).
            let holes = claimed.map(\.range).filter { block.overlaps($0) }.sorted { $0.base < $1.base }
            var cursor = block.base
            var done = false
            for h in holes {
                if h.base > cursor { entries.append(E820Entry(range: AddressRange(base: cursor, last: h.base - 1)!, type: .ram)) }
                if h.last == block.last { done = true; break }
                cursor = h.last + 1
            }
            if !done, cursor <= block.last {
                entries.append(E820Entry(range: AddressRange(base: cursor, last: block.last)!, type: .ram))
            }
        }
        return entries.sorted { $0.base < $1.base }
    }
}
