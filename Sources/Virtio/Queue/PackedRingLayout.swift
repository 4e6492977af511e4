/// The packed virtqueue's memory layout (virtio 1.2, 2.8): one descriptor ring the driver
/// fills and the device writes back, a driver event suppression structure (driver area, the
/// device reads it) and a device event suppression structure (device area, the device writes
/// it), all little-endian.
public enum PackedRing {
    /// struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; }
    public static let descriptorSize = 16
    public static let lengthOffset = 8
    public static let idOffset = 12
    public static let flagsOffset = 14

    /// Descriptor flags (2.8.1, 2.8.13): NEXT, WRITE and INDIRECT as in the split ring; AVAIL
    /// and USED carry the wrap counters.
    public static let flagNext: UInt16 = 1
    public static let flagWrite: UInt16 = 2
    public static let flagIndirect: UInt16 = 4
    public static let flagAvailable: UInt16 = 1 << 7
    public static let flagUsed: UInt16 = 1 << 15

    /// struct pvirtq_event_suppress { le16 desc_event_off_wrap; le16 desc_event_flags; } (2.8.14).
    public static let eventOffsetWrap: UInt64 = 0
    public static let eventFlags: UInt64 = 2
    public static let eventStructureBytes: UInt64 = 4
    /// desc_event_flags: notify, do not, or at the descriptor named by off_wrap (EVENT_IDX only).
    public static let eventEnable: UInt16 = 0
    public static let eventDisable: UInt16 = 1
    public static let eventDescriptor: UInt16 = 2
    /// off_wrap's bit 15 is the wrap counter, bits 0-14 the ring position.
    public static let wrapBit: UInt16 = 1 << 15

    public static func ringBytes(size: UInt16) -> UInt64 { UInt64(descriptorSize) * UInt64(size) }

    /// off_wrap for ring position `position` seen with wrap counter `wrap`.
    public static func offsetWrap(_ position: UInt16, wrap: Bool) -> UInt16 { position | (wrap ? wrapBit : 0) }

    /// A descriptor is available to the device when its AVAIL bit equals the device's wrap
    /// counter and its USED bit does not (2.8.1).
    public static func isAvailable(flags: UInt16, wrap: Bool) -> Bool {
        (flags & flagAvailable != 0) == wrap && (flags & flagUsed != 0) != wrap
    }

    /// The flags of a used descriptor written with wrap counter `wrap`: AVAIL and USED both
    /// equal to it (2.8.1), WRITE when the device wrote into the buffer.
    public static func usedFlags(wrap: Bool, wroteBytes: Bool) -> UInt16 {
        (wrap ? flagAvailable | flagUsed : 0) | (wroteBytes ? flagWrite : 0)
    }
}

/// One packed descriptor as read from guest memory (a copy: checked once, never re-read).
public struct PackedDescriptor: Hashable, Sendable {
    public let address: UInt64
    public let length: UInt32
    public let id: UInt16
    public let flags: UInt16

    /// Decodes the 16 little-endian bytes of a pvirtq_desc.
    public init(bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count >= PackedRing.descriptorSize)
        address = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        length = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: PackedRing.lengthOffset, as: UInt32.self))
        id = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: PackedRing.idOffset, as: UInt16.self))
        flags = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: PackedRing.flagsOffset, as: UInt16.self))
    }

    public var hasNext: Bool { flags & PackedRing.flagNext != 0 }
    public var isWritable: Bool { flags & PackedRing.flagWrite != 0 }
    public var isIndirect: Bool { flags & PackedRing.flagIndirect != 0 }
}
