import HostOS
import KVM
import TestRequirements
import Testing

@Suite(.requires(kvmAvailable, noKVM))
struct VCPUStateTests {
    @Test func fpuControlRoundTrips() throws {
        let vm = try KVMSystem().createVirtualMachine()
        let vcpu = try vm.createVCPU(id: 0)
        // The x87 control word round-trips; MXCSR reads back as 0 on this host's KVM
        // (6.18) whatever was set, so only the control word is compared.
        try vcpu.setFPU(FPUControl(controlWord: 0x27F, mxcsr: 0x1F80))
        #expect(try vcpu.fpuControl().controlWord == 0x27F)
        try vcpu.setFPU()
        #expect(try vcpu.fpuControl().controlWord == FPUControl.initial.controlWord)
    }

    @Test func localAPICLintPinsRoundTrip() throws {
        let vm = try KVMSystem().createVirtualMachine(.init(irqchip: .full, createPIT: true))
        let vcpu = try vm.createVCPU(id: 0)
        var lapic = try vcpu.localAPIC()
        #expect(lapic.bytes.count == LocalAPICState.size)
        // After reset LINT1 is masked (KVM's LINT0_REENABLED quirk leaves the BSP's LINT0 ExtINT).
        #expect(lapic[register: LocalAPICState.lvtLINT1] & LocalAPICState.masked != 0)
        lapic[register: LocalAPICState.lvtLINT0] = LocalAPICState.deliveryExtINT
        lapic[register: LocalAPICState.lvtLINT1] = LocalAPICState.deliveryNMI
        try vcpu.setLocalAPIC(lapic)
        let back = try vcpu.localAPIC()
        #expect(back[register: LocalAPICState.lvtLINT0] == 0x700)
        #expect(back[register: LocalAPICState.lvtLINT1] == 0x400)
    }

    @Test func localAPICNeedsTheIrqchip() throws {
        let vcpu = try KVMSystem().createVirtualMachine().createVCPU(id: 0)
        #expect(throws: SystemError.self) { try vcpu.localAPIC() }
    }
}
