import KVM
import Machine
import TestRequirements
import Testing
import Synchronization
import VMMBase

/// MSI address and data come from the guest: messages a real platform could not deliver as
/// interrupts are dropped with a log line, never handed to KVM.
@Suite(.serialized) struct KVMInterruptSinkTests {
    @Test(.requires(KVMSystem.isAvailable(), "no usable /dev/kvm"))
    func malformedMessagesAreLoggedAndDropped() throws {
        let vm = try KVMSystem().createVirtualMachine(.init(irqchip: .full))
        let vcpu = try vm.createVCPU(id: 0)  // KVM delivers MSIs only once a vCPU exists
        defer { withExtendedLifetime(vcpu) {} }
        let sink = KVMInterruptSink(virtualMachine: vm)
        let lines = LogCapture()
        GuestErrorLog.setSink { lines.append($0) }
        defer { GuestErrorLog.setSink(nil) }

        sink.signal(MSIMessage(address: 0x1_0000_1000, data: 0x41))      // a memory address
        sink.signal(MSIMessage(address: 0xFEE0_0000, data: 0x0005))      // fixed, vector 5
        sink.signal(MSIMessage(address: 0xFEE0_0000, data: 0x0405))      // NMI: vector ignored
        sink.signal(MSIMessage(address: 0xFEE0_0000, data: 0x0041))      // fine
        #expect(sink.error == nil)
        let logged = lines.all
        #expect(logged.contains { $0.contains("msi") && $0.contains("outside the interrupt window") })
        #expect(logged.contains { $0.contains("reserved vector 5") })
        #expect(logged.count == 2, "\(logged)")
    }
}

final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}
