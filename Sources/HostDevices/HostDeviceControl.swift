import HostOS
import VMMBase

/// Write access to sysfs attributes (paths relative to the root, as `SysfsReader`'s). The seam
/// where tests put a directory of their own in place of /sys.
public protocol SysfsWriter: Sendable {
    func write(_ path: String, _ value: String) throws(SystemError)
}

extension Sysfs: SysfsWriter {
    public func write(_ path: String, _ value: String) throws(SystemError) {
        // One write(2) of the whole value: sysfs attributes take their input in one call.
        try FileSystem.writeFile(root + "/" + path, Array(value.utf8))
    }
}

/// The drivers devices had before `host bind` gave them to vfio-pci, one small file per device
/// (named by its address, holding the driver's name, empty for none) in a directory that
/// lives as long as the host's boot: /run/switchyard/host-drivers.
public struct PreviousDriverStore: Sendable {
    public let directory: String

    public init(directory: String = "/run/switchyard/host-drivers") { self.directory = directory }

    /// Remembers `driver` for `address` unless something is remembered already (a second bind
    /// must not forget the first driver).
    public func remember(_ driver: String?, for address: PCIAddress) throws(SystemError) {
        if try recalled(address) != nil { return }
        try FileSystem.makeDirectories(directory)
        try FileSystem.writeFile(path(address), Array((driver ?? "").utf8))
    }

    /// .some(nil) when the device had no driver, nil when nothing is remembered.
    public func recalled(_ address: PCIAddress) throws(SystemError) -> String?? {
        do throws(SystemError) {
            let text = String(decoding: try FileSystem.readFile(path(address), limit: 256), as: UTF8.self)
                .trimmingWhitespace()
            return .some(text.isEmpty ? nil : text)
        } catch where error.errno == .noSuchFileOrDirectory {
            return nil
        }
    }

    public func forget(_ address: PCIAddress) throws(SystemError) {
        do throws(SystemError) {
            try FileSystem.removeTree(path(address))
        } catch where error.errno == .noSuchFileOrDirectory {}
    }

    private func path(_ address: PCIAddress) -> String { directory + "/" + address.description }
}

/// Why a `host bind`, `unbind` or `sriov` was refused or failed; each says what to do instead.
public enum HostDeviceControlError: Error, Hashable, Sendable, CustomStringConvertible {
    case noSuchDevice(PCIAddress)
    case hostBridge(PCIAddress)
    case noIOMMU(PCIAddress, AssignmentObstacle)
    case groupHasHostDrivers(PCIAddress, group: UInt32, members: [AssignmentObstacle.GroupMember])
    case inUse(PCIAddress, [DeviceUse])
    case vfioDriverMissing
    case driverDidNotBind(PCIAddress, wanted: String, got: String?)
    case notBoundToVFIO(PCIAddress, driver: String?)
    case noSRIOV(PCIAddress)
    case tooManyVFs(PCIAddress, asked: Int, total: Int)
    case noPhysicalFunctionDriver(PCIAddress)
    case notNVMe(PCIAddress)
    case nvme(PCIAddress, String)
    case system(String, SystemError)
    case discovery(HostDevicesError)

