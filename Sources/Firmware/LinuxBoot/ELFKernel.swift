// The PVH boot protocol, image side: an uncompressed ELF `vmlinux` whose notes name a 32-bit
// physical entry point (Xen's XEN_ELFNOTE_PHYS32_ENTRY). Only the program headers matter: the
// PT_LOAD segments go to their physical addresses, the PT_NOTE segments hold the entry.
// The file is untrusted: every offset and size is checked against the file in 64-bit arithmetic
// that cannot overflow, so a hostile image ends in a typed `ELFKernelError`, never a trap.

import VMMBase

/// Why a file is not a PVH-bootable ELF kernel.
public enum ELFKernelError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file ends before `field` (which needs bytes up to `needed`).
    case truncated(field: String, needed: UInt64, fileSize: Int)
    case badMagic
    /// EI_CLASS is not ELFCLASS64 (2).
    case notELF64(elfClass: UInt8)
    /// EI_DATA is not ELFDATA2LSB (1).
    case notLittleEndian(dataEncoding: UInt8)
    /// e_machine is not EM_X86_64 (62).
    case notX86_64(machine: UInt16)
    /// e_type is not ET_EXEC (2): a relocatable or shared object would need relocating.
    case notExecutable(type: UInt16)
    /// e_phentsize is not the 56 bytes of an Elf64_Phdr.
    case badProgramHeaderSize(UInt16)
    case tooManyProgramHeaders(count: Int, maximum: Int)
    /// Program header `index` (as `readelf -l` numbers them) points outside the file.
    case segmentOutsideFile(index: Int, offset: UInt64, size: UInt64, fileSize: Int)
    case segmentFileSizeExceedsMemorySize(index: Int, fileSize: UInt64, memorySize: UInt64)
    /// p_paddr + p_memsz wraps past the top of the 64-bit space.
    case segmentAddressOverflow(index: Int, physicalAddress: UInt64, memorySize: UInt64)
    case segmentsOverlap(Int, Int)
    case noLoadableSegment
    /// A note in PT_NOTE segment `index` runs past the segment's end.
    case malformedNote(segment: Int, offset: UInt64)
    /// The entry note's descriptor is neither 4 nor 8 bytes.
    case badEntryNoteSize(Int)
    case noPHYS32EntryNote
    /// A 32-bit entry must lie below 4 GiB.
    case entryAbove4GiB(UInt64)
    /// The entry is not inside the file-backed part of any PT_LOAD segment.
    case entryNotInLoadedCode(UInt64)

    public var description: String {
        switch self {
        case let .truncated(field, needed, size):
            return "ELF file truncated: \(field) needs \(needed) bytes, file has \(size)"
        case .badMagic:
            return "not an ELF file (no \\x7fELF magic)"
        case let .notELF64(c):
            return "ELF class \(c) is not ELFCLASS64 (2): PVH boot loads 64-bit x86 kernels"
        case let .notLittleEndian(d):
            return "ELF data encoding \(d) is not little-endian (1): not an x86 kernel"
        case let .notX86_64(m):
            return "ELF machine \(m) is not x86-64 (62): use a vmlinux built for x86-64"
        case let .notExecutable(t):
            return "ELF type \(t) is not an executable (2): pass the kernel's vmlinux, not an object or module"
        case let .badProgramHeaderSize(s):
            return "ELF program header size \(s), expected 56 (Elf64_Phdr)"
        case let .tooManyProgramHeaders(c, m):
            return "ELF file has \(c) program headers, more than the \(m) a kernel plausibly has"
        case let .segmentOutsideFile(i, o, s, f):
            return "program header \(i) covers file bytes \(hexAddress(o))+\(hexAddress(s)), past the end of the \(f)-byte file (truncated vmlinux?)"
        case let .segmentFileSizeExceedsMemorySize(i, f, m):
            return "program header \(i): file size \(hexAddress(f)) exceeds memory size \(hexAddress(m))"
        case let .segmentAddressOverflow(i, a, m):
            return "program header \(i): \(hexAddress(m)) bytes at \(hexAddress(a)) wrap past the top of memory"
        case let .segmentsOverlap(a, b):
            return "program headers \(a) and \(b) load into overlapping physical memory"
        case .noLoadableSegment:
            return "ELF file has no PT_LOAD segment to load"
        case let .malformedNote(s, o):
            return "note at offset \(hexAddress(o)) of program header \(s) runs past the segment"
        case let .badEntryNoteSize(n):
            return "XEN_ELFNOTE_PHYS32_ENTRY descriptor is \(n) bytes, expected 4 or 8"
        case .noPHYS32EntryNote:
            return "not a PVH kernel: no XEN_ELFNOTE_PHYS32_ENTRY note (build with CONFIG_PVH=y, or pass the bzImage)"
        case let .entryAbove4GiB(e):
            return "PVH entry \(hexAddress(e)) is above 4 GiB, unreachable in 32-bit protected mode"
        case let .entryNotInLoadedCode(e):
            return "PVH entry \(hexAddress(e)) is not inside any loaded segment"
        }
    }
}

