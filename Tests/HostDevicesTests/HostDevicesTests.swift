import HostDevices
import HostOS
import TestRequirements
import Testing
import VMMBase

/// A temporary directory laid out like /sys, removed when the fixture is released.
final class FakeSysfs {
    let root: String
    var reader: Sysfs { Sysfs(root: root) }

    init() throws {
        root = try FileSystem.makeTemporaryDirectory(prefix: "fake-sysfs")
        for dir in ["bus/pci/devices", "bus/pci/drivers", "devices/pci0000:00", "kernel/iommu_groups"] {
            try FileSystem.makeDirectories(root + "/" + dir)
        }
    }

    deinit { try? FileSystem.removeTree(root) }

    /// A device directory under devices/, linked from bus/pci/devices as the kernel does.
    @discardableResult
    func addDevice(_ name: String, attributes: [String: String],
                   links: [String: String] = [:]) throws -> String {
        let dir = root + "/devices/pci0000:00/" + name
        try FileSystem.makeDirectories(dir)
        for (file, value) in attributes { try FileSystem.writeFile(dir + "/" + file, Array((value + "\n").utf8)) }
        for (link, target) in links { try FileSystem.createSymbolicLink(at: dir + "/" + link, to: target) }
        try FileSystem.createSymbolicLink(at: root + "/bus/pci/devices/" + name,
                                          to: "../../../devices/pci0000:00/" + name)
        return dir
    }

    func driver(_ name: String) -> String { "../../../bus/pci/drivers/" + name }
    func group(_ n: Int) -> String { "../../../kernel/iommu_groups/\(n)" }
}

func ids(_ vendor: String, _ device: String, _ cls: String, rev: String = "0x00",
                 subsystem: (String, String)? = nil) -> [String: String] {
    var a = ["vendor": vendor, "device": device, "class": cls, "revision": rev]
    if let subsystem { a["subsystem_vendor"] = subsystem.0; a["subsystem_device"] = subsystem.1 }
    return a
}

func address(_ text: String) -> PCIAddress { PCIAddress(parsing: text)! }

