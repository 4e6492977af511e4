import PCI

/// Why a queue stopped: the driver broke a rule of virtio 1.2 section 2.7 (or its memory went
/// away). Every case ends in NEEDS_RESET; none is a VMM error.
public enum VirtQueueError: Error, Hashable, Sendable, CustomStringConvertible {
    /// avail->idx moved more than the queue size past the last entry the device took.
    case availableIndexJump(from: UInt16, to: UInt16, size: UInt16)
    /// A head or `next` index at or past the table size.
    case descriptorIndexOutOfRange(index: UInt16, tableSize: Int)
    /// A chain visited more descriptors than the queue size (a loop, or a chain too long;
    /// 2.7.5.3.1: a chain is never longer than the queue size).
    case chainTooLong(limit: Int)
    /// INDIRECT together with NEXT, an indirect table inside an indirect table, or a table
    /// whose length is 0 or not a multiple of 16 bytes (2.7.5.3.1).
    case badIndirectDescriptor(String)
    /// A device-readable descriptor after a device-writable one (2.7.4.2).
    case readableAfterWritable(index: UInt16)
    /// A buffer whose address + length passes 2^64, or whose readable or writable total
    /// passes 2^32 - 1 (a used length is 32 bits).
    case bufferOverflow(address: UInt64, length: UInt32)
    /// The device needed more writable bytes than the chain offers (the driver gave a
    /// read-only or too small buffer for a reply).
    case writableSpaceExhausted(needed: Int, available: Int)
    /// The device needed more readable bytes than the chain offers (a truncated request).
    case readableSpaceExhausted(needed: Int, available: Int)
    /// A bus-master access failed: Bus Master Enable off, outside RAM, or refused by the IOMMU.
    case dma(DMAError)
    /// The device already needs a reset; nothing is served until the driver resets it.
    case deviceNeedsReset

    public var description: String {
        switch self {
        case .availableIndexJump(let from, let to, let size):
            "avail index moved from \(from) to \(to), more than the queue size \(size)"
        case .descriptorIndexOutOfRange(let index, let size): "descriptor index \(index) outside a table of \(size)"
        case .chainTooLong(let limit): "descriptor chain longer than \(limit) (a loop?)"
        case .badIndirectDescriptor(let why): "bad indirect descriptor: \(why)"
        case .readableAfterWritable(let index): "device-readable descriptor \(index) after a device-writable one"
        case .bufferOverflow(let address, let length):
            "buffer at 0x\(String(address, radix: 16)) of \(length) bytes passes 2^64 or the 32-bit chain total"
        case .writableSpaceExhausted(let needed, let available):
            "device needs \(needed) writable bytes, the chain offers \(available)"
        case .readableSpaceExhausted(let needed, let available):
            "device needs \(needed) readable bytes, the chain offers \(available)"
        case .dma(let error): "DMA refused: \(error)"
        case .deviceNeedsReset: "the device needs a reset"
        }
    }
}
