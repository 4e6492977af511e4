import VMMBase

// A PVH boot as a value (Xen's HVM direct boot, xen/include/public/arch-x86/hvm/start_info.h):
// the ELF segments at their physical addresses, an hvm_start_info with the command line, the
// initrd as module 0, the e820 map and the RSDP, and a vCPU in flat 32-bit protected mode with
// paging off, EBX pointing at the start info. Linux loads its own GDT and page tables from there.

/// `struct hvm_start_info` and the two tables it points to, all in one low page.
public enum PVHStartInfoLayout {
    public static let magic: UInt32 = 0x336E_C578  // "xEn3", the "E" with its 0x80 bit set
    public static let version: UInt32 = 1
    public static let size = 56
    public static let magicOffset = 0
    public static let versionOffset = 4
    public static let flagsOffset = 8
    public static let moduleCountOffset = 12
    public static let moduleListAddressOffset = 16
    public static let commandLineAddressOffset = 24
    public static let rsdpAddressOffset = 32
    public static let memoryMapAddressOffset = 40
    public static let memoryMapEntriesOffset = 48

    /// `struct hvm_modlist_entry`: paddr, size, cmdline_paddr, reserved (all u64).
    public static let moduleEntrySize = 32
    /// `struct hvm_memmap_table_entry`: addr (u64), size (u64), type (u32), reserved (u32).
    public static let memoryMapEntrySize = 24

    /// The page holding all three: the 4 KiB the bzImage path uses for boot_params.
    public static let pageAddress = LinuxBootLayout.bootParamsAddress
    public static let pageSize = 0x1000
    public static let moduleListOffset = 0x40
    public static let memoryMapOffset = 0x80
    /// Linux copies the map into boot_params' 128-entry e820 table without a bound check and then
    /// appends one entry of its own (the ISA hole): more than 127 would overrun it.
    public static let maximumMemoryMapEntries = 127
    /// x86 Linux's COMMAND_LINE_SIZE less the NUL: a longer line would be cut silently.
    public static let maximumCommandLineLength = 2047
}

public enum PVHBootError: Error, Equatable, Sendable, CustomStringConvertible {
    case memoryLayout(MemoryLayoutError)
    case tooManyE820Entries(count: Int, maximum: Int)
    case commandLineTooLong(length: Int, limit: Int)
    case commandLineContainsNUL(offset: Int)
    /// A fixed boot structure is not inside RAM (a carve-out covers it).
    case fixedRegionNotInRAM(PVHBootPlan.RegionName)
    /// A PT_LOAD segment is not wholly inside one RAM range of this machine.
    case segmentNotInRAM(programHeader: Int, range: AddressRange)
    /// No page-aligned RAM below `limit` (inclusive) free of the kernel holds the initrd.
    case initrdDoesNotFit(size: Int, limit: UInt64)
    /// The RSDP must lie in memory the kernel will not reuse: an e820 entry that is not RAM.
    case rsdpNotInReservedMemory(address: UInt64)
    case regionsOverlap(PVHBootPlan.RegionName, PVHBootPlan.RegionName)

    public var description: String {
        switch self {
        case let .memoryLayout(e): return "memory layout: \(e)"
        case let .tooManyE820Entries(c, m): return "\(c) e820 entries, a PVH memory map for Linux holds \(m)"
        case let .commandLineTooLong(l, limit): return "command line of \(l) bytes exceeds the limit of \(limit)"
        case let .commandLineContainsNUL(o): return "command line contains NUL at byte \(o)"
        case let .fixedRegionNotInRAM(n): return "\(n) is not in RAM"
        case let .segmentNotInRAM(i, r):
            return "kernel segment \(i) at \(r) is not in RAM: give the guest more memory (-m) or check the vmlinux"
        case let .initrdDoesNotFit(s, l): return "no room for a \(s)-byte initrd below \(hexAddress(l)): give the guest more memory (-m)"
        case let .rsdpNotInReservedMemory(a): return "RSDP at \(hexAddress(a)) is not in reserved memory"
        case let .regionsOverlap(a, b): return "\(a) overlaps \(b)"
        }
    }
}

public struct PVHBootPlan: Sendable {
    public enum RegionName: Equatable, Hashable, Sendable, CustomStringConvertible {
        case gdt, idt, startInfo, commandLine, initrd
        /// A PT_LOAD segment, by its program header index.
        case kernelSegment(programHeader: Int)

