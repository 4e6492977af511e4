import HostOS
import KVM
import TestRequirements
import Testing
import VMMBase

@Suite(.requires(kvmAvailable, noKVM))
struct KVMSystemTests {
    @Test func apiVersionIsTwelveAndBasicCapabilitiesArePresent() throws {
        let system = try KVMSystem()
        #expect(system.apiVersion == 12)
        #expect(try system.checkExtension(.userMemory) > 0)
        #expect(try system.checkExtension(.irqchip) > 0)
        #expect(try system.checkExtension(.immediateExit) > 0)
        #expect(try system.checkExtension(.memorySlotCount) >= 32)
        // An unknown capability number reads as unsupported, not as an error.
        #expect(try system.checkExtension(KVMCapability(rawValue: 0x7FFF_0000)) == 0)
        #expect(try system.vcpuMmapSize() >= KVMLayout.current.runSize)
    }

    @Test func supportedCPUIDHasTheBasicLeaves() throws {
        let entries = try KVMSystem().supportedCPUID()
        #expect(entries.count > 4)
        #expect(entries.contains { $0.function == 0 })
        #expect(entries.contains { $0.function == 1 })
        #expect(entries.contains { $0.function == 0x8000_0000 })
    }

    @Test func openingSomethingElseFails() {
        #expect(throws: SystemError.self) { try KVMSystem(path: "/nonexistent/kvm") }
    }

