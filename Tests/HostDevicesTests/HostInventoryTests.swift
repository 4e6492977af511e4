import HostDevices
import HostOS
import Testing
import VMMBase

// The sysfs layouts below are the kernel's (Documentation/ABI/testing/sysfs-bus-pci,
// sysfs-class-iommu-intel-iommu, sysfs-class-net); the ecap value is the one QEMU 10's
// intel-iommu,intremap=on showed in the rig's L1 (iommu-check), whose bit 3 is IR per the VT-d
// spec (11.4.3); the /proc/interrupts lines are real ones from a host with and without
// interrupt remapping.

private let interruptsWithIR = """
               CPU0       CPU1
      1:          0          9  IR-IO-APIC    1-edge      i8042
    124:          0     123456  IR-PCI-MSIX-0000:01:00.0    0-edge      nvme0q0
    """
private let interruptsWithoutIR = """
               CPU0
      4:        120   IO-APIC   4-edge      ttyS0
     24:          0   PCI-MSI 512000-edge      nvme0q0
    """

extension FakeSysfs {
    func addIOMMU(_ name: String, ecap: String) throws {
        try FileSystem.makeDirectories(root + "/class/iommu/\(name)/intel-iommu")
        try FileSystem.writeFile(root + "/class/iommu/\(name)/intel-iommu/ecap", Array((ecap + "\n").utf8))
    }

    func addGroup(_ n: Int) throws { try FileSystem.makeDirectories(root + "/kernel/iommu_groups/\(n)/devices") }

    /// A netdev under the device, as class/net/NAME -> ../../devices/.../BDF/net/NAME.
    func addInterface(_ name: String, of device: String, flags: String) throws {
        let dir = root + "/devices/pci0000:00/\(device)/net/\(name)"
        try FileSystem.makeDirectories(dir)
        try FileSystem.writeFile(dir + "/flags", Array((flags + "\n").utf8))
        try FileSystem.makeDirectories(root + "/class/net")
        try FileSystem.createSymbolicLink(at: root + "/class/net/\(name)", to: "../../devices/pci0000:00/\(device)/net/\(name)")
    }

    func addBlock(_ name: String, path: String) throws {
        try FileSystem.makeDirectories(root + "/devices/pci0000:00/" + path)
        try FileSystem.makeDirectories(root + "/class/block")
        try FileSystem.createSymbolicLink(at: root + "/class/block/\(name)", to: "../../devices/pci0000:00/" + path)
    }
}

private func inventory(_ sys: FakeSysfs, interrupts: String = interruptsWithIR, mounts: String = "",
                       swaps: String = "Filename Type Size Used Priority\n") throws -> HostInventory {
    try HostInventory.read(devices: try SysfsPCIScanner(reader: sys.reader).devices(), sysfs: sys.reader,
                           proc: HostProcFiles(interrupts: interrupts, mounts: mounts, swaps: swaps))
}

/// A host with VT-d: a host bridge, an igb PF (group 12) with two VFs (groups 40, 41), and a
/// two-function NIC sharing group 13.
private func vtdHost(ecap: String = "f00f4a") throws -> FakeSysfs {
    let sys = try FakeSysfs()
    try sys.addIOMMU("dmar0", ecap: ecap)
    for g in [0, 12, 13, 40, 41] { try sys.addGroup(g) }
    try sys.addDevice("0000:00:00.0", attributes: ids("0x8086", "0x29c0", "0x060000"), links: ["iommu_group": sys.group(0)])
    var pf = ids("0x8086", "0x10c9", "0x020000", rev: "0x01")
    pf["sriov_totalvfs"] = "7"
    pf["sriov_numvfs"] = "2"
    pf["reset_method"] = "flr pm bus"
    pf["driver_override"] = "(null)"
    try sys.addDevice("0000:02:00.0", attributes: pf,
                      links: ["driver": sys.driver("igb"), "iommu_group": sys.group(12),
                              "virtfn0": "../0000:02:10.0", "virtfn1": "../0000:02:10.2"])
    try sys.addDevice("0000:02:10.0", attributes: ids("0x8086", "0x10ca", "0x020000", rev: "0x01"),
                      links: ["driver": sys.driver("vfio-pci"), "iommu_group": sys.group(40), "physfn": "../0000:02:00.0"])
    var vf1 = ids("0x8086", "0x10ca", "0x020000", rev: "0x01")
    vf1["driver_override"] = "vfio-pci"
    try sys.addDevice("0000:02:10.2", attributes: vf1,
                      links: ["driver": sys.driver("igbvf"), "iommu_group": sys.group(41), "physfn": "../0000:02:00.0"])
    try sys.addDevice("0000:03:00.0", attributes: ids("0x8086", "0x10fb", "0x020000"),
                      links: ["driver": sys.driver("vfio-pci"), "iommu_group": sys.group(13)])
    try sys.addDevice("0000:03:00.1", attributes: ids("0x8086", "0x10fb", "0x020000"),
                      links: ["driver": sys.driver("ixgbe"), "iommu_group": sys.group(13)])
    return sys
}

