import CLinux

/// General-purpose registers (struct kvm_regs).
public struct Registers: Sendable {
    public var raw: kvm_regs
    public init(_ raw: kvm_regs = kvm_regs()) { self.raw = raw }

    public var rax: UInt64 { get { raw.rax } set { raw.rax = newValue } }
    public var rbx: UInt64 { get { raw.rbx } set { raw.rbx = newValue } }
    public var rcx: UInt64 { get { raw.rcx } set { raw.rcx = newValue } }
    public var rdx: UInt64 { get { raw.rdx } set { raw.rdx = newValue } }
    public var rsi: UInt64 { get { raw.rsi } set { raw.rsi = newValue } }
    public var rdi: UInt64 { get { raw.rdi } set { raw.rdi = newValue } }
    public var rsp: UInt64 { get { raw.rsp } set { raw.rsp = newValue } }
    public var rbp: UInt64 { get { raw.rbp } set { raw.rbp = newValue } }
    public var r8: UInt64 { get { raw.r8 } set { raw.r8 = newValue } }
    public var r9: UInt64 { get { raw.r9 } set { raw.r9 = newValue } }
    public var r10: UInt64 { get { raw.r10 } set { raw.r10 = newValue } }
    public var r11: UInt64 { get { raw.r11 } set { raw.r11 = newValue } }
    public var r12: UInt64 { get { raw.r12 } set { raw.r12 = newValue } }
    public var r13: UInt64 { get { raw.r13 } set { raw.r13 = newValue } }
    public var r14: UInt64 { get { raw.r14 } set { raw.r14 = newValue } }
    public var r15: UInt64 { get { raw.r15 } set { raw.r15 = newValue } }
    public var rip: UInt64 { get { raw.rip } set { raw.rip = newValue } }
    /// Bit 1 is reserved and must be set.
    public var rflags: UInt64 { get { raw.rflags } set { raw.rflags = newValue } }
}

/// A segment register with its hidden descriptor cache (struct kvm_segment).
public struct Segment: Hashable, Sendable {
    public var base: UInt64
    public var limit: UInt32
    public var selector: UInt16
    public var type: UInt8
    public var present: Bool, dpl: UInt8, defaultSize: Bool, system: Bool, long: Bool
    public var granularity: Bool, available: Bool, unusable: Bool

    public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: Bool = true,
                dpl: UInt8 = 0, defaultSize: Bool = false, system: Bool = true, long: Bool = false,
                granularity: Bool = false, available: Bool = false, unusable: Bool = false) {
        self.base = base
        self.limit = limit
        self.selector = selector
        self.type = type
        self.present = present
        self.dpl = dpl
        self.defaultSize = defaultSize
        self.system = system
        self.long = long
        self.granularity = granularity
        self.available = available
        self.unusable = unusable
    }

    init(_ s: kvm_segment) {
        self.init(base: s.base, limit: s.limit, selector: s.selector, type: s.type, present: s.present != 0,
                  dpl: s.dpl, defaultSize: s.db != 0, system: s.s != 0, long: s.l != 0,
                  granularity: s.g != 0, available: s.avl != 0, unusable: s.unusable != 0)
    }

    var raw: kvm_segment {
        var s = kvm_segment()
        s.base = base
        s.limit = limit
        s.selector = selector
        s.type = type
        s.present = present ? 1 : 0
        s.dpl = dpl
        s.db = defaultSize ? 1 : 0
        s.s = system ? 1 : 0
        s.l = long ? 1 : 0
        s.g = granularity ? 1 : 0
        s.avl = available ? 1 : 0
        s.unusable = unusable ? 1 : 0
        return s
    }

    /// A real-mode segment: base = selector << 4, 64 KiB limit (code: type 0xB, data: 0x3).
    public static func realMode(selector: UInt16, code: Bool) -> Segment {
        Segment(base: UInt64(selector) << 4, limit: 0xFFFF, selector: selector, type: code ? 0xB : 0x3)
    }
}

/// Control registers, segments and descriptor tables (struct kvm_sregs). Fields not exposed
/// here (the pending-interrupt bitmap) round-trip unchanged.
public struct SpecialRegisters: Sendable {
    public var raw: kvm_sregs
    public init(_ raw: kvm_sregs = kvm_sregs()) { self.raw = raw }

    public var cs: Segment { get { Segment(raw.cs) } set { raw.cs = newValue.raw } }
    public var ds: Segment { get { Segment(raw.ds) } set { raw.ds = newValue.raw } }
    public var es: Segment { get { Segment(raw.es) } set { raw.es = newValue.raw } }
    public var fs: Segment { get { Segment(raw.fs) } set { raw.fs = newValue.raw } }
    public var gs: Segment { get { Segment(raw.gs) } set { raw.gs = newValue.raw } }
    public var ss: Segment { get { Segment(raw.ss) } set { raw.ss = newValue.raw } }
    public var tr: Segment { get { Segment(raw.tr) } set { raw.tr = newValue.raw } }
    public var ldt: Segment { get { Segment(raw.ldt) } set { raw.ldt = newValue.raw } }

    public var gdtBase: UInt64 { get { raw.gdt.base } set { raw.gdt.base = newValue } }
    public var gdtLimit: UInt16 { get { raw.gdt.limit } set { raw.gdt.limit = newValue } }
    public var idtBase: UInt64 { get { raw.idt.base } set { raw.idt.base = newValue } }
    public var idtLimit: UInt16 { get { raw.idt.limit } set { raw.idt.limit = newValue } }

    public var cr0: UInt64 { get { raw.cr0 } set { raw.cr0 = newValue } }
    public var cr2: UInt64 { get { raw.cr2 } set { raw.cr2 = newValue } }
    public var cr3: UInt64 { get { raw.cr3 } set { raw.cr3 = newValue } }
    public var cr4: UInt64 { get { raw.cr4 } set { raw.cr4 = newValue } }
    public var cr8: UInt64 { get { raw.cr8 } set { raw.cr8 = newValue } }
    public var efer: UInt64 { get { raw.efer } set { raw.efer = newValue } }
    public var apicBase: UInt64 { get { raw.apic_base } set { raw.apic_base = newValue } }
}

/// A model-specific register and its value (struct kvm_msr_entry).
public struct MSREntry: Hashable, Sendable {
    public var index: UInt32
    public var value: UInt64
    public init(index: UInt32, value: UInt64) {
        self.index = index
        self.value = value
    }
}
