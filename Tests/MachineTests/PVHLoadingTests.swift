import GuestMemory
import Chipset
import Firmware
import Foundation
import KVM
import Machine
import TestRequirements
import Testing
import VMMBase

struct NotThatProtocol: Error, CustomStringConvertible {
    let description: String
}

extension LinuxBoot {
    /// The bzImage plan, or an error when the kernel was booted another way.
    var bzImagePlan: LinuxBootPlan {
        get throws {
            guard case .bzImage(let p) = self else { throw NotThatProtocol(description: "expected a bzImage boot, got \(protocolName)") }
            return p
        }
    }

    var pvhPlan: PVHBootPlan {
        get throws {
            guard case .pvh(let p) = self else { throw NotThatProtocol(description: "expected a PVH boot, got \(protocolName)") }
            return p
        }
    }
}

/// ELF kernels for the Machine's PVH path: a minimal hand-built one and the real Debian vmlinux.
enum PVHKernels {
    static func le(_ v: UInt64, _ width: Int) -> [UInt8] { (0..<width).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

    /// 32-bit code: if [EBX] holds the hvm_start_info magic, send the NUL-terminated string at
    /// start_info.cmdline_paddr to COM1, else send "!"; then halt. It decodes to this only in
    /// 32-bit protected mode (in 16-bit mode the operands differ, in 64-bit 0x46 is a REX prefix).
    static let echoCommandLine: [UInt8] = [
        0x81, 0x3B, 0x78, 0xC5, 0x6E, 0x33,  // cmp dword [ebx], 0x336ec578
        0x75, 0x14,                          // jne bad
        0x8B, 0x73, 0x18,                    // mov esi, [ebx + 24]      cmdline_paddr
        0x66, 0xBA, 0xF8, 0x03,              // mov dx, 0x3f8            COM1
        0x8A, 0x06,                          // next: mov al, [esi]
        0x84, 0xC0,                          // test al, al
        0x74, 0x04,                          // jz done
        0xEE,                                // out dx, al
        0x46,                                // inc esi
        0xEB, 0xF6,                          // jmp next
        0xF4,                                // done: hlt
        0xEB, 0xFD,                          // jmp done
        0x66, 0xBA, 0xF8, 0x03,              // bad: mov dx, 0x3f8
        0xB0, 0x21,                          // mov al, '!'
        0xEE,                                // out dx, al
        0xF4,                                // hlt
    ]

    /// An ELF64 x86-64 executable: `code` at 0x40 of a 0x2000-byte text segment at 16 MiB plus
    /// `bss` zero bytes, entry 16 MiB + 0x40 in a Xen PHYS32_ENTRY note (unless `entryNote` is false).
    static func elf(code: [UInt8] = echoCommandLine, bss: UInt64 = 0x1000, textAddress: UInt64 = 0x100_0000,
                    entryNote: Bool = true) -> [UInt8] {
        var text = [UInt8](repeating: 0x90, count: 0x2000)
        text.replaceSubrange(0x40..<(0x40 + code.count), with: code)
        let name = Array("Xen\0".utf8)
        let note = entryNote ? le(4, 4) + le(4, 4) + le(18, 4) + name + le(textAddress + 0x40, 4) : []
        let phoff = 64, textOffset = 0x1000, noteOffset = textOffset + text.count
        var b = [UInt8](repeating: 0, count: noteOffset + note.count)
        func put(_ v: UInt64, _ w: Int, _ o: Int) { b.replaceSubrange(o..<(o + w), with: le(v, w)) }
        b.replaceSubrange(0..<8, with: [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0])
        put(2, 2, 0x10); put(62, 2, 0x12); put(1, 4, 0x14); put(textAddress, 8, 0x18)
        put(UInt64(phoff), 8, 0x20); put(64, 2, 0x34); put(56, 2, 0x36); put(2, 2, 0x38)
        let segments: [(type: UInt64, offset: Int, address: UInt64, size: Int, memory: UInt64)] = [
            (1, textOffset, textAddress, text.count, UInt64(text.count) + bss),
            (4, noteOffset, textAddress + UInt64(text.count), note.count, UInt64(note.count)),
        ]
        for (i, s) in segments.enumerated() {
            let h = phoff + 56 * i
            put(s.type, 4, h); put(5, 4, h + 4); put(UInt64(s.offset), 8, h + 8); put(s.address, 8, h + 16)
            put(s.address, 8, h + 24); put(UInt64(s.size), 8, h + 32); put(s.memory, 8, h + 40); put(4, 8, h + 48)
        }
        b.replaceSubrange(textOffset..<noteOffset, with: text)
        b.replaceSubrange(noteOffset..<b.count, with: note)
        return b
    }

    /// The vmlinux inside /boot's Debian bzImage, extracted by the rig's extract-vmlinux.py into
    /// the cache FirmwareTests uses too.
    static let realVmlinuxPath: String? = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/boot")) ?? []
        guard let name = names.filter({ $0.hasPrefix("vmlinuz-6.1.") }).sorted().last else { return nil }
        let bzImage = "/boot/" + name
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-test-vmlinux")
        try? FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        let size = (try? FileManager.default.attributesOfItem(atPath: bzImage)[.size] as? Int) ?? 0
        let target = cache.appendingPathComponent(name + "-\(size).elf").path
        if FileManager.default.fileExists(atPath: target) { return target }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Rig/extract-vmlinux.py").path
        let partial = target + ".\(getpid()).partial"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script, bzImage, partial]
        p.standardOutput = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        try? FileManager.default.removeItem(atPath: target)
        try? FileManager.default.moveItem(atPath: partial, toPath: target)
        return FileManager.default.fileExists(atPath: target) ? target : nil
    }()
}

