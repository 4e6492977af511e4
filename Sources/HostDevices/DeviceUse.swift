import VMMBase

/// Something on the host that is using a PCI device right now, found cheaply and reliably in
/// sysfs and /proc/mounts: taking the device from its driver would break it.
public enum DeviceUse: Hashable, Sendable, CustomStringConvertible {
    /// A network interface of the device is administratively up (IFF_UP in its flags).
    case interfaceUp(String)
    /// A block device of the device (or a partition of it) is mounted.
    case mounted(blockDevice: String, mountPoint: String)
    /// A block device of the device (or a partition of it) is in use as swap.
    case swap(blockDevice: String)
    /// A running switchyard holds the device (an SR-IOV VF behind its -netdev macvtap).
    case switchyard(pid: Int32, netdev: String)

    public var description: String {
        switch self {
        case .interfaceUp(let name): "its network interface \(name) is up"
        case .mounted(let device, let point): "its block device \(device) is mounted on \(point)"
        case .swap(let device): "its block device \(device) is in use as swap"
        case .switchyard(let pid, let netdev): "switchyard pid \(pid) uses it (netdev \(netdev))"
        }
    }

    /// What the user does to end the use.
    public var fix: String {
        switch self {
        case .interfaceUp(let name): "ip link set \(name) down"
        case .mounted(_, let point): "umount \(point)"
        case .swap(let device): "swapoff /dev/\(device)"
        case .switchyard(let pid, _): "stop that switchyard (pid \(pid)) or choose another VF"
        }
    }
}

/// Finds the uses of PCI devices: their netdevs (class/net) and block devices (class/block),
/// matched to a device by the PCI address in the path their sysfs link points to.
public struct DeviceUseScanner<Reader: SysfsReader>: Sendable {
    public let reader: Reader
    /// /proc/mounts and /proc/swaps as text.
    public let mounts: String
    public let swaps: String

    public init(reader: Reader, mounts: String, swaps: String) {
        self.reader = reader
        self.mounts = mounts
        self.swaps = swaps
    }

    /// Every device's uses, keyed by address; devices with none are absent.
    public func uses() throws(HostDevicesError) -> [PCIAddress: [DeviceUse]] {
        let files = SysfsFiles(reader: reader)
        var result: [PCIAddress: [DeviceUse]] = [:]
        for name in try files.entries("class/net") {
            guard let target = try files.linkTarget("class/net/\(name)"), let owner = Self.pciOwner(of: target),
                  let flags = try files.attribute("class/net/\(name)/flags"),
                  let value = UInt32(flags.hasPrefix("0x") ? String(flags.dropFirst(2)) : flags, radix: 16)
            else { continue }
            if value & 1 != 0 { result[owner, default: []].append(.interfaceUp(name)) }  // IFF_UP
        }
        let mounted = Self.mountPoints(mounts)
        let swapping = Self.swapDevices(swaps)
        for name in try files.entries("class/block") {
            guard let target = try files.linkTarget("class/block/\(name)"), let owner = Self.pciOwner(of: target)
            else { continue }
            for point in mounted["/dev/" + name] ?? [] {
                result[owner, default: []].append(.mounted(blockDevice: name, mountPoint: point))
            }
            if swapping.contains("/dev/" + name) { result[owner, default: []].append(.swap(blockDevice: name)) }
        }
        return result
    }

    /// The PCI function nearest the end of a sysfs device path ("../../devices/pci0000:00/
    /// 0000:00:1c.0/0000:01:00.0/nvme/nvme0/nvme0n1" belongs to 0000:01:00.0).
    static func pciOwner(of path: String) -> PCIAddress? {
        for component in path.split(separator: "/").reversed() {
            if let address = PCIAddress(parsing: component), address.description == component { return address }
        }
        return nil
    }

    /// /proc/mounts: source -> mount points (octal escapes such as \040 left as they are).
    static func mountPoints(_ text: String) -> [String: [String]] {
        var result: [String: [String]] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 2 else { continue }
            result[String(fields[0]), default: []].append(String(fields[1]))
        }
        return result
    }

    /// /proc/swaps: the first column of every line after the header.
    static func swapDevices(_ text: String) -> Set<String> {
        Set(text.split(separator: "\n").dropFirst().compactMap { $0.split(separator: " ").first.map(String.init) })
    }
}
