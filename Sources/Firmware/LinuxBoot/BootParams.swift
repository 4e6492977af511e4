// struct boot_params ("the zero page", arch/x86/include/uapi/asm/bootparam.h): 4 KiB the loader
// fills and hands to the kernel in RSI.

/// Offsets inside `struct boot_params`.
public enum BootParamsLayout {
    public static let size = 0x1000
    public static let acpiRSDPAddr = 0x070
    public static let extRamdiskImage = 0x0C0
    public static let extRamdiskSize = 0x0C4
    public static let extCmdLinePtr = 0x0C8
    public static let e820Entries = 0x1E8
    /// Must be zero, or the kernel assumes a loader that did not clear boot_params and wipes fields.
    public static let sentinel = 0x1EF
    /// `struct setup_header hdr` sits at the same offset as in the image.
    public static let header = 0x1F1
    public static let e820Table = 0x2D0
    public static let e820MaxEntries = 128
    public static let e820EntrySize = 20
}

/// A little-endian byte buffer of fixed size. Callers pass offsets they computed from constants,
/// so an out-of-range store is a programming error; it still never writes outside the buffer.
struct BootParamsBuffer {
    private(set) var bytes: [UInt8]
    init(count: Int) { bytes = [UInt8](repeating: 0, count: count) }

    private mutating func store(_ value: UInt64, width: Int, at offset: Int) {
        precondition(offset >= 0 && offset + width <= bytes.count, "store outside buffer")
        for i in 0..<width { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
    mutating func store8(_ v: UInt8, at o: Int) { store(UInt64(v), width: 1, at: o) }
    mutating func store16(_ v: UInt16, at o: Int) { store(UInt64(v), width: 2, at: o) }
    mutating func store32(_ v: UInt32, at o: Int) { store(UInt64(v), width: 4, at: o) }
    mutating func store64(_ v: UInt64, at o: Int) { store(v, width: 8, at: o) }
    mutating func copy(_ src: [UInt8], at o: Int) {
        precondition(o >= 0 && o + src.count <= bytes.count, "copy outside buffer")
        bytes.replaceSubrange(o..<(o + src.count), with: src)
    }
}
