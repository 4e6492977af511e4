import CLinux
import HostOS

/// The x87/SSE control state a vCPU starts with (the parts of struct kvm_fpu a loader sets).
public struct FPUControl: Hashable, Sendable {
    /// x87 control word; 0x37F is the FNINIT value (all exceptions masked, 64-bit precision).
    public var controlWord: UInt16
    /// SSE control/status; 0x1F80 is the reset value (all exceptions masked).
    public var mxcsr: UInt32

    public init(controlWord: UInt16 = 0x37F, mxcsr: UInt32 = 0x1F80) {
        self.controlWord = controlWord
        self.mxcsr = mxcsr
    }

    /// What FNINIT and a processor reset leave.
    public static let initial = FPUControl()
}

/// The in-kernel local APIC's register page (struct kvm_lapic_state: 1 KiB, registers at their
/// MMIO offsets, each 32-bit register 16-byte aligned).
public struct LocalAPICState: Hashable, Sendable {
    public static let size = 1024
    public static let lvtLINT0 = 0x350
    public static let lvtLINT1 = 0x360
    /// LVT delivery modes (bits 10:8).
    public static let deliveryExtINT: UInt32 = 0x7 << 8
    public static let deliveryNMI: UInt32 = 0x4 << 8
    public static let masked: UInt32 = 1 << 16

    public var bytes: [UInt8]

    public init(bytes: [UInt8] = [UInt8](repeating: 0, count: LocalAPICState.size)) {
        precondition(bytes.count == Self.size, "kvm_lapic_state is \(Self.size) bytes")
        self.bytes = bytes
    }

    /// The 32-bit register at `offset` (a multiple of 16 below 0x400).
    public subscript(register offset: Int) -> UInt32 {
        get {
            precondition(offset % 16 == 0 && offset < Self.size)
            return (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
        }
        set {
            precondition(offset % 16 == 0 && offset < Self.size)
            for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: newValue >> (8 * UInt32(i))) }
        }
    }
}

extension KVMVCPU {
    /// KVM_SET_FPU: a clean FPU with `control`'s control word and MXCSR (everything else zero).
    public func setFPU(_ control: FPUControl = .initial) throws(SystemError) {
        var fpu = kvm_fpu()
        fpu.fcw = control.controlWord
        fpu.mxcsr = control.mxcsr
        try ioctl(fd, KVMRequest.setFPU, &fpu)
    }

    /// KVM_GET_FPU, reduced to the control state.
    public func fpuControl() throws(SystemError) -> FPUControl {
        var fpu = kvm_fpu()
        try ioctl(fd, KVMRequest.getFPU, &fpu)
        return FPUControl(controlWord: fpu.fcw, mxcsr: fpu.mxcsr)
    }

    /// KVM_GET_LAPIC (needs an in-kernel irqchip).
    public func localAPIC() throws(SystemError) -> LocalAPICState {
        var raw = kvm_lapic_state()
        try ioctl(fd, KVMRequest.getLAPIC, &raw)
        let bytes = withUnsafeBytes(of: &raw.regs) { Array($0) }
        return LocalAPICState(bytes: bytes)
    }

    /// KVM_SET_LAPIC (needs an in-kernel irqchip).
    public func setLocalAPIC(_ state: LocalAPICState) throws(SystemError) {
        var raw = kvm_lapic_state()
        withUnsafeMutableBytes(of: &raw.regs) { buffer in
            buffer.copyBytes(from: state.bytes.prefix(buffer.count))
        }
        try ioctl(fd, KVMRequest.setLAPIC, &raw)
    }
}