    public var description: String {
        switch self {
        case .noSuchDevice(let a):
            "there is no PCI device \(a) on this host; 'switchyard host list' (or lspci -D) lists them"
        case .hostBridge(let a):
            "\(a) is a host bridge (class 06 00), part of the host's root complex: it cannot be given to vfio-pci"
        case .noIOMMU(let a, let obstacle):
            "vfio-pci cannot take \(a): \(obstacle.reason); fix: \(obstacle.fix(for: a))"
        case .groupHasHostDrivers(let a, let group, let members):
            "\(a) is in IOMMU group \(group) with \(members.map(\.description).joined(separator: ", ")); "
                + "VFIO takes a group only whole: bind the whole group: switchyard host bind \(a) --group"
        case .inUse(let a, let uses):
            "\(a) is in use on this host: " + uses.map { "\($0) (\($0.fix))" }.joined(separator: "; ")
        case .vfioDriverMissing:
            "the vfio-pci driver is not loaded (no /sys/bus/pci/drivers/vfio-pci); load it with: modprobe vfio-pci"
        case .driverDidNotBind(let a, let wanted, let got):
            "\(wanted) did not take \(a) (its driver is now \(got ?? "none")); the kernel log (dmesg) says why"
        case .notBoundToVFIO(let a, let driver):
            "\(a) is bound to \(driver ?? "no driver"), not vfio-pci: there is nothing to unbind"
        case .noSRIOV(let a):
            "\(a) has no SR-IOV capability (no sriov_totalvfs in sysfs); 'switchyard host list' shows the PFs"
        case .tooManyVFs(let a, let asked, let total):
            "\(a) offers at most \(total) VFs; --vfs \(asked) is too many (use 0 to \(total))"
        case .noPhysicalFunctionDriver(let a):
            "\(a) has no driver, and the kernel enables VFs only through the PF's driver; "
                + "bind it first: echo \(a) > /sys/bus/pci/drivers_probe"
        case .notNVMe(let a):
            "--assign-resources is for NVMe controllers (class 01 08 02); \(a) is not one"
        case .nvme(let a, let message):
            "\(a): \(message)"
        case .system(let what, let error):
            "\(what): \(error)"
        case .discovery(let error):
            error.description
        }
    }
}

/// A change `host bind`, `unbind` or `sriov` made, for the user.
public struct HostDeviceChange: Hashable, Sendable, CustomStringConvertible {
    public var address: PCIAddress
    public var from: String?
    public var to: String?
    public var description: String { "\(address): \(from ?? "no driver") -> \(to ?? "no driver")" }
}

/// `host bind` and `host unbind`: vfio-pci through driver_override, the previous driver
/// remembered in a `PreviousDriverStore` and given back on unbind.
public struct HostDriverBinder<Files: SysfsReader & SysfsWriter>: Sendable {
    public let sysfs: Files
    public let store: PreviousDriverStore
    /// vfio-pci's own name in /sys/bus/pci/drivers.
    public static var vfioDriver: String { "vfio-pci" }

    public init(sysfs: Files, store: PreviousDriverStore = PreviousDriverStore()) {
        self.sysfs = sysfs
        self.store = store
    }

    /// Checks everything first, then binds the device (and with `wholeGroup`, every other group
    /// member that is not a bridge and not already on a VFIO driver) to vfio-pci. A member with no
    /// driver does not stop VFIO from taking the group, but it is bound too: Linux resets a bus
    /// for a VMM (VFIO_DEVICE_PCI_HOT_RESET) only when every function the reset reaches is
    /// vfio-pci's, and a group's members are often the functions of one device.
    public func bind(_ address: PCIAddress, wholeGroup: Bool,
                     in inventory: HostInventory) throws(HostDeviceControlError) -> [HostDeviceChange] {
        guard let device = inventory.device(at: address) else { throw .noSuchDevice(address) }
        if device.isHostBridge { throw .hostBridge(address) }
        let verdict = inventory.assignability(of: device)
        if let obstacle = verdict.obstacles.first(where: { if case .noIOMMU = $0 { true } else { false } }) {
            throw .noIOMMU(address, obstacle)
        }
        let blockers = inventory.groupBlockers(of: device)
        if !blockers.isEmpty && !wholeGroup {
            throw .groupHasHostDrivers(address, group: device.iommuGroup ?? 0, members: blockers)
        }
        let targets = Self.bindTargets(of: device, wholeGroup: wholeGroup, in: inventory)
        for target in targets {
            if let uses = inventory.uses[target.address], !uses.isEmpty { throw .inUse(target.address, uses) }
        }
        guard try listing("bus/pci/drivers").contains(Self.vfioDriver) else { throw .vfioDriverMissing }

        var changes: [HostDeviceChange] = []
        for target in targets where target.driver != Self.vfioDriver {
            do { try store.remember(target.driver, for: target.address) } catch {
                throw .system("remembering \(target.address)'s driver in \(store.directory)", error)
            }
            try write("bus/pci/devices/\(target.address)/driver_override", Self.vfioDriver)
            if let old = target.driver { try write("bus/pci/drivers/\(old)/unbind", target.address.description) }
            try write("bus/pci/drivers_probe", target.address.description)
            let now = try driver(of: target.address)
            guard now == Self.vfioDriver else { throw .driverDidNotBind(target.address, wanted: Self.vfioDriver, got: now) }
            changes.append(HostDeviceChange(address: target.address, from: target.driver, to: now))
        }
        return changes
    }

