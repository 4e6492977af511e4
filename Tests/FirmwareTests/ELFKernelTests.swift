import Firmware
import Foundation
import TestRequirements
import Testing
import VMMBase

/// The ELF side of PVH: parsing a vmlinux's program headers and its PHYS32_ENTRY note, on
/// hand-built images (good and hostile) and on the real Debian kernel against readelf.
@Suite struct ELFKernelTests {
    typealias E = ELFFixtures

    @Test func parsesSyntheticKernel() throws {
        let kernel = try ELFKernel(bytes: E.image())
        #expect(kernel.entry == 0x100_0040)
        #expect(kernel.elfEntry == 0x100_0000)
        #expect(kernel.loadSegments.count == 2)
        let text = kernel.loadSegments[0], data = kernel.loadSegments[1]
        #expect(text.index == 0 && data.index == 1)
        #expect(text.physicalAddress == 0x100_0000 && text.virtualAddress == 0xFFFF_FFFF_8100_0000)
        #expect(text.fileSize == 0x3000 && text.memorySize == 0x3000 && text.flags == 5)
        #expect(text.contents == (0..<0x3000).map { UInt8(truncatingIfNeeded: $0) })
        #expect(data.physicalRange == AddressRange(base: 0x120_0000, size: 0x4000))
        #expect(data.contents == [UInt8](repeating: 0x5A, count: 0x1000) && data.flags == 6)
    }

