import Control
import Foundation
import KVM
import Machine
import Synchronization
import TestRequirements
import Testing
import VFIO
import VMMBase

/// `-device vfio-pci` in a whole machine, with QEMU 10's igb as the VFIO twin behind it: what
/// real lspci decodes of the guest's view after firmware enumeration, guest accesses at the
/// addresses firmware gave the BARs, and hot-plug into a root port.
@Suite(.serialized) struct VFIOPCIMachineTests {
    static let host = PCIAddress(bus: 0x3B, devfn: 0)
    static let hostText = "0000:3b:00.0"

    static func twinSource() throws -> (VFIOTwinDevice, VFIOTwinKernel) {
        let twin = try VFIOTwinDevice(name: hostText, identity: VFIOTwinIdentity.captured("qemu10-igb"), msixTableTrapped: true)
        return (twin, VFIOTwinKernel(devices: [.init(address: host, group: 42, device: twin)]))
    }

    static let rootPort = DeviceSpec(driver: "pcie-root-port", id: "rp1", bus: "pcie.0", devfn: 4 << 3,
                                     properties: ["chassis": "1", "slot": "1"])
    static let nic = DeviceSpec(driver: "vfio-pci", id: "nic0", bus: "rp1", properties: ["host": hostText])

    @Test("real lspci: the igb's BARs at firmware's addresses, MSI-X, the root port's link, no SR-IOV",
          .requires(RealLspci.isInstalled, RealLspci.missing))
    func guestViewThroughLspci() throws {
        let (_, source) = try Self.twinSource()
        let machine = try Machine(MachineConfiguration(devices: [Self.rootPort, Self.nic]), vfioKernel: source)
        let report = try machine.runFirmware()
        let dump = GuestLspci.render(machine, options: LspciOptions(hexDump: 4))
        let file = try temporaryFile("vfio-lspci.txt", contents: dump)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let text = try run("/usr/bin/lspci", ["-F", file, "-vvv", "-s", "01:00.0"]).out
        let port = try run("/usr/bin/lspci", ["-F", file, "-vvv", "-s", "00:04.0"]).out

        let nic = try #require(report.functions.first { $0.address.shortDescription == "01:00.0" })
        #expect(nic.vendorID == 0x8086 && nic.deviceID == 0x10C9)
        for bar in nic.bars {
            let base = String(bar.range.base, radix: 16)
            #expect(text.contains(bar.kind == .io ? "I/O ports at \(base)" : "Memory at \(base)"), "BAR \(bar.index) at \(base)")
        }
        // Firmware sized the virtual BARs as QEMU's igb answers BAR sizing: 128K, 128K, 32 bytes, 16K.
        #expect(nic.bars.map { [UInt64($0.index), $0.range.size ?? 0] } == [[0, 0x20000], [1, 0x20000], [2, 32], [3, 0x4000]])
        for line in ["Region 0: Memory at \(String(nic.bars[0].range.base, radix: 16)) (32-bit, non-prefetchable)",
                     "Region 3: Memory at \(String(nic.bars[3].range.base, radix: 16)) (64-bit, non-prefetchable)",
                     "MSI-X: Enable- Count=10", "Vector table: BAR=3 offset=00000000", "Express (v2) Endpoint"] {
            #expect(text.contains(line), "lspci -vvv lacks \"\(line)\"")
        }
        #expect(!text.contains("SR-IOV"))
        // The endpoint's link is the guest's root port's, not the host's.
        let portLink = try #require(port.split(separator: "\n").first { $0.contains("LnkCap:") })
        let speedWidth = try #require(portLink.range(of: "Speed ")).lowerBound
        let expected = portLink[speedWidth...].split(separator: ",").prefix(2).joined(separator: ",")
        #expect(text.contains("LnkCap:\tPort #0, " + expected), "port: \(portLink)")
    }

