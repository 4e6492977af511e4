/// One resource descriptor (ACPI 6.5 §6.4). Small descriptors carry their length in the tag byte,
/// large ones in a 16-bit length after the tag.
public struct ResourceDescriptor: Hashable, Sendable {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    private static func large(_ tag: UInt8, _ body: [UInt8]) -> ResourceDescriptor {
        ResourceDescriptor(bytes: [tag] + AMLEncoding.le(UInt64(body.count), 2) + body)
    }

    /// IO(Decode16 or Decode10, min, max, alignment, length): small item 0x08, 7 bytes.
    public static func io(decode16: Bool = true, minimum: UInt16, maximum: UInt16, alignment: UInt8, length: UInt8) -> ResourceDescriptor {
        ResourceDescriptor(bytes: [0x47, decode16 ? 1 : 0] + AMLEncoding.le(UInt64(minimum), 2)
                           + AMLEncoding.le(UInt64(maximum), 2) + [alignment, length])
    }

    /// IRQNoFlags(){irqs}: small item 0x04 with a 16-bit mask, 3 bytes.
    public static func irqNoFlags(_ irqs: [UInt8]) throws -> ResourceDescriptor {
        var mask: UInt16 = 0
        for irq in irqs {
            guard irq < 16 else { throw AMLError.outOfRange(what: "IRQ", value: UInt64(irq)) }
            mask |= 1 << UInt16(irq)
        }
        return ResourceDescriptor(bytes: [0x22] + AMLEncoding.le(UInt64(mask), 2))
    }

    /// Memory32Fixed(ReadWrite/ReadOnly, base, length): large item 0x86.
    public static func memory32Fixed(writable: Bool, base: UInt32, length: UInt32) -> ResourceDescriptor {
        large(0x86, [writable ? 1 : 0] + AMLEncoding.le(UInt64(base), 4) + AMLEncoding.le(UInt64(length), 4))
    }

    /// Interrupt(ResourceConsumer/Producer, Level/Edge, ActiveHigh/Low, Shared/Exclusive){gsis}:
    /// the extended interrupt descriptor, large item 0x89.
    public static func interrupt(consumer: Bool = true, edgeTriggered: Bool, activeLow: Bool, shared: Bool,
                                 _ interrupts: [UInt32]) throws -> ResourceDescriptor {
        guard (1...255).contains(interrupts.count) else {
            throw AMLError.tooLarge(what: "Interrupt descriptor table", size: interrupts.count, limit: 255)
        }
        let flags: UInt8 = (consumer ? 1 : 0) | (edgeTriggered ? 2 : 0) | (activeLow ? 4 : 0) | (shared ? 8 : 0)
        return large(0x89, [flags, UInt8(interrupts.count)] + interrupts.flatMap { AMLEncoding.le(UInt64($0), 4) })
    }

    /// Resource type of an address space descriptor.
    public enum AddressSpaceType: UInt8, Sendable { case memory = 0, io = 1, busNumber = 2 }

    /// Memory caching attribute (_MEM).
    public enum Cacheability: UInt8, Sendable { case nonCacheable = 0, cacheable = 1, writeCombining = 2, prefetchable = 3 }

    /// The general flags shared by Word/DWord/QWord address space descriptors: producer,
    /// positive decode, fixed minimum and maximum (what a host bridge _CRS declares).
    static func generalFlags(minFixed: Bool, maxFixed: Bool, subtractive: Bool, consumer: Bool) -> UInt8 {
        (maxFixed ? 8 : 0) | (minFixed ? 4 : 0) | (subtractive ? 2 : 0) | (consumer ? 1 : 0)
    }

    private static func span(_ minimum: UInt64, _ maximum: UInt64) throws -> UInt64 {
        guard minimum <= maximum else { throw AMLError.outOfRange(what: "address descriptor maximum", value: maximum) }
        return maximum - minimum + 1
    }

