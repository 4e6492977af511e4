import HostOS
import VMMBase

/// A PCI function on the host, as discovered through libpci and sysfs.
public struct HostPCIDevice: Hashable, Sendable, CustomStringConvertible {
    public var address: PCIAddress
    public var vendorID: UInt16
    public var deviceID: UInt16
    public var subsystemVendorID: UInt16
    public var subsystemID: UInt16
    /// 24-bit class code: base class << 16 | subclass << 8 | programming interface.
    public var classCode: UInt32
    public var revision: UInt8
    /// The bound kernel driver ("vfio-pci", "ixgbe"), nil when unbound.
    public var driver: String?
    /// The IOMMU group number, nil when the host has no IOMMU (or it is off).
    public var iommuGroup: UInt32?
    /// SR-IOV counts when the function is a physical function with the capability.
    public var sriov: SRIOVCounts?
    /// For a virtual function: its physical function.
    public var physicalFunction: PCIAddress?
    /// For a physical function: its enabled VFs (sysfs virtfnN links), in VF order.
    public var virtualFunctions: [PCIAddress] = []
    /// The kernel's reset methods in the order it tries them (sysfs reset_method: "flr", "pm",
    /// "bus", ...); empty when the device has none or the kernel predates the attribute (5.15).
    public var resetMethods: [String] = []
    /// sysfs driver_override: the only driver the kernel will probe for this device.
    public var driverOverride: String?

    public init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16,
                subsystemVendorID: UInt16 = 0, subsystemID: UInt16 = 0,
                classCode: UInt32, revision: UInt8 = 0, driver: String? = nil,
                iommuGroup: UInt32? = nil, sriov: SRIOVCounts? = nil,
                physicalFunction: PCIAddress? = nil) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID
        self.subsystemID = subsystemID
        self.classCode = classCode & 0xFF_FFFF
        self.revision = revision
        self.driver = driver
        self.iommuGroup = iommuGroup
        self.sriov = sriov
        self.physicalFunction = physicalFunction
    }

    public var baseClass: UInt8 { UInt8(truncatingIfNeeded: classCode >> 16) }
    public var subclass: UInt8 { UInt8(truncatingIfNeeded: classCode >> 8) }
    public var programmingInterface: UInt8 { UInt8(truncatingIfNeeded: classCode) }
    public var isBridge: Bool { baseClass == 0x06 }
    /// Class 06 00: the root complex's host bridge, never assignable.
    public var isHostBridge: Bool { classCode >> 8 == 0x0600 }
    /// Class 01 08 02: an NVM Express I/O controller.
    public var isNVMeController: Bool { classCode == 0x01_0802 }
    public var isVirtualFunction: Bool { physicalFunction != nil }

    /// lspci -nn style: "0000:00:03.0 [0200]: [1af4:1041] (rev 01) driver virtio-pci"
    public var description: String {
        var s = "\(address) [\(hex(classCode >> 8, 4))]: [\(hex(vendorID, 4)):\(hex(deviceID, 4))]"
        if revision != 0 { s += " (rev \(hex(revision, 2)))" }
        if let driver { s += " driver \(driver)" }
        if let iommuGroup { s += " group \(iommuGroup)" }
        if let sriov { s += " VFs \(sriov.enabledVFs)/\(sriov.totalVFs)" }
        if let physicalFunction { s += " VF of \(physicalFunction)" }
        return s
    }
}

/// sriov_totalvfs / sriov_numvfs of a physical function.
public struct SRIOVCounts: Hashable, Sendable {
    public var totalVFs: Int
    /// VFs currently enabled (sriov_numvfs).
    public var enabledVFs: Int
    public init(totalVFs: Int, enabledVFs: Int) {
        self.totalVFs = totalVFs
        self.enabledVFs = enabledVFs
    }
}

public enum HostDevicesError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A system call failed (reading sysfs).
    case system(SystemError)
    /// libpci reported an error.
    case libpci(String)
    /// libudev failed.
    case udev(String)
    /// A sysfs attribute did not hold what the kernel documents.
    case malformed(path: String, value: String)

    public var description: String {
        switch self {
        case .system(let e): e.description
        case .libpci(let m): "libpci: \(m)"
        case .udev(let m): "libudev: \(m)"
        case .malformed(let path, let value): "unexpected contents of \(path): \"\(value)\""
        }
    }
}