    @Test("the guest's accesses at firmware's BAR address reach the device; a moved BAR follows")
    func barAccessesAndMoves() throws {
        let (twin, source) = try Self.twinSource()
        let machine = try Machine(MachineConfiguration(devices: [Self.rootPort, Self.nic]), vfioKernel: source)
        let report = try machine.runFirmware()
        let nic = try #require(report.functions.first { $0.address.shortDescription == "01:00.0" })
        let bar0 = try #require(nic.bars.first { $0.index == 0 }).range.base
        // The mmap'd areas lie over the BARs as host memory: BARs 0 and 1 whole, BAR 3 without
        // the pages of the MSI-X table (0x0000) and PBA (0x2000), which stay trapped.
        let map = machine.describeMemory()
        let direct = map.split(separator: "\n").filter { $0.contains("direct+") }
        #expect(direct.filter { $0.contains("BAR0 direct+0x0") || $0.contains("BAR1 direct+0x0") }.count == 2, "\(map)")
        #expect(direct.filter { $0.contains("BAR3 direct+") }.map { String($0.split(separator: "+").last ?? "") }.sorted()
                == ["0x1000", "0x3000"], "\(direct)")
        machine.mmioWrite(bar0 + 0x10, width: .dword, value: 0xA5A5_0001)
        let region = try twin.regionInfo(0)
        #expect(try twin.readLittleEndian(region: region, at: 0x10, size: 4) == 0xA5A5_0001)

