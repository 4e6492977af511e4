import HostOS
import Interrupts
import KVM
import Machine
import TestRequirements
import Testing
import VMMBase

/// The machine's GSI table bound to a real KVM VM. What the kernel does is the oracle
/// (Documentation/virt/kvm/api.rst, virt/kvm/eventfd.c): KVM_SET_GSI_ROUTING refuses what it
/// cannot route, KVM_IRQFD refuses an eventfd that is already bound (EBUSY), and a bound
/// irqfd takes every signal out of its eventfd at once, while an unbound one keeps it.
@Suite(.serialized) struct KVMInterruptRoutesTests {
    static let message = MSIMessage(address: 0xFEE0_0000, data: 0x41)

    /// The PC table becomes exactly the routes QEMU commits for a PC on KVM
    /// (hw/i386/kvm/ioapic.c, kvm_pc_setup_irq_routing), written out here from its loops.
    @Test func pcTableBecomesQEMUsKVMRouting() {
        var qemu: [KVMVirtualMachine.GSIRoute] = []
        for i: UInt32 in 0..<8 where i != 2 { qemu.append(.irqchip(gsi: i, chip: 0, pin: i)) }
        for i: UInt32 in 8..<16 { qemu.append(.irqchip(gsi: i, chip: 1, pin: i - 8)) }
        for i: UInt32 in 0..<24 where i != 2 { qemu.append(.irqchip(gsi: i, chip: 2, pin: i == 0 ? 2 : i)) }
        let ours = GSIRouteTable.pc.kvmRoutes
        #expect(ours.count == qemu.count)
        #expect(Set(ours) == Set(qemu))
    }

    @Test(.requires(KVMSystem.isAvailable(), "no usable /dev/kvm"))
    func vectorRoutesAndIRQFDsFollowMessagesAndMasks() throws {
        let vm = try KVMSystem().createVirtualMachine(.init(irqchip: .full))
        let vcpu = try vm.createVCPU(id: 0)
        defer { withExtendedLifetime(vcpu) {} }
        let routes = try KVMInterruptRoutes(virtualMachine: vm)
        let group = try routes.makeMSIGroup(vectors: 2)
        #expect(group.notifiers.map(\.gsi) == [GSI(24), GSI(25)])
        #expect(!group.isAttached(0) && !group.isAttached(1))

        // Unmasked: the route carries the message and the eventfd is bound to the GSI.
        try group.update(vector: 0, message: Self.message, masked: false)
        #expect(routes.snapshot.routes[GSI(24)] == .msi(Self.message))
        #expect(routes.snapshot.kvmRoutes.contains(.msi(gsi: 24, message: Self.message)))
        #expect(Self.errno { try vm.registerIRQFD(group.notifiers[0].event.eventFD, gsi: 24) } == .busy)
        try group.trigger(vector: 0)
        #expect(try group.notifiers[0].event.eventFD.consume() == nil)   // KVM took it

        // Masked: the irqfd is detached and a signal waits in the eventfd (pending).
        let moved = MSIMessage(address: 0xFEE0_1000, data: 0x42)
        try group.update(vector: 0, message: moved, masked: true)
        #expect(routes.snapshot.routes[GSI(24)] == .msi(moved))
        try group.trigger(vector: 0)
        #expect(try group.notifiers[0].event.eventFD.consume() == 1)
        try group.trigger(vector: 0)
        // Unmasking delivers the pending signal through KVM.
        try group.update(vector: 0, message: moved, masked: false)
        #expect(try group.notifiers[0].event.eventFD.consume() == nil)
        #expect(Self.errno { try vm.registerIRQFD(group.notifiers[0].event.eventFD, gsi: 24) } == .busy)

        #expect(throws: InterruptRouteError.self) { try group.trigger(vector: 2) }
        try group.release()
        #expect(routes.snapshot.routes[GSI(24)] == nil && routes.snapshot == GSIRouteTable.pc)
        // Released: the eventfd is free again, and so are the GSIs.
        try vm.registerIRQFD(group.notifiers[0].event.eventFD, gsi: 5)
        try vm.unregisterIRQFD(group.notifiers[0].event.eventFD, gsi: 5)
        #expect(try routes.makeMSIGroup(vectors: 1).notifiers.map(\.gsi) == [GSI(24)])
    }

    /// KVM_SET_GSI_ROUTING needs an in-kernel irqchip (EINVAL otherwise): the binding reports it.
    @Test(.requires(KVMSystem.isAvailable(), "no usable /dev/kvm"))
    func routingNeedsAnInKernelIRQChip() throws {
        let vm = try KVMSystem().createVirtualMachine(.init(irqchip: .none))
        #expect(throws: SystemError.self) { try KVMInterruptRoutes(virtualMachine: vm) }
    }

    static func errno(_ call: () throws -> Void) -> Errno? {
        do { try call(); return nil } catch { return (error as? SystemError)?.errno ?? Errno(rawValue: -1) }
    }
}