/// `Machine.loadLinux` with an ELF kernel: format detection, what lands in guest RAM, the PVH
/// entry state, and typed errors for kernels that cannot boot.
@Suite struct PVHLoadingTests {
    func machine(memory: UInt64, serial: any SerialBackend = NullSerialBackend()) throws -> Machine {
        var configuration = MachineConfiguration(devices: [])
        configuration.memorySize = memory
        return try Machine(configuration, serialBackend: serial)
    }

    /// `count` bytes of guest RAM at `address` (which must be RAM).
    func ram(_ m: Machine, _ address: UInt64, _ count: Int) throws -> [UInt8] {
        try m.guestMemory.read(at: GuestAddress(address), count: count)
    }

    func le(_ bytes: [UInt8]) -> UInt64 { bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) } }

    /// The PVH entry state as KVM will be given it: flat 32-bit protected mode, paging off.
    func expectPVHEntryState(_ boot: LinuxBoot, entry: UInt64) {
        let s = VCPUSetup.specialRegisters(boot.vcpu, base: SpecialRegisters())
        #expect(s.cr0 == 0x11 && s.cr3 == 0 && s.cr4 == 0 && s.efer == 0)
        #expect(s.cs.base == 0 && s.cs.limit == 0xFFFF_FFFF && s.cs.type == 0xB && s.cs.system
                && s.cs.defaultSize && !s.cs.long && s.cs.granularity && s.cs.present && !s.cs.unusable)
        for d in [s.ds, s.es, s.fs, s.gs, s.ss] {
            #expect(d.base == 0 && d.limit == 0xFFFF_FFFF && d.type == 0x3 && d.system && d.defaultSize && d.present)
        }
        #expect(s.tr.type == 0xB && !s.tr.system && s.tr.present && !s.tr.unusable && s.tr.base == 0 && s.tr.limit == 0x67)
        #expect(s.ldt.unusable)
        #expect(s.gdtBase == 0x500 && s.gdtLimit == 39)
        let r = VCPUSetup.registers(boot.vcpu)
        #expect(r.rip == entry && r.rbx == PVHBootPlan.startInfoAddress && r.rflags == 0x2)
    }

    @Test func elfKernelBootsThroughPVH() throws {
        let m = try machine(memory: 64 << 20)
        // Dirty the bss so that zeroing it shows.
        try m.guestMemory.fill(at: GuestAddress(0x100_2000), count: 0x1000, with: 0xEE)
        let initrd = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let boot = try m.loadLinux(kernel: PVHKernels.elf(), initrd: initrd, commandLine: "console=ttyS0 quiet")
        let plan = try boot.pvhPlan
        #expect(boot.protocolName == "PVH" && plan.entry == 0x100_0040)
        #expect(try ram(m, 0x100_0040, PVHKernels.echoCommandLine.count) == PVHKernels.echoCommandLine)
        #expect(try ram(m, 0x100_2000, 0x1000).allSatisfy { $0 == 0 }, "bss zeroed")
        let start = try ram(m, 0x7000, 56)
        #expect(le(Array(start[0..<4])) == 0x336E_C578 && le(Array(start[12..<16])) == 1)
        let module = try ram(m, le(Array(start[16..<24])), 32)
        let initrdRange = try #require(plan.initrd)
        #expect(le(Array(module[0..<8])) == initrdRange.base && le(Array(module[8..<16])) == 10_000)
        #expect(try ram(m, initrdRange.base, initrd.count) == initrd)
        #expect(try ram(m, le(Array(start[24..<32])), 20) == Array("console=ttyS0 quiet\0".utf8))
        expectPVHEntryState(boot, entry: 0x100_0040)
        // Both protocols come through the same entry point: a bzImage still boots as one.
        #expect(try m.loadLinux(kernel: LinuxBootSetupTests.image(), initrd: nil, commandLine: "").protocolName == "bzImage")
    }

    @Test func unbootableELFKernelsAreTypedErrors() throws {
        let m = try machine(memory: 64 << 20)
        do {
            _ = try m.loadLinux(kernel: PVHKernels.elf(entryNote: false), initrd: nil, commandLine: "")
            Issue.record("an ELF without a PHYS32_ENTRY note loaded")
        } catch {
            guard case .elfKernel(.noPHYS32EntryNote) = error else { Issue.record("wrong error: \(error)"); return }
            #expect(error.description == "ELF kernel: not a PVH kernel: no XEN_ELFNOTE_PHYS32_ENTRY note (build with CONFIG_PVH=y, or pass the bzImage)")
        }
        // A segment beyond this machine's 64 MiB of RAM.
        do {
            _ = try m.loadLinux(kernel: PVHKernels.elf(textAddress: 0x800_0000), initrd: nil, commandLine: "")
            Issue.record("a segment outside RAM loaded")
        } catch {
            guard case .pvhPlan(.segmentNotInRAM(programHeader: 0, _)) = error else { Issue.record("wrong error: \(error)"); return }
        }
        // A truncated file.
        let cut = Array(PVHKernels.elf().prefix(0x1800))
        do {
            _ = try m.loadLinux(kernel: cut, initrd: nil, commandLine: "")
            Issue.record("a truncated ELF loaded")
        } catch {
            guard case .elfKernel(.segmentOutsideFile(index: 0, _, _, _)) = error else { Issue.record("wrong error: \(error)"); return }
        }
    }

    @Test(.requires(PVHKernels.realVmlinuxPath != nil,
                   "needs /boot/vmlinuz-6.1.* (`apt-get install linux-image-amd64`) and python3 to extract its vmlinux"))
    func debianVmlinuxInGuestRAM() throws {
        let path = try #require(PVHKernels.realVmlinuxPath)
        let file = [UInt8](try #require(FileManager.default.contents(atPath: path)))
        let m = try machine(memory: 512 << 20)
        try m.runFirmware()
        let tables = try m.installACPITables(cpuCount: 1)
        let initrd = (0..<(2 << 20) + 123).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 5) }
        let commandLine = "console=ttyS0 quiet panic=-1 rig.l2=report"
        let boot = try m.loadLinux(kernel: file, initrd: initrd, commandLine: commandLine,
                                   acpiRSDPAddress: tables.rsdp.address)
        let kernel = try ELFKernel(bytes: file)
        expectPVHEntryState(boot, entry: UInt64(kernel.entry))

        // hvm_start_info, read back from guest RAM where EBX points.
        let start = try ram(m, boot.vcpu.registers.rbx, 56)
        func field(_ o: Int, _ w: Int) -> UInt64 { le(Array(start[o..<(o + w)])) }
        #expect(field(0, 4) == 0x336E_C578, "magic")
        #expect(field(4, 4) == 1 && field(8, 4) == 0, "version 1, no flags")
        #expect(field(12, 4) == 1, "one module: the initrd")
        let module = try ram(m, field(16, 8), 32)
        let initrdBase = le(Array(module[0..<8]))
        #expect(le(Array(module[8..<16])) == UInt64(initrd.count) && le(Array(module[16..<32])) == 0)
        #expect(initrdBase % 0x1000 == 0 && initrdBase + UInt64(initrd.count) <= 512 << 20)
        #expect(try ram(m, initrdBase, initrd.count) == initrd)
        #expect(try ram(m, field(24, 8), commandLine.utf8.count + 1) == Array(commandLine.utf8) + [0])
        #expect(field(32, 8) == tables.rsdp.address)
        #expect(try ram(m, field(32, 8), 8) == Array("RSD PTR ".utf8))
        let e820 = try m.memoryLayoutDescription.e820Map()
        #expect(field(48, 4) == UInt64(e820.count))
        let map = try ram(m, field(40, 8), 24 * e820.count)
        for (i, e) in e820.enumerated() {
            let entry = Array(map[(24 * i)..<(24 * i + 24)])
            #expect(le(Array(entry[0..<8])) == e.base && le(Array(entry[8..<16])) == e.size)
            #expect(le(Array(entry[16..<20])) == UInt64(e.type.rawValue) && le(Array(entry[20..<24])) == 0)
        }

        // Every PT_LOAD segment's file bytes at its physical address.
        for s in kernel.loadSegments {
            #expect(m.guestMemory.isMapped(GuestAddress(s.physicalAddress), length: s.memorySize))
            let inRAM = try ram(m, s.physicalAddress, Int(s.fileSize))
            let same = file[Int(s.fileOffset)..<Int(s.fileOffset + s.fileSize)].elementsEqual(inRAM)
            #expect(same, "segment \(s.index) at 0x\(String(s.physicalAddress, radix: 16))")
        }
    }
}

