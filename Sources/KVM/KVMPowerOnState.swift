import CLinux
import HostOS

/// A vCPU's multiprocessing state (struct kvm_mp_state; values from <linux/kvm.h>).
public enum MPState: UInt32, Sendable {
    case runnable = 0
    /// An application processor that has not received INIT (KVM's state for a new AP with
    /// an in-kernel LAPIC): it waits for INIT and SIPI.
    case uninitialized = 1
    case initReceived = 2
    case halted = 3
    case sipiReceived = 4
}

extension KVMVCPU {
    /// KVM_GET_MP_STATE; nil for a state this enum does not name.
    public func mpState() throws(SystemError) -> MPState? {
        var raw = kvm_mp_state()
        try ioctl(fd, KVMRequest.getMPState, &raw)
        return MPState(rawValue: raw.mp_state)
    }

    public func setMPState(_ state: MPState) throws(SystemError) {
        var raw = kvm_mp_state(mp_state: state.rawValue)
        try ioctl(fd, KVMRequest.setMPState, &raw)
    }

    /// What a platform reset returns this vCPU to: everything KVM keeps for it that a guest
    /// changes, read now (call before the first KVM_RUN, once the VMM has set it up).
    /// `msrs` are the MSRs to keep; those this KVM cannot read are left out.
    public func capturePowerOnState(msrs indices: [UInt32]) throws(SystemError) -> VCPUPowerOnState {
        var events = kvm_vcpu_events()
        try ioctl(fd, KVMRequest.getVCPUEvents, &events)
        let lapic: LocalAPICState? = virtualMachine.options.irqchip == .none ? nil : try localAPIC()
        var mp = kvm_mp_state()
        try ioctl(fd, KVMRequest.getMPState, &mp)
        return VCPUPowerOnState(registers: try registers(), special: try specialRegisters(), fpu: try fpuControl(),
                                msrs: indices.compactMap { try? msrs([$0]).first }, events: events,
                                mpState: mp.mp_state, localAPIC: lapic)
    }

    /// Puts the power-on state back, in the order QEMU restores a vCPU: registers, FPU, special
    /// registers (the APIC base among them, before the LAPIC page that depends on its mode),
    /// MSRs, pending events, the run state, then the local APIC.
    public func restore(_ state: VCPUPowerOnState) throws(SystemError) {
        try setRegisters(state.registers)
        try setFPU(state.fpu)
        try setSpecialRegisters(state.special)
        do throws(SystemError) {
            try setMSRs(state.msrs)
        } catch {
            for entry in state.msrs { try? setMSRs([entry]) }
        }
        var events = state.events
        // Without these flags KVM keeps a pending NMI and the SIPI vector as they are.
        events.flags |= UInt32(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR)
        try ioctl(fd, KVMRequest.setVCPUEvents, &events)
        var mp = kvm_mp_state(mp_state: state.mpState)
        try ioctl(fd, KVMRequest.setMPState, &mp)
        if let lapic = state.localAPIC { try setLocalAPIC(lapic) }
    }
}

/// A vCPU as it was before it first ran (see `KVMVCPU.capturePowerOnState`).
public struct VCPUPowerOnState: Sendable {
    public var registers: Registers
    public var special: SpecialRegisters
    public var fpu: FPUControl
    public var msrs: [MSREntry]
    var events: kvm_vcpu_events
    var mpState: UInt32
    public var localAPIC: LocalAPICState?

    public var runState: MPState? { MPState(rawValue: mpState) }
}

/// The in-kernel PIC pair, IOAPIC and PIT as they were when created: a platform reset puts
/// them back (KVM_SET_IRQCHIP, KVM_SET_PIT2), as QEMU resets its in-kernel irqchip.
public struct InterruptControllerPowerOnState: Sendable {
    var chips: [kvm_irqchip]
    var pit: kvm_pit_state2?
}

extension KVMVirtualMachine {
    /// The irqchip (PIC master 0, slave 1, IOAPIC 2) and PIT state now; call right after
    /// creation for the power-on state. Empty without an in-kernel irqchip.
    public func captureInterruptControllers() throws(SystemError) -> InterruptControllerPowerOnState {
        var chips: [kvm_irqchip] = []
        if options.irqchip == .full {
            for id: UInt32 in 0...2 {
                var chip = kvm_irqchip()
                chip.chip_id = id
                try ioctl(fd, KVMRequest.getIRQChip, &chip)
                chips.append(chip)
            }
        }
        var pit: kvm_pit_state2?
        if options.createPIT {
            var state = kvm_pit_state2()
            try ioctl(fd, KVMRequest.getPIT2, &state)
            pit = state
        }
        return InterruptControllerPowerOnState(chips: chips, pit: pit)
    }

    /// The in-kernel IOAPIC's input levels as it latched them (its IRR: bit n for input n), for
    /// tests and diagnostics. Needs the full irqchip.
    public func ioapicInterruptRequests() throws(SystemError) -> UInt32 {
        var chip = kvm_irqchip()
        chip.chip_id = 2
        try ioctl(fd, KVMRequest.getIRQChip, &chip)
        return chip.chip.ioapic.irr
    }

    public func restore(_ state: InterruptControllerPowerOnState) throws(SystemError) {
        for chip in state.chips {
            var c = chip
            try ioctl(fd, KVMRequest.setIRQChip, &c)
        }
        if var pit = state.pit { try ioctl(fd, KVMRequest.setPIT2, &pit) }
    }
}
