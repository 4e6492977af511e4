import VMMBase

/// Why a host device cannot be given to a guest right now, each with the way out.
public enum AssignmentObstacle: Hashable, Sendable {
    /// No IOMMU unit at all (`units` empty), or units the kernel left off (no groups).
    case noIOMMU(units: [String])
    /// The kernel does not remap interrupts; `hardwareCapable` is the units' IR capability when
    /// sysfs shows it.
    case noInterruptRemapping(hardwareCapable: Bool?)
    /// Class 06 00: part of the host's root complex.
    case hostBridge
    /// Bound to a host driver (or none) rather than vfio-pci.
    case notBoundToVFIO(driver: String?)
    /// Other members of the IOMMU group are bound to host drivers: VFIO takes a group only whole.
    case groupNotViable(group: UInt32, blockers: [GroupMember])
    /// The device is busy on the host.
    case inUse([DeviceUse])

    /// A member of an IOMMU group and its driver.
    public struct GroupMember: Hashable, Sendable, CustomStringConvertible {
        public var address: PCIAddress
        public var driver: String
        public init(address: PCIAddress, driver: String) {
            self.address = address
            self.driver = driver
        }
        public var description: String { "\(address) (bound to \(driver))" }
    }

    public var reason: String {
        switch self {
        case .noIOMMU(let units) where units.isEmpty:
            "the host has no IOMMU (no DMA-remapping unit in /sys/class/iommu)"
        case .noIOMMU(let units):
            "the host's IOMMU (\(units.joined(separator: ", "))) is off: the kernel made no IOMMU groups"
        case .noInterruptRemapping(let capable):
            "the kernel does not remap interrupts (no IR- interrupt chip in /proc/interrupts)"
                + (capable == false ? " and the IOMMU cannot (no IR bit in its extended capabilities)" : "")
        case .hostBridge:
            "it is a host bridge (class 06 00), part of the host's root complex"
        case .notBoundToVFIO(let driver?):
            "bound to \(driver)"
        case .notBoundToVFIO(nil):
            "bound to no driver"
        case .groupNotViable(let group, let blockers):
            "IOMMU group \(group) also holds \(blockers.map(\.description).joined(separator: ", "))"
        case .inUse(let uses):
            uses.map(\.description).joined(separator: "; ")
        }
    }

    /// The way out, for the device at `address`.
    public func fix(for address: PCIAddress) -> String {
        switch self {
        case .noIOMMU(let units) where units.isEmpty:
            "enable VT-d (or AMD-Vi) in the firmware and boot the host with intel_iommu=on (AMD-Vi is on by default)"
        case .noIOMMU:
            "boot the host with intel_iommu=on"
        case .noInterruptRemapping(let capable) where capable == false:
            "use a host whose IOMMU remaps interrupts, or accept the risk: modprobe vfio_iommu_type1 allow_unsafe_interrupts=1"
                + " (with iommufd: modprobe iommufd allow_unsafe_interrupts=1)"
        case .noInterruptRemapping:
            "boot the host without intremap=off or nointremap (interrupt remapping is on by default with intel_iommu=on)"
        case .hostBridge:
            "none: a host bridge stays with the host"
        case .notBoundToVFIO(let driver?):
            "unbind from \(driver) first: switchyard host bind \(address)"
        case .notBoundToVFIO(nil):
            "switchyard host bind \(address)"
        case .groupNotViable:
            "bind the whole group: switchyard host bind \(address) --group"
        case .inUse(let uses):
            uses.map(\.fix).joined(separator: "; ")
        }
    }
}

/// Whether a device can be assigned now, and if not, everything in the way.
public struct Assignability: Hashable, Sendable {
    public var address: PCIAddress
    public var obstacles: [AssignmentObstacle]
    public var isAssignable: Bool { obstacles.isEmpty }

    public init(address: PCIAddress, obstacles: [AssignmentObstacle]) {
        self.address = address
        self.obstacles = obstacles
    }
}

/// The drivers a group member may have while another member is assigned. The kernel's rule
/// (drivers/iommu/iommu.c, DMA ownership since 5.19): a driver that manages no DMA of its own
/// (driver_managed_dma: vfio-pci, pci-stub, pcieport) or none; bridges are not endpoints and
/// never block (their header type is not 0).
enum GroupViability {
    static func blocks(_ member: HostPCIDevice) -> Bool {
        guard let driver = member.driver else { return false }
        if member.isBridge && member.subclass == 0x04 { return false }
        return !(driver == "vfio-pci" || driver == "pci-stub" || driver == "pcieport" || driver.hasPrefix("vfio"))
    }
}
