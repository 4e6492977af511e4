import HostOS
import VMMBase

/// The texts of the /proc files the inventory reads.
public struct HostProcFiles: Hashable, Sendable {
    public var interrupts: String
    public var mounts: String
    public var swaps: String
    /// The registered device majors (/proc/devices).
    public var devices: ProcDevices

    public init(interrupts: String, mounts: String, swaps: String, devices: ProcDevices = ProcDevices(parsing: "")) {
        self.interrupts = interrupts
        self.mounts = mounts
        self.swaps = swaps
        self.devices = devices
    }

    /// This host's /proc; a file that cannot be read counts as empty.
    public static func read(root: String = "/proc") -> HostProcFiles {
        func text(_ name: String) -> String {
            (try? FileSystem.readFile(root + "/" + name, limit: 4 << 20)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        }
        return HostProcFiles(interrupts: text("interrupts"), mounts: text("mounts"), swaps: text("swaps"),
                             devices: ProcDevices(parsing: text("devices")))
    }
}

/// Every host PCI device with what assignment needs to know: IOMMU groups, SR-IOV, reset
/// methods, uses on the host, and a verdict per device.
public struct HostInventory: Sendable {
    public var devices: [HostPCIDevice]
    public var iommu: IOMMUState
    public var uses: [PCIAddress: [DeviceUse]]

    public init(devices: [HostPCIDevice], iommu: IOMMUState, uses: [PCIAddress: [DeviceUse]]) {
        self.devices = devices.sorted { $0.address < $1.address }
        self.iommu = iommu
        self.uses = uses
    }

    /// The devices `devices` found, with the IOMMU state and uses read from `sysfs` and `proc`.
    public static func read(devices: [HostPCIDevice], sysfs: some SysfsReader,
                            proc: HostProcFiles) throws(HostDevicesError) -> HostInventory {
        HostInventory(
            devices: devices,
            iommu: try IOMMUState.read(sysfs: sysfs, procInterrupts: proc.interrupts, procDevices: proc.devices),
            uses: try DeviceUseScanner(reader: sysfs, mounts: proc.mounts, swaps: proc.swaps).uses())
    }

    /// This host: libpci for the devices, /sys and /proc for the rest.
    public static func host() throws(HostDevicesError) -> HostInventory {
        try read(devices: try HostPCIDiscovery.discover(), sysfs: Sysfs(), proc: .read())
    }

    public func device(at address: PCIAddress) -> HostPCIDevice? {
        devices.first { $0.address == address }
    }

    /// The members of the device's IOMMU group, itself included, by address; empty without a group.
    public func groupMembers(of device: HostPCIDevice) -> [HostPCIDevice] {
        guard let group = device.iommuGroup else { return [] }
        return devices.filter { $0.iommuGroup == group }
    }

    /// The group's other members whose host drivers keep VFIO from taking the group.
    public func groupBlockers(of device: HostPCIDevice) -> [AssignmentObstacle.GroupMember] {
        groupMembers(of: device)
            .filter { $0.address != device.address && GroupViability.blocks($0) }
            .map { AssignmentObstacle.GroupMember(address: $0.address, driver: $0.driver ?? "") }
    }

    public func assignability(of device: HostPCIDevice) -> Assignability {
        guard !device.isHostBridge else { return Assignability(address: device.address, obstacles: [.hostBridge]) }
        var obstacles: [AssignmentObstacle] = []
        if !iommu.isEnabled || device.iommuGroup == nil {
            obstacles.append(.noIOMMU(units: iommu.units.map(\.name)))
        } else if !iommu.interruptRemappingEnabled && !iommu.unsafeInterruptsAllowed {
            let capabilities = iommu.units.compactMap(\.interruptRemappingCapable)
            obstacles.append(.noInterruptRemapping(hardwareCapable: capabilities.isEmpty ? nil : capabilities.contains(true)))
        }
        if device.driver != "vfio-pci" { obstacles.append(.notBoundToVFIO(driver: device.driver)) }
        let blockers = groupBlockers(of: device)
        if let group = device.iommuGroup, !blockers.isEmpty {
            obstacles.append(.groupNotViable(group: group, blockers: blockers))
        }
        if let uses = uses[device.address], !uses.isEmpty { obstacles.append(.inUse(uses)) }
        return Assignability(address: device.address, obstacles: obstacles)
    }
}
