/// The split virtqueue's memory layout (virtio 1.2, 2.7): the descriptor table, the driver
/// area (available ring) and the device area (used ring), all little-endian.
public enum SplitRing {
    /// struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }
    public static let descriptorSize = 16
    public static let descriptorAlignment: UInt64 = 16
    public static let availableAlignment: UInt64 = 2
    public static let usedAlignment: UInt64 = 4

    /// Descriptor flags (2.7.5).
    public static let flagNext: UInt16 = 1
    public static let flagWrite: UInt16 = 2
    public static let flagIndirect: UInt16 = 4

    /// virtq_avail: le16 flags; le16 idx; le16 ring[size]; le16 used_event.
    public static let availableFlags: UInt64 = 0
    public static let availableIndex: UInt64 = 2
    public static let availableRing: UInt64 = 4
    /// avail->flags bit 0: the driver asks for no interrupts (ignored under EVENT_IDX).
    public static let availableNoInterrupt: UInt16 = 1

    /// virtq_used: le16 flags; le16 idx; struct { le32 id; le32 len; } ring[size]; le16 avail_event.
    public static let usedFlags: UInt64 = 0
    public static let usedIndex: UInt64 = 2
    public static let usedRing: UInt64 = 4
    public static let usedElementSize: UInt64 = 8
    /// used->flags bit 0: the device asks for no kicks (ignored under EVENT_IDX).
    public static let usedNoNotify: UInt16 = 1

    /// Offset of used_event in the driver area.
    public static func usedEventOffset(size: UInt16) -> UInt64 { availableRing + 2 * UInt64(size) }
    /// Offset of avail_event in the device area.
    public static func availableEventOffset(size: UInt16) -> UInt64 { usedRing + usedElementSize * UInt64(size) }

    /// Bytes of each part for a queue of `size` entries (with the event words).
    public static func descriptorTableBytes(size: UInt16) -> UInt64 { UInt64(descriptorSize) * UInt64(size) }
    public static func availableBytes(size: UInt16) -> UInt64 { 6 + 2 * UInt64(size) }
    public static func usedBytes(size: UInt16) -> UInt64 { 6 + usedElementSize * UInt64(size) }

    /// vring_need_event (2.7.10): true when the index moving from `old` to `new` passed
    /// `event`, i.e. the other side asked to hear about entry `event`, in 16-bit wrapping
    /// arithmetic.
    public static func needsEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
        new &- event &- 1 < new &- old
    }
}

/// One descriptor as read from guest memory (a copy: validated once, never re-read).
public struct SplitDescriptor: Hashable, Sendable {
    public var address: UInt64
    public var length: UInt32
    public var flags: UInt16
    public var next: UInt16

    public init(address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        self.address = address
        self.length = length
        self.flags = flags
        self.next = next
    }

    /// Decodes the 16 little-endian bytes of a virtq_desc.
    public init(bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count >= SplitRing.descriptorSize)
        address = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        length = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        flags = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        next = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
    }

    /// The 16 bytes a driver writes for this descriptor.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: SplitRing.descriptorSize)
        out.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: address.littleEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
            raw.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
        }
        return out
    }

    public var hasNext: Bool { flags & SplitRing.flagNext != 0 }
    public var isWritable: Bool { flags & SplitRing.flagWrite != 0 }
    public var isIndirect: Bool { flags & SplitRing.flagIndirect != 0 }
}
