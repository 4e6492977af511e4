/// Feature bits (virtio 1.2, 6 "Reserved Feature Bits"; bits 0-23 and 50-127 belong to the
/// device type). The transport offers the reserved bits it implements on top of the device's.
public struct VirtioFeatures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// VIRTIO_F_INDIRECT_DESC (28): descriptors may point at a table of descriptors (2.7.5.3).
    public static let indirectDescriptors = VirtioFeatures(rawValue: 1 << 28)
    /// VIRTIO_F_EVENT_IDX (29): used_event / avail_event suppress notifications (2.7.7, 2.7.10).
    public static let eventIndex = VirtioFeatures(rawValue: 1 << 29)
    /// VIRTIO_F_VERSION_1 (32): the virtio 1.x interface; a modern-only device requires it.
    public static let version1 = VirtioFeatures(rawValue: 1 << 32)
    /// VIRTIO_F_ACCESS_PLATFORM (33): the device reaches memory through the platform's DMA
    /// translation (an IOMMU), as every access here does, through the function's DMA port.
    public static let accessPlatform = VirtioFeatures(rawValue: 1 << 33)
    /// VIRTIO_F_RING_PACKED (34): packed virtqueues (2.8), offered on request (QEMU's packed=on).
    public static let ringPacked = VirtioFeatures(rawValue: 1 << 34)

    /// The reserved bits this transport offers with every device (ACCESS_PLATFORM is offered
    /// on request, as QEMU's iommu_platform=on: every access goes through the DMA port anyway).
    public static let transport: VirtioFeatures = [.indirectDescriptors, .eventIndex, .version1]

    /// Bits 0-23 and 50-63: the device type's own.
    public static let deviceSpecificMask = VirtioFeatures(rawValue: 0x00FF_FFFF | (~0 << 50))

    /// The 32-bit window `select` of the feature bits (common config's *_feature_select).
    public func word(_ select: UInt32) -> UInt32 {
        switch select {
        case 0: UInt32(truncatingIfNeeded: rawValue)
        case 1: UInt32(truncatingIfNeeded: rawValue >> 32)
        default: 0
        }
    }

    /// These features with window `select` replaced by `value` (bits past 63 are dropped).
    public func replacingWord(_ select: UInt32, with value: UInt32) -> VirtioFeatures {
        switch select {
        case 0: VirtioFeatures(rawValue: rawValue & ~0xFFFF_FFFF | UInt64(value))
        case 1: VirtioFeatures(rawValue: rawValue & 0xFFFF_FFFF | UInt64(value) << 32)
        default: self
        }
    }

    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// Device types (virtio 1.2, 5 "Device Types"); the PCI device ID is 0x1040 + type (4.1.2.1).
public struct VirtioDeviceType: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let network = VirtioDeviceType(rawValue: 1)
    public static let block = VirtioDeviceType(rawValue: 2)
    public static let console = VirtioDeviceType(rawValue: 3)
    public static let entropy = VirtioDeviceType(rawValue: 4)

    /// The modern (non-transitional) PCI Device ID.
    public var pciDeviceID: UInt16 { 0x1040 + rawValue }
}

/// Device status bits (virtio 1.2, 2.1).
public struct VirtioDeviceStatus: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let acknowledge = VirtioDeviceStatus(rawValue: 1)
    public static let driver = VirtioDeviceStatus(rawValue: 2)
    public static let driverOK = VirtioDeviceStatus(rawValue: 4)
    public static let featuresOK = VirtioDeviceStatus(rawValue: 8)
    /// The device hit an error it cannot recover from; the driver must reset it.
    public static let needsReset = VirtioDeviceStatus(rawValue: 0x40)
    public static let failed = VirtioDeviceStatus(rawValue: 0x80)

    public var description: String { "0x" + String(rawValue, radix: 16) }
}
