import HostOS
import VMMBase

/// Read access to a sysfs-like tree, with paths relative to its root ("bus/pci/devices").
/// The seam where tests substitute a directory tree of their own for /sys.
public protocol SysfsReader: Sendable {
    /// The attribute file's contents with surrounding whitespace removed; nil when it does not exist.
    func attribute(_ path: String) throws(SystemError) -> String?
    /// The last component of a symbolic link's target ("vfio-pci" for `driver`); nil when absent.
    func linkName(_ path: String) throws(SystemError) -> String?
    /// A symbolic link's whole target text ("../../devices/pci0000:00/0000:00:03.0/net/eth0");
    /// nil when absent.
    func linkTarget(_ path: String) throws(SystemError) -> String?
    /// A directory's entries, sorted; empty when the directory does not exist.
    func entries(_ path: String) throws(SystemError) -> [String]
}

/// A sysfs tree on disk: `/sys` by default, or any directory laid out like it.
public struct Sysfs: SysfsReader {
    public let root: String

    public init(root: String = "/sys") { self.root = root }

    private func full(_ path: String) -> String { root + "/" + path }

    public func attribute(_ path: String) throws(SystemError) -> String? {
        do throws(SystemError) {
            let bytes = try FileSystem.readFile(full(path), limit: 64 * 1024)
            return String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
        } catch where error.errno == .noSuchFileOrDirectory || error.errno == .notDirectory {
            return nil
        }
    }

    public func linkName(_ path: String) throws(SystemError) -> String? {
        try linkTarget(path)?.split(separator: "/").last.map(String.init)
    }

    public func linkTarget(_ path: String) throws(SystemError) -> String? {
        do throws(SystemError) {
            return try FileSystem.readLink(full(path))
        } catch where error.errno == .noSuchFileOrDirectory || error.errno == .notDirectory {
            return nil
        }
    }

    public func entries(_ path: String) throws(SystemError) -> [String] {
        do throws(SystemError) {
            return try FileSystem.listDirectory(full(path))
        } catch where error.errno == .noSuchFileOrDirectory || error.errno == .notDirectory {
            return []
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" || $0 == "\0" }
        guard let first = firstIndex(where: { !isSpace($0) }),
              let last = lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(self[first...last])
    }
}

/// PCI devices as /sys/bus/pci/devices describes them.
///
/// Entries whose names are not PCI addresses this project can express (e.g. VMD domains above
/// 0xffff) are skipped. A device whose identity attributes are missing or malformed is an error.
public struct SysfsPCIScanner<Reader: SysfsReader>: Sendable {
    public let reader: Reader
    static var devicesDirectory: String { "bus/pci/devices" }

    public init(reader: Reader) { self.reader = reader }

    /// Every device, sorted by address.
    public func devices() throws(HostDevicesError) -> [HostPCIDevice] {
        let names: [String]
        do { names = try reader.entries(Self.devicesDirectory) } catch { throw .system(error) }
        var result: [HostPCIDevice] = []
        for name in names {
            guard let address = PCIAddress(parsing: name), address.description == name else { continue }
            if let device = try device(at: address) { result.append(device) }
        }
        return result.sorted { $0.address < $1.address }
    }

    /// One device, or nil when sysfs has no such directory.
    public func device(at address: PCIAddress) throws(HostDevicesError) -> HostPCIDevice? {
        let dir = Self.devicesDirectory + "/" + address.description
        guard let vendor = try optionalHex(dir + "/vendor", UInt16.self) else { return nil }
        guard let deviceID = try optionalHex(dir + "/device", UInt16.self) else {
            throw .malformed(path: dir + "/device", value: "")
        }
        guard let classCode = try optionalHex(dir + "/class", UInt32.self), classCode <= 0xFF_FFFF else {
            throw .malformed(path: dir + "/class", value: (try? reader.attribute(dir + "/class")) ?? "")
        }
        var device = HostPCIDevice(
            address: address, vendorID: vendor, deviceID: deviceID,
            subsystemVendorID: try optionalHex(dir + "/subsystem_vendor", UInt16.self) ?? 0,
            subsystemID: try optionalHex(dir + "/subsystem_device", UInt16.self) ?? 0,
            classCode: classCode,
            revision: try optionalHex(dir + "/revision", UInt8.self) ?? 0)
        try addDetails(to: &device)
        return device
    }

    /// Fills driver, IOMMU group, SR-IOV counts and physical function from sysfs.
    public func addDetails(to device: inout HostPCIDevice) throws(HostDevicesError) {
        let dir = Self.devicesDirectory + "/" + device.address.description
        device.driver = try link(dir + "/driver")
        if let group = try link(dir + "/iommu_group") {
            guard let number = UInt32(group) else { throw .malformed(path: dir + "/iommu_group", value: group) }
            device.iommuGroup = number
        }
        if let physfn = try link(dir + "/physfn") {
            guard let pf = PCIAddress(parsing: physfn) else { throw .malformed(path: dir + "/physfn", value: physfn) }
            device.physicalFunction = pf
        }
        if let total = try optionalDecimal(dir + "/sriov_totalvfs") {
            let enabled = try optionalDecimal(dir + "/sriov_numvfs") ?? 0
            device.sriov = SRIOVCounts(totalVFs: total, enabledVFs: enabled)
        }
        device.virtualFunctions = try virtualFunctions(in: dir)
        device.resetMethods = try text(dir + "/reset_method")?.split(separator: " ").map(String.init) ?? []
        // "(null)" is how kernels before 5.x show an unset override.
        if let override = try text(dir + "/driver_override"), !override.isEmpty, override != "(null)" {
            device.driverOverride = override
        }
    }

    /// virtfn0, virtfn1, ... in VF order (a directory listing sorts virtfn10 before virtfn2).
    private func virtualFunctions(in dir: String) throws(HostDevicesError) -> [PCIAddress] {
        let names: [String]
        do { names = try reader.entries(dir) } catch { throw .system(error) }
        let indices = names.compactMap { $0.hasPrefix("virtfn") ? Int($0.dropFirst(6)) : nil }.sorted()
        var result: [PCIAddress] = []
        for index in indices {
            let path = dir + "/virtfn\(index)"
            guard let name = try link(path) else { continue }
            guard let vf = PCIAddress(parsing: name) else { throw .malformed(path: path, value: name) }
            result.append(vf)
        }
        return result
    }

    private func text(_ path: String) throws(HostDevicesError) -> String? {
        do { return try reader.attribute(path) } catch { throw .system(error) }
    }

    private func link(_ path: String) throws(HostDevicesError) -> String? {
        do { return try reader.linkName(path) } catch { throw .system(error) }
    }

    private func optionalHex<T: FixedWidthInteger>(_ path: String, _ type: T.Type) throws(HostDevicesError) -> T? {
        let text: String?
        do { text = try reader.attribute(path) } catch { throw .system(error) }
        guard let text else { return nil }
        let digits = text.hasPrefix("0x") || text.hasPrefix("0X") ? text.dropFirst(2) : Substring(text)
        guard let value = T(digits, radix: 16) else { throw .malformed(path: path, value: text) }
        return value
    }

    private func optionalDecimal(_ path: String) throws(HostDevicesError) -> Int? {
        let text: String?
        do { text = try reader.attribute(path) } catch { throw .system(error) }
        guard let text else { return nil }
        guard let value = Int(text), value >= 0 else { throw .malformed(path: path, value: text) }
        return value
    }
}
