import AddressSpace
import Foundation
import VMMBase

/// Guest RAM for the no-vCPU harness and monitors: a zero-filled host allocation answering
/// MMIO-style accesses. Pages are allocated lazily by the host (calloc of a large block
/// maps zero pages on demand).
public final class RAMHandler: IORegionHandler, @unchecked Sendable {
    // @unchecked: the buffer is plain memory; concurrent guest accesses race as they would on
    // real RAM, and each access stays inside the allocation (checked below).
    public let size: UInt64
    private let base: UnsafeMutableRawPointer

    public init(size: UInt64) {
        self.size = size
        guard let p = calloc(Int(size), 1) else { fatalError("cannot allocate \(size) bytes of guest RAM") }
        base = p
    }

    deinit { free(base) }

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        guard offset < size, UInt64(width.bytes) <= size - offset else { return width.allOnes }
        var v: UInt64 = 0
        for i in 0..<width.bytes { v |= UInt64(base.load(fromByteOffset: Int(offset) + i, as: UInt8.self)) << (8 * UInt64(i)) }
        return v
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard offset < size, UInt64(width.bytes) <= size - offset else { return }
        for i in 0..<width.bytes {
            base.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))), toByteOffset: Int(offset) + i, as: UInt8.self)
        }
    }
}