        public var description: String {
            switch self {
            case .gdt: "gdt"
            case .idt: "idt"
            case .startInfo: "startInfo"
            case .commandLine: "commandLine"
            case .initrd: "initrd"
            case .kernelSegment(let i): "kernelSegment\(i)"
            }
        }
    }

    public struct Region: Equatable, Sendable {
        public let name: RegionName
        public let range: AddressRange
    }

    public static let startInfoAddress = PVHStartInfoLayout.pageAddress
    public static let moduleListAddress = PVHStartInfoLayout.pageAddress + UInt64(PVHStartInfoLayout.moduleListOffset)
    public static let memoryMapAddress = PVHStartInfoLayout.pageAddress + UInt64(PVHStartInfoLayout.memoryMapOffset)

    /// XEN_ELFNOTE_PHYS32_ENTRY.
    public let entry: UInt64
    public let startInfoAddress: UInt64
    public let commandLineAddress: UInt64
    public let initrd: AddressRange?
    public let e820: [E820Entry]
    /// The start-info page as written: hvm_start_info, the module list, the memory map.
    public let startInfoPage: [UInt8]
    public let acpiRSDPAddress: UInt64?
    public let vcpu: VCPUBootState
    /// Every occupied range, pairwise disjoint, each inside one e820 RAM entry.
    public let regions: [Region]
    /// What `apply` writes, in order.
    public let writes: [GuestWrite]

    public func region(_ name: RegionName) -> AddressRange? { regions.first { $0.name == name }?.range }

    public static func make(kernel: ELFKernel, initrd: [UInt8]? = nil, commandLine: String,
                            memory: MemoryLayoutDescription,
                            acpiRSDPAddress: UInt64? = nil) throws(PVHBootError) -> PVHBootPlan {
        let e820: [E820Entry]
        do { e820 = try memory.e820Map() } catch { throw .memoryLayout(error) }
        guard e820.count <= PVHStartInfoLayout.maximumMemoryMapEntries else {
            throw .tooManyE820Entries(count: e820.count, maximum: PVHStartInfoLayout.maximumMemoryMapEntries)
        }
        let ram = e820.filter { $0.type == .ram }.map(\.range)
        func inRAM(_ r: AddressRange) -> Bool { ram.contains { $0.contains(r) } }

        let cmdline = Array(commandLine.utf8)
        if let nul = cmdline.firstIndex(of: 0) { throw .commandLineContainsNUL(offset: nul) }
        guard cmdline.count <= PVHStartInfoLayout.maximumCommandLineLength else {
            throw .commandLineTooLong(length: cmdline.count, limit: PVHStartInfoLayout.maximumCommandLineLength)
        }

        var regions: [Region] = [
            Region(name: .gdt, range: ProtectedModeTables.gdt.range),
            Region(name: .idt, range: AddressRange(base: LinuxBootLayout.idtAddress, size: UInt64(LongModeTables.idtBytes.count))!),
            Region(name: .startInfo, range: AddressRange(base: startInfoAddress, size: UInt64(PVHStartInfoLayout.pageSize))!),
            Region(name: .commandLine, range: AddressRange(base: LinuxBootLayout.commandLineAddress, size: LinuxBootLayout.commandLineCapacity)!),
        ]
        for r in regions where !inRAM(r.range) { throw .fixedRegionNotInRAM(r.name) }

        // The kernel runs where its segments say: PVH entry code is not relocatable.
        for s in kernel.loadSegments {
            let range = s.physicalRange!  // the parser keeps only non-empty, non-wrapping segments
            guard inRAM(range) else { throw .segmentNotInRAM(programHeader: s.index, range: range) }
            regions.append(Region(name: .kernelSegment(programHeader: s.index), range: range))
        }

        // Initrd: as high as possible, page-aligned, below the low RAM top (hvm_modlist_entry is
        // 64-bit, but Linux copies it into boot_params' 32-bit ramdisk_image).
        var initrdRange: AddressRange?
        if let initrd, !initrd.isEmpty {
            let limit = min(memory.lowRAMTop, 1 << 32) - 1
            guard let r = BootPlacement.initrd(size: initrd.count, window: AddressRange(base: MemoryLayoutDescription.highMemoryStart, last: limit),
                                               ram: ram, avoiding: regions.map(\.range)) else {
                throw .initrdDoesNotFit(size: initrd.count, limit: limit)
            }
            regions.append(Region(name: .initrd, range: r))
            initrdRange = r
        }
        if let (a, b) = BootPlacement.firstOverlap(regions.map { ($0.name, $0.range) }) { throw .regionsOverlap(a, b) }
        if let rsdp = acpiRSDPAddress, !BootPlacement.rsdpIsReserved(rsdp, e820: e820) {
            throw .rsdpNotInReservedMemory(address: rsdp)
        }

        let page = startInfoPage(initrd: initrdRange, e820: e820, acpiRSDPAddress: acpiRSDPAddress)
        var writes = [
            GuestWrite(address: LinuxBootLayout.gdtAddress, bytes: ProtectedModeTables.gdt.bytes),
            GuestWrite(address: LinuxBootLayout.idtAddress, bytes: LongModeTables.idtBytes),
            GuestWrite(address: startInfoAddress, bytes: page),
            GuestWrite(address: LinuxBootLayout.commandLineAddress, bytes: cmdline + [0]),
        ]
        for s in kernel.loadSegments {
            // The zero tail (bss) is written too: the plan may be applied over used memory.
            writes.append(GuestWrite(address: s.physicalAddress, bytes: s.contents, zeroFill: s.memorySize - s.fileSize))
        }
        if let initrd, let r = initrdRange { writes.append(GuestWrite(address: r.base, bytes: initrd)) }

        return PVHBootPlan(
            entry: UInt64(kernel.entry),
            startInfoAddress: startInfoAddress,
            commandLineAddress: LinuxBootLayout.commandLineAddress,
            initrd: initrdRange,
            e820: e820,
            startInfoPage: page,
            acpiRSDPAddress: acpiRSDPAddress,
            vcpu: ProtectedModeTables.vcpuState(entry: UInt64(kernel.entry), startInfo: startInfoAddress),
            regions: regions,
            writes: writes)
    }

