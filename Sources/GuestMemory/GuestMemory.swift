import VMMBase

/// One block of guest RAM: guest-physical `range` backed by host memory `host`.
///
/// The host bytes belong to `owner` (in the machine, a HostOS `SharedMapping`), which the
/// region keeps alive; GuestMemory never allocates or frees host memory itself.
public struct GuestMemoryRegion: @unchecked Sendable, CustomStringConvertible {
    /// Guest-physical addresses covered.
    public let range: AddressRange
    /// The host bytes, exactly `range.size` of them.
    public let host: UnsafeMutableRawBufferPointer
    /// Keeps `host` valid.
    public let owner: AnyObject

    /// Fails when the host buffer is empty or the region would pass the end of the
    /// 64-bit guest-physical space.
    public init(guestBase: GuestAddress, host: UnsafeMutableRawBufferPointer,
                owner: AnyObject) throws(GuestMemoryError) {
        guard host.count > 0, host.baseAddress != nil else {
            throw .invalidRegion("empty region at \(guestBase)")
        }
        guard let range = AddressRange(base: guestBase.raw, size: UInt64(host.count)) else {
            throw .invalidRegion("region at \(guestBase) of \(host.count) bytes wraps past 2^64")
        }
        self.range = range
        self.host = host
        self.owner = owner
    }

    public var guestBase: GuestAddress { GuestAddress(range.base) }
    /// The host virtual address of the region's first byte (for KVM_SET_USER_MEMORY_REGION).
    public var hostAddress: UInt64 { UInt64(UInt(bitPattern: host.baseAddress)) }

    public var description: String { "RAM \(range) @ host 0x\(String(hostAddress, radix: 16))" }

    /// Offset into `host` of `[address, address + length)`, or nil unless it is wholly inside.
    @inline(__always)
    func offset(of address: UInt64, length: UInt64) -> Int? {
        guard range.contains(address, length: length) else { return nil }
        return Int(address - range.base)   // < host.count, so fits in Int
    }
}

/// Guest RAM: non-overlapping regions at guest-physical addresses, with bounds-checked access.
///
/// Every access must lie wholly inside one region; otherwise it throws and touches nothing.
/// Arithmetic is overflow-checked, so addresses near 2^64 are refused, never wrapped. An access
/// of zero bytes is a no-op that succeeds at any address (it touches no memory).
///
/// Integers are little-endian (x86 guests) and may be unaligned.
///
/// Thread safety: the value is immutable and Sendable. Accesses are plain loads, stores and
/// memmove on memory the guest's vCPUs and other threads write concurrently, with no locking and
/// no atomicity beyond what the hardware gives an ordinary access. Device models must therefore
/// read a guest structure once into a local value and validate that copy (no double fetch).
public struct GuestMemory: Sendable, CustomStringConvertible {
    /// Sorted by base address, non-overlapping.
    public let regions: [GuestMemoryRegion]

    public init(regions: [GuestMemoryRegion]) throws(GuestMemoryError) {
        let sorted = regions.sorted { $0.range.base < $1.range.base }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.range.overlaps(b.range) {
            throw .invalidRegion("\(a.range) overlaps \(b.range)")
        }
        self.regions = sorted
    }

    /// Total bytes of RAM.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + UInt64($1.host.count) } }

    public var description: String { "GuestMemory(" + regions.map(\.description).joined(separator: ", ") + ")" }

    /// The region containing `address`, by binary search.
    public func region(containing address: GuestAddress) -> GuestMemoryRegion? {
        regionIndex(containing: address.raw).map { regions[$0] }
    }

    /// True when `[address, address + length)` is wholly inside one region.
    public func isMapped(_ address: GuestAddress, length: UInt64) -> Bool {
        guard length > 0, let i = regionIndex(containing: address.raw) else { return false }
        return regions[i].range.contains(address.raw, length: length)
    }

    func regionIndex(containing address: UInt64) -> Int? {
        var low = 0, high = regions.count
        while low < high {
            let mid = (low + high) / 2
            if regions[mid].range.last < address { low = mid + 1 } else { high = mid }
        }
        return low < regions.count && regions[low].range.contains(address) ? low : nil
    }

    /// The host bytes for `[address, address + length)`, length > 0. Throws unless the span is
    /// wholly inside one region.
    @inline(__always)
    func hostBytes(_ address: UInt64, _ length: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        let (_, overflow) = address.addingReportingOverflow(length - 1)
        if overflow { throw .addressOverflow(address: address, length: length) }
        guard let i = regionIndex(containing: address),
              let offset = regions[i].offset(of: address, length: length)
        else { throw .unmapped(address: address, length: length) }
        return regions[i].host.baseAddress! + offset
    }

    /// The host bytes of `[address, address + length)`, length > 0, for I/O straight into
    /// guest RAM (readv/writev). Throws unless the span lies wholly inside one region. The
    /// bytes stay valid while this value (which keeps the regions' owners) lives.
    public func hostBuffer(at address: GuestAddress, length: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawBufferPointer {
        guard length > 0, length <= UInt64(Int.max) else { throw .unmapped(address: address.raw, length: length) }
        return UnsafeMutableRawBufferPointer(start: try hostBytes(address.raw, length), count: Int(length))
    }

    // MARK: Byte access

    /// Copies `buffer.count` bytes of guest memory at `address` into `buffer`.
    public func read(at address: GuestAddress, into buffer: UnsafeMutableRawBufferPointer) throws(GuestMemoryError) {
        guard buffer.count > 0, let destination = buffer.baseAddress else { return }
        let source = try hostBytes(address.raw, UInt64(buffer.count))
        destination.copyMemory(from: source, byteCount: buffer.count)
    }

    /// Copies `buffer` into guest memory at `address`.
    public func write(at address: GuestAddress, from buffer: UnsafeRawBufferPointer) throws(GuestMemoryError) {
        guard buffer.count > 0, let source = buffer.baseAddress else { return }
        let destination = try hostBytes(address.raw, UInt64(buffer.count))
        destination.copyMemory(from: source, byteCount: buffer.count)
    }

    /// `count` bytes at `address` as an array.
    public func read(at address: GuestAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        precondition(count >= 0, "negative count")
        guard count > 0 else { return [] }
        let source = try hostBytes(address.raw, UInt64(count))
        return Array(UnsafeRawBufferPointer(start: source, count: count))
    }

    public func write(at address: GuestAddress, bytes: [UInt8]) throws(GuestMemoryError) {
        try bytes.withUnsafeBytes { raw in
            Result { () throws(GuestMemoryError) in try write(at: address, from: raw) }
        }.get()
    }

    /// Fills `[address, address + count)` with `value`.
    public func fill(at address: GuestAddress, count: UInt64, with value: UInt8 = 0) throws(GuestMemoryError) {
        guard count > 0 else { return }
        let destination = try hostBytes(address.raw, count)
        destination.initializeMemory(as: UInt8.self, repeating: value, count: Int(count))
    }

    // MARK: Integer access

    /// A little-endian integer at `address` (unaligned allowed).
    public func load<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let source = try hostBytes(address.raw, UInt64(MemoryLayout<T>.size))
        return T(littleEndian: source.loadUnaligned(as: T.self))
    }

    /// Stores `value` little-endian at `address` (unaligned allowed).
    public func store<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let destination = try hostBytes(address.raw, UInt64(MemoryLayout<T>.size))
        destination.storeBytes(of: value.littleEndian, as: T.self)
    }
}
