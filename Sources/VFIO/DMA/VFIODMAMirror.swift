import Synchronization

/// Keeps a container's DMA maps equal to a wanted set (guest RAM as the machine commits it):
/// each update unmaps what is no longer wanted and maps what is new, touching nothing that
/// stayed. The whole update is checked first against the IOMMU's IOVA ranges and the count of
/// DMA mappings it still accepts, so a too-large guest fails with the fix before any change.
public final class VFIODMAMirror: Sendable {
    public let container: any VFIOContainerIO
    private let iommu: VFIOIOMMUInfo
    private let current = Mutex<[UInt64: VFIODMAMapping]>([:])

    /// `container` must have its IOMMU set (its info is read now).
    public init(container: any VFIOContainerIO) throws(VFIOError) {
        self.container = container
        iommu = try container.iommuInfo()
    }

    /// The maps in force, by IOVA.
    public var mappings: [VFIODMAMapping] { current.withLock { $0.values.sorted { $0.iova < $1.iova } } }

    /// Makes the container's maps equal `wanted` (disjoint, page-aligned ranges).
    public func update(to wanted: [VFIODMAMapping]) throws(VFIOError) {
        try current.withLock { (maps) throws(VFIOError) in
            let wantedByIOVA = Dictionary(wanted.map { ($0.iova, $0) }, uniquingKeysWith: { a, _ in a })
            let removed = maps.values.filter { wantedByIOVA[$0.iova] != $0 }.sorted { $0.iova < $1.iova }
            let added = wanted.filter { maps[$0.iova] != $0 }.sorted { $0.iova < $1.iova }
            guard !removed.isEmpty || !added.isEmpty else { return }
            try check(added, inUse: maps.count, freed: removed.count)
            for m in removed {
                _ = try container.unmapDMA(iova: m.iova, size: m.size)
                maps[m.iova] = nil
            }
            for m in added {
                try container.mapDMA(m)
                maps[m.iova] = m
            }
        }
    }

    /// Unmaps everything (the last assigned device went away).
    public func clear() throws(VFIOError) { try update(to: []) }

    private func check(_ added: [VFIODMAMapping], inUse: Int, freed: Int) throws(VFIOError) {
        if !iommu.iovaRanges.isEmpty {
            for m in added where !iommu.iovaRanges.contains(where: { $0.contains(iova: m.iova, size: m.size) }) {
                throw VFIOError(.iovaOutOfRange(iova: m.iova, size: m.size), operation: "VFIO_IOMMU_MAP_DMA",
                                subject: "guest RAM")
            }
        }
        // The kernel's count was read when the mirror started; our own maps are what changed it since.
        if let available = iommu.dmaMappingsAvailable {
            let left = Int(available) - inUse + freed
            if added.count > left {
                throw VFIOError(.dmaMappingLimit(needed: added.count, available: UInt32(max(0, left))),
                                operation: "VFIO_IOMMU_MAP_DMA", subject: "guest RAM")
            }
        }
    }
}