    /// hvm_start_info at the page's start, the module list (the initrd, if any) and the memory map
    /// behind it.
    static func startInfoPage(initrd: AddressRange?, e820: [E820Entry], acpiRSDPAddress: UInt64?) -> [UInt8] {
        typealias L = PVHStartInfoLayout
        var b = BootParamsBuffer(count: L.pageSize)
        b.store32(L.magic, at: L.magicOffset)
        b.store32(L.version, at: L.versionOffset)
        b.store32(0, at: L.flagsOffset)
        if let r = initrd {
            b.store32(1, at: L.moduleCountOffset)
            b.store64(moduleListAddress, at: L.moduleListAddressOffset)
            b.store64(r.base, at: L.moduleListOffset)
            b.store64(r.last - r.base + 1, at: L.moduleListOffset + 8)
            // cmdline_paddr and reserved stay zero.
        }
        b.store64(LinuxBootLayout.commandLineAddress, at: L.commandLineAddressOffset)
        b.store64(acpiRSDPAddress ?? 0, at: L.rsdpAddressOffset)
        b.store64(memoryMapAddress, at: L.memoryMapAddressOffset)
        b.store32(UInt32(e820.count), at: L.memoryMapEntriesOffset)
        for (i, e) in e820.enumerated() {
            let o = L.memoryMapOffset + i * L.memoryMapEntrySize
            b.store64(e.base, at: o)
            b.store64(e.size, at: o + 8)
            b.store32(e.type.rawValue, at: o + 16)
        }
        return b.bytes
    }
}

/// The flat 32-bit protected-mode state PVH enters with, and a GDT that backs it.
enum ProtectedModeTables {
    /// Flat 4 GiB 32-bit code (D/B=1, G=1, P, S, type 0xB) and data (type 0x3); a busy 32-bit
    /// TSS (S=0, type 0xB) of 0x68 bytes at 0, because VMX refuses to enter with an unusable TR.
    /// The same slots as the long-mode GDT, so both boots look alike to a debugger.
    static let gdt = BootGDT(code: SegmentDescriptor.gdtEntry(base: 0, rawLimit: 0xF_FFFF, flags: 0xC09B),
                             data: SegmentDescriptor.gdtEntry(base: 0, rawLimit: 0xF_FFFF, flags: 0xC093),
                             tss: SegmentDescriptor.gdtEntry(base: 0, rawLimit: 0x67, flags: 0x008B))

    static func vcpuState(entry: UInt64, startInfo: UInt64) -> VCPUBootState {
        var regs = GeneralRegisters()
        regs.rip = entry
        regs.rbx = startInfo
        regs.rflags = 0x2
        return gdt.vcpuState(registers: regs, cr0: VCPUBootState.cr0PE | VCPUBootState.cr0ET, cr3: 0, cr4: 0, efer: 0)
    }
}
