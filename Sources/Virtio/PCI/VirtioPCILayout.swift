import PCI

/// The modern virtio-pci interface (virtio 1.2, 4.1): vendor-specific capabilities that point
/// into one BAR, laid out where QEMU puts them (hw/virtio/virtio-pci.c: each region 4 KiB in a
/// 64-bit prefetchable BAR 4; the MSI-X table and PBA in the 32-bit BAR 1).
public enum VirtioPCI {
    public static let vendorID: UInt16 = 0x1AF4
    /// Subsystem: the Red Hat/QEMU vendor and QEMU's 0x1100 for modern devices.
    public static let subsystemVendorID: UInt16 = 0x1AF4
    public static let subsystemID: UInt16 = 0x1100
    /// Revision 1 marks a non-transitional device (4.1.2.1).
    public static let revision: UInt8 = 1

    /// virtio_pci_cap.cfg_type (4.1.4).
    public enum CapabilityType: UInt8, Sendable, CaseIterable {
        case commonConfiguration = 1
        case notification = 2
        case isr = 3
        case deviceConfiguration = 4
        case pciConfigurationAccess = 5
    }

    /// Offsets inside struct virtio_pci_cap (after the standard ID/next bytes).
    public enum CapabilityField {
        public static let length = 2
        public static let type = 3
        public static let bar = 4
        public static let id = 5
        public static let offset = 8
        public static let regionLength = 12
        /// virtio_pci_notify_cap.notify_off_multiplier.
        public static let notifyOffsetMultiplier = 16
        /// virtio_pci_cfg_cap.pci_cfg_data.
        public static let pciConfigurationData = 16
    }
    /// cap_len of the plain, notify and PCI-configuration-access capabilities.
    public static let capabilityLength = 16
    public static let extendedCapabilityLength = 20

    /// The BAR holding the virtio regions and its size (four 4 KiB regions).
    public static let regionsBAR = 4
    public static let regionsBARSize: UInt64 = 0x4000
    public static let regionSize: UInt64 = 0x1000
    public static let commonOffset: UInt64 = 0x0000
    public static let isrOffset: UInt64 = 0x1000
    public static let deviceOffset: UInt64 = 0x2000
    public static let notifyOffset: UInt64 = 0x3000
    /// Each queue's notify address is notify base + queue_notify_off * multiplier, and
    /// queue_notify_off is the queue index (QEMU without page-per-vq).
    public static let notifyOffsetMultiplier: UInt32 = 4

    /// The MSI-X BAR: table at 0, PBA at 0x800, 4 KiB.
    public static let msixBAR = 1
    public static let msixBARSize: UInt64 = 0x1000
    public static func msixLayout(vectors: Int) -> MSIXLayout {
        MSIXLayout(vectors: vectors, tableBAR: msixBAR, tableOffset: 0, pbaBAR: msixBAR, pbaOffset: 0x800)
    }

    /// No MSI-X vector (common config's msix_config / queue_msix_vector).
    public static let noVector: UInt16 = 0xFFFF
    /// The most queues a device may have (QEMU's VIRTIO_QUEUE_MAX; queue_select above it is ignored).
    public static let maximumQueues = 1024

    /// ISR status bits (4.1.4.5): a queue interrupt, a configuration change.
    public static let isrQueue: UInt8 = 1
    public static let isrConfiguration: UInt8 = 2
}

/// struct virtio_pci_common_cfg (4.1.4.3): offsets of the fields.
public enum VirtioCommonRegister {
    public static let deviceFeatureSelect: UInt64 = 0x00
    public static let deviceFeature: UInt64 = 0x04
    public static let driverFeatureSelect: UInt64 = 0x08
    public static let driverFeature: UInt64 = 0x0C
    public static let configMSIXVector: UInt64 = 0x10
    public static let numberOfQueues: UInt64 = 0x12
    public static let deviceStatus: UInt64 = 0x14
    public static let configGeneration: UInt64 = 0x15
    public static let queueSelect: UInt64 = 0x16
    public static let queueSize: UInt64 = 0x18
    public static let queueMSIXVector: UInt64 = 0x1A
    public static let queueEnable: UInt64 = 0x1C
    public static let queueNotifyOffset: UInt64 = 0x1E
    public static let queueDescriptorLow: UInt64 = 0x20
    public static let queueDescriptorHigh: UInt64 = 0x24
    public static let queueDriverLow: UInt64 = 0x28
    public static let queueDriverHigh: UInt64 = 0x2C
    public static let queueDeviceLow: UInt64 = 0x30
    public static let queueDeviceHigh: UInt64 = 0x34
}

extension VirtioDeviceType {
    /// The PCI class code QEMU gives the type (include/hw/pci/pci_ids.h users in hw/virtio).
    public var pciClassCode: UInt32 {
        switch self {
        case .network: 0x02_00_00
        case .block: 0x01_00_00
        case .console: 0x07_80_00
        default: 0x00_FF_00
        }
    }
}