@Suite struct SysfsScannerTests {
    @Test func readsIdentityDriverGroupAndSRIOV() throws {
        let sys = try FakeSysfs()
        try sys.addDevice("0000:00:00.0", attributes: ids("0x8086", "0x29c0", "0x060000"),
                          links: ["iommu_group": sys.group(0)])
        var pf = ids("0x8086", "0x10fb", "0x020000", rev: "0x01", subsystem: ("0x8086", "0x000c"))
        pf["sriov_totalvfs"] = "63"
        pf["sriov_numvfs"] = "2"
        try sys.addDevice("0000:03:00.0", attributes: pf,
                          links: ["driver": sys.driver("ixgbe"), "iommu_group": sys.group(12)])
        try sys.addDevice("0000:03:10.0", attributes: ids("0x8086", "0x10ed", "0x020000", rev: "0x01"),
                          links: ["driver": sys.driver("vfio-pci"), "iommu_group": sys.group(40),
                                  "physfn": "../0000:03:00.0"])
        try sys.addDevice("0000:03:10.2", attributes: ids("0x8086", "0x10ed", "0x020000", rev: "0x01"),
                          links: ["iommu_group": sys.group(41), "physfn": "../0000:03:00.0"])
        // Not addressable with a 16-bit segment (VMD), and not a device at all: both skipped.
        try sys.addDevice("10000:00:00.0", attributes: ids("0x8086", "0x0001", "0x010400"))
        try FileSystem.makeDirectory(sys.root + "/bus/pci/devices/not-a-device")

        let devices = try SysfsPCIScanner(reader: sys.reader).devices()
        #expect(devices.map(\.address.description) == ["0000:00:00.0", "0000:03:00.0", "0000:03:10.0", "0000:03:10.2"])

        let host = devices[0]
        #expect(host == HostPCIDevice(address: address("0000:00:00.0"), vendorID: 0x8086, deviceID: 0x29c0,
                                      classCode: 0x060000, iommuGroup: 0))
        #expect(host.isBridge && host.baseClass == 6 && host.subclass == 0)

        let nic = devices[1]
        #expect(nic.vendorID == 0x8086 && nic.deviceID == 0x10fb)
        #expect(nic.subsystemVendorID == 0x8086 && nic.subsystemID == 0x000c)
        #expect(nic.classCode == 0x020000 && nic.revision == 1)
        #expect(nic.driver == "ixgbe")
        #expect(nic.iommuGroup == 12)
        #expect(nic.sriov == SRIOVCounts(totalVFs: 63, enabledVFs: 2))
        #expect(!nic.isVirtualFunction)

        #expect(devices[2].driver == "vfio-pci")
        #expect(devices[2].iommuGroup == 40)
        #expect(devices[2].physicalFunction == address("0000:03:00.0"))
        #expect(devices[2].sriov == nil)
        #expect(devices[3].driver == nil)
        #expect(devices[3].isVirtualFunction)
        #expect(devices[2].description == "0000:03:10.0 [0200]: [8086:10ed] (rev 01) driver vfio-pci group 40 VF of 0000:03:00.0")

        #expect(try SysfsPCIScanner(reader: sys.reader).device(at: address("0000:05:00.0")) == nil)
    }

    @Test func anEmptyOrMissingTreeHasNoDevices() throws {
        let sys = try FakeSysfs()
        #expect(try SysfsPCIScanner(reader: sys.reader).devices().isEmpty)
        #expect(try SysfsPCIScanner(reader: Sysfs(root: sys.root + "/nonexistent")).devices().isEmpty)
    }

    @Test func malformedAttributesAreReportedWithTheirPath() throws {
        let sys = try FakeSysfs()
        try sys.addDevice("0000:00:01.0", attributes: ids("0xzz", "0x1000", "0x020000"))
        #expect(throws: HostDevicesError.malformed(path: "bus/pci/devices/0000:00:01.0/vendor", value: "0xzz")) {
            try SysfsPCIScanner(reader: sys.reader).devices()
        }

        let sys2 = try FakeSysfs()
        try sys2.addDevice("0000:00:02.0", attributes: ["vendor": "0x1af4", "device": "0x1000"])
        #expect(throws: HostDevicesError.malformed(path: "bus/pci/devices/0000:00:02.0/class", value: "")) {
            try SysfsPCIScanner(reader: sys2.reader).devices()
        }

        let sys3 = try FakeSysfs()
        try sys3.addDevice("0000:00:03.0", attributes: ids("0x1af4", "0x1000", "0x020000"),
                           links: ["iommu_group": "../../../kernel/iommu_groups/abc"])
        #expect(throws: HostDevicesError.malformed(path: "bus/pci/devices/0000:00:03.0/iommu_group", value: "abc")) {
            try SysfsPCIScanner(reader: sys3.reader).devices()
        }

        let sys4 = try FakeSysfs()
        var a = ids("0x1af4", "0x1000", "0x020000")
        a["sriov_totalvfs"] = "-1"
        try sys4.addDevice("0000:00:04.0", attributes: a)
        #expect(throws: HostDevicesError.malformed(path: "bus/pci/devices/0000:00:04.0/sriov_totalvfs", value: "-1")) {
            try SysfsPCIScanner(reader: sys4.reader).devices()
        }

        let sys5 = try FakeSysfs()
        try sys5.addDevice("0000:00:05.0", attributes: ids("0x1af4", "0x1000", "0x1020000"))
        #expect(throws: HostDevicesError.self) { try SysfsPCIScanner(reader: sys5.reader).devices() }
    }

    @Test func unreadableAttributesAreSystemErrors() throws {
        let sys = try FakeSysfs()
        let dir = try sys.addDevice("0000:00:06.0", attributes: ids("0x1af4", "0x1000", "0x020000"))
        // A directory where an attribute file should be: read fails with EISDIR.
        try FileSystem.makeDirectory(dir + "/sriov_totalvfs")
        do {
            _ = try SysfsPCIScanner(reader: sys.reader).devices()
            Issue.record("reading a directory as an attribute succeeded")
        } catch {
            guard case .system(let e) = error else { Issue.record("unexpected \(error)"); return }
            #expect(e.errno == .isDirectory)
            #expect(e.context == sys.root + "/bus/pci/devices/0000:00:06.0/sriov_totalvfs")
        }
    }
}

