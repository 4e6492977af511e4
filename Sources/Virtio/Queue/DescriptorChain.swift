import Glibc
import PCI

/// One guest buffer of a descriptor chain: bus address and length (address + length does not
/// wrap; whether it is RAM is decided when it is accessed, through the DMA port).
public struct GuestBuffer: Hashable, Sendable {
    public let address: UInt64
    public let length: UInt32

    public init(address: UInt64, length: UInt32) {
        self.address = address
        self.length = length
    }
}

/// A chain's buffers in one direction, in chain order. The first two are kept inline (a
/// received frame's one buffer, a request's header and data), so reading most chains allocates
/// nothing; more go to an array.
public struct GuestBuffers: RandomAccessCollection, Hashable, Sendable {
    private var first = GuestBuffer(address: 0, length: 0)
    private var second = GuestBuffer(address: 0, length: 0)
    private var more: [GuestBuffer] = []
    public private(set) var count = 0

    public init() {}

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(position: Int) -> GuestBuffer {
        precondition(position >= 0 && position < count, "buffer index out of range")
        switch position {
        case 0: return first
        case 1: return second
        default: return more[position - 2]
        }
    }

    mutating func append(_ buffer: GuestBuffer) {
        switch count {
        case 0: first = buffer
        case 1: second = buffer
        default: more.append(buffer)
        }
        count += 1
    }

    public static func == (a: GuestBuffers, b: GuestBuffers) -> Bool { a.elementsEqual(b) }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(count)
        for buffer in self { hasher.combine(buffer) }
    }
}

/// A chain taken with `VirtQueue.popLending`, whose buffers in one direction were lent to the
/// caller as iovecs: what the used ring needs back and the lengths a device checks. It holds
/// no reference, so a datapath keeps thousands without reference counting.
public struct LentChain: Hashable, Sendable {
    /// The id the used ring gives back: a split chain's head descriptor, a packed chain's buffer id.
    public let head: UInt16
    public let readableLength: Int
    public let writableLength: Int
    /// The iovecs the pop appended: the lent direction's buffers, split where the translation
    /// splits (none for empty buffers).
    public let vectorCount: Int
    /// Ring slots the chain took: 1 in a split ring; its descriptors in a packed ring, which
    /// the used descriptor skips (2.8.7).
    public let slots: UInt16
}

/// One entry of the used ring: the chain's id, the bytes the device wrote into it, and (for
/// a packed ring) the ring slots it took.
public struct UsedElement: Hashable, Sendable {
    let id: UInt16
    let written: UInt32
    let slots: UInt16

    init(id: UInt16, written: UInt32, slots: UInt16) {
        self.id = id
        self.written = written
        self.slots = slots
    }

    /// `chain` used with `written` bytes written into its writable buffers (no more than its
    /// writable length).
    public init(_ chain: LentChain, written: UInt32) {
        self.init(id: chain.head, written: written, slots: chain.slots)
    }
}

/// A descriptor chain the device took from the available ring: the device-readable buffers
/// (the driver's request), then the device-writable ones (room for the reply). Every access
/// goes through the function's DMA port; a failed one marks the device NEEDS_RESET, so a
/// device simply stops on a thrown error.
///
/// Give it back with `VirtQueue.complete(_:written:)` exactly once.
public struct DescriptorChain: Sendable {
    /// The head descriptor index, the id in the used ring.
    public let head: UInt16
    public let readable: GuestBuffers
    public let writable: GuestBuffers
    /// Sums of the buffer lengths (each fits 32 bits: checked when the chain was read).
    public let readableLength: Int
    public let writableLength: Int
    /// Ring slots it took (see `LentChain.slots`).
    let slots: UInt16
    let queue: VirtQueue

    public enum Direction: Sendable { case readable, writable }

    /// Copies readable bytes from `offset` (counted across the readable buffers) into `buffer`.
    /// Asking for more than the chain holds fails the device (check `readableLength` first
    /// where a short request is legal).
    public func read(at offset: Int = 0, into buffer: UnsafeMutableRawBufferPointer) throws(VirtQueueError) {
        try checkSpan(offset, buffer.count, total: readableLength, writing: false)
        try forEachPiece(of: readable, offset: offset, count: buffer.count) { (address, done, count) throws(DMAError) in
            try queue.port.read(at: address, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + count]))
        }
    }

    /// All readable bytes.
    public func readAll() throws(VirtQueueError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: readableLength)
        try bytes.withUnsafeMutableBytes { raw in
            Result { () throws(VirtQueueError) in try read(into: raw) }
        }.get()
        return bytes
    }

    /// Copies `bytes` into the writable buffers from `offset`. Needing more room than the
    /// driver gave (a reply into read-only or short buffers) is the driver's error.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int = 0) throws(VirtQueueError) {
        try checkSpan(offset, bytes.count, total: writableLength, writing: true)
        try forEachPiece(of: writable, offset: offset, count: bytes.count) { (address, done, count) throws(DMAError) in
            try queue.port.write(at: address, from: UnsafeRawBufferPointer(rebasing: bytes[done..<done + count]))
        }
    }

    public func write(_ bytes: [UInt8], at offset: Int = 0) throws(VirtQueueError) {
        try bytes.withUnsafeBytes { raw in
            Result { () throws(VirtQueueError) in try write(raw, at: offset) }
        }.get()
    }

    /// A device that needs more bytes than the driver gave (a request shorter than its header,
    /// a reply into read-only or short buffers) has met the driver's mistake, not its own.
    private func checkSpan(_ offset: Int, _ count: Int, total: Int, writing: Bool) throws(VirtQueueError) {
        precondition(offset >= 0 && count >= 0, "negative offset or count")
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= total else {
            let needed = overflow ? Int.max : end
            throw queue.fail(writing ? .writableSpaceExhausted(needed: needed, available: total)
                                     : .readableSpaceExhausted(needed: needed, available: total))
        }
    }

    /// Calls `body(address, bytesDoneSoFar, count)` for each piece of `[offset, offset+count)`
    /// across `buffers`; a DMA refusal fails the queue.
    private func forEachPiece(of buffers: GuestBuffers, offset: Int, count: Int,
                              _ body: (UInt64, Int, Int) throws(DMAError) -> Void) throws(VirtQueueError) {
        var skip = offset, done = 0
        for buffer in buffers where done < count {
            let length = Int(buffer.length)
            if skip >= length {
                skip -= length
                continue
            }
            let piece = min(length - skip, count - done)
            do {
                // address + length does not wrap (checked when the chain was read).
                try body(buffer.address + UInt64(skip), done, piece)
            } catch {
                throw queue.fail(.dma(error))
            }
            done += piece
            skip = 0
        }
    }
}
