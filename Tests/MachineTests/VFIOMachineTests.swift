import AddressSpace
import Chipset
import HostOS
import KVM
import PCI
import Synchronization
import TestRequirements
import Testing
import VFIO
import VMMBase
@testable import Machine

/// A twin host holding QEMU 10's igb at 0000:01:00.0 in group 5.
private func twinHost(_ configuration: VFIOTwinContainer.Configuration = .init(),
                      msixTableTrapped: Bool = false) throws -> (VFIOTwinKernel, VFIOTwinDevice, PCIAddress) {
    let address = PCIAddress(bus: 1, device: 0, function: 0)!
    let twin = try VFIOTwinDevice(name: "\(address)", identity: try VFIOTwinIdentity.captured("qemu10-igb"),
                                  msixTableTrapped: msixTableTrapped)
    return (VFIOTwinKernel(devices: [.init(address: address, group: 5, device: twin)], containerConfiguration: configuration,
                           log: twin.log), twin, address)
}

private func dmaCalls(_ log: VFIOTwinLog) -> [VFIOTwinCall] {
    log.all.filter {
        switch $0 { case .mapDMA, .unmapDMA: true; default: false }
    }
}

/// DMA maps follow guest RAM: checked against the RAM layout QEMU gives q35 (pc_q35.c: with
/// 2.75 GiB or more, 2 GiB below 4 GiB and the rest from 4 GiB) and against the twin's
/// record of every MAP_DMA/UNMAP_DMA.
@Suite struct VFIODMAMachineTests {
    @Test func assigningADeviceMapsEveryRAMBankOnceAtItsGuestAddress() throws {
        let machine = try Machine(MachineConfiguration(memorySize: 4 << 30))
        let (kernel, _, address) = try twinHost()
        let vfio = try machine.vfio(kernel: kernel)
        let assignment = try vfio.openDevice(address)
        let ramHost = machine.ram.mapping.hostAddress
        let expected = [VFIODMAMapping(iova: 0, size: 2 << 30, hostAddress: ramHost),
                        VFIODMAMapping(iova: 4 << 30, size: 2 << 30, hostAddress: ramHost + UInt(2 << 30))]
        #expect(vfio.dmaMappings == expected)
        #expect(kernel.openedContainers.first?.mappings == expected)
        #expect(machine.ramBanks.map { VFIODMAMapping(iova: $0.guestBase, size: $0.size, hostAddress: ramHost + UInt($0.offset)) }
                == expected)
        // The order QEMU's vfio_connect_container uses: group into the container, type1v2, then maps.
        let calls = kernel.log.all
        #expect(calls.prefix(2) == [.setContainer(group: 5), .setIOMMU(.type1v2)])
        #expect(calls.last == .openDevice("0000:01:00.0"))
        // The same machine hands out the same VFIO; a second device of the group shares it.
        #expect(try machine.vfio(kernel: kernel) === vfio)
        vfio.release(assignment)
        #expect(vfio.dmaMappings.isEmpty && kernel.openedContainers.first?.mappings == [])
        // Assigned again (hot-unplug, then plug): the container keeps its IOMMU, RAM is mapped again.
        let again = try vfio.openDevice(address)
        #expect(vfio.dmaMappings == expected)
        #expect(kernel.log.all.filter { $0 == .setIOMMU(.type1v2) }.count == 1)
        vfio.release(again)
    }

    @Test func pamAndSMRAMChangesLeaveTheMapsAlone() throws {
        let machine = try Machine(MachineConfiguration(memorySize: 256 << 20))
        let (kernel, _, address) = try twinHost()
        _ = try machine.vfio(kernel: kernel).openDevice(address)
        let before = dmaCalls(kernel.log)
        #expect(before.count == 1)
        let cycles = PortConfigCycles(machine)
        let commits = machine.spaces.rebuildCounts.platform
        machine.programPAMAsFirmwareLeavesIt()
        cycles.write(bus: 0, devfn: 0, offset: 0x9D, width: .byte, value: 0x4A)  // SMRAM open
        cycles.write(bus: 0, devfn: 0, offset: 0x9D, width: .byte, value: 0x0A)  // and closed
        cycles.write(bus: 0, devfn: 0, offset: 0x9E, width: .byte, value: 0x03)  // TSEG 1 MiB (ESMRAMC T_EN)
        #expect(machine.spaces.rebuildCounts.platform > commits)  // the layer did commit
        #expect(dmaCalls(kernel.log) == before)
        #expect(try machine.vfio(kernel: kernel).dmaMappings ==
                [VFIODMAMapping(iova: 0, size: 256 << 20, hostAddress: machine.ram.mapping.hostAddress)])
    }

    @Test func tooManyBanksForTheIOMMUFailBeforeMappingAnything() throws {
        var configuration = VFIOTwinContainer.Configuration()
        configuration.dmaEntryLimit = 1
        let machine = try Machine(MachineConfiguration(memorySize: 4 << 30))
        let (kernel, _, address) = try twinHost(configuration)
        do {
            _ = try machine.vfio(kernel: kernel).openDevice(address)
            Issue.record("assigned a device with two RAM banks and one DMA entry")
        } catch {
            #expect(error.reason == .dmaMappingLimit(needed: 2, available: 1))
            #expect(error.description.contains("dma_entry_limit"))
        }
        #expect(dmaCalls(kernel.log).isEmpty)
    }

    @Test func ramAddedOrRemovedByACommitIsMappedOrUnmapped() throws {
        // A layer like the machine's platform layer, with a second RAM that can be plugged.
        let ram = try RAMHandler(size: 64 << 20)
        let extra = try RAMHandler(size: 32 << 20)
        let plugged = Mutex(false)
        let layer = CommittedLayer {
            var memory = Region.container("system", size: .max)
            memory.add(.alias("ram-below-4g", of: .leaf("ram", size: ram.size, handler: ram), offset: 0, size: ram.size), at: 0)
            if plugged.withLock({ $0 }) {
                memory.add(.alias("dimm0", of: .leaf("dimm", size: extra.size, handler: extra), offset: 0, size: extra.size),
                           at: 1 << 32)
            }
            return (memory, .container("io", size: 1 << 16))
        }
        let (kernel, _, _) = try twinHost()
        let container = try kernel.openContainer()
        try kernel.openGroup(5).setContainer(container)
        try container.setIOMMU(.type1v2)
        let banks = ram.banks(lowMemoryTop: ram.size)
        let listener = GuestRAMDMAListener(mirror: try VFIODMAMirror(container: container), knownBanks: banks, ram: ram)
        try listener.sync(to: layer.view(.memory))
        layer.addListener(listener)
        let low = VFIODMAMapping(iova: 0, size: 64 << 20, hostAddress: ram.mapping.hostAddress)
        let dimm = VFIODMAMapping(iova: 1 << 32, size: 32 << 20, hostAddress: extra.mapping.hostAddress)
        #expect(listener.mirror.mappings == [low])

        plugged.withLock { $0 = true }
        layer.commit()
        #expect(listener.mirror.mappings == [low, dimm])
        plugged.withLock { $0 = false }
        layer.commit()
        #expect(listener.mirror.mappings == [low])
        #expect(dmaCalls(kernel.log) == [.mapDMA(low), .mapDMA(dimm), .unmapDMA(iova: 1 << 32, size: 32 << 20)])
        #expect(listener.lastError == nil)
    }
}