        // The guest moves BAR 0 by 1 MiB (decode off, new address, decode on).
        let cycles = PortConfigCycles(machine)
        let command = cycles.read(bus: 1, devfn: 0, offset: 0x04, width: .word)
        twin.log.clear()
        cycles.write(bus: 1, devfn: 0, offset: 0x04, width: .word, value: command & ~0x2)
        cycles.write(bus: 1, devfn: 0, offset: 0x10, width: .dword, value: UInt32(bar0 + 0x10_0000))
        cycles.write(bus: 1, devfn: 0, offset: 0x04, width: .word, value: command)
        // Both Command writes reached the device, and the address space was committed after
        // each; the commits read none of the device's config registers (the guest's whole view
        // of this Express function is 1,024 dword reads, a pread each on real VFIO). The only
        // reads are of Command itself, for the bits a write leaves as the device has them.
        var read: [UInt64] = [], written: [UInt64] = []
        for case .read(_, VFIOPCIRegion.config, let offset, let count) in twin.log.all { read += (0..<UInt64(count)).map { offset + $0 } }
        for case .write(_, VFIOPCIRegion.config, let offset, let bytes) in twin.log.all { written += (0..<UInt64(bytes.count)).map { offset + $0 } }
        #expect(Set(read).isSubset(of: [4, 5]) && read.count <= 4, "config bytes read: \(read)")
        #expect(written.sorted() == [4, 4, 5, 5], "config bytes written: \(written)")
        #expect(machine.mmioRead(bar0 + 0x10_0000 + 0x10, width: .dword) == 0xA5A5_0001)
        #expect(machine.mmioRead(bar0 + 0x10, width: .dword) == 0xFFFF_FFFF)  // nothing there any more
    }

    @Test("device_add into a root port and device_del: the device is reset, and can be plugged again")
    func hotPlugAndReuse() throws {
        let (twin, source) = try Self.twinSource()
        let machine = try Machine(MachineConfiguration(devices: [Self.rootPort]), vfioKernel: source)
        try machine.runFirmware()
        let deleted = Mutex<[String]>([])
        _ = machine.addEventListener { if case .deviceDeleted(let id, _) = $0 { deleted.withLock { $0.append(id ?? "") } } }
        for round in 1...2 {
            twin.log.clear()
            try machine.hotPlug(Self.nic)
            #expect(machine.device(id: "nic0") != nil)
            #expect(machine.device(id: "nic0")?.function.configRead(0, width: .dword) == 0x10C9_8086)
            try machine.unplug(id: "nic0", mode: .surprise)
            #expect(machine.device(id: "nic0") == nil)
            #expect(twin.log.all.contains(.reset(device: Self.hostText)), "round \(round)")
        }
        #expect(deleted.withLock { $0 } == ["nic0", "nic0"])
    }

    /// The kernel is the oracle: KVM's IOAPIC latches the input a resampling irqfd asserts
    /// (virt/kvm/eventfd.c; its IRR, read with KVM_GET_IRQCHIP), and KVM delivers an event the
    /// eventfd held before the irqfd was registered.
    @Test("INTx of an assigned function: VFIO's trigger eventfd is a resampling irqfd on the pin's IOAPIC input once KVM's irqchip is attached; unplug removes it",
          .requires(KVMSystem.isAvailable(), "no usable /dev/kvm"))
    func intxIsAResamplingIRQFD() throws {
        let (twin, source) = try Self.twinSource()
        let machine = try Machine(MachineConfiguration(devices: [Self.rootPort, Self.nic]), vfioKernel: source)
        try machine.runFirmware()
        let trigger = try #require(twin.triggers(VFIOPCIIRQ.intx).first ?? nil, "VFIO has no INTx trigger eventfd")
        #expect(trigger >= 0)
        #expect(machine.kernelINTxGSIs == [], "no KVM yet")
        // The device asserts its pin before KVM is there: the event waits in the eventfd.
        #expect(twin.raise(index: VFIOPCIIRQ.intx))

        let vm = try KVMSystem().createVirtualMachine(.init(irqchip: .full))
        let vcpu = try vm.createVCPU(id: 0)
        defer { withExtendedLifetime(vcpu) {} }
        machine.attachInterruptRoutes(try KVMInterruptRoutes(virtualMachine: vm))
        let gsis = machine.kernelINTxGSIs
        #expect(gsis.count == 1 && (16...23).contains(gsis.first ?? 0), "one line on a PIRQ's IOAPIC input: \(gsis)")
        let bit = UInt32(1) << (gsis.first ?? 0)
        #expect(Self.eventually { ((try? vm.ioapicInterruptRequests()) ?? 0) & bit != 0 }, "the waiting assertion reached the IOAPIC")
        // Bound late, the line told VFIO to unmask (the resample eventfd).
        twin.serviceResample()
        #expect(!twin.intxMasked)

        try machine.unplug(id: "nic0", mode: .surprise)
        #expect(machine.kernelINTxGSIs == [])
        #expect(Self.eventually { ((try? vm.ioapicInterruptRequests()) ?? 0) & bit == 0 }, "the removed irqfd's level is gone")
    }

    /// VFIO's hot reset needs the fd of every group the reset reaches (vfio_pci_core's
    /// VFIO_DEVICE_PCI_HOT_RESET); the twin refuses without them, as the kernel does.
    @Test("a device with no function reset gets a bus reset when the bus holds only what the VM owns, and none otherwise",
          arguments: [(reaches: [PCIAddress](), reset: true), (reaches: [PCIAddress(bus: 0x3B, devfn: 1)], reset: false)])
    func busResetForADeviceWithoutFLR(reaches others: [PCIAddress], reset: Bool) throws {
        let dependencies = [VFIOHotResetDependency(groupID: 42, address: Self.host)]
            + others.map { VFIOHotResetDependency(groupID: 7, address: $0) }  // group 7: not this VM's
        let calls = try Self.callsOfAnUnplug(withoutFLRReaching: dependencies)
        #expect(calls.contains(.hotReset(device: Self.hostText, groups: [42])) == reset)
        #expect(calls.contains(.reset(device: Self.hostText)) == reset)
        #expect(!calls.contains { if case .hotReset(_, let groups) = $0 { groups != [42] } else { false } },
                "no hot reset is tried without every group it reaches")
    }

    /// The twin calls a surprise unplug makes of a hot-plugged device (group 42) that has no
    /// function reset and whose bus reset reaches `dependencies`.
    private static func callsOfAnUnplug(withoutFLRReaching dependencies: [VFIOHotResetDependency]) throws -> [VFIOTwinCall] {
        let twin = try VFIOTwinDevice(name: Self.hostText, identity: VFIOTwinIdentity.captured("qemu10-igb"),
                                      hotResetDependencies: dependencies, msixTableTrapped: true, supportsReset: false)
        let source = VFIOTwinKernel(devices: [.init(address: Self.host, group: 42, device: twin)])
        let machine = try Machine(MachineConfiguration(devices: [Self.rootPort]), vfioKernel: source)
        try machine.runFirmware()
        try machine.hotPlug(Self.nic)
        twin.log.clear()
        try machine.unplug(id: "nic0", mode: .surprise)
        return twin.log.all
    }

    /// The bus also holds a function of the same group left without a driver: Linux refuses
    /// the reset (EINVAL, found in the rig with a two-function e1000), and the line says which
    /// function to bind.
    @Test func aBusResetRefusedForAFunctionOffVFIONamesTheBind() throws {
        let sibling = PCIAddress(bus: 0x3B, devfn: 1)
        let twin = try VFIOTwinDevice(name: Self.hostText, identity: VFIOTwinIdentity.captured("qemu10-igb"),
                                      hotResetDependencies: [VFIOHotResetDependency(groupID: 42, address: Self.host),
                                                             VFIOHotResetDependency(groupID: 42, address: sibling)],
                                      functionsOffVFIO: [sibling], msixTableTrapped: true, supportsReset: false)
        let source = VFIOTwinKernel(devices: [.init(address: Self.host, group: 42, device: twin)])
        let machine = try Machine(MachineConfiguration(devices: [Self.rootPort]), vfioKernel: source)
        try machine.runFirmware()
        try machine.hotPlug(Self.nic)
        try machine.unplug(id: "nic0", mode: .surprise)
        #expect(twin.log.all.contains(.hotReset(device: Self.hostText, groups: [42])))
        #expect(!twin.log.all.contains(.reset(device: Self.hostText)))
        let line = GuestErrorLog.recent.last { $0.device == "nic0" && $0.message.contains("VFIO_DEVICE_PCI_HOT_RESET") }
        #expect(line?.message.contains("switchyard host bind \(sibling)") == true, "\(String(describing: line))")
    }

    /// A device opened as a cdev under iommufd: the kernel judges ownership itself and reports it
    /// per function (VFIO_PCI_HOT_RESET_FLAG_DEV_ID; VFIO_PCI_DEVID_NOT_OWNED for a function
    /// outside our iommufd), and the reset passes no group fds (<linux/vfio.h>).
    @Test("under iommufd a bus reset passes no group fds, and none is tried when a function is not owned",
          arguments: [true, false])
    func busResetUnderIOMMUFD(siblingOwned: Bool) throws {
        let sibling = PCIAddress(bus: 0x3B, devfn: 1)
        let calls = try Self.callsOfAnUnplug(withoutFLRReaching: [.init(owner: .iommufd(owned: true), address: Self.host),
                                                                  .init(owner: .iommufd(owned: siblingOwned), address: sibling)])
        #expect(calls.contains(.hotReset(device: Self.hostText, groups: [])) == siblingOwned)
        #expect(calls.contains(.reset(device: Self.hostText)) == siblingOwned)
        if !siblingOwned {
            let line = GuestErrorLog.recent.last { $0.device == "nic0" && $0.message.contains("VFIO_DEVICE_PCI_HOT_RESET") }
            #expect(line?.message.contains("iommufd does not own") == true && line?.message.contains("switchyard host bind \(sibling)") == true,
                    "\(String(describing: line))")
        }
    }

    /// `iommufd=ID` (QEMU's property, naming an `-object iommufd`) insists on iommufd: a host
    /// whose VFIO is the type1 container refuses the device with what the kernel needs; one with
    /// iommufd assigns it.
    @Test("iommufd= assigns through iommufd or refuses, naming the kernel it needs", arguments: [true, false])
    func iommufdPropertyInsistsOnIOMMUFD(hostHasIt: Bool) throws {
        let twin = try VFIOTwinDevice(name: Self.hostText, identity: VFIOTwinIdentity.captured("qemu10-igb"), msixTableTrapped: true)
        let source = VFIOTwinKernel(devices: [.init(address: Self.host, group: 42, device: twin)], usesIOMMUFD: hostHasIt)
        var nic = Self.nic
        nic.properties["iommufd"] = "iommufd0"
        var configuration = MachineConfiguration(devices: [Self.rootPort, nic])
        configuration.iommufdObjects = ["iommufd0"]
        do {
            let machine = try Machine(configuration, vfioKernel: source)
            #expect(hostHasIt && machine.device(id: "nic0") != nil)
        } catch {
            #expect(!hostHasIt && "\(error)".contains("this host's VFIO has no iommufd"), "\(error)")
        }
    }

    /// A machine dropped with its device still assigned (tests, fuzzing: many machines in one
    /// process) lets go of it: nothing, the notices thread included, keeps the device (the vfio
    /// fuzz target ran out of file descriptors when the notices outlived their machines).
    @Test func aMachineDroppedWithItsDeviceAssignedLetsGoOfIt() throws {
        weak var released: VFIOTwinDevice?
        try {
            let (twin, source) = try Self.twinSource()
            released = twin
            let machine = try Machine(MachineConfiguration(devices: [Self.rootPort, Self.nic]), vfioKernel: source)
            try machine.runFirmware()
            #expect(twin.triggers(VFIOPCIIRQ.request).count == 1, "the request notice is wired")
        }()
        #expect(released == nil, "the assigned device outlived its machine")
    }

    /// Polls `condition` for up to two seconds (the notices thread answers asynchronously).
    private static func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0..<200 {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    @Test("the host asks for the device back (VFIO's request notice): the guest is asked to let go through the slot's attention button; the notice is unwired at release")
    func hostRequestUnplugsTheDevice() throws {
        try hostRequestUnplugs(Self.nic, reference: "nic0")
    }

    @Test("a device given no id is found by its QOM path when the host asks for it back")
    func hostRequestUnplugsAnAnonymousDevice() throws {
        var anonymous = Self.nic
        anonymous.id = nil
        try hostRequestUnplugs(anonymous, reference: "/machine/peripheral-anon/device[0]")
    }

    private func hostRequestUnplugs(_ nic: DeviceSpec, reference: String) throws {
        let (twin, source) = try Self.twinSource()
        let machine = try Machine(MachineConfiguration(devices: [Self.rootPort]), vfioKernel: source)
        try machine.runFirmware()
        try machine.hotPlug(nic)
        // Both notices are wired: the igb is PCI Express, so vfio-pci offers the error notice too.
        #expect(twin.triggers(VFIOPCIIRQ.request).count == 1 && twin.triggers(VFIOPCIIRQ.request)[0] != nil)
        #expect(twin.triggers(VFIOPCIIRQ.error).count == 1 && twin.triggers(VFIOPCIIRQ.error)[0] != nil)
        // The guest powers the slot on, as pciehp does once it sees the device (Slot Control:
        // power indicator on (01b, bits 9:8), power controller on (bit 10 clear)).
        let cycles = PortConfigCycles(machine)
        let expressCap = Int(cycles.read(bus: 0, devfn: 4 << 3, offset: 0x34, width: .byte))
        var pointer = expressCap
        while pointer != 0, cycles.read(bus: 0, devfn: 4 << 3, offset: pointer, width: .byte) != 0x10 {
            pointer = Int(cycles.read(bus: 0, devfn: 4 << 3, offset: pointer + 1, width: .byte))
        }
        try #require(pointer != 0, "the root port has a PCI Express capability")
        let control = pointer + 0x18, status = pointer + 0x1A
        cycles.write(bus: 0, devfn: 4 << 3, offset: control, width: .word,
                     value: (cycles.read(bus: 0, devfn: 4 << 3, offset: control, width: .word) & ~0x0700) | 0x0100)
        // The plug's latched events cleared (RW1C; exactly the pending ones, as pciehp writes them).
        let latched = cycles.read(bus: 0, devfn: 4 << 3, offset: status, width: .word) & 0x1F
        cycles.write(bus: 0, devfn: 4 << 3, offset: status, width: .word, value: latched)
        #expect(cycles.read(bus: 0, devfn: 4 << 3, offset: status, width: .word) & 0x1 == 0)

        #expect(twin.raise(index: VFIOPCIIRQ.request))
        // PCIe Base 6.0, 7.5.3.11: Slot Status bit 0 is Attention Button Pressed.
        #expect(Self.eventually { cycles.read(bus: 0, devfn: 4 << 3, offset: status, width: .word) & 0x1 != 0 },
                "no attention button press after the host's request")
        #expect(machine.device(id: reference) != nil, "the guest has not let go yet")
        // The kernel repeats its request every 10 s: a repeat while the unplug is under way is no second press.
        #expect(twin.raise(index: VFIOPCIIRQ.request))
        usleep(50_000)
        #expect(machine.device(id: reference) != nil)
        // Released (here by a surprise removal): both notices are disabled at VFIO.
        try machine.unplug(id: reference, mode: .surprise)
        #expect(twin.triggers(VFIOPCIIRQ.request).isEmpty && twin.triggers(VFIOPCIIRQ.error).isEmpty)
        #expect(twin.log.all.contains(.setIRQs(device: Self.hostText, VFIOIRQRequest(index: VFIOPCIIRQ.request, .disable))))
    }

    @Test("AER on the host (VFIO's error notice): the machine reports the failed device and the controller stops the VM")
    func hostErrorStopsTheVM() throws {
        let (twin, source) = try Self.twinSource()
        let machine = try Machine(MachineConfiguration(devices: [Self.rootPort, Self.nic]), vfioKernel: source)
        try machine.runFirmware()
        let controller = VMController(machine: machine, startPaused: false)
        let failed = Mutex<[String]>([])
        _ = machine.addEventListener { if case .assignedDeviceFailed(let id, let host) = $0 { failed.withLock { $0.append("\(id) \(host)") } } }
        #expect(controller.runState == .running)
        #expect(twin.raise(index: VFIOPCIIRQ.error))
        #expect(Self.eventually { controller.runState == .paused }, "the VM still runs after the host's error report")
        // Listeners run one after the other on the notices thread: the controller's came first.
        #expect(Self.eventually { failed.withLock { $0 } == ["nic0 \(Self.hostText)"] })
    }
}