@Suite struct HostInventoryTests {
    @Test func sysfsDetailsOfPhysicalAndVirtualFunctions() throws {
        let sys = try vtdHost()  // kept alive: its deinit removes the tree
        let devices = try SysfsPCIScanner(reader: sys.reader).devices()
        let pf = try #require(devices.first { $0.address == address("0000:02:00.0") })
        #expect(pf.virtualFunctions == [address("0000:02:10.0"), address("0000:02:10.2")])
        #expect(pf.resetMethods == ["flr", "pm", "bus"])
        #expect(pf.driverOverride == nil)  // "(null)": no override
        #expect(devices.first { $0.address == address("0000:02:10.2") }?.driverOverride == "vfio-pci")
    }

    @Test func interruptRemappingFromEcapAndInterruptChips() throws {
        let withIR = try vtdHost(), withoutIR = try vtdHost(ecap: "f00f42"), bare = try FakeSysfs()
        let on = try IOMMUState.read(sysfs: withIR.reader, procInterrupts: interruptsWithIR)
        #expect(on.units == [IOMMUState.Unit(name: "dmar0", kind: .intelVTd, interruptRemappingCapable: true)])
        #expect(on.isEnabled && on.interruptRemappingEnabled && !on.unsafeInterruptsAllowed)
        // QEMU's ecap with IR (bit 3) cleared, as intremap=off gives it; no IR- chips.
        let off = try IOMMUState.read(sysfs: withoutIR.reader, procInterrupts: interruptsWithoutIR)
        #expect(off.units.first?.interruptRemappingCapable == false)
        #expect(!off.interruptRemappingEnabled)
        let none = try IOMMUState.read(sysfs: bare.reader, procInterrupts: interruptsWithoutIR)
        #expect(none.units.isEmpty && !none.isEnabled)
    }

    /// The interface VFIO is reached through: the misc devices "vfio" (/dev/vfio/vfio,
    /// drivers/vfio/container.c) and "iommu" (/dev/iommu, drivers/iommu/iommufd/main.c) in
    /// sysfs, and the device cdevs' "vfio-dev" major in /proc/devices (drivers/vfio/device_cdev.c;
    /// the vfio-dev class in sysfs is there without them); the allow_unsafe_interrupts read is
    /// that interface's module's.
    @Test func theVFIOInterfaceAndItsUnsafeInterruptsParameter() throws {
        let sys = try vtdHost()
        var majors = "Character devices:\n 10 misc\n"
        func state() throws -> IOMMUState {
            try IOMMUState.read(sysfs: sys.reader, procInterrupts: interruptsWithIR, procDevices: ProcDevices(parsing: majors))
        }
        #expect(try state().vfioInterface == .none)
        try FileSystem.makeDirectories(sys.root + "/class/misc/vfio")
        try FileSystem.makeDirectories(sys.root + "/module/iommufd/parameters")
        try FileSystem.writeFile(sys.root + "/module/iommufd/parameters/allow_unsafe_interrupts", Array("Y\n".utf8))
        #expect(try state().vfioInterface == .container)
        #expect(try !state().unsafeInterruptsAllowed, "iommufd's parameter does not apply to the container")
        try FileSystem.makeDirectories(sys.root + "/class/misc/iommu")
        #expect(try state().vfioInterface == .container, "/dev/iommu without device cdevs")
        try FileSystem.makeDirectories(sys.root + "/class/vfio-dev")
        #expect(try state().vfioInterface == .container, "the vfio-dev class without the cdev major")
        majors += "238 vfio-dev\n"
        #expect(try state().vfioInterface == .iommufd)
        #expect(try state().unsafeInterruptsAllowed)
    }

