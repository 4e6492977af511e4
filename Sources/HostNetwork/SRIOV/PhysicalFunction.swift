import HostOS

/// One virtual function of an SR-IOV NIC, as sysfs shows it (Documentation/ABI/testing/
/// sysfs-bus-pci: the PF's `virtfnN` links to the VF's PCI directory, whose `driver` links to
/// the bound driver and whose `net/` lists its network interface).
public struct VirtualFunction: Hashable, Sendable {
    public var index: Int
    /// The VF's PCI address, e.g. 0000:01:10.0.
    public var pciAddress: String
    /// The bound driver's name (igbvf, iavf, vfio-pci), nil when none is bound.
    public var driver: String?
    /// Its network interfaces (one once its NIC driver has probed it).
    public var netdevs: [String]
}

/// An SR-IOV physical function found by its network interface name.
public struct PhysicalFunction: Hashable, Sendable {
    public var name: String
    public var pciAddress: String
    public var totalVFs: Int
    /// The enabled VFs (sriov_numvfs of them), by index.
    public var virtualFunctions: [VirtualFunction]

    /// Reads `sysfs/class/net/NAME/device` and its `sriov_*` and `virtfnN` entries.
    public static func read(named name: String, sysfs: String) throws(HostNetworkError) -> PhysicalFunction {
        let device = "\(sysfs)/class/net/\(name)/device"
        guard FileSystem.exists("\(sysfs)/class/net/\(name)") else { throw .noSuchLink(name) }
        guard let total = readNumber("\(device)/sriov_totalvfs") else { throw .notSRIOVCapable(pf: name) }
        let enabled = readNumber("\(device)/sriov_numvfs") ?? 0
        let address = (try? FileSystem.readLink(device)).map(lastComponent) ?? ""
        var functions: [VirtualFunction] = []
        for index in 0..<enabled {
            let directory = "\(device)/virtfn\(index)"
            guard let target = try? FileSystem.readLink(directory) else { continue }
            functions.append(VirtualFunction(
                index: index, pciAddress: lastComponent(target),
                driver: (try? FileSystem.readLink("\(directory)/driver")).map(lastComponent),
                netdevs: (try? FileSystem.listDirectory("\(directory)/net")) ?? []))
        }
        return PhysicalFunction(name: name, pciAddress: address, totalVFs: total, virtualFunctions: functions)
    }

    /// The sysfs directory of VF `index` of PF `name`.
    static func directory(ofVF index: Int, pf name: String, sysfs: String) -> String {
        "\(sysfs)/class/net/\(name)/device/virtfn\(index)"
    }
}

func lastComponent(_ path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
}

/// A sysfs attribute holding one decimal number.
func readNumber(_ path: String) -> Int? {
    guard let bytes = try? FileSystem.readFile(path) else { return nil }
    return Int(String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace })
}
