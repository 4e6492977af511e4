import Firmware
import Foundation

/// Hand-built ELF kernels for the PVH tests, and the real Debian vmlinux when /boot has one.
enum ELFFixtures {
    struct Segment {
        var type: UInt32 = 1  // PT_LOAD
        var flags: UInt32 = 5  // R E
        var virtualAddress: UInt64 = 0
        var physicalAddress: UInt64 = 0
        var contents: [UInt8] = []
        /// nil: the contents' size.
        var memorySize: UInt64?
        var align: UInt64 = 0x1000
    }

    struct Note {
        var name: String
        var type: UInt32
        var desc: [UInt8]
    }

    static let entry: UInt64 = 0x100_0040

    /// One note, name and desc each padded to 4 bytes.
    static func encode(_ n: Note) -> [UInt8] {
        func pad(_ b: [UInt8]) -> [UInt8] { b + [UInt8](repeating: 0, count: (4 - b.count % 4) % 4) }
        let name = Array(n.name.utf8) + [0]
        return le(UInt64(name.count), 4) + le(UInt64(n.desc.count), 4) + le(UInt64(n.type), 4) + pad(name) + pad(n.desc)
    }

    static func le(_ v: UInt64, _ width: Int) -> [UInt8] { (0..<width).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

    /// The notes a Linux vmlinux carries around its entry note: a GNU build ID, Xen notes of
    /// other types, then XEN_ELFNOTE_PHYS32_ENTRY (18) with a 4-byte (Linux .long) descriptor.
    static func notes(entry: [UInt8]? = le(ELFFixtures.entry, 4)) -> [UInt8] {
        var b = encode(Note(name: "GNU", type: 3, desc: [UInt8](repeating: 0xAB, count: 20)))
        b += encode(Note(name: "Xen", type: 6, desc: Array("linux\0".utf8)))
        b += encode(Note(name: "Linux", type: 18, desc: le(0xDEAD_BEEF, 4)))  // type 18, wrong owner
        if let entry { b += encode(Note(name: "Xen", type: 18, desc: entry)) }
        b += encode(Note(name: "Xen", type: 9, desc: Array("yes\0".utf8)))
        return b
    }

    /// A text segment at 16 MiB (0x3000 bytes, byte i = i & 0xFF), a data segment at 18 MiB
    /// (0x1000 bytes of 0x5A, then 0x3000 of bss) and a PT_NOTE segment with `notes`.
    static func defaultSegments(notes: [UInt8] = notes()) -> [Segment] {
        [
            Segment(virtualAddress: 0xFFFF_FFFF_8100_0000, physicalAddress: 0x100_0000,
                    contents: (0..<0x3000).map { UInt8(truncatingIfNeeded: $0) }),
            Segment(flags: 6, virtualAddress: 0xFFFF_FFFF_8120_0000, physicalAddress: 0x120_0000,
                    contents: [UInt8](repeating: 0x5A, count: 0x1000), memorySize: 0x4000),
            Segment(type: 4, flags: 4, virtualAddress: 0xFFFF_FFFF_8100_2000, physicalAddress: 0x100_2000,
                    contents: notes, align: 4),
        ]
    }

    /// An ELF64 x86-64 executable: header, program headers right after it, then each segment's
    /// contents 16-byte aligned.
    static func image(segments: [Segment] = defaultSegments(), elfClass: UInt8 = 2, data: UInt8 = 1,
                      type: UInt16 = 2, machine: UInt16 = 62) -> [UInt8] {
        var offsets: [Int] = []
        var end = 64 + 56 * segments.count
        for s in segments {
            end = (end + 15) & ~15
            offsets.append(end)
            end += s.contents.count
        }
        var b = [UInt8](repeating: 0, count: end)
        b.replaceSubrange(0..<8, with: [0x7F, 0x45, 0x4C, 0x46, elfClass, data, 1, 0])
        patch(&b, at: 0x10, UInt64(type), width: 2)
        patch(&b, at: 0x12, UInt64(machine), width: 2)
        patch(&b, at: 0x14, 1, width: 4)
        patch(&b, at: 0x18, 0x100_0000, width: 8)
        patch(&b, at: 0x20, 64, width: 8)
        patch(&b, at: 0x34, 64, width: 2)
        patch(&b, at: 0x36, 56, width: 2)
        patch(&b, at: 0x38, UInt64(segments.count), width: 2)
        for (i, s) in segments.enumerated() {
            patch(&b, at: ph(i, 0), UInt64(s.type), width: 4)
            patch(&b, at: ph(i, 4), UInt64(s.flags), width: 4)
            patch(&b, at: ph(i, 8), UInt64(offsets[i]), width: 8)
            patch(&b, at: ph(i, 16), s.virtualAddress, width: 8)
            patch(&b, at: ph(i, 24), s.physicalAddress, width: 8)
            patch(&b, at: ph(i, 32), UInt64(s.contents.count), width: 8)
            patch(&b, at: ph(i, 40), s.memorySize ?? UInt64(s.contents.count), width: 8)
            patch(&b, at: ph(i, 48), s.align, width: 8)
            b.replaceSubrange(offsets[i]..<(offsets[i] + s.contents.count), with: s.contents)
        }
        return b
    }

    /// Overwrites a little-endian field in place.
    static func patch(_ b: inout [UInt8], at o: Int, _ v: UInt64, width: Int) {
        b.replaceSubrange(o..<(o + width), with: le(v, width))
    }

    /// Offset of program header `i`'s field at `field` (p_offset 8, p_paddr 24, p_filesz 32, ...).
    static func ph(_ i: Int, _ field: Int) -> Int { 64 + 56 * i + field }

    /// The uncompressed vmlinux inside /boot's Debian bzImage, extracted once per kernel by the
    /// rig's extract-vmlinux.py into a cache shared by test runs (about 1.5 s the first time).
    static let realVmlinuxPath: String? = extractRealVmlinux()

    static func extractRealVmlinux() -> String? {
        guard let bzImage = LinuxBootFixtures.realKernelPath else { return nil }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Rig/extract-vmlinux.py").path
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-test-vmlinux")
        try? FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        let size = (try? FileManager.default.attributesOfItem(atPath: bzImage)[.size] as? Int) ?? 0
        let target = cache.appendingPathComponent(URL(fileURLWithPath: bzImage).lastPathComponent + "-\(size).elf")
        if FileManager.default.fileExists(atPath: target.path) { return target.path }
        let partial = target.path + ".\(getpid()).partial"
        guard let python = Tool.find("python3"),
              Tool.run(python, [script, bzImage, partial], in: cache).status == 0 else { return nil }
        try? FileManager.default.removeItem(at: target)
        guard (try? FileManager.default.moveItem(atPath: partial, toPath: target.path)) != nil
                || FileManager.default.fileExists(atPath: target.path) else { return nil }
        return target.path
    }
}

/// What binutils' readelf says about an ELF file (the independent reading the parser is checked
/// against).
enum ReadELF {
    struct Load: Equatable, CustomStringConvertible {
        var offset, virtualAddress, physicalAddress, fileSize, memorySize: UInt64
        var description: String {
            "off 0x\(String(offset, radix: 16)) va 0x\(String(virtualAddress, radix: 16)) pa 0x\(String(physicalAddress, radix: 16)) filesz 0x\(String(fileSize, radix: 16)) memsz 0x\(String(memorySize, radix: 16))"
        }
    }