    @Test func memorySlotsAreBookkeptAndOverlapsRejected() throws {
        let vm = try KVMSystem().createVirtualMachine()
        let ram = SharedMapping(try MemoryMapping.anonymous(count: 2 << 20))
        let low = try vm.mapMemory(guestAddress: 0, mapping: ram, size: 1 << 20)
        let high = try vm.mapMemory(guestAddress: 0x1_0000_0000, mapping: ram, offset: 1 << 20)
        #expect(low.slot == 0 && high.slot == 1)
        #expect(high.hostAddress == ram.hostAddress + (1 << 20))
        #expect(vm.memorySlots.map(\.guestAddress) == [0, 0x1_0000_0000])

        #expect(throws: SystemError.self) { try vm.mapMemory(guestAddress: 0x8_0000, mapping: ram, size: 1 << 20) }
        do {
            try vm.mapMemory(guestAddress: 0xFFFF_F000, mapping: ram, size: 8192)
            Issue.record("overlapping slot accepted")
        } catch { #expect(error.errno == .fileExists) }
        do {
            try vm.mapMemory(guestAddress: 0x2000_0000, mapping: ram, offset: 4096, size: 100)
            Issue.record("unaligned size accepted")
        } catch { #expect(error.errno == .invalidArgument) }
        do {
            try vm.mapMemory(guestAddress: 0x2000_0000, mapping: ram, offset: 1 << 20, size: 2 << 20)
            Issue.record("range past the mapping accepted")
        } catch { #expect(error.errno == .invalidArgument) }

        try vm.unmapMemory(slot: low.slot)
        #expect(vm.memorySlots.map(\.slot) == [1])
        // The freed number is reused.
        #expect(try vm.mapMemory(guestAddress: 0x10_0000, mapping: ram, size: 1 << 20).slot == 0)
        #expect(throws: SystemError.self) { try vm.unmapMemory(slot: 7) }
    }

    /// The errno a KVM call fails with, nil when it succeeds.
    func errno(_ call: () throws -> Void) -> Errno? {
        do { try call(); return nil } catch { return (error as? SystemError)?.errno ?? Errno(rawValue: -1) }
    }

    /// What the kernel accepts and refuses is Linux's KVM API (Documentation/virt/kvm/api.rst,
    /// virt/kvm/eventfd.c): a second irqfd on the same eventfd is EBUSY, a duplicate ioeventfd
    /// EEXIST, removing one that is not there ENOENT, an IOAPIC route to pin 24 or more EINVAL.
    @Test func fullIRQChipWithPITRoutingIRQFDAndIOEventFD() throws {
        let vm = try KVMSystem().createVirtualMachine(.init(irqchip: .full, createPIT: true))
        try vm.setIRQLine(4, level: true)
        try vm.setIRQLine(4, level: false)

        let msi = MSIMessage(address: 0xFEE0_0000, data: 0x31)
        var routes: [KVMVirtualMachine.GSIRoute] = (0..<16).map { .irqchip(gsi: $0, chip: $0 < 8 ? 0 : 1, pin: $0 % 8) }
        routes += (0..<24).map { .irqchip(gsi: $0, chip: 2, pin: $0) }
        routes.append(.msi(gsi: 24, message: msi))
        #expect(errno { try vm.setGSIRouting(routes + [.irqchip(gsi: 25, chip: 2, pin: 24)]) } == .invalidArgument)
        #expect(errno { try vm.setGSIRouting(routes + [.irqchip(gsi: 25, chip: 0, pin: 8)]) } == .invalidArgument)
        try vm.setGSIRouting(routes)

        let edge = try EventFD()
        try vm.registerIRQFD(edge, gsi: 24)
        #expect(errno { try vm.registerIRQFD(edge, gsi: 24) } == .busy)
        try vm.unregisterIRQFD(edge, gsi: 24)
        try vm.registerIRQFD(edge, gsi: 24)  // free again after removal
        try vm.unregisterIRQFD(edge, gsi: 24)

        if try vm.checkExtension(.irqfdResample) > 0 {
            let level = try EventFD(), resample = try EventFD()
            try vm.registerIRQFD(level, gsi: 10, resample: resample)
            #expect(errno { try vm.registerIRQFD(level, gsi: 10, resample: resample) } == .busy)
            try vm.unregisterIRQFD(level, gsi: 10)
        }

        let doorbell = try EventFD()
        try vm.registerIOEventFD(doorbell, space: .mmio, address: 0xFE00_0000, length: 4, dataMatch: 7)
        #expect(errno { try vm.registerIOEventFD(doorbell, space: .mmio, address: 0xFE00_0000, length: 4, dataMatch: 7) }
                == .fileExists)
        try vm.registerIOEventFD(doorbell, space: .port, address: 0x510, length: 2)
        try vm.unregisterIOEventFD(doorbell, space: .mmio, address: 0xFE00_0000, length: 4, dataMatch: 7)
        try vm.unregisterIOEventFD(doorbell, space: .port, address: 0x510, length: 2)
        #expect(errno { try vm.unregisterIOEventFD(doorbell, space: .port, address: 0x510, length: 2) }
                == .noSuchFileOrDirectory)

        // The MSI has no enabled local APIC to reach yet, but KVM_SIGNAL_MSI itself must be accepted.
        _ = try vm.createVCPU(id: 0)
        #expect(errno { _ = try vm.signalMSI(msi) } == nil)
    }

    @Test func registersRoundTrip() throws {
        let (vm, vcpu) = try makeRealModeGuest([0xF4])
        var regs = try vcpu.registers()
        #expect(regs.rip == 0x7C00)
        regs.rax = 0x1234_5678
        try vcpu.setRegisters(regs)
        #expect(try vcpu.registers().rax == 0x1234_5678)
        let sregs = try vcpu.specialRegisters()
        #expect(sregs.cs.base == 0 && sregs.cs.selector == 0)
        #expect(sregs.cr0 & 1 == 0, "real mode")
        withExtendedLifetime(vm) {}
    }

    @Test func cpuidAndMSRsCanBeSet() throws {
        let system = try KVMSystem()
        let vm = try system.createVirtualMachine()
        let vcpu = try vm.createVCPU(id: 0)
        try vcpu.setCPUID(try system.supportedCPUID())
        let sysenterCS: UInt32 = 0x174
        try vcpu.setMSRs([MSREntry(index: sysenterCS, value: 0x10)])
        #expect(try vcpu.msrs([sysenterCS]) == [MSREntry(index: sysenterCS, value: 0x10)])
        // A made-up MSR is refused with its number in the error.
        do {
            try vcpu.setMSRs([MSREntry(index: 0x4B56_FFFF, value: 1)])
            Issue.record("bogus MSR accepted")
        } catch {
            #expect(error.errno == .invalidArgument)
            #expect(error.context?.contains("4b56ffff") == true)
        }
    }
}