    /// The devices `bind` gives to vfio-pci: `device`, and with `wholeGroup` every other member
    /// of its group that is on a host driver, or on none and not a bridge.
    public static func bindTargets(of device: HostPCIDevice, wholeGroup: Bool, in inventory: HostInventory) -> [HostPCIDevice] {
        guard wholeGroup else { return [device] }
        return [device] + inventory.groupMembers(of: device).filter { member in
            member.address != device.address && (GroupViability.blocks(member) || (member.driver == nil && !member.isBridge))
        }
    }

    /// Takes the device (with `wholeGroup`, every group member on vfio-pci) from vfio-pci and
    /// gives it back the driver it had before `bind` (the kernel's choice when none is remembered).
    public func unbind(_ address: PCIAddress, wholeGroup: Bool,
                       in inventory: HostInventory) throws(HostDeviceControlError) -> [HostDeviceChange] {
        guard let device = inventory.device(at: address) else { throw .noSuchDevice(address) }
        if device.isHostBridge { throw .hostBridge(address) }
        guard device.driver == Self.vfioDriver else { throw .notBoundToVFIO(address, driver: device.driver) }
        var targets = [device]
        if wholeGroup {
            targets += inventory.groupMembers(of: device).filter { $0.address != address && $0.driver == Self.vfioDriver }
        }
        var changes: [HostDeviceChange] = []
        for target in targets {
            let remembered: String??
            do { remembered = try store.recalled(target.address) } catch {
                throw .system("reading \(target.address)'s previous driver in \(store.directory)", error)
            }
            // An empty value clears the override (the kernel takes a lone newline as empty).
            try write("bus/pci/devices/\(target.address)/driver_override", "\n")
            try write("bus/pci/drivers/\(Self.vfioDriver)/unbind", target.address.description)
            var now: String? = nil
            if remembered != .some(nil) {
                try write("bus/pci/drivers_probe", target.address.description)
                now = try driver(of: target.address)
                if case .some(.some(let previous)) = remembered, now != previous {
                    // Probing picked another driver or none: ask for the remembered one by name.
                    if now != nil { try write("bus/pci/drivers/\(now!)/unbind", target.address.description) }
                    try write("bus/pci/drivers/\(previous)/bind", target.address.description)
                    now = try driver(of: target.address)
                    guard now == previous else { throw .driverDidNotBind(target.address, wanted: previous, got: now) }
                }
            }
            do { try store.forget(target.address) } catch {
                throw .system("forgetting \(target.address)'s driver in \(store.directory)", error)
            }
            changes.append(HostDeviceChange(address: target.address, from: Self.vfioDriver, to: now))
        }
        return changes
    }

    private func write(_ path: String, _ value: String) throws(HostDeviceControlError) {
        do { try sysfs.write(path, value) } catch { throw .system("writing '\(value.trimmingWhitespace())' to /sys/\(path)", error) }
    }

    private func driver(of address: PCIAddress) throws(HostDeviceControlError) -> String? {
        do { return try sysfs.linkName("bus/pci/devices/\(address)/driver") } catch {
            throw .system("reading /sys/bus/pci/devices/\(address)/driver", error)
        }
    }

    private func listing(_ path: String) throws(HostDeviceControlError) -> [String] {
        do { return try sysfs.entries(path) } catch { throw .system("listing /sys/\(path)", error) }
    }
}
