// The values the VFIO ioctls exchange, decoded: no raw structs cross the seam.
import VMMBase

/// An IOMMU type or feature for VFIO_CHECK_EXTENSION / VFIO_SET_IOMMU (linux/vfio.h).
public struct VFIOExtension: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let type1 = VFIOExtension(rawValue: 1)
    /// Type1 v2: unmaps only whole mappings; what QEMU prefers and what we require.
    public static let type1v2 = VFIOExtension(rawValue: 3)
    public static let dmaCacheCoherent = VFIOExtension(rawValue: 4)
    public static let noIOMMU = VFIOExtension(rawValue: 8)
    public static let unmapAll = VFIOExtension(rawValue: 9)
    public var description: String {
        switch self {
        case .type1: "VFIO_TYPE1_IOMMU"
        case .type1v2: "VFIO_TYPE1v2_IOMMU"
        case .dmaCacheCoherent: "VFIO_DMA_CC_IOMMU"
        case .noIOMMU: "VFIO_NOIOMMU_IOMMU"
        case .unmapAll: "VFIO_UNMAP_ALL"
        default: "VFIO extension \(rawValue)"
        }
    }
}

/// VFIO_GROUP_GET_STATUS.
public struct VFIOGroupStatus: Hashable, Sendable {
    /// Every device in the group is bound to vfio-pci (or to no driver).
    public var viable: Bool
    public var containerSet: Bool
    public init(viable: Bool, containerSet: Bool) {
        self.viable = viable
        self.containerSet = containerSet
    }
}

/// An inclusive IOVA range the IOMMU can translate (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE).
public struct VFIOIOVARange: Hashable, Sendable {
    public var start: UInt64
    public var end: UInt64
    public init(start: UInt64, end: UInt64) {
        self.start = start
        self.end = end
    }
    /// Whether `iova..<iova+size` lies inside (overflow-safe).
    public func contains(iova: UInt64, size: UInt64) -> Bool {
        guard size > 0, iova >= start else { return false }
        let (last, overflow) = iova.addingReportingOverflow(size - 1)
        return !overflow && last <= end
    }
}

/// VFIO_IOMMU_GET_INFO with its capability chain.
public struct VFIOIOMMUInfo: Hashable, Sendable {
    /// Bitmap of supported IOMMU page sizes (bit n = 2^n bytes).
    public var pageSizes: UInt64
    /// IOVA ranges; empty when the kernel gave no IOVA-range capability (any IOVA then).
    public var iovaRanges: [VFIOIOVARange]
    /// How many more DMA mappings the container accepts (VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL);
    /// nil when the kernel does not say (older than 5.10).
    public var dmaMappingsAvailable: UInt32?
    public init(pageSizes: UInt64, iovaRanges: [VFIOIOVARange] = [], dmaMappingsAvailable: UInt32? = nil) {
        self.pageSizes = pageSizes
        self.iovaRanges = iovaRanges
        self.dmaMappingsAvailable = dmaMappingsAvailable
    }
    /// The smallest page size the IOMMU maps (4 KiB when the bitmap is empty).
    public var minimumPageSize: UInt64 { pageSizes == 0 ? 4096 : UInt64(1) << UInt64(pageSizes.trailingZeroBitCount) }
}

/// One VFIO_IOMMU_MAP_DMA.
public struct VFIODMAMapping: Hashable, Sendable {
    public var iova: UInt64
    public var size: UInt64
    /// The process address of the first byte (a guest RAM bank's host mapping).
    public var hostAddress: UInt
    /// Device may read / write (VFIO_DMA_MAP_FLAG_READ / _WRITE).
    public var readable: Bool
    public var writable: Bool
    public init(iova: UInt64, size: UInt64, hostAddress: UInt, readable: Bool = true, writable: Bool = true) {
        self.iova = iova
        self.size = size
        self.hostAddress = hostAddress
        self.readable = readable
        self.writable = writable
    }
}

/// VFIO_DEVICE_GET_INFO.
public struct VFIODeviceInfo: Hashable, Sendable {
    /// VFIO_DEVICE_FLAGS_RESET: VFIO_DEVICE_RESET works.
    public var supportsReset: Bool
    /// VFIO_DEVICE_FLAGS_PCI: a vfio-pci device, with the PCI region and IRQ indices below.
    public var isPCI: Bool
    public var regionCount: UInt32
    public var irqCount: UInt32
    public init(supportsReset: Bool, isPCI: Bool, regionCount: UInt32, irqCount: UInt32) {
        self.supportsReset = supportsReset
        self.isPCI = isPCI
        self.regionCount = regionCount
        self.irqCount = irqCount
    }
}

/// vfio-pci's fixed region indices (VFIO_PCI_*_REGION_INDEX).
public enum VFIOPCIRegion {
    public static func bar(_ n: Int) -> UInt32 { precondition((0..<6).contains(n)); return UInt32(n) }
    public static let rom: UInt32 = 6
    public static let config: UInt32 = 7
    public static let vga: UInt32 = 8
    /// Regions after VGA are device-specific and found by their type capability.
    public static let firstDeviceSpecific: UInt32 = 9
}

/// vfio-pci's IRQ indices (VFIO_PCI_*_IRQ_INDEX).
public enum VFIOPCIIRQ {
    public static let intx: UInt32 = 0
    public static let msi: UInt32 = 1
    public static let msix: UInt32 = 2
    public static let error: UInt32 = 3
    public static let request: UInt32 = 4
}

