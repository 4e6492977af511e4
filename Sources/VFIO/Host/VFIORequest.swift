import CLinux

/// VFIO ioctl request codes (macros in <linux/vfio.h>, exported by the CLinux shim).
enum VFIORequest {
    static let getAPIVersion = sy_vfio_get_api_version()
    static let checkExtension = sy_vfio_check_extension()
    static let setIOMMU = sy_vfio_set_iommu()
    static let groupGetStatus = sy_vfio_group_get_status()
    static let groupSetContainer = sy_vfio_group_set_container()
    static let groupUnsetContainer = sy_vfio_group_unset_container()
    static let groupGetDeviceFD = sy_vfio_group_get_device_fd()
    static let deviceGetInfo = sy_vfio_device_get_info()
    static let deviceGetRegionInfo = sy_vfio_device_get_region_info()
    static let deviceGetIRQInfo = sy_vfio_device_get_irq_info()
    static let deviceSetIRQs = sy_vfio_device_set_irqs()
    static let deviceReset = sy_vfio_device_reset()
    static let deviceGetPCIHotResetInfo = sy_vfio_device_get_pci_hot_reset_info()
    static let devicePCIHotReset = sy_vfio_device_pci_hot_reset()
    static let iommuGetInfo = sy_vfio_iommu_get_info()
    static let iommuMapDMA = sy_vfio_iommu_map_dma()
    static let iommuUnmapDMA = sy_vfio_iommu_unmap_dma()
    // The device cdev (/dev/vfio/devices/vfioN) and iommufd (/dev/iommu).
    static let deviceBindIOMMUFD = sy_vfio_device_bind_iommufd()
    static let deviceAttachIOMMUFDPageTable = sy_vfio_device_attach_iommufd_pt()
    static let ioasAlloc = sy_iommu_ioas_alloc()
    static let ioasIOVARanges = sy_iommu_ioas_iova_ranges()
    static let ioasMap = sy_iommu_ioas_map()
    static let ioasUnmap = sy_iommu_ioas_unmap()
}