    @Test func entryNoteMayBeEightBytes() throws {
        // Linux 6.1 emits the entry with _ASM_PTR: 8 bytes on x86-64.
        let kernel = try ELFKernel(bytes: E.image(segments: E.defaultSegments(notes: E.notes(entry: E.le(0x100_2F00, 8)))))
        #expect(kernel.entry == 0x100_2F00)
        #expect(throws: ELFKernelError.badEntryNoteSize(2)) {
            try ELFKernel(bytes: E.image(segments: E.defaultSegments(notes: E.notes(entry: [0x40, 0x00]))))
        }
        #expect(throws: ELFKernelError.entryAbove4GiB(0x1_0000_0040)) {
            try ELFKernel(bytes: E.image(segments: E.defaultSegments(notes: E.notes(entry: E.le(0x1_0000_0040, 8)))))
        }
    }

    @Test func entryMustBeInLoadedCode() {
        // In the data segment's bss (not file-backed), and outside every segment.
        for entry: UInt64 in [0x120_1000, 0x50_0000] {
            #expect(throws: ELFKernelError.entryNotInLoadedCode(entry)) {
                try ELFKernel(bytes: E.image(segments: E.defaultSegments(notes: E.notes(entry: E.le(entry, 4)))))
            }
        }
    }

    @Test func missingEntryNoteSaysItIsNotPVH() {
        let bytes = E.image(segments: E.defaultSegments(notes: E.notes(entry: nil)))
        #expect(throws: ELFKernelError.noPHYS32EntryNote) { try ELFKernel(bytes: bytes) }
        #expect(ELFKernelError.noPHYS32EntryNote.description.hasPrefix(
            "not a PVH kernel: no XEN_ELFNOTE_PHYS32_ENTRY note"))
        // No PT_NOTE segment at all.
        #expect(throws: ELFKernelError.noPHYS32EntryNote) {
            try ELFKernel(bytes: E.image(segments: Array(E.defaultSegments().prefix(2))))
        }
    }

    @Test func eightByteAlignedNotes() throws {
        // A PT_NOTE with p_align 8 pads name and desc to 8 (GNU property notes do).
        func pad8(_ b: [UInt8]) -> [UInt8] { b + [UInt8](repeating: 0, count: (8 - b.count % 8) % 8) }
        let notes = E.le(4, 4) + E.le(4, 4) + E.le(5, 4) + pad8(Array("GNU\0".utf8)) + pad8([1, 2, 3, 4])
            + E.le(4, 4) + E.le(4, 4) + E.le(18, 4) + pad8(Array("Xen\0".utf8)) + pad8(E.le(0x100_0100, 4))
        var segments = E.defaultSegments(notes: notes)
        segments[2].align = 8
        #expect(try ELFKernel(bytes: E.image(segments: segments)).entry == 0x100_0100)
    }

    @Test func wrongKindsOfELF() {
        #expect(throws: ELFKernelError.notELF64(elfClass: 1)) { try ELFKernel(bytes: E.image(elfClass: 1)) }
        #expect(throws: ELFKernelError.notLittleEndian(dataEncoding: 2)) { try ELFKernel(bytes: E.image(data: 2)) }
        #expect(throws: ELFKernelError.notX86_64(machine: 183)) { try ELFKernel(bytes: E.image(machine: 183)) }
        #expect(throws: ELFKernelError.notExecutable(type: 1)) { try ELFKernel(bytes: E.image(type: 1)) }
        #expect(throws: ELFKernelError.notExecutable(type: 3)) { try ELFKernel(bytes: E.image(type: 3)) }
        var b = E.image()
        b[1] = 0x46
        #expect(throws: ELFKernelError.badMagic) { try ELFKernel(bytes: b) }
        #expect(!ELFKernel.isELF(b) && ELFKernel.isELF(E.image()))
    }

    @Test func programHeaderTableChecks() {
        var b = E.image()
        E.patch(&b, at: 0x36, 64, width: 2)
        #expect(throws: ELFKernelError.badProgramHeaderSize(64)) { try ELFKernel(bytes: b) }
        b = E.image()
        E.patch(&b, at: 0x38, 0xFFFF, width: 2)  // PN_XNUM
        #expect(throws: ELFKernelError.tooManyProgramHeaders(count: 0xFFFF, maximum: 64)) { try ELFKernel(bytes: b) }
        b = E.image()
        E.patch(&b, at: 0x20, UInt64(b.count - 100), width: 8)  // 3 headers from 100 bytes before the end
        #expect(throws: ELFKernelError.truncated(field: "program header table", needed: UInt64(b.count + 68), fileSize: b.count)) {
            try ELFKernel(bytes: b)
        }
        b = E.image()
        E.patch(&b, at: 0x20, .max - 8, width: 8)  // e_phoff + size overflows
        #expect(throws: ELFKernelError.truncated(field: "program header table", needed: .max, fileSize: b.count)) {
            try ELFKernel(bytes: b)
        }
        b = E.image()
        E.patch(&b, at: 0x38, 0, width: 2)
        #expect(throws: ELFKernelError.noLoadableSegment) { try ELFKernel(bytes: b) }
    }

    @Test func segmentBoundsChecks() {
        func corrupted(_ i: Int, _ field: Int, _ v: UInt64) -> [UInt8] {
            var b = E.image()
            E.patch(&b, at: E.ph(i, field), v, width: 8)
            return b
        }
        let size = E.image().count
        // p_offset past the file, p_offset + p_filesz past it, and an offset that would wrap.
        #expect(throws: ELFKernelError.segmentOutsideFile(index: 0, offset: UInt64(size), size: 0x3000, fileSize: size)) {
            try ELFKernel(bytes: corrupted(0, 8, UInt64(size)))
        }
        #expect(throws: ELFKernelError.segmentOutsideFile(index: 1, offset: .max - 0xFFF, size: 0x1000, fileSize: size)) {
            try ELFKernel(bytes: corrupted(1, 8, .max - 0xFFF))
        }
        #expect(throws: ELFKernelError.self) { try ELFKernel(bytes: corrupted(0, 32, UInt64(size))) }
        // The note segment is checked the same way.
        #expect(throws: ELFKernelError.self) { try ELFKernel(bytes: corrupted(2, 32, .max)) }
        // p_filesz > p_memsz.
        #expect(throws: ELFKernelError.segmentFileSizeExceedsMemorySize(index: 0, fileSize: 0x3000, memorySize: 0x2000)) {
            try ELFKernel(bytes: corrupted(0, 40, 0x2000))
        }
        // p_paddr + p_memsz wraps.
        #expect(throws: ELFKernelError.segmentAddressOverflow(index: 1, physicalAddress: .max - 0x1000, memorySize: 0x4000)) {
            try ELFKernel(bytes: corrupted(1, 24, .max - 0x1000))
        }
        // Two segments over the same memory.
        #expect(throws: ELFKernelError.segmentsOverlap(0, 1)) { try ELFKernel(bytes: corrupted(1, 24, 0x100_2000)) }
        // An empty PT_LOAD occupies nothing and is dropped.
        var empty = E.defaultSegments()
        empty.insert(ELFFixtures.Segment(physicalAddress: 0x100_0000, contents: [], memorySize: 0), at: 0)
        let kernel = try? ELFKernel(bytes: E.image(segments: empty))
        #expect(kernel?.loadSegments.map(\.index) == [1, 2])
    }

    @Test func malformedNotes() {
        // descsz far beyond the segment.
        var notes = E.notes()
        E.patch(&notes, at: 4, 0xFFFF_FFF0, width: 4)
        #expect(throws: ELFKernelError.malformedNote(segment: 2, offset: 0)) {
            try ELFKernel(bytes: E.image(segments: E.defaultSegments(notes: notes)))
        }
        // A note header cut short at the segment's end.
        #expect(throws: ELFKernelError.malformedNote(segment: 2, offset: UInt64(E.notes().count))) {
            try ELFKernel(bytes: E.image(segments: E.defaultSegments(notes: E.notes() + [1, 0, 0, 0, 0, 0])))
        }
    }

    @Test func everyTruncationIsATypedError() {
        let full = E.image()
        #expect((try? ELFKernel(bytes: full)) != nil)
        for length in 0..<full.count {
            #expect(throws: ELFKernelError.self, "prefix of \(length) bytes") { try ELFKernel(bytes: Array(full[0..<length])) }
        }
    }

    @Test func randomCorruptionNeverCrashesAndPlansStaySound() throws {
        var rng = LinuxBootRNG(seed: 0xE1F)
        let base = E.image()
        let noteStart = Int(base.count) - E.notes().count
        var parsed = 0, planned = 0
        for _ in 0..<4000 {
            var b = base
            for _ in 0..<Int(rng.next() % 6 + 1) {
                // Mostly the header, the program headers and the notes, where the parser looks.
                let o: Int = switch rng.next() % 3 {
                case 0: Int(rng.next() % UInt64(64 + 3 * 56))
                case 1: noteStart + Int(rng.next() % UInt64(base.count - noteStart))
                default: Int(rng.next() % UInt64(b.count))
                }
                b[o] = rng.next() % 2 == 0 ? UInt8(truncatingIfNeeded: rng.next()) : b[o] ^ (1 << (rng.next() % 8))
            }
            if rng.next() % 8 == 0 { b = Array(b[0..<Int(rng.next() % UInt64(b.count))]) }
            guard let kernel = try? ELFKernel(bytes: b) else { continue }
            parsed += 1
            for s in kernel.loadSegments {
                #expect(UInt64(s.contents.count) == s.fileSize && s.fileSize <= s.memorySize)
            }
            // Whatever parses plans soundly or fails with a typed error.
            if let plan = try? PVHBootPlan.make(kernel: kernel, initrd: [1, 2, 3], commandLine: "console=ttyS0",
                                                memory: LinuxBootFixtures.memory) {
                planned += 1
                try PVHBootPlanTests.checkInvariants(plan, kernel: kernel, memory: LinuxBootFixtures.memory)
            }
        }
        #expect(parsed > 100 && planned > 50, "the corruption left enough images to exercise the planner")
    }

    @Test(.requires(ELFFixtures.realVmlinuxPath != nil && ReadELF.path != nil,
                   "needs /boot/vmlinuz-6.1.* (`apt-get install linux-image-amd64`), python3 and readelf (binutils)"))
    func debianVmlinuxMatchesReadelf() throws {
        let path = try #require(ELFFixtures.realVmlinuxPath)
        let bytes = [UInt8](try #require(FileManager.default.contents(atPath: path)))
        let kernel = try ELFKernel(bytes: bytes)
        let entry = try #require(ReadELF.phys32Entry(path), "readelf -n lists a Xen PHYS32_ENTRY note")
        #expect(UInt64(kernel.entry) == entry)
        let loads = try #require(ReadELF.loads(path))
        #expect(loads.count >= 3)
        let ours = kernel.loadSegments.map {
            ReadELF.Load(offset: $0.fileOffset, virtualAddress: $0.virtualAddress, physicalAddress: $0.physicalAddress,
                         fileSize: $0.fileSize, memorySize: $0.memorySize)
        }
        #expect(ours == loads.filter { $0.memorySize > 0 })
        for s in kernel.loadSegments {
            #expect(s.contents.first == bytes[Int(s.fileOffset)])
            #expect(s.contents.last == bytes[Int(s.fileOffset + s.fileSize) - 1])
        }
        // Linux's PVH code is linked to run at 16 MiB (CONFIG_PHYSICAL_START).
        #expect(kernel.loadSegments[0].physicalAddress == 0x100_0000)
    }
}
