import VMMBase

// What every Linux boot protocol hands the Machine: bytes to place in guest RAM, the e820 map
// the kernel is told about, the ranges the boot occupies and the boot vCPU's first state.

/// Where a plan writes its bytes. The Machine implements it over guest RAM; tests over an array.
public protocol GuestMemoryWriter {
    func write(at address: UInt64, bytes: [UInt8]) throws
    /// Zeroes `count` bytes from `address`; by default through `write`, a chunk at a time.
    func zero(at address: UInt64, count: UInt64) throws
}

extension GuestMemoryWriter {
    public func zero(at address: UInt64, count: UInt64) throws {
        let chunk: UInt64 = 1 << 20
        var done: UInt64 = 0
        while done < count {
            let n = min(chunk, count - done)
            try write(at: address + done, bytes: [UInt8](repeating: 0, count: Int(n)))
            done += n
        }
    }
}

/// Bytes to place at a guest-physical address, followed by `zeroFill` zero bytes (an ELF
/// segment's bss, described rather than allocated: its size comes from an untrusted file).
public struct GuestWrite: Equatable, Sendable {
    public let address: UInt64
    public let bytes: [UInt8]
    public let zeroFill: UInt64
    public init(address: UInt64, bytes: [UInt8], zeroFill: UInt64 = 0) {
        self.address = address
        self.bytes = bytes
        self.zeroFill = zeroFill
    }

    /// Bytes written in all; nil when that does not fit in 64 bits.
    public var count: UInt64? {
        let (n, overflow) = UInt64(bytes.count).addingReportingOverflow(zeroFill)
        return overflow ? nil : n
    }

    /// The guest-physical range written; nil when empty or wrapping.
    public var range: AddressRange? { count.flatMap { AddressRange(base: address, size: $0) } }

    public func apply(to memory: some GuestMemoryWriter) throws {
        try memory.write(at: address, bytes: bytes)
        if zeroFill > 0 { try memory.zero(at: address &+ UInt64(bytes.count), count: zeroFill) }
    }
}

/// A range of guest-physical memory a boot occupies, named for messages and tests.
public struct BootRegion: Equatable, Sendable {
    public let name: String
    public let range: AddressRange
}

/// A Linux boot through the protocol the kernel file speaks: the bzImage's 64-bit boot protocol
/// or, for an uncompressed ELF vmlinux, PVH (no decompressor runs).
public enum LinuxBoot: Sendable {
    case bzImage(LinuxBootPlan)
    case pvh(PVHBootPlan)

    /// What `apply` writes, in order.
    public var writes: [GuestWrite] {
        switch self {
        case .bzImage(let p): p.writes
        case .pvh(let p): p.writes
        }
    }

    public var vcpu: VCPUBootState {
        switch self {
        case .bzImage(let p): p.vcpu
        case .pvh(let p): p.vcpu
        }
    }

    public var e820: [E820Entry] {
        switch self {
        case .bzImage(let p): p.e820
        case .pvh(let p): p.e820
        }
    }

    /// Every occupied range, pairwise disjoint, each inside e820 RAM.
    public var regions: [BootRegion] {
        switch self {
        case .bzImage(let p): p.regions.map { BootRegion(name: $0.name.rawValue, range: $0.range) }
        case .pvh(let p): p.regions.map { BootRegion(name: $0.name.description, range: $0.range) }
        }
    }

    public var initrd: AddressRange? {
        switch self {
        case .bzImage(let p): p.initrd
        case .pvh(let p): p.initrd
        }
    }

    public var commandLineAddress: UInt64 {
        switch self {
        case .bzImage(let p): p.commandLineAddress
        case .pvh(let p): p.commandLineAddress
        }
    }

    /// "bzImage" or "PVH", for messages.
    public var protocolName: String {
        switch self {
        case .bzImage: "bzImage"
        case .pvh: "PVH"
        }
    }
}

/// A boot that comes down to bytes at guest-physical addresses (either protocol's plan).
public protocol GuestWritePlan {
    var writes: [GuestWrite] { get }
}

extension GuestWritePlan {
    /// Writes every piece into guest memory. The plan is unchanged and can be applied again.
    public func apply(to memory: some GuestMemoryWriter) throws {
        for w in writes { try w.apply(to: memory) }
    }
}

extension LinuxBoot: GuestWritePlan {}
extension LinuxBootPlan: GuestWritePlan {}
extension PVHBootPlan: GuestWritePlan {}
