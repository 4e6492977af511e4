import VMMBase

// A Linux boot as a value: where every piece goes in guest-physical memory, the bytes each piece
// consists of, the e820 map and the boot vCPU's state. Computing it touches nothing; `apply`
// writes it through whatever memory the Machine hands in.

public enum LinuxBootError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The image lacks XLF_KERNEL_64 (or predates protocol 2.12, which introduced it).
    case no64BitEntry(xloadflags: UInt16?)
    case memoryLayout(MemoryLayoutError)
    case tooManyE820Entries(count: Int, maximum: Int)
    case commandLineTooLong(length: Int, limit: Int)
    case commandLineContainsNUL(offset: Int)
    /// The protected-mode kernel is too short to contain the 64-bit entry at +0x200.
    case kernelTooSmall(size: Int)
    /// The kernel's footprint (`max(init_size, file payload)` bytes from its load address) does not
    /// lie inside one RAM range.
    case kernelDoesNotFit(loadAddress: UInt64, footprint: UInt64)
    /// No page-aligned RAM below `limit` (inclusive) free of the kernel holds the initrd.
    case initrdDoesNotFit(size: Int, limit: UInt64)
    /// The RSDP must lie in memory the kernel will not reuse: an e820 entry that is not RAM.
    case rsdpNotInReservedMemory(address: UInt64)
    /// A fixed boot structure is not inside RAM (a carve-out covers it).
    case fixedRegionNotInRAM(LinuxBootPlan.RegionName)
    case regionsOverlap(LinuxBootPlan.RegionName, LinuxBootPlan.RegionName)

    public var description: String {
        switch self {
        case let .no64BitEntry(x): return "kernel has no 64-bit entry (xloadflags \(x.map { "0x" + String($0, radix: 16) } ?? "absent"))"
        case let .memoryLayout(e): return "memory layout: \(e)"
        case let .tooManyE820Entries(c, m): return "\(c) e820 entries, boot_params holds \(m)"
        case let .commandLineTooLong(l, limit): return "command line of \(l) bytes exceeds the limit of \(limit)"
        case let .commandLineContainsNUL(o): return "command line contains NUL at byte \(o)"
        case let .kernelTooSmall(s): return "protected-mode kernel of \(s) bytes has no 64-bit entry at +0x200"
        case let .kernelDoesNotFit(a, f): return "kernel needs 0x\(String(f, radix: 16)) bytes of RAM at 0x\(String(a, radix: 16))"
        case let .initrdDoesNotFit(s, l): return "no room for a \(s)-byte initrd below 0x\(String(l, radix: 16))"
        case let .rsdpNotInReservedMemory(a): return "RSDP at 0x\(String(a, radix: 16)) is not in reserved memory"
        case let .fixedRegionNotInRAM(n): return "\(n) is not in RAM"
        case let .regionsOverlap(a, b): return "\(a) overlaps \(b)"
        }
    }
}

public struct LinuxBootPlan: Sendable {
    public enum RegionName: String, Sendable, CaseIterable {
        case gdt, idt, bootParams, stack, pageTables, commandLine, kernel, initrd
    }

    /// Guest-physical memory a piece of the boot occupies (or reserves, for the stack and the
    /// kernel's decompression room).
    public struct Region: Equatable, Sendable {
        public let name: RegionName
        public let range: AddressRange
    }

    /// Size of an ACPI 2.0 RSDP.
    public static let rsdpSize: UInt64 = 36
    public static let kernel64BitEntryOffset: UInt64 = 0x200

    public let kernelLoadAddress: UInt64
    /// `[load, load + max(init_size, payload))`: the kernel's code plus the room it decompresses into.
    public let kernelFootprint: AddressRange
    public let initrd: AddressRange?
    public let commandLineAddress: UInt64
    public let bootParamsAddress: UInt64
    public let e820: [E820Entry]
    /// The 4 KiB zero page written at `bootParamsAddress`.
    public let bootParams: [UInt8]
    /// Nil when no RSDP address was given; otherwise whether the kernel reads it from boot_params
    /// (protocol 2.14+). Either way the RSDP must also be where the kernel scans for it if older.
    public let acpiRSDPAddress: UInt64?
    public let rsdpInBootParams: Bool
    public let vcpu: VCPUBootState
    /// Every occupied range, pairwise disjoint.
    public let regions: [Region]
    /// What `apply` writes, in order.
    public let writes: [GuestWrite]

    public func region(_ name: RegionName) -> AddressRange? { regions.first { $0.name == name }?.range }

