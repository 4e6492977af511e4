import HostOS
import VMMBase

// The VFIO ioctl arguments as little-endian byte buffers, laid out as <linux/vfio.h> declares
// them (every struct starts with argsz and flags; several end in a flexible array, which Swift
// does not import). Offsets are the header's; the capability chains are parsed with bounds checks.

/// ", IOVA 0x... size 0x...": a DMA map's range, for an error's subject.
func iovaRangeText(_ iova: UInt64, _ size: UInt64) -> String {
    ", IOVA 0x\(String(iova, radix: 16)) size 0x\(String(size, radix: 16))"
}

/// A byte buffer handed to one ioctl.
struct IoctlBuffer {
    var bytes: [UInt8]

    init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }

    subscript(u32 offset: Int) -> UInt32 {
        get { UInt32(LittleEndian.load(bytes, at: offset, count: 4)) }
        set { LittleEndian.store(UInt64(newValue), into: &bytes, at: offset, count: 4) }
    }
    subscript(u64 offset: Int) -> UInt64 {
        get { LittleEndian.load(bytes, at: offset, count: 8) }
        set { LittleEndian.store(newValue, into: &bytes, at: offset, count: 8) }
    }
    subscript(u16 offset: Int) -> UInt16 {
        get { UInt16(LittleEndian.load(bytes, at: offset, count: 2)) }
        set { LittleEndian.store(UInt64(newValue), into: &bytes, at: offset, count: 2) }
    }
    subscript(u8 offset: Int) -> UInt8 { bytes[offset] }

    /// A buffer of `size` bytes whose argsz (offset 0) says so.
    static func withArgsz(_ size: Int) -> IoctlBuffer {
        var b = IoctlBuffer(size: size)
        b[u32: 0] = UInt32(size)
        return b
    }

    /// ioctl(fd, request, bytes).
    @discardableResult
    mutating func call(_ fd: borrowing FileDescriptor, _ request: UInt) throws(SystemError) -> Int32 {
        try bytes.withUnsafeMutableBytes { raw in
            Result { () throws(SystemError) in try ioctl(fd, request, raw.baseAddress) }
        }.get()
    }
}

/// One entry of a capability chain (struct vfio_info_cap_header: u16 id, u16 version, u32 next;
/// `next` and the first offset count from the start of the info struct).
struct VFIOCapability {
    var id: UInt16
    var version: UInt16
    /// Where the capability's header starts in the buffer.
    var offset: Int
}

extension IoctlBuffer {
    /// The chain from `first` (0: none). A chain that leaves the buffer, loops or runs
    /// backwards ends there: the kernel's data is trusted no further than its own bounds.
    func capabilities(first: UInt32) -> [VFIOCapability] {
        var result: [VFIOCapability] = []
        var offset = Int(first)
        while offset >= 8, offset + 8 <= bytes.count, result.count < 64 {
            result.append(VFIOCapability(id: self[u16: offset], version: self[u16: offset + 2], offset: offset))
            let next = Int(self[u32: offset + 4])
            guard next > offset else { break }
            offset = next
        }
        return result
    }

    /// Whether `count` bytes from `offset` lie inside the buffer.
    func has(_ offset: Int, _ count: Int) -> Bool { offset >= 0 && count >= 0 && offset <= bytes.count - count }
}

enum VFIOLayout {
    // struct vfio_group_status: argsz, flags
    static let groupStatusSize = 8
    static let groupFlagViable: UInt32 = 1 << 0
    static let groupFlagContainerSet: UInt32 = 1 << 1

    // struct vfio_device_info: argsz, flags, num_regions, num_irqs, cap_offset
    static let deviceInfoSize = 20
    static let deviceFlagReset: UInt32 = 1 << 0
    static let deviceFlagPCI: UInt32 = 1 << 1

