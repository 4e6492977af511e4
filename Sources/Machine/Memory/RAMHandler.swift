import AddressSpace
import GuestMemory
import HostOS
import VMMBase

/// Guest RAM: one anonymous host mapping (pages appear on first touch), which KVM maps into
/// the guest and which answers MMIO-style accesses for the no-vCPU harness and monitors.
public final class RAMHandler: IORegionHandler {
    public let size: UInt64
    /// The host mapping, for KVM memory slots and DMA.
    public let mapping: SharedMapping

    public init(size: UInt64) throws(SystemError) {
        self.size = size
        mapping = SharedMapping(try MemoryMapping.anonymous(count: Int(size)))
    }

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        // Plain loads: the guest races with us on real RAM too. The bounds check keeps
        // every access inside the mapping.
        guard offset < size, UInt64(width.bytes) <= size - offset else { return width.allOnes }
        var v: UInt64 = 0
        for i in 0..<width.bytes { v |= UInt64(mapping.bytes[Int(offset) + i]) << (8 * UInt64(i)) }
        return v
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard offset < size, UInt64(width.bytes) <= size - offset else { return }
        for i in 0..<width.bytes { mapping.bytes[Int(offset) + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    /// The same bytes as guest RAM at guest-physical addresses: the first `lowMemoryTop` bytes
    /// from 0, the rest from 4 GiB (q35's split around the PCI hole).
    func guestMemory(lowMemoryTop: UInt64) -> GuestMemory {
        let low = Int(min(lowMemoryTop, size))
        var parts: [(GuestAddress, UnsafeMutableRawBufferPointer)] = [(GuestAddress(0), UnsafeMutableRawBufferPointer(rebasing: mapping.bytes[..<low]))]
        if low < mapping.bytes.count {
            parts.append((GuestAddress(1 << 32), UnsafeMutableRawBufferPointer(rebasing: mapping.bytes[low...])))
        }
        do throws(GuestMemoryError) {
            var regions: [GuestMemoryRegion] = []
            for (base, bytes) in parts where bytes.count > 0 {
                regions.append(try GuestMemoryRegion(guestBase: base, host: bytes, owner: mapping))
            }
            return try GuestMemory(regions: regions)
        } catch {
            preconditionFailure("guest RAM layout: \(error)")
        }
    }

    /// Copies `bytes` in at `offset` (checked: nothing outside the mapping is touched).
    func copyIn(_ bytes: ArraySlice<UInt8>, at offset: UInt64) {
        guard offset <= size, UInt64(bytes.count) <= size - offset else { return }
        bytes.withUnsafeBytes { source in
            UnsafeMutableRawBufferPointer(rebasing: mapping.bytes[Int(offset)..<Int(offset) + source.count]).copyMemory(from: source)
        }
    }

    /// `count` bytes from `offset` (checked as `copyIn`).
    func copyOut(at offset: UInt64, count: Int) -> [UInt8] {
        guard offset <= size, UInt64(count) <= size - offset else { return [] }
        return Array(mapping.bytes[Int(offset)..<Int(offset) + count])
    }
}
