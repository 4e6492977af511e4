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

    /// The x86 huge page: guest RAM is aligned to it (see init).
    public static let hugePageSize = 2 << 20

    public init(size: UInt64) throws(SystemError) {
        self.size = size
        let ram = try MemoryMapping.anonymous(count: Int(size), alignedTo: Self.hugePageSize)
        // Aligned so that a host that backs it with transparent huge pages can map it into the
        // guest in 2 MiB pages (KVM needs host and guest-physical addresses to agree modulo
        // 2 MiB). Where THP is "always" (Debian's kernel default, the rig's L1) that alone gives
        // huge pages: L1's KVM took 433 nested page faults in the rig's split-irqchip session
        // instead of 30,540. Hosts in "madvise" mode also need MADV_HUGEPAGE, as QEMU gives its
        // RAM; not given yet (Tests/Rig/README.md, "A frozen L1", says why).
        mapping = SharedMapping(ram)
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

    /// Where the mapping appears in the guest on q35: the first `lowMemoryTop` bytes from 0,
    /// the rest from 4 GiB, above the PCI hole. The one description of guest RAM: the address
    /// space, KVM's memory slots and `GuestMemory` are all built from it.
    func banks(lowMemoryTop: UInt64) -> [RAMBank] {
        let low = min(lowMemoryTop, size)
        var banks = [RAMBank(name: "ram-below-4g", guestBase: 0, offset: 0, size: low)]
        if size > low { banks.append(RAMBank(name: "ram-above-4g", guestBase: 1 << 32, offset: low, size: size - low)) }
        return banks.filter { $0.size > 0 }
    }

    /// The banks' bytes as bounds-checked guest memory.
    func guestMemory(_ banks: [RAMBank]) -> GuestMemory {
        do throws(GuestMemoryError) {
            var regions: [GuestMemoryRegion] = []
            for bank in banks {
                let bytes = UnsafeMutableRawBufferPointer(rebasing: mapping.bytes[Int(bank.offset)..<Int(bank.offset + bank.size)])
                regions.append(try GuestMemoryRegion(guestBase: GuestAddress(bank.guestBase), host: bytes, owner: mapping))
            }
            return try GuestMemory(regions: regions)
        } catch {
            preconditionFailure("guest RAM layout: \(error)")
        }
    }
}

/// `size` bytes of the RAM mapping from `offset`, at guest-physical `guestBase`.
public struct RAMBank: Sendable, Hashable {
    public let name: String
    public let guestBase: UInt64
    public let offset: UInt64
    public let size: UInt64
}