/// "0x" and lower-case hexadecimal, for error messages.
func hexAddress(_ v: some BinaryInteger) -> String { "0x" + String(v, radix: 16) }

/// A parsed ELF kernel with a PVH entry: its loadable segments and the physical entry address.
public struct ELFKernel: Sendable, CustomStringConvertible {
    /// A PT_LOAD program header and the file bytes it loads.
    public struct LoadSegment: Sendable, CustomStringConvertible {
        /// The program header's index in the file (as `readelf -l` numbers them).
        public let index: Int
        public let fileOffset: UInt64
        public let virtualAddress: UInt64
        public let physicalAddress: UInt64
        public let fileSize: UInt64
        public let memorySize: UInt64
        /// PF_X (1), PF_W (2), PF_R (4).
        public let flags: UInt32
        /// `fileSize` bytes copied from the file; the rest up to `memorySize` is zero.
        public let contents: [UInt8]

        /// Where the segment lies in guest-physical memory; nil when it occupies nothing.
        public var physicalRange: AddressRange? { AddressRange(base: physicalAddress, size: memorySize) }

        /// The header's fields, not the (megabytes of) contents.
        public var description: String {
            "PT_LOAD[\(index)] offset \(hexAddress(fileOffset)) paddr \(hexAddress(physicalAddress)) vaddr \(hexAddress(virtualAddress)) filesz \(hexAddress(fileSize)) memsz \(hexAddress(memorySize)) flags \(flags)"
        }
    }