    public static func make(kernel: BzImage, initrd: [UInt8]? = nil, commandLine: String,
                            memory: MemoryLayoutDescription,
                            acpiRSDPAddress: UInt64? = nil) throws(LinuxBootError) -> LinuxBootPlan {
        let hdr = kernel.header
        guard hdr.supports64BitEntry else { throw .no64BitEntry(xloadflags: hdr.xloadflags) }
        guard UInt64(kernel.protectedModeKernel.count) > kernel64BitEntryOffset else {
            throw .kernelTooSmall(size: kernel.protectedModeKernel.count)
        }

        let e820: [E820Entry]
        do { e820 = try memory.e820Map() } catch { throw .memoryLayout(error) }
        guard e820.count <= BootParamsLayout.e820MaxEntries else {
            throw .tooManyE820Entries(count: e820.count, maximum: BootParamsLayout.e820MaxEntries)
        }
        let ram = e820.filter { $0.type == .ram }.map(\.range)
        func inRAM(_ r: AddressRange) -> Bool { ram.contains { $0.contains(r) } }

        // Command line: NUL-terminated at a fixed address; the image bounds its length.
        let cmdline = Array(commandLine.utf8)
        if let nul = cmdline.firstIndex(of: 0) { throw .commandLineContainsNUL(offset: nul) }
        let cmdlineLimit = Int(min(UInt64(hdr.cmdlineSize), LinuxBootLayout.commandLineCapacity - 1))
        guard cmdline.count <= cmdlineLimit else {
            throw .commandLineTooLong(length: cmdline.count, limit: cmdlineLimit)
        }

        // Fixed low structures.
        var regions: [Region] = [
            Region(name: .gdt, range: LongModeTables.gdt.range),
            Region(name: .idt, range: AddressRange(base: LinuxBootLayout.idtAddress, size: UInt64(LongModeTables.idtBytes.count))!),
            Region(name: .bootParams, range: AddressRange(base: LinuxBootLayout.bootParamsAddress, size: UInt64(BootParamsLayout.size))!),
            Region(name: .stack, range: AddressRange(base: LinuxBootLayout.stackBase, last: LinuxBootLayout.stackPointer + 0xF)!),
            Region(name: .pageTables, range: LongModeTables.pageTableRange),
            Region(name: .commandLine, range: AddressRange(base: LinuxBootLayout.commandLineAddress, size: LinuxBootLayout.commandLineCapacity)!),
        ]
        for r in regions where !inRAM(r.range) { throw .fixedRegionNotInRAM(r.name) }

        // Kernel: at pref_address (the address it runs from anyway), aligned for a relocatable
        // kernel, never below 1 MiB; it needs init_size bytes there.
        let payload = UInt64(kernel.protectedModeKernel.count)
        var load = max(hdr.prefAddress ?? 0, LinuxBootLayout.defaultKernelAddress)
        if hdr.relocatableKernel {
            let mask = UInt64(hdr.kernelAlignment) - 1  // a power of two, checked by the parser
            let (up, overflow) = load.addingReportingOverflow(mask)
            guard !overflow else { throw .kernelDoesNotFit(loadAddress: load, footprint: payload) }
            load = up & ~mask
        }
        let footprintSize = max(UInt64(hdr.initSize ?? 0), payload)
        guard let footprint = AddressRange(base: load, size: footprintSize), inRAM(footprint) else {
            throw .kernelDoesNotFit(loadAddress: load, footprint: footprintSize)
        }
        regions.append(Region(name: .kernel, range: footprint))

        // Initrd: as high as possible, page-aligned, below min(initrd_addr_max, low RAM top),
        // clear of everything placed so far.
        var initrdRange: AddressRange?
        if let initrd, !initrd.isEmpty {
            let limit = min(UInt64(hdr.initrdAddrMax), memory.lowRAMTop - 1)
            guard let r = BootPlacement.initrd(size: initrd.count, window: AddressRange(base: LinuxBootLayout.defaultKernelAddress, last: limit),
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

        // boot_params: zeroed, the image's setup header copied in, then the loader's fields.
        var bp = BootParamsBuffer(count: BootParamsLayout.size)
        bp.copy(kernel.rawSetupHeader, at: BootParamsLayout.header)
        bp.store8(0xFF, at: SetupHeader.Offset.typeOfLoader)  // undefined loader
        bp.store32(UInt32(truncatingIfNeeded: load), at: SetupHeader.Offset.code32Start)
        bp.store32(UInt32(LinuxBootLayout.commandLineAddress), at: SetupHeader.Offset.cmdLinePtr)
        if let r = initrdRange {
            let size = r.last - r.base + 1
            bp.store32(UInt32(truncatingIfNeeded: r.base), at: SetupHeader.Offset.ramdiskImage)
            bp.store32(UInt32(truncatingIfNeeded: size), at: SetupHeader.Offset.ramdiskSize)
            bp.store32(UInt32(truncatingIfNeeded: r.base >> 32), at: BootParamsLayout.extRamdiskImage)
            bp.store32(UInt32(truncatingIfNeeded: size >> 32), at: BootParamsLayout.extRamdiskSize)
        }
        if let rsdp = acpiRSDPAddress { bp.store64(rsdp, at: BootParamsLayout.acpiRSDPAddr) }
        bp.store8(UInt8(e820.count), at: BootParamsLayout.e820Entries)
        for (i, e) in e820.enumerated() {
            bp.copy(e.encoded, at: BootParamsLayout.e820Table + i * BootParamsLayout.e820EntrySize)
        }

        var writes = [
            GuestWrite(address: LinuxBootLayout.gdtAddress, bytes: LongModeTables.gdt.bytes),
            GuestWrite(address: LinuxBootLayout.idtAddress, bytes: LongModeTables.idtBytes),
            GuestWrite(address: LinuxBootLayout.pml4Address, bytes: LongModeTables.pageTableBytes),
            GuestWrite(address: LinuxBootLayout.bootParamsAddress, bytes: bp.bytes),
            GuestWrite(address: LinuxBootLayout.commandLineAddress, bytes: cmdline + [0]),
            GuestWrite(address: load, bytes: kernel.protectedModeKernel),
        ]
        if let initrd, let r = initrdRange { writes.append(GuestWrite(address: r.base, bytes: initrd)) }

        return LinuxBootPlan(
            kernelLoadAddress: load,
            kernelFootprint: footprint,
            initrd: initrdRange,
            commandLineAddress: LinuxBootLayout.commandLineAddress,
            bootParamsAddress: LinuxBootLayout.bootParamsAddress,
            e820: e820,
            bootParams: bp.bytes,
            acpiRSDPAddress: acpiRSDPAddress,
            rsdpInBootParams: acpiRSDPAddress != nil && hdr.supportsACPIRSDPAddress,
            vcpu: LongModeTables.vcpuState(entry: load + kernel64BitEntryOffset,
                                           bootParams: LinuxBootLayout.bootParamsAddress),
            regions: regions,
            writes: writes)
    }

}
