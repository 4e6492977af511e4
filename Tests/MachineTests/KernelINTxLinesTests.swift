import Foundation
import HostOS
import Interrupts
import KVM
import TestRequirements
import Testing
import VMMBase
@testable import Machine

/// Assigned functions' INTx pins as resampling irqfds, against a real KVM VM: the kernel is the
/// oracle (virt/kvm/eventfd.c: KVM_IRQFD refuses an eventfd already bound, EBUSY; a resampling
/// irqfd's signal holds its IOAPIC input high, in the IOAPIC's IRR, until an EOI or the irqfd is
/// removed, which lowers it).
@Suite(.serialized) struct KernelINTxLinesTests {
    static func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0..<200 { if condition() { return true }; usleep(5_000) }
        return condition()
    }

    static func errno(_ body: () throws -> Void) -> Errno? {
        do { try body(); return nil } catch { return (error as? SystemError)?.errno ?? Errno(rawValue: -1) }
    }

    @Test(.requires(KVMSystem.isAvailable(), "no usable /dev/kvm"))
    func aLineIsBoundWhereItsPinIsRoutedAndFollowsIt() throws {
        let vm = try KVMSystem().createVirtualMachine(.init(irqchip: .full))
        let vcpu = try vm.createVCPU(id: 0)
        defer { withExtendedLifetime(vcpu) {} }
        let routes = try KVMInterruptRoutes(virtualMachine: vm)
        #expect(routes.hasKernelIOAPIC)
        let lines = KernelINTxLines()
        let line = try lines.make(for: "test-function", routedTo: GSI(16))
        #expect(lines.bound == [], "no VM attached yet")

        lines.attach(vm)
        #expect(lines.bound == [GSI(16)])
        #expect(Self.errno { try vm.registerIRQFD(line.triggerEvent.eventFD, gsi: 16) } == .busy, "KVM has it")
        // Bound late: an assertion may have been missed, so the host is told to unmask once.
        #expect(try line.resampleEvent.eventFD.consume() == 1)

        // The host asserts the pin: IOAPIC input 16 is held high.
        #expect(try vm.ioapicInterruptRequests() & (1 << 16) == 0)
        try line.triggerEvent.eventFD.signal()
        #expect(Self.eventually { ((try? vm.ioapicInterruptRequests()) ?? 0) & (1 << 16) != 0 })

        // The guest moves the pin (PIRQ routing): input 16 drops, the line is on 17 and unmasked again.
        lines.move(line, to: GSI(17))
        #expect(lines.bound == [GSI(17)])
        #expect(Self.eventually { ((try? vm.ioapicInterruptRequests()) ?? 0) & (1 << 16) == 0 })
        #expect(try line.resampleEvent.eventFD.consume() == 1)
        try line.triggerEvent.eventFD.signal()
        #expect(Self.eventually { ((try? vm.ioapicInterruptRequests()) ?? 0) & (1 << 17) != 0 })

        // Unplugged: the irqfd is gone (the eventfd can be bound again) and its level with it.
        lines.remove(line)
        #expect(lines.bound == [])
        #expect(Self.eventually { ((try? vm.ioapicInterruptRequests()) ?? 0) & (1 << 17) == 0 })
        try vm.registerIRQFD(line.triggerEvent.eventFD, gsi: 17)
        try vm.unregisterIRQFD(line.triggerEvent.eventFD, gsi: 17)
    }

    @Test(.requires(KVMSystem.isAvailable(), "no usable /dev/kvm"))
    func aSplitIrqchipGetsNoKernelLines() throws {
        let vm = try KVMSystem().createVirtualMachine(.init(irqchip: .split(ioapicRoutes: 24), createPIT: false))
        let machine = try Machine(MachineConfiguration())
        let routes = try KVMInterruptRoutes.split(vm, ioapic: machine.ioapic)
        #expect(!routes.hasKernelIOAPIC)
    }
}