    // struct vfio_region_info: argsz, flags, index, cap_offset, size (u64), offset (u64)
    static let regionInfoSize = 32
    static let regionFlagRead: UInt32 = 1 << 0
    static let regionFlagWrite: UInt32 = 1 << 1
    static let regionFlagMmap: UInt32 = 1 << 2
    static let regionFlagCaps: UInt32 = 1 << 3
    static let regionCapSparseMmap: UInt16 = 1
    static let regionCapType: UInt16 = 2
    static let regionCapMSIXMappable: UInt16 = 3

    // struct vfio_irq_info: argsz, flags, index, count
    static let irqInfoSize = 16
    static let irqFlagEventfd: UInt32 = 1 << 0
    static let irqFlagMaskable: UInt32 = 1 << 1
    static let irqFlagAutomasked: UInt32 = 1 << 2
    static let irqFlagNoResize: UInt32 = 1 << 3

    // struct vfio_irq_set: argsz, flags, index, start, count, data[]
    static let irqSetHeaderSize = 20
    static let irqSetDataNone: UInt32 = 1 << 0
    static let irqSetDataBool: UInt32 = 1 << 1
    static let irqSetDataEventfd: UInt32 = 1 << 2
    static let irqSetActionMask: UInt32 = 1 << 3
    static let irqSetActionUnmask: UInt32 = 1 << 4
    static let irqSetActionTrigger: UInt32 = 1 << 5

    // struct vfio_pci_hot_reset_info: argsz, flags, count, devices[] of
    // struct vfio_pci_dependent_device: group_id or devid (u32), segment (u16), bus (u8), devfn (u8)
    static let hotResetInfoHeaderSize = 12
    static let dependentDeviceSize = 8
    // Set when the calling device is a cdev bound to iommufd: entries carry devids, where 0 means
    // "owned through a group this iommufd holds" and 0xFFFFFFFF "not owned".
    static let hotResetFlagDeviceID: UInt32 = 1 << 0
    static let hotResetDeviceNotOwned: UInt32 = 0xFFFF_FFFF
    // struct vfio_pci_hot_reset: argsz, flags, count, group_fds[] (s32)
    static let hotResetHeaderSize = 12

    // struct vfio_iommu_type1_info: argsz, flags, iova_pgsizes (u64), cap_offset, pad
    static let iommuInfoSize = 24
    static let iommuFlagPageSizes: UInt32 = 1 << 0
    static let iommuFlagCaps: UInt32 = 1 << 1
    static let iommuCapIOVARange: UInt16 = 1
    static let iommuCapDMAAvailable: UInt16 = 3

    // struct vfio_iommu_type1_dma_map: argsz, flags, vaddr, iova, size (u64s)
    static let dmaMapSize = 32
    static let dmaFlagRead: UInt32 = 1 << 0
    static let dmaFlagWrite: UInt32 = 1 << 1
    // struct vfio_iommu_type1_dma_unmap: argsz, flags, iova, size, data[]
    static let dmaUnmapSize = 24

    // struct vfio_device_bind_iommufd: argsz, flags, iommufd (s32), out_devid
    static let bindIOMMUFDSize = 16
    // struct vfio_device_attach_iommufd_pt: argsz, flags, pt_id
    static let attachPageTableSize = 12
    // struct iommu_ioas_alloc: size, flags, out_ioas_id
    static let ioasAllocSize = 12
    // struct iommu_ioas_iova_ranges: size, ioas_id, num_iovas, reserved, allowed_iovas (pointer to
    // struct iommu_iova_range { u64 start, last }), out_iova_alignment (u64)
    static let ioasIOVARangesSize = 32
    // struct iommu_ioas_map: size, flags, ioas_id, reserved, user_va, length, iova (u64s)
    static let ioasMapSize = 40
    static let ioasMapFixedIOVA: UInt32 = 1 << 0
    static let ioasMapWriteable: UInt32 = 1 << 1
    static let ioasMapReadable: UInt32 = 1 << 2
    // struct iommu_ioas_unmap: size, ioas_id, iova, length (in: asked, out: unmapped)
    static let ioasUnmapSize = 24
}
