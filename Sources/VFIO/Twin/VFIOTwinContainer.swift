import HostOS
import Synchronization

/// Every call made on a twin, in order, so tests assert on what a device model or the DMA
/// listener asked of the kernel.
public enum VFIOTwinCall: Hashable, Sendable {
    case setIOMMU(VFIOExtension)
    case mapDMA(VFIODMAMapping)
    case unmapDMA(iova: UInt64, size: UInt64)
    case setContainer(group: Int)
    case openDevice(String)
    case setIRQs(device: String, VFIOIRQRequest)
    case reset(device: String)
    case hotReset(device: String, groups: [Int])
    case read(device: String, region: UInt32, offset: UInt64, count: Int)
    case write(device: String, region: UInt32, offset: UInt64, bytes: [UInt8])
    case map(device: String, region: UInt32, offset: UInt64, size: Int)
}

/// A shared, ordered log of twin calls.
public final class VFIOTwinLog: Sendable {
    private let calls = Mutex<[VFIOTwinCall]>([])
    public init() {}
    func record(_ call: VFIOTwinCall) { calls.withLock { $0.append(call) } }
    public var all: [VFIOTwinCall] { calls.withLock { $0 } }
    public func clear() { calls.withLock { $0.removeAll() } }
}

/// A type1v2 container as the kernel keeps it: the IOMMU must be set after a group joined;
/// maps are page-aligned, inside the IOVA ranges, never overlapping, at most
/// `dmaEntryLimit`; an unmap removes whole mappings and refuses to split one (v2).
public final class VFIOTwinContainer: VFIOContainerIO {
    public struct Configuration: Sendable {
        public var pageSizes: UInt64 = 0x4000_1000 | 0x20_0000  // 4 KiB, 2 MiB, 1 GiB
        /// Intel's: everything below the interrupt window 0xfee00000-0xfeefffff, and above it to 2^48.
        public var iovaRanges = [VFIOIOVARange(start: 0, end: 0xfedf_ffff),
                                 VFIOIOVARange(start: 0xfef0_0000, end: (1 << 48) - 1)]
        /// vfio_iommu_type1's dma_entry_limit default.
        public var dmaEntryLimit: UInt32 = 65535
        /// Whether type1 accepts groups (false: the host has no interrupt remapping).
        public var interruptRemapping = true
        public init() {}
    }

    struct State {
        var groups: [Int] = []
        var iommu: VFIOExtension?
        var maps: [UInt64: VFIODMAMapping] = [:]
    }

    public let configuration: Configuration
    public let log: VFIOTwinLog
    let state = Mutex(State())

    public init(configuration: Configuration = Configuration(), log: VFIOTwinLog = VFIOTwinLog()) {
        self.configuration = configuration
        self.log = log
    }

    /// The DMA maps in force, by IOVA.
    public var mappings: [VFIODMAMapping] { state.withLock { $0.maps.values.sorted { $0.iova < $1.iova } } }

    private let subject = "twin container"

    private func refuse(_ errno: Errno, _ operation: String, _ reason: VFIOError.Reason = .kernel) -> VFIOError {
        VFIOError(reason, operation: operation, subject: subject, system: SystemError(errno, operation: "ioctl"))
    }

    public func apiVersion() throws(VFIOError) -> Int32 { 0 }

    public func checkExtension(_ e: VFIOExtension) throws(VFIOError) -> Bool { e == .type1 || e == .type1v2 }

    public func setIOMMU(_ type: VFIOExtension) throws(VFIOError) {
        log.record(.setIOMMU(type))
        try state.withLock { (s) throws(VFIOError) in
            guard type == .type1 || type == .type1v2 else { throw refuse(.invalidArgument, "VFIO_SET_IOMMU", .extensionMissing(type)) }
            guard let group = s.groups.last else { throw refuse(.invalidArgument, "VFIO_SET_IOMMU") }
            guard s.iommu == nil else { throw refuse(.busy, "VFIO_SET_IOMMU", .busy) }
            guard configuration.interruptRemapping else {
                throw refuse(.notPermitted, "VFIO_SET_IOMMU", .noInterruptRemapping(group: group))
            }
            s.iommu = type
        }
    }

    public func iommuInfo() throws(VFIOError) -> VFIOIOMMUInfo {
        try state.withLock { (s) throws(VFIOError) in
            guard s.iommu != nil else { throw refuse(.invalidArgument, "VFIO_IOMMU_GET_INFO") }
            return VFIOIOMMUInfo(pageSizes: configuration.pageSizes, iovaRanges: configuration.iovaRanges,
                                 dmaMappingsAvailable: configuration.dmaEntryLimit - UInt32(s.maps.count))
        }
    }

    public func mapDMA(_ m: VFIODMAMapping) throws(VFIOError) {
        log.record(.mapDMA(m))
        let page = VFIOIOMMUInfo(pageSizes: configuration.pageSizes).minimumPageSize
        try state.withLock { (s) throws(VFIOError) in
            guard s.iommu != nil else { throw refuse(.invalidArgument, "VFIO_IOMMU_MAP_DMA") }
            guard m.size > 0, m.iova % page == 0, m.size % page == 0, UInt64(m.hostAddress) % page == 0 else {
                throw refuse(.invalidArgument, "VFIO_IOMMU_MAP_DMA")
            }
            guard configuration.iovaRanges.contains(where: { $0.contains(iova: m.iova, size: m.size) }) else {
                throw refuse(.invalidArgument, "VFIO_IOMMU_MAP_DMA", .iovaOutOfRange(iova: m.iova, size: m.size))
            }
            let end = m.iova + m.size
            guard !s.maps.values.contains(where: { $0.iova < end && m.iova < $0.iova + $0.size }) else {
                throw refuse(.fileExists, "VFIO_IOMMU_MAP_DMA")
            }
            guard s.maps.count < Int(configuration.dmaEntryLimit) else {
                throw refuse(.noSpace, "VFIO_IOMMU_MAP_DMA", .dmaMappingLimit(needed: 1, available: 0))
            }
            s.maps[m.iova] = m
        }
    }

    public func unmapDMA(iova: UInt64, size: UInt64) throws(VFIOError) -> UInt64 {
        log.record(.unmapDMA(iova: iova, size: size))
        return try state.withLock { (s) throws(VFIOError) in
            let (end, overflow) = iova.addingReportingOverflow(size)
            guard s.iommu != nil, size > 0, !overflow else { throw refuse(.invalidArgument, "VFIO_IOMMU_UNMAP_DMA") }
            let touched = s.maps.values.filter { $0.iova < end && iova < $0.iova + $0.size }
            // v2: a range that cuts a mapping is refused rather than splitting it.
            guard touched.allSatisfy({ $0.iova >= iova && $0.iova + $0.size <= end }) else {
                throw refuse(.invalidArgument, "VFIO_IOMMU_UNMAP_DMA")
            }
            for m in touched { s.maps[m.iova] = nil }
            return touched.reduce(0) { $0 + $1.size }
        }
    }

    func join(group: Int) throws(VFIOError) {
        try state.withLock { (s) throws(VFIOError) in
            if s.iommu != nil && !configuration.interruptRemapping {
                throw refuse(.notPermitted, "VFIO_GROUP_SET_CONTAINER", .noInterruptRemapping(group: group))
            }
            s.groups.append(group)
        }
    }
}
