/// Where things live in a q35 guest's physical address space and port space. Defaults match
/// what QEMU and its firmware use, so guests and tools find familiar addresses.
public struct Q35Layout: Sendable, Hashable {
    /// Where firmware puts ECAM (PCIEXBAR), and its size: 256 MiB covers buses 0-255.
    public var ecamBase: UInt64 = 0xB000_0000
    public var ecamSize: UInt64 = 256 << 20
    /// The 32-bit PCI memory window: above ECAM, below the IOAPIC.
    public var pciMemory32Base: UInt64 = 0xC000_0000
    public var pciMemory32Last: UInt64 = 0xFEBF_FFFF
    /// The 64-bit PCI memory window (prefetchable 64-bit BARs go here).
    public var pciMemory64Base: UInt64 = 0x80_0000_0000
    public var pciMemory64Last: UInt64 = 0xFF_FFFF_FFFF
    /// PCI I/O ports: above the legacy ISA range.
    public var pciIOBase: UInt64 = 0x1000
    public var pciIOLast: UInt64 = 0xFFFF
    /// Guest RAM below 4 GiB ends here at most (TOLUD); the rest is placed above 4 GiB.
    public var lowMemoryLimit: UInt64 = 0x8000_0000

    public init() {}

    /// The most guest RAM this layout holds: below 4 GiB up to `lowMemoryLimit`, the rest from
    /// 4 GiB up to the 64-bit PCI window (RAM must not overlap where 64-bit BARs go).
    public var maximumRAM: UInt64 {
        lowMemoryLimit + (pciMemory64Base > 1 << 32 ? pciMemory64Base - (1 << 32) : 0)
    }

    public static let standard = Q35Layout()
}
