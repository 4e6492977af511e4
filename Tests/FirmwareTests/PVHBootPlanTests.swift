import Firmware
import Foundation
import TestRequirements
import Testing
import VMMBase

/// PVH boot plans: where the segments, hvm_start_info, the command line and the initrd go,
/// what the start info says, and the 32-bit entry state.
@Suite struct PVHBootPlanTests {
    typealias E = ELFFixtures
    typealias F = LinuxBootFixtures

    static func plan(image: [UInt8] = E.image(), initrd: [UInt8]? = [UInt8](repeating: 0xA5, count: 0x1_2345),
                     commandLine: String = "console=ttyS0 root=/dev/vda",
                     memory: MemoryLayoutDescription = F.memory, rsdp: UInt64? = 0xE_0000) throws -> PVHBootPlan {
        try PVHBootPlan.make(kernel: try ELFKernel(bytes: image), initrd: initrd, commandLine: commandLine,
                             memory: memory, acpiRSDPAddress: rsdp)
    }

    /// Guest memory pre-filled with 0xEE over everything the plan occupies, then the plan
    /// applied: bytes the plan leaves alone stay 0xEE, so zeroing shows.
    static func applied(_ plan: PVHBootPlan) throws -> SparseGuestMemory {
        let mem = SparseGuestMemory()
        for r in plan.regions where r.range.size! <= 1 << 26 {
            try mem.write(at: r.range.base, bytes: [UInt8](repeating: 0xEE, count: Int(r.range.size!)))
        }
        try plan.apply(to: mem)
        return mem
    }

