// The GDT and identity-mapping page tables the 64-bit boot protocol entry needs: it requires
// long mode with paging, an identity map covering the kernel, boot_params, the command line and
// the initrd, and flat __BOOT_CS / __BOOT_DS segments (boot.rst, "64-bit BOOT PROTOCOL").

import VMMBase

/// Fixed low addresses of the boot scaffolding, in the conventional layout of Rust VMMs
/// (Firecracker, cloud-hypervisor, crosvm): all inside the first 640 KiB of RAM.
public enum LinuxBootLayout {
    public static let gdtAddress: UInt64 = 0x500
    public static let idtAddress: UInt64 = 0x540
    public static let bootParamsAddress: UInt64 = 0x7000
    /// The initial stack occupies 0x8000-0x8FFF; RSP starts 16 bytes below its top.
    public static let stackBase: UInt64 = 0x8000
    public static let stackPointer: UInt64 = 0x8FF0
    public static let pml4Address: UInt64 = 0x9000
    public static let pdptAddress: UInt64 = 0xA000
    /// One page directory per identity-mapped GiB, consecutive.
    public static let pageDirectoryAddress: UInt64 = 0xB000
    public static let identityMappedGiB = 4
    public static let commandLineAddress: UInt64 = 0x2_0000
    /// Room reserved for the command line, NUL included.
    public static let commandLineCapacity: UInt64 = 0x1_0000
    /// The default kernel load address when the image states no preference.
    public static let defaultKernelAddress: UInt64 = 0x10_0000
    /// Where the kernel scans for an RSDP when boot_params gives none (the BIOS ROM area; it lies in
    /// the legacy hole, which the e820 map reports reserved).
    public static let rsdpScanArea = AddressRange(base: 0xE_0000, last: 0xF_FFFF)!
}

/// A boot GDT in the slots the Linux boot protocol names: code at 0x10 (__BOOT_CS), data at
/// 0x18 (__BOOT_DS), then a TSS at 0x20 (KVM needs a usable TR). Both entry protocols use it,
/// with their own descriptors, and load every segment register from it.
struct BootGDT {
    static let codeSelector: UInt16 = 0x10
    static let dataSelector: UInt16 = 0x18
    static let tssSelector: UInt16 = 0x20

    let entries: [UInt64]

    init(code: UInt64, data: UInt64, tss: UInt64) {
        entries = [0, 0, code, data, tss]
    }

    var bytes: [UInt8] {
        var b = BootParamsBuffer(count: entries.count * 8)
        for (i, e) in entries.enumerated() { b.store64(e, at: i * 8) }
        return b.bytes
    }

    var range: AddressRange { AddressRange(base: LinuxBootLayout.gdtAddress, size: UInt64(entries.count * 8))! }

    func segment(_ selector: UInt16) -> SegmentDescriptor {
        SegmentDescriptor(gdtEntry: entries[Int(selector / 8)], selector: selector)
    }

    /// The entry state: segments as loaded from this table (at `LinuxBootLayout.gdtAddress`),
    /// the one-entry IDT, and the given registers and control registers.
    func vcpuState(registers: GeneralRegisters, cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64) -> VCPUBootState {
        let data = segment(Self.dataSelector)
        return VCPUBootState(
            registers: registers,
            cs: segment(Self.codeSelector),
            ds: data, es: data, fs: data, gs: data, ss: data,
            tr: segment(Self.tssSelector),
            ldt: .unusableNull,
            gdt: DescriptorTableRegister(base: LinuxBootLayout.gdtAddress, limit: UInt16(entries.count * 8 - 1)),
            idt: DescriptorTableRegister(base: LinuxBootLayout.idtAddress, limit: UInt16(LongModeTables.idtBytes.count - 1)),
            cr0: cr0, cr3: cr3, cr4: cr4, efer: efer)
    }
}

enum LongModeTables {
    /// Flat 4 GiB segments: 64-bit code (L=1, D=0, G=1, P, S, type 0xB), 32-bit data (D/B=1,
    /// type 0x3), busy 64-bit TSS (S=0, type 0xB).
    static let gdt = BootGDT(code: SegmentDescriptor.gdtEntry(base: 0, rawLimit: 0xF_FFFF, flags: 0xA09B),
                             data: SegmentDescriptor.gdtEntry(base: 0, rawLimit: 0xF_FFFF, flags: 0xC093),
                             tss: SegmentDescriptor.gdtEntry(base: 0, rawLimit: 0xF_FFFF, flags: 0x808B))

    /// A zero IDT of one entry: any exception before the kernel loads its own IDT shuts down.
    static let idtBytes = [UInt8](repeating: 0, count: 8)

    static let present: UInt64 = 1 << 0
    static let writable: UInt64 = 1 << 1
    static let pageSize: UInt64 = 1 << 7

    /// PML4 (one entry), PDPT (one entry per GiB) and the page directories of 2 MiB pages, as one
    /// contiguous blob starting at `pml4Address`.
    static var pageTableBytes: [UInt8] {
        let pml4 = LinuxBootLayout.pml4Address, pdpt = LinuxBootLayout.pdptAddress
        let pd = LinuxBootLayout.pageDirectoryAddress, gib = LinuxBootLayout.identityMappedGiB
        precondition(pdpt == pml4 + 0x1000 && pd == pdpt + 0x1000)
        var b = BootParamsBuffer(count: (2 + gib) * 0x1000)
        b.store64(pdpt | present | writable, at: 0)
        for g in 0..<gib {
            b.store64((pd + UInt64(g) * 0x1000) | present | writable, at: 0x1000 + g * 8)
            for i in 0..<512 {
                let phys = UInt64(g) << 30 | UInt64(i) << 21
                b.store64(phys | present | writable | pageSize, at: 0x2000 + g * 0x1000 + i * 8)
            }
        }
        return b.bytes
    }

    static var pageTableRange: AddressRange {
        AddressRange(base: LinuxBootLayout.pml4Address,
                     size: UInt64(2 + LinuxBootLayout.identityMappedGiB) * 0x1000)!
    }

    static func vcpuState(entry: UInt64, bootParams: UInt64) -> VCPUBootState {
        var regs = GeneralRegisters()
        regs.rip = entry
        regs.rsi = bootParams
        regs.rsp = LinuxBootLayout.stackPointer
        regs.rbp = LinuxBootLayout.stackPointer
        regs.rflags = 0x2
        return gdt.vcpuState(registers: regs,
                             cr0: VCPUBootState.cr0PE | VCPUBootState.cr0ET | VCPUBootState.cr0PG,
                             cr3: LinuxBootLayout.pml4Address, cr4: VCPUBootState.cr4PAE,
                             efer: VCPUBootState.eferLME | VCPUBootState.eferLMA)
    }
}