    @Test func verdictsWithReasonsAndFixes() throws {
        let inv = try inventory(try vtdHost())
        func obstacles(_ bdf: String) -> [AssignmentObstacle] {
            inv.assignability(of: inv.device(at: address(bdf))!).obstacles
        }
        #expect(obstacles("0000:00:00.0") == [.hostBridge])
        #expect(obstacles("0000:02:10.0") == [])  // vfio-pci, own group, IR on
        #expect(obstacles("0000:02:00.0") == [.notBoundToVFIO(driver: "igb")])
        #expect(AssignmentObstacle.notBoundToVFIO(driver: "igb").fix(for: address("0000:02:00.0"))
                == "unbind from igb first: switchyard host bind 0000:02:00.0")
        let blocker = AssignmentObstacle.GroupMember(address: address("0000:03:00.1"), driver: "ixgbe")
        #expect(obstacles("0000:03:00.0") == [.groupNotViable(group: 13, blockers: [blocker])])
        #expect(AssignmentObstacle.groupNotViable(group: 13, blockers: [blocker]).reason
                == "IOMMU group 13 also holds 0000:03:00.1 (bound to ixgbe)")
        #expect(AssignmentObstacle.groupNotViable(group: 13, blockers: [blocker]).fix(for: address("0000:03:00.0"))
                == "bind the whole group: switchyard host bind 0000:03:00.0 --group")
        #expect(inv.groupMembers(of: inv.device(at: address("0000:03:00.0"))!).map(\.address.description)
                == ["0000:03:00.0", "0000:03:00.1"])

        let noIR = try inventory(try vtdHost(ecap: "f00f42"), interrupts: interruptsWithoutIR)
        #expect(noIR.assignability(of: noIR.device(at: address("0000:02:10.0"))!).obstacles
                == [.noInterruptRemapping(hardwareCapable: false)])

        // No IOMMU: every device says so, with the kernel parameter to turn it on.
        let bare = try FakeSysfs()
        try bare.addDevice("0000:00:03.0", attributes: ids("0x1af4", "0x1041", "0x020000"),
                           links: ["driver": bare.driver("virtio-pci")])
        let noIOMMU = try inventory(bare, interrupts: interruptsWithoutIR)
        let verdict = noIOMMU.assignability(of: noIOMMU.devices[0])
        #expect(verdict.obstacles == [.noIOMMU(units: []), .notBoundToVFIO(driver: "virtio-pci")])
        #expect(verdict.obstacles[0].fix(for: verdict.address).contains("intel_iommu=on"))
    }

    @Test func usesOnTheHost() throws {
        let sys = try vtdHost()
        try sys.addInterface("enp2s0", of: "0000:02:00.0", flags: "0x1003")  // IFF_UP | BROADCAST | MULTICAST
        try sys.addInterface("enp3s0f1", of: "0000:03:00.1", flags: "0x1002")  // down
        try sys.addBlock("nvme0n1", path: "0000:03:00.0/nvme/nvme0/nvme0n1")
        try sys.addBlock("nvme0n1p2", path: "0000:03:00.0/nvme/nvme0/nvme0n1/nvme0n1p2")
        let inv = try inventory(sys, mounts: "/dev/nvme0n1p2 /data ext4 rw 0 0\nproc /proc proc rw 0 0\n",
                                swaps: "Filename Type Size Used Priority\n/dev/nvme0n1 partition 100 0 -2\n")
        #expect(inv.uses[address("0000:02:00.0")] == [.interfaceUp("enp2s0")])
        #expect(inv.uses[address("0000:03:00.1")] == nil)
        #expect(inv.uses[address("0000:03:00.0")] == [.swap(blockDevice: "nvme0n1"),
                                                        .mounted(blockDevice: "nvme0n1p2", mountPoint: "/data")])
        #expect(inv.assignability(of: inv.device(at: address("0000:03:00.0"))!).obstacles.contains(
            .inUse([.swap(blockDevice: "nvme0n1"), .mounted(blockDevice: "nvme0n1p2", mountPoint: "/data")])))
        #expect(DeviceUse.interfaceUp("enp2s0").fix == "ip link set enp2s0 down")
    }
}

