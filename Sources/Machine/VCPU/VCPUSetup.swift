import Firmware
import KVM

/// The values a vCPU is given before its first KVM_RUN, computed from plain inputs so they can
/// be checked without /dev/kvm: CPUID, the boot processor's registers from a Linux boot plan,
/// MSRs, and the local APIC's LINT pins.
public enum VCPUSetup {
    /// CPUID leaf 1 ECX bit 31: running under a hypervisor.
    public static let hypervisorBit: UInt32 = 1 << 31
    /// CPUID leaf 1 EDX bit 28: more than one logical processor per package.
    public static let htt: UInt32 = 1 << 28

    /// KVM's supported CPUID made specific to the vCPU with `apicID` among `vcpuCount`: the
    /// initial APIC ID (leaf 1 EBX[31:24]), the x2APIC ID (leaves 0xB and 0x1F EDX), AMD's
    /// extended APIC ID (0x8000001E EAX), the logical processor count and the hypervisor bit.
    public static func cpuid(_ supported: [CPUIDEntry], apicID: UInt32, vcpuCount: Int) -> [CPUIDEntry] {
        supported.map { entry in
            var e = entry
            switch e.function {
            case 0x1:
                let logical = UInt32(min(max(vcpuCount, 1), 255))
                e.ebx = (e.ebx & 0x0000_FFFF) | logical << 16 | (apicID & 0xFF) << 24
                e.ecx |= hypervisorBit
                if vcpuCount > 1 { e.edx |= htt } else { e.edx &= ~htt }
            case 0xB, 0x1F:
                e.edx = apicID
            case 0x8000_001E:
                e.eax = apicID
            default:
                break
            }
            return e
        }
    }

    /// A boot-state segment as KVM caches it (`kvm_segment.s` is the descriptor's S bit).
    public static func segment(_ d: SegmentDescriptor) -> Segment {
        Segment(base: d.base, limit: d.limit, selector: d.selector, type: d.type, present: d.present,
                dpl: d.dpl, defaultSize: d.defaultSize, system: d.codeOrData, long: d.long,
                granularity: d.granularity, available: d.available, unusable: d.unusable)
    }

    /// `base` (the vCPU's current special registers, which keep their APIC base and pending
    /// interrupt bitmap) with every segment, table and control register from `state`.
    public static func specialRegisters(_ state: VCPUBootState, base: SpecialRegisters) -> SpecialRegisters {
        var s = base
        s.cs = segment(state.cs)
        s.ds = segment(state.ds)
        s.es = segment(state.es)
        s.fs = segment(state.fs)
        s.gs = segment(state.gs)
        s.ss = segment(state.ss)
        s.tr = segment(state.tr)
        s.ldt = segment(state.ldt)
        s.gdtBase = state.gdt.base
        s.gdtLimit = state.gdt.limit
        s.idtBase = state.idt.base
        s.idtLimit = state.idt.limit
        s.cr0 = state.cr0
        s.cr2 = state.cr2
        s.cr3 = state.cr3
        s.cr4 = state.cr4
        s.cr8 = state.cr8
        s.efer = state.efer
        return s
    }

    /// The general registers, RIP and RFLAGS from `state`.
    public static func registers(_ state: VCPUBootState) -> Registers {
        let g = state.registers
        var r = Registers()
        r.rax = g.rax; r.rbx = g.rbx; r.rcx = g.rcx; r.rdx = g.rdx
        r.rsi = g.rsi; r.rdi = g.rdi; r.rsp = g.rsp; r.rbp = g.rbp
        r.r8 = g.r8; r.r9 = g.r9; r.r10 = g.r10; r.r11 = g.r11
        r.r12 = g.r12; r.r13 = g.r13; r.r14 = g.r14; r.r15 = g.r15
        r.rip = g.rip
        r.rflags = g.rflags | 0x2
        return r
    }

    public enum MSR {
        public static let tsc: UInt32 = 0x10
        public static let sysenterCS: UInt32 = 0x174
        public static let sysenterESP: UInt32 = 0x175
        public static let sysenterEIP: UInt32 = 0x176
        public static let miscEnable: UInt32 = 0x1A0
        public static let mtrrDefType: UInt32 = 0x2FF
        public static let star: UInt32 = 0xC000_0081
        public static let lstar: UInt32 = 0xC000_0082
        public static let cstar: UInt32 = 0xC000_0083
        public static let syscallMask: UInt32 = 0xC000_0084
        public static let kernelGSBase: UInt32 = 0xC000_0102
    }

    /// MSRs as firmware leaves them for a Linux boot: the syscall/sysenter MSRs and the TSC
    /// cleared, fast strings on (IA32_MISC_ENABLE bit 0), MTRRs enabled with write-back as the
    /// default type (IA32_MTRR_DEF_TYPE E=1, type 6), as Firecracker and cloud-hypervisor do.
    public static let bootMSRs: [MSREntry] = [
        MSREntry(index: MSR.sysenterCS, value: 0),
        MSREntry(index: MSR.sysenterESP, value: 0),
        MSREntry(index: MSR.sysenterEIP, value: 0),
        MSREntry(index: MSR.star, value: 0),
        MSREntry(index: MSR.cstar, value: 0),
        MSREntry(index: MSR.kernelGSBase, value: 0),
        MSREntry(index: MSR.syscallMask, value: 0),
        MSREntry(index: MSR.lstar, value: 0),
        MSREntry(index: MSR.tsc, value: 0),
        MSREntry(index: MSR.miscEnable, value: 1),
        MSREntry(index: MSR.mtrrDefType, value: 1 << 11 | 6),
    ]

    /// KVM's paravirtual MSRs (Documentation/virt/kvm/x86/msr.rst): wall clock and system time
    /// (old and new numbers), async page faults, steal time, PV EOI, poll control, async PF
    /// interrupt. A guest points several at its own memory; a reset must turn them off, or KVM
    /// would keep writing into the next boot's RAM.
    public static let paravirtualMSRs: [UInt32] = [0x11, 0x12] + (0x4B56_4D00...0x4B56_4D06).map { $0 }

    /// The MSRs a platform reset returns to their values before the first run: the boot MSRs,
    /// PAT, the TSC deadline and the paravirtual ones.
    public static let resetMSRs: [UInt32] = bootMSRs.map(\.index) + [0x277, 0x6E0] + paravirtualMSRs

    /// The LINT pins as PC firmware programs them: LINT0 ExtINT on the boot processor (the
    /// 8259's output reaches it in virtual-wire mode), LINT1 NMI everywhere; the APs' LINT0
    /// stays masked.
    public static func localAPIC(_ state: LocalAPICState, bootProcessor: Bool) -> LocalAPICState {
        var s = state
        s[register: LocalAPICState.lvtLINT0] = bootProcessor ? LocalAPICState.deliveryExtINT
            : LocalAPICState.deliveryExtINT | LocalAPICState.masked
        s[register: LocalAPICState.lvtLINT1] = LocalAPICState.deliveryNMI
        return s
    }
}
