import VMMBase

/// Host memory shown at guest addresses: an mmap'd area of an assigned device's BAR, which a
/// hypervisor maps into the guest (a KVM memory slot) so accesses need no exit. Accesses that
/// do come through the VMM (no vCPU, qtest, a slot that could not be made) are single loads and
/// stores of the access's width, as a device register needs, bounded to the area.
///
/// Unchecked Sendable: the pointer and owner never change; the bytes are shared memory that the
/// guest, the device and the VMM access without Swift-level synchronization, as RAM is.
public final class HostMemoryHandler: IORegionHandler, @unchecked Sendable {
    /// The area's bytes; valid while `owner` lives.
    public let bytes: UnsafeMutableRawBufferPointer
    /// What keeps the mapping alive (a HostOS SharedMapping); hypervisor listeners map through it.
    public let owner: AnyObject & Sendable

    public init(bytes: UnsafeMutableRawBufferPointer, owner: AnyObject & Sendable) {
        self.bytes = bytes
        self.owner = owner
    }

    public var size: UInt64 { UInt64(bytes.count) }
    /// The process address of the first byte.
    public var hostAddress: UInt { UInt(bitPattern: bytes.baseAddress) }

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        guard let base = bytes.baseAddress, offset < size, UInt64(width.bytes) <= size - offset else { return width.allOnes }
        let p = base + Int(offset)
        switch width {
        case .byte: return UInt64(p.load(as: UInt8.self))
        case .word: return UInt64(p.loadUnaligned(as: UInt16.self))
        case .dword: return UInt64(p.loadUnaligned(as: UInt32.self))
        case .qword: return p.loadUnaligned(as: UInt64.self)
        }
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard let base = bytes.baseAddress, offset < size, UInt64(width.bytes) <= size - offset else { return }
        let p = base + Int(offset)
        switch width {
        case .byte: p.storeBytes(of: UInt8(truncatingIfNeeded: value), as: UInt8.self)
        case .word: p.storeBytes(of: UInt16(truncatingIfNeeded: value), as: UInt16.self)
        case .dword: p.storeBytes(of: UInt32(truncatingIfNeeded: value), as: UInt32.self)
        case .qword: p.storeBytes(of: value, as: UInt64.self)
        }
    }
}