/// A reader with no files at all: the protocol seam, without a disk.
private struct InMemorySysfs: SysfsReader {
    var attributes: [String: String] = [:]
    var links: [String: String] = [:]
    var directories: [String: [String]] = [:]
    func attribute(_ path: String) throws(SystemError) -> String? { attributes[path] }
    func linkName(_ path: String) throws(SystemError) -> String? { links[path] }
    func linkTarget(_ path: String) throws(SystemError) -> String? { links[path] }
    func entries(_ path: String) throws(SystemError) -> [String] { directories[path] ?? [] }
}

@Suite struct SysfsReaderSeamTests {
    @Test func anyReaderWorks() throws {
        let d = "bus/pci/devices/0000:00:1f.0"
        let reader = InMemorySysfs(
            attributes: [d + "/vendor": "0x8086", d + "/device": "0x2918", d + "/class": "0x060100"],
            links: [d + "/driver": "lpc_ich"],
            directories: ["bus/pci/devices": ["0000:00:1f.0"]])
        let devices = try SysfsPCIScanner(reader: reader).devices()
        #expect(devices == [HostPCIDevice(address: address("00:1f.0"), vendorID: 0x8086, deviceID: 0x2918,
                                          classCode: 0x060100, driver: "lpc_ich")])
    }
}

// MARK: - The real host

private let hostHasPCI = !((try? Sysfs().entries("bus/pci/devices")) ?? []).isEmpty

@Suite struct RealHostTests {
    @Test func libpciScanRuns() throws {
        let devices = try LibPCI.scan()
        // Each address at most once, sorted.
        #expect(devices.map(\.address) == devices.map(\.address).sorted())
        #expect(Set(devices.map(\.address)).count == devices.count)
        for d in devices { #expect(d.vendorID != 0xFFFF) }
    }

    @Test(.requires(hostHasPCI, "this host has no PCI devices in /sys/bus/pci/devices"))
    func libpciAgreesWithSysfs() throws {
        let fromLibPCI = try LibPCI.scan()
        let fromSysfs = try SysfsPCIScanner(reader: Sysfs()).devices()
        #expect(!fromLibPCI.isEmpty)
        #expect(fromLibPCI.map(\.address) == fromSysfs.map(\.address))
        for (a, b) in zip(fromLibPCI, fromSysfs) {
            #expect(a.vendorID == b.vendorID && a.deviceID == b.deviceID, "\(a) vs \(b)")
            #expect(a.classCode == b.classCode, "\(a) vs \(b)")
            #expect(a.revision == b.revision, "\(a) vs \(b)")
            #expect(a.subsystemVendorID == b.subsystemVendorID && a.subsystemID == b.subsystemID, "\(a) vs \(b)")
            #expect(a.driver == b.driver, "\(a) vs \(b)")
            #expect(a.iommuGroup == b.iommuGroup, "\(a) vs \(b)")
        }
    }

    @Test func discoveryRuns() throws {
        let devices = try HostPCIDiscovery.discover()
        #expect(devices.map(\.address) == (try LibPCI.scan()).map(\.address))
    }
}

private let udevPCIDevices = (try? Udev.devices(subsystem: "pci")) ?? []

@Suite struct UdevTests {
    @Test func enumerationRuns() throws {
        _ = try Udev.devices(subsystem: "pci")
        #expect(try Udev.devices(subsystem: "no-such-subsystem").isEmpty)
    }

    @Test(.requires(!udevPCIDevices.isEmpty,
                   "libudev enumerates no pci devices here (no sysfs PCI devices visible to udev)"))
    func udevAgreesWithLibPCI() throws {
        let udev = try Udev.devices(subsystem: "pci")
        let libpci = try LibPCI.scan()
        #expect(udev.compactMap(\.pciAddress).sorted() == libpci.map(\.address))
        let byAddress = Dictionary(uniqueKeysWithValues: libpci.map { ($0.address, $0) })
        for u in udev {
            guard let address = u.pciAddress, let p = byAddress[address] else { continue }
            #expect(u.driver == p.driver, "\(u.sysname)")
            let expectedID = (hex(p.vendorID, 4) + ":" + hex(p.deviceID, 4)).uppercased()
            #expect(u.properties["PCI_ID"] == expectedID, "\(u.sysname)")
            #expect(u.properties["PCI_CLASS"].flatMap { UInt32($0, radix: 16) } == p.classCode, "\(u.sysname)")
        }
    }
}