/// A function whose BARs are the twin device's, with the twin's mmap'd areas laid over them:
/// the least a passthrough device model does, so the machine's side can be checked alone.
private final class TwinBARFunction: DirectlyMappedBARs {
    let name = "twin-bars"
    private let config: Mutex<ConfigSpace>
    private let areas: [Int: [DirectBARArea]]
    static let trapped: UInt64 = 0x5a5a_5a5a

    init(device: any VFIODeviceIO, identity: VFIOTwinIdentity) throws {
        var cs = ConfigSpace(layout: .endpoint, express: false)
        var areas: [Int: [DirectBARArea]] = [:]
        for bar in identity.bars {
            let kind: BARDescriptor.Kind = switch bar.kind {
            case .io: .io
            case .memory32(let p): .memory32(prefetchable: p)
            case .memory64(let p): .memory64(prefetchable: p)
            }
            try cs.defineBAR(bar.index, BARDescriptor(kind, size: bar.size))
            let region = try device.regionInfo(UInt32(bar.index))
            areas[bar.index] = try region.mappableAreas.map { area in
                let shared = SharedMapping(try device.map(region: region, area: area))
                return DirectBARArea(offset: area.offset, handler: HostMemoryHandler(bytes: shared.bytes, owner: shared))
            }
        }
        cs.captureResetState()
        config = Mutex(cs)
        self.areas = areas
    }

    func configRead(_ offset: Int, width: AccessWidth) -> UInt32 { config.withLock { $0.read(offset, width: width) } }
    func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        config.withLock { $0.write(offset, width: width, value: value) }
    }
    func configSnapshot() -> ConfigSpace { config.withLock { $0 } }
    func reset() { config.withLock { $0.reset() } }
    /// What the trapped part of a BAR (the MSI-X table page) answers: the device model's emulation.
    func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 { width.truncate(Self.trapped) }
    func directAreas(ofBAR index: Int) -> [DirectBARArea] { areas[index] ?? [] }
}

@Suite struct HostMemoryBARTests {
    static let hasKVM = KVMSystem.isAvailable(path: "/dev/kvm")
    static let devfn: UInt8 = 3 << 3

