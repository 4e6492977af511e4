import Firmware
import Foundation
import TestRequirements
import Testing
import VMMBase

@Suite struct LinuxBootPlanTests {
    typealias F = LinuxBootFixtures

    static func plan(image: [UInt8] = F.image(), initrd: [UInt8]? = [UInt8](repeating: 0xA5, count: 0x1_2345),
                     commandLine: String = "console=ttyS0 root=/dev/vda",
                     memory: MemoryLayoutDescription = F.memory,
                     rsdp: UInt64? = 0xE_0000) throws -> LinuxBootPlan {
        try LinuxBootPlan.make(kernel: try BzImage(bytes: image), initrd: initrd, commandLine: commandLine,
                               memory: memory, acpiRSDPAddress: rsdp)
    }

    /// The checks every plan must pass, whatever kernel or memory it was made from.
    static func checkInvariants(_ plan: LinuxBootPlan, memory: MemoryLayoutDescription, image: BzImage) throws {
        // Regions pairwise disjoint, each wholly in one RAM entry.
        for (i, a) in plan.regions.enumerated() {
            for b in plan.regions[(i + 1)...] { #expect(!a.range.overlaps(b.range), "\(a.name) overlaps \(b.name)") }
            #expect(plan.e820.contains { $0.type == .ram && $0.range.contains(a.range) }, "\(a.name) not in RAM")
        }
        // Every write lands in its region.
        for w in plan.writes where !w.bytes.isEmpty {
            let r = AddressRange(base: w.address, size: UInt64(w.bytes.count))!
            #expect(plan.regions.contains { $0.range.contains(r) }, "write at \(w.address) outside regions")
        }
        let kernel = try #require(plan.region(.kernel))
        #expect(kernel.base % UInt64(image.header.kernelAlignment) == 0)
        #expect(kernel.base >= 0x10_0000)
        #expect(kernel.size! >= UInt64(image.header.initSize ?? 0))
        if let initrd = plan.initrd {
            #expect(initrd.base % 0x1000 == 0)
            #expect(initrd.last <= UInt64(image.header.initrdAddrMax))
            #expect(initrd.last < memory.lowRAMTop)
        }

        // boot_params fields at their documented offsets.
        let bp = plan.bootParams
        #expect(bp.count == 4096)
        #expect(bp.bootLE(0x1EF, 1) == 0, "sentinel")
        let loaderFields = Set([0x210] + Array(0x214..<0x220) + Array(0x228..<0x22C))
        for (i, byte) in image.rawSetupHeader.enumerated() where !loaderFields.contains(0x1F1 + i) {
            #expect(bp[0x1F1 + i] == byte, "setup header byte 0x\(String(0x1F1 + i, radix: 16)) copied from the image")
        }
        #expect(bp.bootLE(0x202, 4) == 0x5372_6448)
        #expect(bp.bootLE(0x210, 1) == 0xFF, "type_of_loader")
        #expect(bp.bootLE(0x228, 4) == plan.commandLineAddress, "cmd_line_ptr")
        #expect(bp.bootLE(0x218, 4) == (plan.initrd?.base ?? 0), "ramdisk_image")
        #expect(bp.bootLE(0x21C, 4) == (plan.initrd?.size ?? 0), "ramdisk_size")
        #expect(bp.bootLE(0x0C0, 4) == 0 && bp.bootLE(0x0C4, 4) == 0 && bp.bootLE(0x0C8, 4) == 0, "ext_* fields")
        #expect(bp.bootLE(0x070, 8) == (plan.acpiRSDPAddress ?? 0), "acpi_rsdp_addr")
        #expect(bp.bootLE(0x1E8, 1) == UInt64(plan.e820.count), "e820_entries")
        for (i, e) in plan.e820.enumerated() {
            let o = 0x2D0 + 20 * i
            #expect(bp.bootLE(o, 8) == e.base && bp.bootLE(o + 8, 8) == e.size && bp.bootLE(o + 16, 4) == UInt64(e.type.rawValue))
        }
        #expect(bp[(0x2D0 + 20 * plan.e820.count)...].allSatisfy { $0 == 0 })

        // The vCPU enters at the 64-bit entry with boot_params in RSI, in long mode.
        let v = plan.vcpu
        #expect(v.registers.rip == plan.kernelLoadAddress + 0x200)
        #expect(v.registers.rsi == plan.bootParamsAddress)
        #expect(v.registers.rflags == 0x2)
        #expect(v.cr0 & 0x8000_0001 == 0x8000_0001)
        #expect(v.cr0 & 0x6000_0000 == 0, "caches enabled (CD/NW clear)")
        #expect(v.cr4 & 0x20 != 0)
        #expect(v.efer == 0x500)
        #expect(v.cs.long && !v.cs.defaultSize && v.cs.present && v.cs.codeOrData && v.cs.type & 0x8 != 0)
        #expect(v.cs.selector == 0x10 && v.ds.selector == 0x18 && v.ss.selector == 0x18 && v.es.selector == 0x18)
        #expect(v.ds.limit == 0xFFFF_FFFF && v.ds.base == 0 && v.ds.type & 0xA == 0x2)
        #expect(!v.tr.unusable && !v.tr.codeOrData && v.tr.type == 0xB)
        #expect(v.ldt.unusable)

        // Applied to memory, the GDT at GDTR decodes back to the segment registers, and the page
        // tables at CR3 identity-map everything the kernel touches.
        let mem = SparseGuestMemory()
        try plan.apply(to: mem)
        for seg in [v.cs, v.ds, v.es, v.fs, v.gs, v.ss, v.tr] {
            #expect(UInt64(seg.selector) + 7 <= UInt64(v.gdt.limit))
            let entry = mem.load64(v.gdt.base + UInt64(seg.selector))
            #expect(SegmentDescriptor(gdtEntry: entry, selector: seg.selector) == seg)
        }
        var probes: [UInt64] = [0, 0x7000, 0x9_FFFF, 0x10_0000, 0x1234_5678, 0xFFFF_FFFF,
                                plan.bootParamsAddress, plan.commandLineAddress, kernel.base, kernel.last]
        if let r = plan.initrd { probes += [r.base, r.last] }
        for va in probes { #expect(walk(mem, cr3: v.cr3, va) == va, "identity map at 0x\(String(va, radix: 16))") }
        #expect(walk(mem, cr3: v.cr3, 0x1_0000_0000) == nil, "nothing mapped at 4 GiB")
    }

    /// A 4-level walk honouring 2 MiB pages; nil when a level is not present.
    static func walk(_ mem: SparseGuestMemory, cr3: UInt64, _ va: UInt64) -> UInt64? {
        let addrMask: UInt64 = 0x000F_FFFF_FFFF_F000
        let pml4e = mem.load64((cr3 & addrMask) + ((va >> 39) & 511) * 8)
        guard pml4e & 1 == 1 else { return nil }
        let pdpte = mem.load64((pml4e & addrMask) + ((va >> 30) & 511) * 8)
        guard pdpte & 1 == 1, pdpte & 0x80 == 0 else { return nil }
        let pde = mem.load64((pdpte & addrMask) + ((va >> 21) & 511) * 8)
        guard pde & 1 == 1, pde & 0x80 != 0 else { return nil }
        return (pde & addrMask & ~0x1F_FFFF) | (va & 0x1F_FFFF)
    }

    @Test func syntheticPlan() throws {
        let bytes = F.image()
        let plan = try Self.plan(image: bytes)
        try Self.checkInvariants(plan, memory: F.memory, image: try BzImage(bytes: bytes))
        #expect(plan.kernelLoadAddress == 0x100_0000, "pref_address")
        #expect(plan.kernelFootprint == AddressRange(base: 0x100_0000, size: 0x80_0000))
        // Highest page-aligned spot below initrd_addr_max (0x7fffffff) and low RAM top (2 GiB).
        #expect(plan.initrd == AddressRange(base: (0x8000_0000 - 0x1_2345) & ~0xFFF, size: 0x1_2345))
        #expect(plan.rsdpInBootParams)
        let mem = SparseGuestMemory()
        try plan.apply(to: mem)
        #expect(mem.read(at: 0x2_0000, count: 28) == Array("console=ttyS0 root=/dev/vda\0".utf8))
        #expect(mem.read(at: 0x100_0200, count: 4) == [0x00, 0x01, 0x02, 0x03])
        #expect(mem.read(at: plan.initrd!.base, count: 2) == [0xA5, 0xA5])
        #expect(mem.read(at: 0x7000, count: 4096) == plan.bootParams)
    }

    @Test(.requires(F.realKernelPath != nil,
                   "no /boot/vmlinuz-6.1.* installed: `apt-get install linux-image-amd64` provides it"))
    func realKernelPlan() throws {
        let path = try #require(F.realKernelPath)
        let image = try BzImage(bytes: [UInt8](try #require(FileManager.default.contents(atPath: path))))
        let initrd = [UInt8](repeating: 0x5A, count: 3 << 20)
        let plan = try LinuxBootPlan.make(kernel: image, initrd: initrd, commandLine: "console=ttyS0 panic=-1",
                                          memory: F.memory, acpiRSDPAddress: 0xE_0000)
        try Self.checkInvariants(plan, memory: F.memory, image: image)
        #expect(plan.kernelLoadAddress == 0x100_0000)
        #expect(plan.vcpu.registers.rip == 0x100_0200)
        #expect(plan.initrd!.last <= 0x7FFF_FFFF)
    }

    @Test func smallMemoryPutsInitrdJustAboveTheKernel() throws {
        // 32 MiB: kernel footprint 16-24 MiB, the initrd fits only in 24-32 MiB.
        let mem = MemoryLayoutDescription(lowRAMTop: 0x200_0000)
        let plan = try Self.plan(initrd: [UInt8](repeating: 1, count: 0x70_0000), memory: mem)
        #expect(plan.initrd == AddressRange(base: 0x190_0000, size: 0x70_0000))
        try Self.checkInvariants(plan, memory: mem, image: try BzImage(bytes: F.image()))
        // Larger than the space above the kernel: it goes below it, between 1 and 16 MiB.
        let below = try Self.plan(initrd: [UInt8](repeating: 1, count: 0xA0_0000), memory: mem)
        #expect(below.initrd!.last < 0x100_0000 && below.initrd!.base >= 0x10_0000)
        #expect(throws: LinuxBootError.initrdDoesNotFit(size: 0x100_0000, limit: 0x1FF_FFFF)) {
            try Self.plan(initrd: [UInt8](repeating: 1, count: 0x100_0000), memory: mem)
        }
    }

    @Test func initrdHonoursInitrdAddrMaxAndCarveOuts() throws {
        let mem = MemoryLayoutDescription(lowRAMTop: 0x8000_0000, reserved: [
            ReservedRange(name: "acpi", base: 0x3FFF_0000, size: 0x1_0000, kind: .carveOut(.acpiReclaimable)),
        ])
        let plan = try Self.plan(image: F.image(initrdAddrMax: 0x3FFF_FFFF), memory: mem)
        let r = try #require(plan.initrd)
        #expect(r.last < 0x3FFF_0000)
        #expect(r.base == (0x3FFF_0000 - 0x1_2345) & ~0xFFF)
        try Self.checkInvariants(plan, memory: mem, image: try BzImage(bytes: F.image(initrdAddrMax: 0x3FFF_FFFF)))
        // initrd_addr_max below 1 MiB leaves nowhere to put it.
        #expect(throws: LinuxBootError.initrdDoesNotFit(size: 0x1_2345, limit: 0xFFFF)) {
            try Self.plan(image: F.image(initrdAddrMax: 0xFFFF))
        }
    }

    @Test func noInitrd() throws {
        for initrd in [nil, [UInt8]()] {
            let plan = try Self.plan(initrd: initrd)
            #expect(plan.initrd == nil && plan.region(.initrd) == nil)
            #expect(plan.bootParams.bootLE(0x218, 8) == 0)
        }
    }

    @Test func commandLineLimits() throws {
        let at = String(repeating: "x", count: 0x7FF)
        #expect(throws: Never.self) { try Self.plan(commandLine: at) }
        #expect(throws: LinuxBootError.commandLineTooLong(length: 0x800, limit: 0x7FF)) {
            try Self.plan(commandLine: at + "y")
        }
        // The image's cmdline_size can exceed our buffer; our buffer then bounds it.
        #expect(throws: LinuxBootError.commandLineTooLong(length: 0x1_0000, limit: 0xFFFF)) {
            try Self.plan(image: F.image(cmdlineSize: 0xFFFF_FFFF), commandLine: String(repeating: "x", count: 0x1_0000))
        }
        #expect(throws: LinuxBootError.commandLineTooLong(length: 1, limit: 0)) {
            try Self.plan(image: F.image(cmdlineSize: 0), commandLine: "x")
        }
        #expect(throws: LinuxBootError.commandLineContainsNUL(offset: 3)) { try Self.plan(commandLine: "abc\0def") }
        let empty = try Self.plan(commandLine: "")
        #expect(empty.writes.first { $0.address == 0x2_0000 }?.bytes == [0])
    }

    @Test func kernelPlacementFailures() throws {
        #expect(throws: LinuxBootError.no64BitEntry(xloadflags: 0x7E)) { try Self.plan(image: F.image(xloadflags: 0x7E)) }
        #expect(throws: LinuxBootError.no64BitEntry(xloadflags: nil)) { try Self.plan(image: F.image(version: 0x020A)) }
        // init_size far larger than RAM.
        #expect(throws: LinuxBootError.kernelDoesNotFit(loadAddress: 0x100_0000, footprint: 0xFFFF_FFFF)) {
            try Self.plan(image: F.image(initSize: 0xFFFF_FFFF))
        }
        // pref_address near the top of the address space: aligning up would wrap.
        #expect(throws: LinuxBootError.self) { try Self.plan(image: F.image(prefAddress: 0xFFFF_FFFF_FFFF_F000)) }
        // pref_address in the PCI hole.
        #expect(throws: LinuxBootError.kernelDoesNotFit(loadAddress: 0xB000_0000, footprint: 0x80_0000)) {
            try Self.plan(image: F.image(prefAddress: 0xB000_0000))
        }
        // Too small to hold the 64-bit entry.
        #expect(throws: LinuxBootError.kernelTooSmall(size: 0x200)) { try Self.plan(image: F.image(payloadSize: 0x200)) }
    }

    @Test func kernelAlignmentAndDefaults() throws {
        // Unaligned preference rounds up to kernel_alignment.
        let up = try Self.plan(image: F.image(prefAddress: 0x123_4567))
        #expect(up.kernelLoadAddress == 0x140_0000)
        // No preference: 1 MiB, aligned up for a relocatable kernel, as is for a fixed one.
        #expect(try Self.plan(image: F.image(prefAddress: 0)).kernelLoadAddress == 0x20_0000)
        #expect(try Self.plan(image: F.image(relocatable: 0, prefAddress: 0)).kernelLoadAddress == 0x10_0000)
        // A footprint smaller than the payload is widened to the payload.
        let tiny = try Self.plan(image: F.image(payloadSize: 0x9000, initSize: 0x10))
        #expect(tiny.kernelFootprint.size == 0x9000)
    }

    @Test func rsdpAndFixedRegionChecks() throws {
        let plan = try Self.plan(rsdp: nil)
        #expect(plan.bootParams.bootLE(0x70, 8) == 0 && !plan.rsdpInBootParams)
        #expect(throws: LinuxBootError.rsdpNotInReservedMemory(address: 0x50_0000)) { try Self.plan(rsdp: 0x50_0000) }
        #expect(throws: LinuxBootError.rsdpNotInReservedMemory(address: 0xF_FFF0)) { try Self.plan(rsdp: 0xF_FFF0) }
        #expect(throws: LinuxBootError.rsdpNotInReservedMemory(address: .max - 3)) { try Self.plan(rsdp: .max - 3) }
        // An RSDP in an ACPI carve-out is fine.
        let acpi = MemoryLayoutDescription(lowRAMTop: 0x8000_0000, reserved: [
            ReservedRange(name: "acpi", base: 0x7FFF_0000, size: 0x1_0000, kind: .carveOut(.acpiReclaimable))])
        #expect(try Self.plan(memory: acpi, rsdp: 0x7FFF_0000).acpiRSDPAddress == 0x7FFF_0000)
        // A kernel older than 2.14 does not read acpi_rsdp_addr.
        #expect(try Self.plan(image: F.image(version: 0x020D)).rsdpInBootParams == false)
        // A carve-out over the zero page breaks the fixed layout.
        let overZeroPage = MemoryLayoutDescription(lowRAMTop: 0x8000_0000, reserved: [
            ReservedRange(name: "fw", base: 0x7000, size: 0x1000, kind: .carveOut(.reserved))])
        #expect(throws: LinuxBootError.fixedRegionNotInRAM(.bootParams)) { try Self.plan(memory: overZeroPage) }
        #expect(throws: LinuxBootError.memoryLayout(.invalidLowRAMTop(0x1000))) {
            try Self.plan(memory: MemoryLayoutDescription(lowRAMTop: 0x1000))
        }
    }

    @Test func tooManyE820Entries() {
        let many = (0..<130).map { ReservedRange(name: "r\($0)", base: 0x20_0000 + UInt64($0) * 0x2000, size: 0x1000,
                                                  kind: .carveOut(.reserved)) }
        #expect(throws: LinuxBootError.self) {
            try Self.plan(memory: MemoryLayoutDescription(lowRAMTop: 0x8000_0000, reserved: many))
        }
    }

    @Test func applyPropagatesWriterErrors() throws {
        struct Refusing: GuestMemoryWriter {
            struct Refused: Error {}
            func write(at address: UInt64, bytes: [UInt8]) throws { throw Refused() }
        }
        let plan = try Self.plan()
        #expect(throws: Refusing.Refused.self) { try plan.apply(to: Refusing()) }
    }

    @Test func gdtEntryRoundTrip() {
        let code = SegmentDescriptor.gdtEntry(base: 0, rawLimit: 0xF_FFFF, flags: 0xA09B)
        #expect(code == 0x00AF_9B00_0000_FFFF)
        let d = SegmentDescriptor(gdtEntry: 0x00CF_9300_0000_FFFF, selector: 0x18)
        #expect(d.limit == 0xFFFF_FFFF && d.defaultSize && !d.long && d.type == 3 && d.present && !d.unusable)
        let odd = SegmentDescriptor(gdtEntry: SegmentDescriptor.gdtEntry(base: 0x1234_5678, rawLimit: 0xABCDE, flags: 0x0093),
                                    selector: 8)
        #expect(odd.base == 0x1234_5678 && odd.limit == 0xABCDE && !odd.granularity)
    }
}