    static let path = Tool.find("readelf")

    /// The LOAD lines of `readelf -lW`.
    static func loads(_ file: String) -> [Load]? {
        guard let path else { return nil }
        let out = Tool.run(path, ["-lW", file], in: URL(fileURLWithPath: "/")).output
        return out.split(separator: "\n").compactMap { line -> Load? in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 6, f[0] == "LOAD" else { return nil }
            let v = f[1...5].compactMap { UInt64($0.dropFirst(2), radix: 16) }
            guard v.count == 5 else { return nil }
            return Load(offset: v[0], virtualAddress: v[1], physicalAddress: v[2], fileSize: v[3], memorySize: v[4])
        }
    }

    /// The descriptor of the Xen note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY), from `readelf -nW`,
    /// as a little-endian number.
    static func phys32Entry(_ file: String) -> UInt64? {
        guard let path else { return nil }
        let lines = Tool.run(path, ["-nW", file], in: URL(fileURLWithPath: "/")).output.split(separator: "\n").map(String.init)
        for (i, line) in lines.enumerated() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.first == "Xen", line.contains("(0x00000012)") || line.contains("PHYS32_ENTRY") else { continue }
            // -W keeps the data on the note's line; older binutils put it on the next.
            let text = line.contains("description data:") ? line : (i + 1 < lines.count ? lines[i + 1] : "")
            guard let r = text.range(of: "description data:") else { return nil }
            let bytes = text[r.upperBound...].split(separator: " ").compactMap { UInt8($0, radix: 16) }
            return bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) }
        }
        return nil
    }
}
