// The boot vCPU's initial state for the 64-bit boot protocol entry, as plain values. A KVM layer
// turns it into kvm_regs / kvm_sregs; nothing here knows KVM.

/// A segment register as the CPU caches it (the shape of `struct kvm_segment`): `limit` is the
/// byte-granular effective limit, already scaled by `granularity`.
public struct SegmentDescriptor: Equatable, Sendable {
    public var base: UInt64
    public var limit: UInt32
    public var selector: UInt16
    /// The 4-bit type field (e.g. 0xB: execute/read accessed code, or busy 64-bit TSS).
    public var type: UInt8
    public var present: Bool
    public var dpl: UInt8
    /// D/B: default operation size 32-bit (must be false for a 64-bit code segment).
    public var defaultSize: Bool
    /// S: code/data (true) or system (false).
    public var codeOrData: Bool
    /// L: 64-bit code segment.
    public var long: Bool
    /// G: limit counts 4 KiB units.
    public var granularity: Bool
    public var available: Bool
    public var unusable: Bool

    public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: Bool, dpl: UInt8,
                defaultSize: Bool, codeOrData: Bool, long: Bool, granularity: Bool,
                available: Bool = false, unusable: Bool = false) {
        self.base = base
        self.limit = limit
        self.selector = selector
        self.type = type
        self.present = present
        self.dpl = dpl
        self.defaultSize = defaultSize
        self.codeOrData = codeOrData
        self.long = long
        self.granularity = granularity
        self.available = available
        self.unusable = unusable
    }

    /// Decodes an 8-byte GDT entry loaded through `selector`, as a far jump or mov would.
    public init(gdtEntry e: UInt64, selector: UInt16) {
        let rawLimit = UInt32(e & 0xFFFF) | UInt32((e >> 48) & 0xF) << 16
        let g = (e >> 55) & 1 == 1
        self.init(base: (e >> 16) & 0xFF_FFFF | ((e >> 56) & 0xFF) << 24,
                  limit: g ? rawLimit << 12 | 0xFFF : rawLimit,
                  selector: selector,
                  type: UInt8((e >> 40) & 0xF),
                  present: (e >> 47) & 1 == 1,
                  dpl: UInt8((e >> 45) & 3),
                  defaultSize: (e >> 54) & 1 == 1,
                  codeOrData: (e >> 44) & 1 == 1,
                  long: (e >> 53) & 1 == 1,
                  granularity: g,
                  available: (e >> 52) & 1 == 1,
                  unusable: (e >> 47) & 1 == 0)
    }

    /// Encodes a GDT entry from a base, a raw (unscaled) 20-bit limit and the access/flag bits,
    /// `flags` laid out as in the descriptor's bytes 5-6: access byte low, flags nibble in bits 12-15.
    public static func gdtEntry(base: UInt32, rawLimit: UInt32, flags: UInt16) -> UInt64 {
        let b = UInt64(base), l = UInt64(rawLimit), f = UInt64(flags)
        return (b & 0xFF00_0000) << 32 | (f & 0xF0FF) << 40 | (l & 0xF_0000) << 32
            | (b & 0x00FF_FFFF) << 16 | (l & 0xFFFF)
    }

    /// An unusable (null) segment, as for LDTR.
    public static let unusableNull = SegmentDescriptor(
        base: 0, limit: 0, selector: 0, type: 0, present: false, dpl: 0, defaultSize: false,
        codeOrData: false, long: false, granularity: false, unusable: true)
}

public struct DescriptorTableRegister: Equatable, Sendable {
    public var base: UInt64
    public var limit: UInt16
    public init(base: UInt64, limit: UInt16) {
        self.base = base
        self.limit = limit
    }
}

/// General-purpose registers, RIP and RFLAGS (the shape of `struct kvm_regs`).
public struct GeneralRegisters: Equatable, Sendable {
    public var rax: UInt64 = 0, rbx: UInt64 = 0, rcx: UInt64 = 0, rdx: UInt64 = 0
    public var rsi: UInt64 = 0, rdi: UInt64 = 0, rsp: UInt64 = 0, rbp: UInt64 = 0
    public var r8: UInt64 = 0, r9: UInt64 = 0, r10: UInt64 = 0, r11: UInt64 = 0
    public var r12: UInt64 = 0, r13: UInt64 = 0, r14: UInt64 = 0, r15: UInt64 = 0
    public var rip: UInt64 = 0
    /// Bit 1 is reserved and always set.
    public var rflags: UInt64 = 0x2
    public init() {}
}

/// Everything a vCPU needs to start at the kernel's 64-bit entry point.
public struct VCPUBootState: Equatable, Sendable {
    public static let cr0PE: UInt64 = 1 << 0
    public static let cr0ET: UInt64 = 1 << 4
    public static let cr0PG: UInt64 = 1 << 31
    public static let cr4PAE: UInt64 = 1 << 5
    public static let eferLME: UInt64 = 1 << 8
    public static let eferLMA: UInt64 = 1 << 10

    public var registers: GeneralRegisters
    public var cs: SegmentDescriptor
    public var ds: SegmentDescriptor
    public var es: SegmentDescriptor
    public var fs: SegmentDescriptor
    public var gs: SegmentDescriptor
    public var ss: SegmentDescriptor
    public var tr: SegmentDescriptor
    public var ldt: SegmentDescriptor
    public var gdt: DescriptorTableRegister
    public var idt: DescriptorTableRegister
    /// Complete values, to be set as they are (not ORed into KVM's reset values: those have CD/NW
    /// set, which would run the decompressor with caches disabled).
    public var cr0: UInt64
    public var cr2: UInt64 = 0
    public var cr3: UInt64
    public var cr4: UInt64
    public var cr8: UInt64 = 0
    public var efer: UInt64

    public init(registers: GeneralRegisters, cs: SegmentDescriptor, ds: SegmentDescriptor,
                es: SegmentDescriptor, fs: SegmentDescriptor, gs: SegmentDescriptor,
                ss: SegmentDescriptor, tr: SegmentDescriptor, ldt: SegmentDescriptor,
                gdt: DescriptorTableRegister, idt: DescriptorTableRegister,
                cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64) {
        self.registers = registers
        self.cs = cs
        self.ds = ds
        self.es = es
        self.fs = fs
        self.gs = gs
        self.ss = ss
        self.tr = tr
        self.ldt = ldt
        self.gdt = gdt
        self.idt = idt
        self.cr0 = cr0
        self.cr3 = cr3
        self.cr4 = cr4
        self.efer = efer
    }
}