/// Records writes instead of making them: a refusal must come before any write.
private struct RecordingSysfs: SysfsReader, SysfsWriter {
    let base: Sysfs
    let log = WriteLog()
    final class WriteLog: @unchecked Sendable { var writes: [String] = [] }
    func attribute(_ path: String) throws(SystemError) -> String? { try base.attribute(path) }
    func linkName(_ path: String) throws(SystemError) -> String? { try base.linkName(path) }
    func linkTarget(_ path: String) throws(SystemError) -> String? { try base.linkTarget(path) }
    func entries(_ path: String) throws(SystemError) -> [String] { try base.entries(path) }
    func write(_ path: String, _ value: String) throws(SystemError) { log.writes.append(path) }
}

@Suite struct HostBindingRefusalTests {
    @Test func refusalsComeBeforeAnyWrite() throws {
        let sys = try vtdHost()
        try sys.addInterface("enp2s0", of: "0000:02:00.0", flags: "0x1003")
        let inv = try inventory(sys)
        let files = RecordingSysfs(base: sys.reader)
        let store = PreviousDriverStore(directory: sys.root + "/run-state")
        let binder = HostDriverBinder(sysfs: files, store: store)
        #expect(throws: HostDeviceControlError.noSuchDevice(address("0000:05:00.0"))) {
            try binder.bind(address("0000:05:00.0"), wholeGroup: false, in: inv)
        }
        #expect(throws: HostDeviceControlError.hostBridge(address("0000:00:00.0"))) {
            try binder.bind(address("0000:00:00.0"), wholeGroup: false, in: inv)
        }
        let blocker = AssignmentObstacle.GroupMember(address: address("0000:03:00.1"), driver: "ixgbe")
        #expect(throws: HostDeviceControlError.groupHasHostDrivers(address("0000:03:00.0"), group: 13, members: [blocker])) {
            try binder.bind(address("0000:03:00.0"), wholeGroup: false, in: inv)
        }
        #expect(throws: HostDeviceControlError.inUse(address("0000:02:00.0"), [.interfaceUp("enp2s0")])) {
            try binder.bind(address("0000:02:00.0"), wholeGroup: false, in: inv)
        }
        // The fake tree has no drivers/vfio-pci: the module is not loaded.
        #expect(throws: HostDeviceControlError.vfioDriverMissing) {
            try binder.bind(address("0000:03:00.0"), wholeGroup: true, in: inv)
        }
        #expect(throws: HostDeviceControlError.notBoundToVFIO(address("0000:02:10.2"), driver: "igbvf")) {
            try binder.unbind(address("0000:02:10.2"), wholeGroup: false, in: inv)
        }
        let sriov = SRIOVControl(sysfs: files)
        #expect(throws: HostDeviceControlError.tooManyVFs(address("0000:02:00.0"), asked: 8, total: 7)) {
            try sriov.setVirtualFunctions(address("0000:02:00.0"), count: 8, assignResources: false, in: inv)
        }
        #expect(throws: HostDeviceControlError.notNVMe(address("0000:02:00.0"))) {
            try sriov.setVirtualFunctions(address("0000:02:00.0"), count: 1, assignResources: true, in: inv)
        }
        #expect(throws: HostDeviceControlError.noSRIOV(address("0000:03:00.0"))) {
            try sriov.setVirtualFunctions(address("0000:03:00.0"), count: 1, assignResources: false, in: inv)
        }
        #expect(files.log.writes.isEmpty)
        let groupError = HostDeviceControlError.groupHasHostDrivers(address("0000:03:00.0"), group: 13, members: [blocker])
        #expect(groupError.description.contains("0000:03:00.1 (bound to ixgbe)"))
        #expect(groupError.description.hasSuffix("bind the whole group: switchyard host bind 0000:03:00.0 --group"))
    }

    /// --group takes the members on host drivers and the driverless ones too (a bus reset needs
    /// every function on the bus on vfio-pci), not bridges, not what is on vfio-pci already.
    @Test func theWholeGroupIncludesDriverlessFunctionsButNotBridges() throws {
        let sys = try vtdHost()
        try sys.addDevice("0000:03:00.2", attributes: ids("0x8086", "0x10fb", "0x020000"), links: ["iommu_group": sys.group(13)])
        try sys.addDevice("0000:03:01.0", attributes: ids("0x1b36", "0x000c", "0x060400"), links: ["iommu_group": sys.group(13)])
        let inv = try inventory(sys)
        let device = try #require(inv.device(at: address("0000:03:00.0")))
        let whole = HostDriverBinder<Sysfs>.bindTargets(of: device, wholeGroup: true, in: inv).map(\.address)
        #expect(whole.sorted() == [address("0000:03:00.0"), address("0000:03:00.1"), address("0000:03:00.2")])
        #expect(HostDriverBinder<Sysfs>.bindTargets(of: device, wholeGroup: false, in: inv).map(\.address) == [address("0000:03:00.0")])
    }

    @Test func theStoreKeepsTheFirstDriver() throws {
        let dir = try FileSystem.makeTemporaryDirectory(prefix: "host-drivers")
        defer { try? FileSystem.removeTree(dir) }
        let store = PreviousDriverStore(directory: dir + "/state")
        let a = address("0000:02:10.0")
        #expect(try store.recalled(a) == nil)
        try store.remember("igbvf", for: a)
        try store.remember("vfio-pci", for: a)  // a second bind keeps the first driver
        #expect(try store.recalled(a) == .some("igbvf"))
        try store.forget(a)
        #expect(try store.recalled(a) == nil)
        try store.remember(nil, for: a)
        #expect(try store.recalled(a) == .some(nil))
    }
}