/// A part of a region that can be mmap'd (VFIO_REGION_INFO_CAP_SPARSE_MMAP), offsets inside the region.
public struct VFIOMappableArea: Hashable, Sendable {
    public var offset: UInt64
    public var size: UInt64
    public init(offset: UInt64, size: UInt64) {
        self.offset = offset
        self.size = size
    }
}

/// VFIO_REGION_INFO_CAP_TYPE: what a device-specific region is.
public struct VFIORegionType: Hashable, Sendable {
    public var type: UInt32
    public var subtype: UInt32
    public init(type: UInt32, subtype: UInt32) {
        self.type = type
        self.subtype = subtype
    }
}

/// VFIO_DEVICE_GET_REGION_INFO with its capability chain.
public struct VFIORegionInfo: Hashable, Sendable {
    public var index: UInt32
    public var readable: Bool
    public var writable: Bool
    /// VFIO_REGION_INFO_FLAG_MMAP.
    public var mappable: Bool
    public var size: UInt64
    /// Where the region starts in the device fd (pread/pwrite/mmap offsets are absolute).
    public var offset: UInt64
    /// The sparse-mmap capability: only these areas may be mapped (MSI-X table pages left out);
    /// nil when the capability is absent (then the whole region, when `mappable`).
    public var sparseAreas: [VFIOMappableArea]?
    public var regionType: VFIORegionType?
    /// VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: the MSI-X table may be mapped (the kernel does not
    /// need to trap it).
    public var msixMappable: Bool
    public init(index: UInt32, readable: Bool, writable: Bool, mappable: Bool, size: UInt64, offset: UInt64,
                sparseAreas: [VFIOMappableArea]? = nil, regionType: VFIORegionType? = nil, msixMappable: Bool = false) {
        self.index = index
        self.readable = readable
        self.writable = writable
        self.mappable = mappable
        self.size = size
        self.offset = offset
        self.sparseAreas = sparseAreas
        self.regionType = regionType
        self.msixMappable = msixMappable
    }

    /// The areas a VMM may mmap, offsets inside the region: none unless `mappable`; the sparse
    /// areas when given; else the whole region.
    public var mappableAreas: [VFIOMappableArea] {
        guard mappable, size > 0 else { return [] }
        return sparseAreas ?? [VFIOMappableArea(offset: 0, size: size)]
    }
}

/// VFIO_DEVICE_GET_IRQ_INFO.
public struct VFIOIRQInfo: Hashable, Sendable {
    public var index: UInt32
    /// How many vectors (INTx: 1 when the device has a pin, else 0).
    public var count: UInt32
    public var eventfd: Bool
    /// Mask/unmask actions work (INTx only, for vfio-pci).
    public var maskable: Bool
    /// The kernel masks the line when it fires (INTx): the VMM unmasks it on the guest's EOI.
    public var automasked: Bool
    /// Vectors cannot be added while enabled (MSI): changing the count means disable + enable.
    public var noResize: Bool
    public init(index: UInt32, count: UInt32, eventfd: Bool, maskable: Bool, automasked: Bool, noResize: Bool) {
        self.index = index
        self.count = count
        self.eventfd = eventfd
        self.maskable = maskable
        self.automasked = automasked
        self.noResize = noResize
    }
}

/// One VFIO_DEVICE_SET_IRQS, as the operations QEMU uses.
public struct VFIOIRQRequest: Hashable, Sendable {
    public enum Operation: Hashable, Sendable {
        /// DATA_EVENTFD | ACTION_TRIGGER: vector start+i signals `eventfds[i]`; nil (-1)
        /// detaches that vector's eventfd. Enables the index when it was off.
        case trigger(eventfds: [Int32?])
        /// DATA_NONE | ACTION_TRIGGER with count 0: disables the whole index.
        case disable
        /// DATA_NONE | ACTION_MASK over start..<start+count.
        case mask(count: UInt32)
        /// DATA_NONE | ACTION_UNMASK over start..<start+count.
        case unmask(count: UInt32)
        /// DATA_EVENTFD | ACTION_UNMASK: a write to this eventfd unmasks (INTx resample by KVM's
        /// irqfd resampler); nil detaches it.
        case unmaskOnEventfd(Int32?)
    }
    public var index: UInt32
    public var start: UInt32
    public var operation: Operation
    public init(index: UInt32, start: UInt32 = 0, _ operation: Operation) {
        self.index = index
        self.start = start
        self.operation = operation
    }

    /// The vector count the request covers (the kernel's `count`).
    public var count: UInt32 {
        switch operation {
        case .trigger(let fds): UInt32(fds.count)
        case .disable: 0
        case .mask(let n), .unmask(let n): n
        case .unmaskOnEventfd: 1
        }
    }
}

/// One function a bus reset of the device would also reset (struct vfio_pci_dependent_device).
public struct VFIOHotResetDependency: Hashable, Sendable {
    /// How the caller proves it owns the function: by holding its group's fd (a device opened
    /// through a group), or through the iommufd the calling device is bound to (a cdev), where
    /// the kernel has already decided.
    public enum Owner: Hashable, Sendable {
        case group(Int)
        case iommufd(owned: Bool)
    }
    public var owner: Owner
    public var address: PCIAddress
    public init(owner: Owner, address: PCIAddress) {
        self.owner = owner
        self.address = address
    }
    public init(groupID: Int, address: PCIAddress) { self.init(owner: .group(groupID), address: address) }
    /// The function's IOMMU group, when the kernel named it (devices opened through a group).
    public var groupID: Int? {
        if case .group(let id) = owner { return id }
        return nil
    }
}
