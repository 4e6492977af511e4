// VFIO device assignment's kernel seam (issue 13): the calls QEMU's hw/vfio makes on a container,
// a group and a device, as three narrow protocols. `VFIOHost` (over /dev/vfio) implements them
// for real; `VFIOTwin` simulates a device for hosts without VFIO and records every call.
//
// With iommufd (Linux 6.6+, `IOMMUFDHost`) the same three roles are an IOAS (the address space
// DMA maps live in), a group checked through sysfs, and device cdevs bound to the iommufd and
// attached to the IOAS; `VFIOHost.automatic()` picks it when the kernel has it.
//
// The order the kernel wants: open the container, check the API version and type1v2, open the
// group, check it is viable, put it in the container, only then set the IOMMU type on the
// container, then get device fds from the group and map DMA.
import HostOS
import VMMBase

/// Opens containers and groups: the root of the seam, handed to the machine.
public protocol VFIOKernel: AnyObject, Sendable {
    /// Devices are cdevs bound to an iommufd (`IOMMUFDHost`), not group members in a type1
    /// container; what QEMU's `iommufd=` property asks for.
    var usesIOMMUFD: Bool { get }
    /// A new, empty container (/dev/vfio/vfio).
    func openContainer() throws(VFIOError) -> any VFIOContainerIO
    /// The IOMMU group of a host PCI function (/sys/bus/pci/devices/BDF/iommu_group).
    func iommuGroup(of device: PCIAddress) throws(VFIOError) -> Int
    /// The group's character device (/dev/vfio/N).
    func openGroup(_ number: Int) throws(VFIOError) -> any VFIOGroupIO
}

extension VFIOKernel {
    public var usesIOMMUFD: Bool { false }
}

/// A container: one IOMMU context, shared by the groups put in it; DMA maps live here.
public protocol VFIOContainerIO: AnyObject, Sendable {
    /// VFIO_GET_API_VERSION (VFIO_API_VERSION, 0, is the only one there is).
    func apiVersion() throws(VFIOError) -> Int32
    /// VFIO_CHECK_EXTENSION: whether the kernel offers an IOMMU type or feature.
    func checkExtension(_ e: VFIOExtension) throws(VFIOError) -> Bool
    /// VFIO_SET_IOMMU. Needs at least one group in the container first.
    func setIOMMU(_ type: VFIOExtension) throws(VFIOError)
    /// VFIO_IOMMU_GET_INFO with its capability chain (after setIOMMU).
    func iommuInfo() throws(VFIOError) -> VFIOIOMMUInfo
    /// VFIO_IOMMU_MAP_DMA: devices in the container may then reach `hostAddress..<+size` at `iova`.
    /// The memory must stay mapped until the range is unmapped.
    func mapDMA(_ mapping: VFIODMAMapping) throws(VFIOError)
    /// VFIO_IOMMU_UNMAP_DMA of whole earlier mappings inside `iova..<iova+size`; returns the
    /// bytes unmapped.
    @discardableResult
    func unmapDMA(iova: UInt64, size: UInt64) throws(VFIOError) -> UInt64
}

/// An IOMMU group: the smallest set of devices the IOMMU can isolate. All of them must be bound
/// to vfio-pci (or no driver) before the group is viable.
public protocol VFIOGroupIO: AnyObject, Sendable {
    var number: Int { get }
    /// VFIO_GROUP_GET_STATUS.
    func status() throws(VFIOError) -> VFIOGroupStatus
    /// VFIO_GROUP_SET_CONTAINER. The container must come from the same `VFIOKernel`.
    func setContainer(_ container: any VFIOContainerIO) throws(VFIOError)
    /// VFIO_GROUP_GET_DEVICE_FD for a device named as sysfs names it ("0000:01:00.0").
    func openDevice(_ name: String) throws(VFIOError) -> any VFIODeviceIO
}

/// A device's fd: its regions (BARs, ROM, config space) by offset, its interrupts, its resets.
public protocol VFIODeviceIO: AnyObject, Sendable {
    /// The name it was opened by ("0000:01:00.0").
    var name: String { get }
    /// VFIO_DEVICE_GET_INFO.
    func info() throws(VFIOError) -> VFIODeviceInfo
    /// VFIO_DEVICE_GET_REGION_INFO with its capability chain (sparse mmap areas, region type,
    /// MSI-X mappable).
    func regionInfo(_ index: UInt32) throws(VFIOError) -> VFIORegionInfo
    /// VFIO_DEVICE_GET_IRQ_INFO.
    func irqInfo(_ index: UInt32) throws(VFIOError) -> VFIOIRQInfo
    /// VFIO_DEVICE_SET_IRQS. The caller keeps the eventfds it names open while they are assigned.
    func setIRQs(_ request: VFIOIRQRequest) throws(VFIOError)
    /// VFIO_DEVICE_RESET (function-level: FLR, PM or a slot reset the kernel chooses).
    func reset() throws(VFIOError)
    /// VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: every function a bus reset would also reset.
    func hotResetInfo() throws(VFIOError) -> [VFIOHotResetDependency]
    /// VFIO_DEVICE_PCI_HOT_RESET, proving ownership of every affected group by its fd. For a
    /// device bound to iommufd (its dependencies' owners are `.iommufd`) `groups` is empty: the
    /// iommufd is the proof.
    func hotReset(groups: [any VFIOGroupIO]) throws(VFIOError)
    /// pread on the device fd at an absolute offset (a region's `offset` plus the offset inside
    /// it); returns the bytes read. Use the `read(region:at:count:)` helpers, which bound it.
    func read(atDeviceOffset offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VFIOError) -> Int
    /// pwrite on the device fd at an absolute offset; returns the bytes written.
    func write(atDeviceOffset offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(VFIOError) -> Int
    /// mmap of `size` bytes at an absolute, page-aligned device offset (a mappable area of a
    /// region): an owned mapping, unmapped when dropped.
    func map(atDeviceOffset offset: UInt64, size: Int, protection: MemoryMapping.Protection) throws(VFIOError) -> MemoryMapping
}