/// The PVH entry on this host's KVM: the tiny 32-bit kernel above runs and echoes the command
/// line it finds through EBX. (This host's KVM is far too slow for Linux; a dozen instructions
/// are fine.)
@Suite(.requires(KVMSystem.isAvailable(), "/dev/kvm is absent or not accessible"))
struct KVMPVHEntryTests {
    @Test func entryCodeFindsTheStartInfo() throws {
        var configuration = MachineConfiguration(devices: [])
        configuration.memorySize = 64 << 20
        let serial = CaptureSerialBackend()
        let machine = try Machine(configuration, serialBackend: serial)
        try machine.runFirmware()
        let guest = try KVMLinuxGuest(machine: machine, kernel: PVHKernels.elf(), initrd: [1, 2, 3],
                                      commandLine: "pvh-ok", vcpuCount: 1)
        let bsp = guest.runner.vcpus[0]
        #expect(try bsp.registers().rip == 0x100_0040)
        #expect(try bsp.registers().rbx == 0x7000)
        let special = try bsp.specialRegisters()
        #expect(special.cr0 & 0x8000_0001 == 0x1 && special.efer & 0x500 == 0 && special.cs.defaultSize && !special.cs.long)
        try guest.start()
        let deadline = Date().addingTimeInterval(20)
        while serial.text.count < 6 && Date() < deadline { usleep(10_000) }
        let reasons = guest.stop()
        #expect(serial.text == "pvh-ok", "the guest's COM1 output; vCPU stopped: \(reasons)")
    }
}
