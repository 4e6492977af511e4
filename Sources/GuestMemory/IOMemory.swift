import VMMBase

/// Memory as a DMA-capable device sees it: bytes at *bus* addresses. Device models (virtio
/// queues, passthrough quirks) take an `IOMemory` and never see guest RAM directly, so an IOMMU
/// can be put between them and RAM.
///
/// Same contract as `GuestMemory`: an access that cannot be completed whole throws, and
/// zero-length accesses succeed. Implementations check the whole span before touching memory
/// (`GuestMemory` does, and so does `TranslatedMemory` over a `GuestMemory`).
public protocol IOMemory: Sendable {
    func read(at address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(GuestMemoryError)
    func write(at address: UInt64, from buffer: UnsafeRawBufferPointer) throws(GuestMemoryError)
}

extension IOMemory {
    public func read(at address: UInt64, count: Int) throws(GuestMemoryError) -> [UInt8] {
        precondition(count >= 0, "negative count")
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { raw in
            Result { () throws(GuestMemoryError) in try read(at: address, into: raw) }
        }.get()
        return bytes
    }

    public func write(at address: UInt64, bytes: [UInt8]) throws(GuestMemoryError) {
        try bytes.withUnsafeBytes { raw in
            Result { () throws(GuestMemoryError) in try write(at: address, from: raw) }
        }.get()
    }

    /// A little-endian integer at bus address `address`.
    public func load<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: UInt64) throws(GuestMemoryError) -> T {
        var value = T.zero
        try withUnsafeMutableBytes(of: &value) { (raw) throws(GuestMemoryError) in try read(at: address, into: raw) }
        return T(littleEndian: value)
    }

    public func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws(GuestMemoryError) {
        var le = value.littleEndian
        try withUnsafeBytes(of: &le) { (raw) throws(GuestMemoryError) in try write(at: address, from: raw) }
    }
}

/// Plain guest RAM is `IOMemory` with the identity translation: bus address = guest-physical.
extension GuestMemory: IOMemory {
    public func read(at address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(GuestMemoryError) {
        try read(at: GuestAddress(address), into: buffer)
    }

    public func write(at address: UInt64, from buffer: UnsafeRawBufferPointer) throws(GuestMemoryError) {
        try write(at: GuestAddress(address), from: buffer)
    }
}

/// Turns a bus address into a guest-physical address: the hook where VT-d sits.
public protocol AddressTranslator: Sendable {
    /// Translates `[address, address + length)`, which never crosses a `granule` boundary.
    /// Returns the guest-physical address of the first byte; the span is contiguous there.
    func translate(_ address: UInt64, length: UInt64, write: Bool) -> Result<UInt64, TranslationFault>

    /// Accesses are split so no piece crosses a multiple of this power of two (the page size a
    /// translation covers). `UInt64.max` is taken to mean: never split.
    var granule: UInt64 { get }
}

extension AddressTranslator {
    public var granule: UInt64 { 4096 }
}

/// The translation that changes nothing (no IOMMU, or passthrough mode).
public struct IdentityTranslator: AddressTranslator {
    public init() {}
    public func translate(_ address: UInt64, length: UInt64, write: Bool) -> Result<UInt64, TranslationFault> {
        .success(address)
    }
    public var granule: UInt64 { .max }
}

/// `IOMemory` seen through a translator: each access is split at granule boundaries, each piece
/// is translated, and the pieces are accessed in `memory`.
///
/// All pieces are translated and bounds-checked before any byte is copied, so a fault anywhere
/// leaves memory untouched. (The translator may change between two accesses; that is the
/// guest's race, as on hardware.)
public struct TranslatedMemory<Memory: IOMemory, Translator: AddressTranslator>: IOMemory {
    public let memory: Memory
    public let translator: Translator

    public init(memory: Memory, translator: Translator) {
        self.memory = memory
        self.translator = translator
    }

    /// (target address, offset in the buffer, length) for each piece, every piece translated
    /// (a host-buffer lender maps the targets itself).
    public func pieces(_ address: UInt64, _ count: Int, write: Bool) throws(GuestMemoryError) -> [(UInt64, Int, Int)] {
        guard count > 0 else { return [] }
        let length = UInt64(count)
        let (_, overflow) = address.addingReportingOverflow(length - 1)
        if overflow { throw .addressOverflow(address: address, length: length) }
        let granule = translator.granule
        var result: [(UInt64, Int, Int)] = []
        var offset: UInt64 = 0
        while offset < length {
            let here = address + offset
            var piece = length - offset
            if granule != .max, granule > 0 {
                let toBoundary = granule - (here & (granule - 1))
                piece = min(piece, toBoundary)
            }
            switch translator.translate(here, length: piece, write: write) {
            case .success(let target):
                let (_, wraps) = target.addingReportingOverflow(piece - 1)
                if wraps { throw .addressOverflow(address: target, length: piece) }
                result.append((target, Int(offset), Int(piece)))
            case .failure(let fault):
                throw .translationFault(fault)
            }
            offset += piece
        }
        return result
    }

    /// The target of an access that is one piece (no granule boundary inside it), or nil when
    /// it is empty or must be split. Checked as `pieces` checks each piece; nothing is allocated.
    @inline(__always)
    public func singlePiece(_ address: UInt64, _ count: Int, write: Bool) throws(GuestMemoryError) -> UInt64? {
        guard count > 0 else { return nil }
        let length = UInt64(count)
        let (last, overflow) = address.addingReportingOverflow(length - 1)
        if overflow { throw .addressOverflow(address: address, length: length) }
        let granule = translator.granule
        if granule != .max, granule > 0, address & ~(granule - 1) != last & ~(granule - 1) { return nil }
        switch translator.translate(address, length: length, write: write) {
        case .success(let target):
            let (_, wraps) = target.addingReportingOverflow(length - 1)
            if wraps { throw .addressOverflow(address: target, length: length) }
            return target
        case .failure(let fault):
            throw .translationFault(fault)
        }
    }

    public func read(at address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(GuestMemoryError) {
        // Most accesses (ring words, descriptors) fit one piece: no array of pieces for them.
        if let target = try singlePiece(address, buffer.count, write: false) {
            return try memory.read(at: target, into: buffer)
        }
        let parts = try pieces(address, buffer.count, write: false)
        for (target, offset, count) in parts {
            try memory.read(at: target, into: UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<offset + count]))
        }
    }

    public func write(at address: UInt64, from buffer: UnsafeRawBufferPointer) throws(GuestMemoryError) {
        // One piece: the memory checks the whole span before writing, as for any access.
        if let target = try singlePiece(address, buffer.count, write: true) {
            return try memory.write(at: target, from: buffer)
        }
        let parts = try pieces(address, buffer.count, write: true)
        if let memory = memory as? GuestMemory {
            // Check every piece lies in RAM before writing any, so a bad piece writes nothing.
            for (target, _, count) in parts where !memory.isMapped(GuestAddress(target), length: UInt64(count)) {
                throw .unmapped(address: target, length: UInt64(count))
            }
        }
        for (target, offset, count) in parts {
            try memory.write(at: target, from: UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + count]))
        }
    }
}