    /// igb's BAR3 (64-bit, 16 KiB) with its MSI-X table page trapped, at 0xC000_0000.
    fileprivate static func machineWithTwin() throws -> (Machine, VFIOTwinDevice, PortConfigCycles, TwinBARFunction) {
        let machine = try Machine(MachineConfiguration(memorySize: 64 << 20))
        let (kernel, twin, address) = try twinHost(msixTableTrapped: true)
        let assignment = try machine.vfio(kernel: kernel).openDevice(address)
        let function = try TwinBARFunction(device: assignment.device, identity: twin.identity)
        try machine.rootBus.attach(function, at: devfn)
        let cycles = PortConfigCycles(machine)
        cycles.write(bus: 0, devfn: devfn, offset: 0x1C, width: .dword, value: 0xC000_0000)
        cycles.write(bus: 0, devfn: devfn, offset: 0x20, width: .dword, value: 0)
        cycles.write(bus: 0, devfn: devfn, offset: 0x04, width: .word, value: 0x0002)  // memory decode on
        return (machine, twin, cycles, function)
    }

    @Test func theMappedAreaAnswersAtTheBARsAddressAndTheTrappedPageDoesNot() throws {
        let (machine, twin, _, _) = try Self.machineWithTwin()
        let bar3 = try twin.regionInfo(3)
        try twin.writeLittleEndian(region: bar3, at: 0x1010, size: 4, 0x1234_5678)
        #expect(machine.mmioRead(0xC000_1010, width: .dword) == 0x1234_5678)
        machine.mmioWrite(0xC000_2000, width: .qword, value: 0x0102_0304_0506_0708)
        #expect(try twin.readLittleEndian(region: bar3, at: 0x2000, size: 8) == 0x0102_0304_0506_0708)
        #expect(machine.mmioRead(0xC000_0000, width: .dword) == TwinBARFunction.trapped)
    }

    @Test(.requires(hasKVM, "no usable /dev/kvm on this host"))
    func kvmSlotsFollowTheBARAsItMovesAndStopsDecoding() throws {
        let (machine, _, cycles, function) = try Self.machineWithTwin()
        let vm = try KVMSystem().createVirtualMachine()
        let slots = machine.followMemorySlots(in: vm)
        defer { machine.stopFollowing(slots) }
        func deviceSlots() -> [KVMVirtualMachine.MemorySlot] { vm.memorySlots.filter { $0.guestAddress >= 1 << 31 } }
        // One slot: the mmap'd area after the trapped MSI-X page, backed by that very mapping.
        let area = try #require(function.directAreas(ofBAR: 3).first)
        #expect(deviceSlots().map(\.guestAddress) == [0xC000_1000])
        #expect(deviceSlots().map(\.size) == [0x3000])
        #expect(deviceSlots().map(\.hostAddress) == [area.handler.hostAddress])

        // The move costs its own slot's delete and add (KVM_SET_USER_MEMORY_REGION calls, as
        // the VM counts them), and RAM's slots stay as they were.
        let ramSlots = vm.memorySlots.filter { $0.guestAddress < 1 << 31 }
        let updatesBefore = vm.memorySlotUpdates
        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x1C, width: .dword, value: 0xD000_0000)
        #expect(deviceSlots().map(\.guestAddress) == [0xD000_1000])
        #expect(vm.memorySlotUpdates - updatesBefore == 2)
        #expect(vm.memorySlots.filter { $0.guestAddress < 1 << 31 } == ramSlots)

        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x04, width: .word, value: 0)
        #expect(deviceSlots().isEmpty)
        // RAM's slots are untouched throughout.
        #expect(vm.memorySlots.contains { $0.guestAddress == 0 })
    }

    /// An emulated BAR (pci-testdev's BAR 0) is all exits: moving it and turning its decoding
    /// off and on costs no KVM_SET_USER_MEMORY_REGION at all.
    @Test(.requires(hasKVM, "no usable /dev/kvm on this host"))
    func movingAnEmulatedBARCostsNoSlotIoctl() throws {
        let machine = try Machine(MachineConfiguration(memorySize: 64 << 20))
        try machine.rootBus.attach(PCITestDevice(name: "pci-testdev"), at: Self.devfn)
        let cycles = PortConfigCycles(machine)
        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x10, width: .dword, value: 0xC000_0000)
        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x04, width: .word, value: 0x0002)
        let vm = try KVMSystem().createVirtualMachine()
        let slots = machine.followMemorySlots(in: vm)
        defer { machine.stopFollowing(slots) }
        let layout = vm.memorySlots, before = vm.memorySlotUpdates
        let pciCommits = machine.spaces.pci.commitCount
        for address: UInt32 in [0xD000_0000, 0xC000_0000, 0xE000_0000] {
            cycles.write(bus: 0, devfn: Self.devfn, offset: 0x10, width: .dword, value: address)
        }
        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x04, width: .word, value: 0)
        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x04, width: .word, value: 0x0002)
        // Five commits of the PCI layer happened (the moves were real), none touched a slot.
        #expect(machine.spaces.pci.commitCount - pciCommits == 5)
        #expect(vm.memorySlotUpdates == before)
        #expect(vm.memorySlots == layout)
    }
}