    public static let magic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46]
    /// Kernels have a handful (Linux: 5); the bound keeps a hostile e_phnum from costing anything.
    public static let maximumProgramHeaders = 64

    enum Constant {
        static let headerSize: UInt64 = 64
        static let programHeaderSize: UInt64 = 56
        static let elfClass64: UInt8 = 2
        static let littleEndian: UInt8 = 1
        static let executable: UInt16 = 2
        static let x86_64: UInt16 = 62
        static let load: UInt32 = 1
        static let note: UInt32 = 4
        static let xenNoteName = Array("Xen".utf8)
        static let phys32EntryNoteType: UInt32 = 18
    }

    /// The PT_LOAD segments with something to load (p_memsz > 0), in file order.
    public let loadSegments: [LoadSegment]
    /// XEN_ELFNOTE_PHYS32_ENTRY: where the vCPU starts, in 32-bit protected mode, paging off.
    public let entry: UInt32
    /// e_entry, for information: the 64-bit (bzImage-style) entry the PVH path does not use.
    public let elfEntry: UInt64

    public var description: String {
        "ELF kernel, PVH entry \(hexAddress(entry)), segments: " + loadSegments.map(\.description).joined(separator: "; ")
    }

    /// True when `bytes` starts with the ELF magic (what makes a kernel file a PVH candidate).
    public static func isELF(_ bytes: [UInt8]) -> Bool { bytes.starts(with: magic) }

    public init(bytes: [UInt8]) throws(ELFKernelError) {
        let file = FileReader(bytes: bytes)
        try file.require(0, Constant.headerSize, "ELF header")
        guard bytes.starts(with: Self.magic) else { throw .badMagic }
        guard bytes[4] == Constant.elfClass64 else { throw .notELF64(elfClass: bytes[4]) }
        guard bytes[5] == Constant.littleEndian else { throw .notLittleEndian(dataEncoding: bytes[5]) }
        let type = UInt16(file.load(0x10, 2))
        let machine = UInt16(file.load(0x12, 2))
        guard machine == Constant.x86_64 else { throw .notX86_64(machine: machine) }
        guard type == Constant.executable else { throw .notExecutable(type: type) }
        elfEntry = file.load(0x18, 8)
        let phoff = file.load(0x20, 8)
        let phentsize = UInt16(file.load(0x36, 2))
        let phnum = Int(file.load(0x38, 2))
        guard UInt64(phentsize) == Constant.programHeaderSize else { throw .badProgramHeaderSize(phentsize) }
        guard phnum <= Self.maximumProgramHeaders else {
            throw .tooManyProgramHeaders(count: phnum, maximum: Self.maximumProgramHeaders)
        }
        // phnum <= 64, so the table size cannot overflow; the offset may be anything.
        try file.require(phoff, UInt64(phnum) * Constant.programHeaderSize, "program header table")

        var segments: [LoadSegment] = []
        var entryNote: UInt64?
        for index in 0..<phnum {
            let h = Int(phoff) + index * Int(Constant.programHeaderSize)
            let type = UInt32(file.load(h, 4))
            guard type == Constant.load || type == Constant.note else { continue }
            let offset = file.load(h + 8, 8), fileSize = file.load(h + 32, 8)
            guard file.contains(offset, fileSize) else {
                throw .segmentOutsideFile(index: index, offset: offset, size: fileSize, fileSize: bytes.count)
            }
            if type == Constant.note {
                let align = file.load(h + 48, 8) == 8 ? 8 : 4  // 8-byte notes exist (GNU properties)
                // Every note segment is walked, so a malformed one fails even after the entry.
                let found = try Self.phys32Entry(in: bytes[Int(offset)..<Int(offset + fileSize)],
                                                 alignment: align, segment: index)
                entryNote = entryNote ?? found
                continue
            }
            let physical = file.load(h + 24, 8), memorySize = file.load(h + 40, 8)
            guard fileSize <= memorySize else {
                throw .segmentFileSizeExceedsMemorySize(index: index, fileSize: fileSize, memorySize: memorySize)
            }
            guard memorySize > 0 else { continue }
            guard physical <= UInt64.max - (memorySize - 1) else {
                throw .segmentAddressOverflow(index: index, physicalAddress: physical, memorySize: memorySize)
            }
            segments.append(LoadSegment(
                index: index, fileOffset: offset, virtualAddress: file.load(h + 16, 8),
                physicalAddress: physical, fileSize: fileSize, memorySize: memorySize,
                flags: UInt32(file.load(h + 4, 4)),
                contents: Array(bytes[Int(offset)..<Int(offset + fileSize)])))
        }
        guard !segments.isEmpty else { throw .noLoadableSegment }
        for (i, a) in segments.enumerated() {
            for b in segments[(i + 1)...] where a.physicalRange!.overlaps(b.physicalRange!) {
                throw .segmentsOverlap(a.index, b.index)
            }
        }
        guard let entry = entryNote else { throw .noPHYS32EntryNote }
        guard entry <= UInt64(UInt32.max) else { throw .entryAbove4GiB(entry) }
        guard segments.contains(where: { entry >= $0.physicalAddress && entry - $0.physicalAddress < $0.fileSize }) else {
            throw .entryNotInLoadedCode(entry)
        }
        self.loadSegments = segments
        self.entry = UInt32(entry)
    }

    /// Walks all notes of one PT_NOTE segment (`{namesz, descsz, type, name, desc}`, name and
    /// desc padded to `alignment`) and returns the first Xen PHYS32_ENTRY descriptor's value.
    static func phys32Entry(in notes: ArraySlice<UInt8>, alignment: Int,
                            segment: Int) throws(ELFKernelError) -> UInt64? {
        let reader = FileReader(bytes: Array(notes))
        let size = UInt64(notes.count)
        func padded(_ n: UInt64) -> UInt64 { (n + UInt64(alignment) - 1) & ~UInt64(alignment - 1) }
        var position: UInt64 = 0
        var entry: UInt64?
        while position < size {
            guard size - position >= 12 else { throw .malformedNote(segment: segment, offset: position) }
            let p = Int(position)
            let nameSize = reader.load(p, 4), descSize = reader.load(p + 4, 4), type = UInt32(reader.load(p + 8, 4))
            // namesz and descsz are 32-bit: these sums stay far from overflowing.
            let nameStart = position + 12
            let descStart = nameStart + padded(nameSize)
            guard nameStart + nameSize <= size, descStart + descSize <= size else {
                throw .malformedNote(segment: segment, offset: position)
            }
            var name = Array(reader.bytes[Int(nameStart)..<Int(nameStart + nameSize)])
            while name.last == 0 { name.removeLast() }
            if name == Constant.xenNoteName && type == Constant.phys32EntryNoteType && entry == nil {
                guard descSize == 4 || descSize == 8 else { throw .badEntryNoteSize(Int(descSize)) }
                entry = reader.load(Int(descStart), Int(descSize))
            }
            position = descStart + padded(descSize)
        }
        return entry
    }
}

/// Bounds checks and little-endian loads over a file's bytes.
private struct FileReader {
    let bytes: [UInt8]

    /// True when `size` bytes at `offset` lie inside the file (no overflow for any inputs).
    func contains(_ offset: UInt64, _ size: UInt64) -> Bool {
        offset <= UInt64(bytes.count) && size <= UInt64(bytes.count) - offset
    }

    func require(_ offset: UInt64, _ size: UInt64, _ field: String) throws(ELFKernelError) {
        guard contains(offset, size) else {
            let (end, overflow) = offset.addingReportingOverflow(size)
            throw .truncated(field: field, needed: overflow ? .max : end, fileSize: bytes.count)
        }
    }

    /// A little-endian value of `width` bytes at `offset`, which the caller has bounds-checked.
    func load(_ offset: Int, _ width: Int) -> UInt64 {
        precondition(offset >= 0 && width <= 8 && offset + width <= bytes.count, "unchecked ELF read")
        var v: UInt64 = 0
        for i in (0..<width).reversed() { v = v << 8 | UInt64(bytes[offset + i]) }
        return v
    }
}