/// Identify data laid out per the NVMe base specification (Primary Controller Capabilities,
/// Secondary Controller List), built byte by byte here, parsed by the code.
@Suite struct NVMeStructureTests {
    @Test func primaryCapabilitiesAndSecondaryList() {
        var caps = [UInt8](repeating: 0, count: 4096)
        caps[0] = 0x41                              // CNTLID 0x0041
        caps[32] = 4                                // VQFRT
        caps[40] = 4                                // VQRFAP
        caps[44] = 3                                // VQFRSM
        caps[64] = 2                                // VIFRT
        caps[72] = 2                                // VIRFAP
        caps[76] = 1                                // VIFRSM
        let parsed = PrimaryControllerCapabilities(parsing: caps)
        #expect(parsed.controllerID == 0x41 && parsed.queuesTotal == 4 && parsed.queuesOnPrimary == 4)
        #expect(parsed.queuesPerSecondaryMax == 3 && parsed.interruptsTotal == 2 && parsed.interruptsPerSecondaryMax == 1)
        #expect(NVMeFlexibleResources.share(of: parsed, vfs: 1) == (queues: 3, interrupts: 1))
        #expect(NVMeFlexibleResources.share(of: parsed, vfs: 2) == (queues: 2, interrupts: 1))

        var list = [UInt8](repeating: 0, count: 4096)
        list[0] = 2                                 // NUMID
        list[32] = 1; list[34] = 0x41; list[36] = 1; list[40] = 1; list[42] = 2; list[44] = 1   // SCID 1, online, VF 1
        list[64] = 2; list[66] = 0x41; list[72] = 2                                            // SCID 2, offline, VF 2
        #expect(SecondaryController.list(parsing: list) == [
            SecondaryController(controllerID: 1, online: true, virtualFunction: 1, queues: 2, interrupts: 1),
            SecondaryController(controllerID: 2, online: false, virtualFunction: 2, queues: 0, interrupts: 0),
        ])
        let command = NVMeAdminCommand.virtualizationManagement(.secondaryAssign, resource: .interrupts, controller: 1, count: 1)
        #expect(command.opcode == 0x1C && command.cdw10 == 0x0001_0108 && command.cdw11 == 1)
    }
}