    /// The checks every PVH plan must pass, whatever kernel or memory it was made from.
    static func checkInvariants(_ plan: PVHBootPlan, kernel: ELFKernel, memory: MemoryLayoutDescription) throws {
        #expect(plan.e820 == (try memory.e820Map()))
        for (i, a) in plan.regions.enumerated() {
            for b in plan.regions[(i + 1)...] { #expect(!a.range.overlaps(b.range), "\(a.name) overlaps \(b.name)") }
            #expect(plan.e820.contains { $0.type == .ram && $0.range.contains(a.range) }, "\(a.name) not in RAM")
        }
        for w in plan.writes {
            guard let r = w.range else { #expect(w.bytes.isEmpty && w.zeroFill == 0); continue }
            #expect(plan.regions.contains { $0.range.contains(r) }, "write at 0x\(String(w.address, radix: 16)) outside regions")
        }
        for s in kernel.loadSegments {
            #expect(plan.region(.kernelSegment(programHeader: s.index)) == s.physicalRange)
        }
        if let initrd = plan.initrd {
            #expect(initrd.base % 0x1000 == 0 && initrd.base >= 0x10_0000 && initrd.last < memory.lowRAMTop)
        }

        // hvm_start_info, its module list and memory map.
        let page = plan.startInfoPage
        #expect(plan.startInfoAddress == 0x7000 && page.count == 0x1000)
        #expect(page.bootLE(0, 4) == 0x336E_C578, "magic")
        #expect(page.bootLE(4, 4) == 1, "version")
        #expect(page.bootLE(8, 4) == 0, "flags")
        #expect(page.bootLE(24, 8) == plan.commandLineAddress, "cmdline_paddr")
        #expect(page.bootLE(32, 8) == (plan.acpiRSDPAddress ?? 0), "rsdp_paddr")
        #expect(page.bootLE(52, 4) == 0, "reserved")
        if let initrd = plan.initrd {
            #expect(page.bootLE(12, 4) == 1, "nr_modules")
            let modlist = page.bootLE(16, 8)
            #expect(modlist > plan.startInfoAddress && modlist + 32 <= plan.startInfoAddress + 0x1000)
            let m = Int(modlist - plan.startInfoAddress)
            #expect(m >= 56, "module list clear of hvm_start_info")
            #expect(page.bootLE(m, 8) == initrd.base && page.bootLE(m + 8, 8) == initrd.size!)
            #expect(page.bootLE(m + 16, 8) == 0 && page.bootLE(m + 24, 8) == 0, "module cmdline and reserved")
        } else {
            #expect(page.bootLE(12, 4) == 0 && page.bootLE(16, 8) == 0)
        }
        let count = Int(page.bootLE(48, 4))
        #expect(count == plan.e820.count && count <= 127)
        let map = Int(page.bootLE(40, 8) - plan.startInfoAddress)
        #expect(map >= 56 + (plan.initrd == nil ? 0 : 32) && map + 24 * count <= 0x1000)
        for (i, e) in plan.e820.enumerated() {
            let o = map + 24 * i
            #expect(page.bootLE(o, 8) == e.base && page.bootLE(o + 8, 8) == e.size)
            #expect(page.bootLE(o + 16, 4) == UInt64(e.type.rawValue) && page.bootLE(o + 20, 4) == 0)
        }

        // Flat 32-bit protected mode, paging off, EBX = start info.
        let v = plan.vcpu
        #expect(v.registers.rip == UInt64(kernel.entry) && plan.entry == UInt64(kernel.entry))
        #expect(v.registers.rbx == plan.startInfoAddress)
        #expect(v.registers.rflags == 0x2)
        #expect(v.cr0 == 0x11 && v.cr3 == 0 && v.cr4 == 0 && v.efer == 0)
        #expect(v.cs.base == 0 && v.cs.limit == 0xFFFF_FFFF && v.cs.type == 0xB && v.cs.codeOrData
                && v.cs.defaultSize && !v.cs.long && v.cs.granularity && v.cs.present && v.cs.dpl == 0)
        for d in [v.ds, v.es, v.fs, v.gs, v.ss] {
            #expect(d.base == 0 && d.limit == 0xFFFF_FFFF && d.type == 0x3 && d.codeOrData && d.defaultSize && d.present)
            #expect(d.selector == v.ds.selector)
        }
        #expect(v.tr.type == 0xB && !v.tr.codeOrData && v.tr.present && !v.tr.unusable && v.tr.base == 0 && v.tr.limit == 0x67)
        #expect(v.ldt.unusable)

        // In memory: the GDT at GDTR decodes to the segment registers, the start info and command
        // line are where the registers and start info say, every segment is its file bytes then zeros.
        let mem = try applied(plan)
        for seg in [v.cs, v.ds, v.es, v.fs, v.gs, v.ss, v.tr] {
            #expect(UInt64(seg.selector) + 7 <= UInt64(v.gdt.limit))
            #expect(SegmentDescriptor(gdtEntry: mem.load64(v.gdt.base + UInt64(seg.selector)), selector: seg.selector) == seg)
        }
        #expect(mem.read(at: v.registers.rbx, count: 0x1000) == page)
        for s in kernel.loadSegments {
            let n = Int(s.fileSize)
            if n > 0 {
                #expect(mem.read(at: s.physicalAddress, count: min(n, 64)) == Array(s.contents.prefix(64)))
                #expect(mem.read(at: s.physicalAddress + UInt64(n) - 1, count: 1) == [s.contents[n - 1]])
            }
            if s.memorySize > s.fileSize {
                // The tail's first and last bytes (up to 4 KiB each) read as zero over the 0xEE fill.
                let tail = s.memorySize - s.fileSize, n = Int(min(tail, 0x1000))
                let start = s.physicalAddress + s.fileSize
                #expect(mem.read(at: start, count: n).allSatisfy { $0 == 0 }, "segment \(s.index)'s bss zeroed")
                #expect(mem.read(at: start + tail - UInt64(n), count: n).allSatisfy { $0 == 0 })
            }
        }
    }

    @Test func syntheticPlan() throws {
        let image = E.image()
        let plan = try Self.plan(image: image)
        try Self.checkInvariants(plan, kernel: try ELFKernel(bytes: image), memory: F.memory)
        #expect(plan.entry == 0x100_0040 && plan.vcpu.registers.rip == 0x100_0040)
        #expect(plan.initrd == AddressRange(base: (0x8000_0000 - 0x1_2345) & ~0xFFF, size: 0x1_2345))
        #expect(plan.region(.kernelSegment(programHeader: 1)) == AddressRange(base: 0x120_0000, size: 0x4000))
        #expect(plan.region(.startInfo) == AddressRange(base: 0x7000, size: 0x1000))
        let mem = try Self.applied(plan)
        #expect(mem.read(at: 0x2_0000, count: 28) == Array("console=ttyS0 root=/dev/vda\0".utf8))
        #expect(mem.read(at: 0x100_0040, count: 4) == [0x40, 0x41, 0x42, 0x43])
        #expect(mem.read(at: 0x120_0FFF, count: 2) == [0x5A, 0x00], "data, then bss")
        #expect(mem.read(at: plan.initrd!.base, count: 2) == [0xA5, 0xA5])
        // The 32-bit code descriptor the vCPU starts with, as bytes in the GDT.
        #expect(mem.load64(0x500 + 0x10) == 0x00CF_9B00_0000_FFFF)
        #expect(mem.load64(0x500 + 0x20) == 0x0000_8B00_0000_0067)
        // Through the shared view the Machine uses.
        let boot = LinuxBoot.pvh(plan)
        #expect(boot.protocolName == "PVH" && boot.vcpu == plan.vcpu && boot.e820 == plan.e820)
        #expect(boot.regions.map(\.name).contains("kernelSegment1") && boot.regions.count == plan.regions.count)
        #expect(boot.initrd == plan.initrd && boot.commandLineAddress == 0x2_0000)
    }

    @Test func noInitrdAndNoRSDP() throws {
        for initrd in [nil, [UInt8]()] {
            let plan = try Self.plan(initrd: initrd, rsdp: nil)
            #expect(plan.initrd == nil && plan.region(.initrd) == nil)
            try Self.checkInvariants(plan, kernel: try ELFKernel(bytes: E.image()), memory: F.memory)
        }
    }

    @Test func segmentsMustBeInRAM() throws {
        func image(movingDataTo address: UInt64) -> [UInt8] {
            var b = E.image()
            E.patch(&b, at: E.ph(1, 24), address, width: 8)
            return b
        }
        // In the PCI hole, in the legacy hole, beyond high RAM, and straddling the low RAM top.
        for address: UInt64 in [0xB000_0000, 0xA_0000, 0x2_0000_0000, 0x7FFF_F000] {
            let range = AddressRange(base: address, size: 0x4000)!
            #expect(throws: PVHBootError.segmentNotInRAM(programHeader: 1, range: range)) {
                try Self.plan(image: image(movingDataTo: address))
            }
        }
        // Over the start info page, over the command line.
        #expect(throws: PVHBootError.regionsOverlap(.startInfo, .kernelSegment(programHeader: 1))) {
            try Self.plan(image: image(movingDataTo: 0x6000))
        }
        #expect(throws: PVHBootError.regionsOverlap(.commandLine, .kernelSegment(programHeader: 1))) {
            try Self.plan(image: image(movingDataTo: 0x2_F000))
        }
        // In high RAM is fine (Linux's own segments never are, but nothing forbids it).
        let high = try Self.plan(image: image(movingDataTo: 0x1_0000_0000))
        try Self.checkInvariants(high, kernel: try ELFKernel(bytes: image(movingDataTo: 0x1_0000_0000)), memory: F.memory)
    }

    @Test func initrdPlacement() throws {
        // 32 MiB: segments at 16-16.01 and 18-18.02 MiB; the initrd goes as high as it fits.
        let small = MemoryLayoutDescription(lowRAMTop: 0x200_0000)
        let plan = try Self.plan(initrd: [UInt8](repeating: 1, count: 0x70_0000), memory: small)
        #expect(plan.initrd == AddressRange(base: 0x190_0000, size: 0x70_0000))
        try Self.checkInvariants(plan, kernel: try ELFKernel(bytes: E.image()), memory: small)
        // Too big for what is left between the segments and the fixed structures.
        #expect(throws: PVHBootError.initrdDoesNotFit(size: 0x100_0000, limit: 0x1FF_FFFF)) {
            try Self.plan(initrd: [UInt8](repeating: 1, count: 0x100_0000), memory: small)
        }
        // Low RAM only below 4 GiB: with high RAM, the initrd still lands below the low top.
        let big = try Self.plan(initrd: [UInt8](repeating: 2, count: 0x10_0000))
        #expect(big.initrd!.last == 0x7FFF_FFFF)
    }

    @Test func commandLineLimits() throws {
        let most = String(repeating: "x", count: 2047)
        #expect(throws: Never.self) { try Self.plan(commandLine: most) }
        #expect(throws: PVHBootError.commandLineTooLong(length: 2048, limit: 2047)) { try Self.plan(commandLine: most + "y") }
        #expect(throws: PVHBootError.commandLineContainsNUL(offset: 3)) { try Self.plan(commandLine: "abc\0def") }
        let empty = try Self.plan(commandLine: "")
        #expect(empty.writes.first { $0.address == 0x2_0000 }?.bytes == [0])
    }

    @Test func memoryMapAndRSDPChecks() throws {
        // 127 entries fit (Linux appends its own ISA entry to reach 128); more do not.
        func carveOuts(_ n: Int) -> MemoryLayoutDescription {
            MemoryLayoutDescription(lowRAMTop: 0x8000_0000, reserved: (0..<n).map {
                ReservedRange(name: "r\($0)", base: 0x4000_0000 + UInt64($0) * 0x2000, size: 0x1000, kind: .carveOut(.reserved))
            })
        }
        // 3 entries without carve-outs (conventional RAM, legacy hole, RAM above 1 MiB); each
        // carve-out inside a RAM range adds two (itself and the RAM after it).
        let fits = carveOuts(62)
        #expect(try fits.e820Map().count == 127)
        try Self.checkInvariants(try Self.plan(memory: fits), kernel: try ELFKernel(bytes: E.image()), memory: fits)
        #expect(throws: PVHBootError.tooManyE820Entries(count: 129, maximum: 127)) { try Self.plan(memory: carveOuts(63)) }
        // The RSDP must be in reserved memory.
        #expect(throws: PVHBootError.rsdpNotInReservedMemory(address: 0x50_0000)) { try Self.plan(rsdp: 0x50_0000) }
        #expect(throws: PVHBootError.rsdpNotInReservedMemory(address: .max - 3)) { try Self.plan(rsdp: .max - 3) }
        // A carve-out over the start info page breaks the fixed layout.
        let overPage = MemoryLayoutDescription(lowRAMTop: 0x8000_0000, reserved: [
            ReservedRange(name: "fw", base: 0x7000, size: 0x1000, kind: .carveOut(.reserved))])
        #expect(throws: PVHBootError.fixedRegionNotInRAM(.startInfo)) { try Self.plan(memory: overPage) }
        #expect(throws: PVHBootError.memoryLayout(.invalidLowRAMTop(0x1000))) {
            try Self.plan(memory: MemoryLayoutDescription(lowRAMTop: 0x1000))
        }
    }

    @Test func zeroFillIsDescribedNotAllocated() throws {
        // A 1 GiB bss costs a count, not a gigabyte, until it is written.
        var segments = E.defaultSegments()
        segments[1].memorySize = 1 << 30
        let plan = try Self.plan(image: E.image(segments: segments))
        let data = try #require(plan.writes.first { $0.address == 0x120_0000 })
        #expect(data.bytes.count == 0x1000 && data.zeroFill == (1 << 30) - 0x1000)
        #expect(data.range == AddressRange(base: 0x120_0000, size: 1 << 30))
        // The default zeroing writes chunks of at most 1 MiB.
        final class Counting: GuestMemoryWriter {
            var largest = 0, total: UInt64 = 0
            func write(at address: UInt64, bytes: [UInt8]) throws {
                largest = max(largest, bytes.count)
                total += UInt64(bytes.count)
            }
        }
        let counter = Counting()
        try data.apply(to: counter)
        #expect(counter.total == 1 << 30 && counter.largest == 1 << 20)
    }

    @Test(.requires(ELFFixtures.realVmlinuxPath != nil,
                   "needs /boot/vmlinuz-6.1.* (`apt-get install linux-image-amd64`) and python3 to extract its vmlinux"))
    func debianVmlinuxPlan() throws {
        let path = try #require(ELFFixtures.realVmlinuxPath)
        let kernel = try ELFKernel(bytes: [UInt8](try #require(FileManager.default.contents(atPath: path))))
        let initrd = [UInt8](repeating: 0x5A, count: 3 << 20)
        // 512 MiB, as the rig's L2 gets.
        let memory = MemoryLayoutDescription(lowRAMTop: 512 << 20, reserved: [F.ecam, F.ioapic, F.hpet, F.lapic])
        let plan = try PVHBootPlan.make(kernel: kernel, initrd: initrd, commandLine: "console=ttyS0 panic=-1",
                                        memory: memory, acpiRSDPAddress: 0xE_0000)
        try Self.checkInvariants(plan, kernel: kernel, memory: memory)
        #expect(plan.initrd == AddressRange(base: 509 << 20, size: 3 << 20))
    }
}