    private static func address(tag: UInt8, width: Int, type: AddressSpaceType, typeFlags: UInt8,
                                granularity: UInt64, minimum: UInt64, maximum: UInt64,
                                translation: UInt64, length: UInt64) throws -> ResourceDescriptor {
        let limit: UInt64 = width == 8 ? .max : (1 << (UInt64(width) * 8)) - 1
        for (what, v) in [("minimum", minimum), ("maximum", maximum), ("translation", translation), ("length", length)] {
            guard v <= limit else { throw AMLError.outOfRange(what: "address descriptor \(what)", value: v) }
        }
        guard minimum <= maximum else { throw AMLError.outOfRange(what: "address descriptor maximum", value: maximum) }
        let g = generalFlags(minFixed: true, maxFixed: true, subtractive: false, consumer: false)
        var body: [UInt8] = [type.rawValue, g, typeFlags]
        for v in [granularity, minimum, maximum, translation, length] { body += AMLEncoding.le(v, width) }
        return large(tag, body)
    }

    /// WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, length).
    public static func wordBusNumber(minimum: UInt16, maximum: UInt16) throws -> ResourceDescriptor {
        try address(tag: 0x88, width: 2, type: .busNumber, typeFlags: 0, granularity: 0,
                    minimum: UInt64(minimum), maximum: UInt64(maximum), translation: 0,
                    length: try span(UInt64(minimum), UInt64(maximum)))
    }

    /// WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, length).
    public static func wordIO(minimum: UInt16, maximum: UInt16) throws -> ResourceDescriptor {
        try address(tag: 0x88, width: 2, type: .io, typeFlags: 3, granularity: 0,
                    minimum: UInt64(minimum), maximum: UInt64(maximum), translation: 0,
                    length: try span(UInt64(minimum), UInt64(maximum)))
    }

    /// DWordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, ...).
    public static func dwordIO(minimum: UInt32, maximum: UInt32) throws -> ResourceDescriptor {
        try address(tag: 0x87, width: 4, type: .io, typeFlags: 3, granularity: 0,
                    minimum: UInt64(minimum), maximum: UInt64(maximum), translation: 0,
                    length: try span(UInt64(minimum), UInt64(maximum)))
    }

    /// DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, cacheability, ReadWrite, ...).
    public static func dwordMemory(cacheability: Cacheability, writable: Bool = true,
                                   minimum: UInt32, maximum: UInt32) throws -> ResourceDescriptor {
        try address(tag: 0x87, width: 4, type: .memory, typeFlags: cacheability.rawValue << 1 | (writable ? 1 : 0),
                    granularity: 0, minimum: UInt64(minimum), maximum: UInt64(maximum), translation: 0,
                    length: try span(UInt64(minimum), UInt64(maximum)))
    }

    /// QWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, cacheability, ReadWrite, ...).
    public static func qwordMemory(cacheability: Cacheability, writable: Bool = true,
                                   minimum: UInt64, maximum: UInt64) throws -> ResourceDescriptor {
        let (len, overflow) = (maximum &- minimum).addingReportingOverflow(1)
        guard !overflow else { throw AMLError.outOfRange(what: "QWordMemory length", value: maximum) }
        return try address(tag: 0x8A, width: 8, type: .memory, typeFlags: cacheability.rawValue << 1 | (writable ? 1 : 0),
                           granularity: 0, minimum: minimum, maximum: maximum, translation: 0, length: len)
    }
}

extension AML {
    /// ResourceTemplate(){...}: a buffer of descriptors closed by an EndTag (0x79) whose checksum
    /// byte makes the descriptor bytes sum to zero.
    public static func resourceTemplate(_ descriptors: [ResourceDescriptor]) throws -> AML {
        var body = descriptors.flatMap(\.bytes)
        body.append(0x79)
        let sum = body.reduce(UInt8(0)) { $0 &+ $1 }
        body.append(0 &- sum)
        return try buffer(body)
    }
}
