import AddressSpace

/// A function some of whose BAR space is host memory the guest may reach without exits (an
/// assigned device's mmap'd BAR areas). The machine lays each area over the BAR while the BAR
/// decodes, at the BAR's current address, and hypervisor listeners map it into the guest;
/// moving the BAR or turning decoding off takes the area away with the BAR.
public protocol DirectlyMappedBARs: PCIFunction {
    /// The host-memory areas of BAR `index` (0-5), at offsets inside the BAR. Areas must lie
    /// inside the BAR; one that does not is ignored.
    func directAreas(ofBAR index: Int) -> [DirectBARArea]
}

public struct DirectBARArea: Sendable {
    /// Offset inside the BAR (page-aligned for a hypervisor to map it).
    public var offset: UInt64
    public var handler: HostMemoryHandler

    public init(offset: UInt64, handler: HostMemoryHandler) {
        self.offset = offset
        self.handler = handler
    }
}
