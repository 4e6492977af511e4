// The x86 Linux boot protocol, image side: parsing a bzImage's setup header
// (Documentation/arch/x86/boot.rst). Every field comes from an untrusted file: each read is
// bounds-checked and each size is computed in 64-bit arithmetic, so a hostile image ends in a
// typed `BzImageError`, never a trap or an out-of-bounds read.

/// Why a file is not a bootable bzImage.
public enum BzImageError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file ends before `field` (which needs bytes up to `needed`).
    case truncated(field: String, needed: Int, fileSize: Int)
    /// 0xAA55 is missing at 0x1FE.
    case badBootFlag(found: UInt16)
    /// "HdrS" is missing at 0x202.
    case badMagic(found: UInt32)
    case protocolTooOld(version: UInt16, minimum: UInt16)
    /// LOADED_HIGH clear: a zImage loaded at 0x10000, which this loader does not support.
    case notLoadedHigh(loadflags: UInt8)
    /// The setup code (`setupSectors` + 1 sectors of 512 bytes) does not leave a kernel behind it.
    case noProtectedModeKernel(setupSectors: Int, setupSize: Int, fileSize: Int)
    /// `syssize` (in 16-byte units) claims more protected-mode code than the file holds.
    case syssizeExceedsFile(declaredBytes: UInt64, available: Int)
    /// A relocatable kernel whose `kernel_alignment` is zero or not a power of two.
    case invalidKernelAlignment(UInt32)

    public var description: String {
        switch self {
        case let .truncated(field, needed, size):
            return "bzImage truncated: \(field) needs \(needed) bytes, file has \(size)"
        case let .badBootFlag(found):
            return "bzImage boot_flag is 0x\(String(found, radix: 16)), expected 0xaa55"
        case let .badMagic(found):
            return "bzImage header magic is 0x\(String(found, radix: 16)), expected \"HdrS\""
        case let .protocolTooOld(version, minimum):
            return "boot protocol \(BootProtocolVersion(version)) is older than \(BootProtocolVersion(minimum))"
        case let .notLoadedHigh(flags):
            return "loadflags 0x\(String(flags, radix: 16)) lack LOADED_HIGH: zImage is not supported"
        case let .noProtectedModeKernel(sects, setup, size):
            return "setup_sects \(sects) (\(setup) bytes) leaves no kernel in a \(size)-byte file"
        case let .syssizeExceedsFile(declared, available):
            return "syssize declares \(declared) bytes of kernel, file has \(available) after setup"
        case let .invalidKernelAlignment(a):
            return "kernel_alignment 0x\(String(a, radix: 16)) is not a power of two"
        }
    }
}

/// A boot protocol version as the header stores it: major in the high byte, minor in the low.
public struct BootProtocolVersion: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let raw: UInt16
    public init(_ raw: UInt16) { self.raw = raw }
    public init(major: UInt8, minor: UInt8) { raw = UInt16(major) << 8 | UInt16(minor) }
    public var major: UInt8 { UInt8(raw >> 8) }
    public var minor: UInt8 { UInt8(raw & 0xFF) }
    public static func < (l: Self, r: Self) -> Bool { l.raw < r.raw }
    public var description: String { "\(major).\(minor < 10 ? "0" : "")\(minor)" }
}

/// The fields of `struct setup_header` this loader uses, decoded. Fields newer than the image's
/// protocol version are nil.
public struct SetupHeader: Equatable, Sendable {
    /// Offsets inside the image (and inside boot_params, which embeds the header at the same offset).
    public enum Offset {
        public static let setupSects = 0x1F1
        public static let syssize = 0x1F4
        public static let bootFlag = 0x1FE
        public static let jump = 0x200
        public static let header = 0x202
        public static let version = 0x206
        public static let typeOfLoader = 0x210
        public static let loadflags = 0x211
        public static let code32Start = 0x214
        public static let ramdiskImage = 0x218
        public static let ramdiskSize = 0x21C
        public static let heapEndPtr = 0x224
        public static let cmdLinePtr = 0x228
        public static let initrdAddrMax = 0x22C
        public static let kernelAlignment = 0x230
        public static let relocatableKernel = 0x234
        public static let minAlignment = 0x235
        public static let xloadflags = 0x236
        public static let cmdlineSize = 0x238
        public static let prefAddress = 0x258
        public static let initSize = 0x260
        public static let kernelInfoOffset = 0x268
    }

    public static let magic: UInt32 = 0x5372_6448  // "HdrS" little-endian
    public static let minimumVersion = BootProtocolVersion(major: 2, minor: 6)

    public static let loadedHigh: UInt8 = 0x01
    public static let canUseHeap: UInt8 = 0x80
    public static let xlfKernel64: UInt16 = 0x0001
    public static let xlfCanBeLoadedAbove4G: UInt16 = 0x0002

    public let version: BootProtocolVersion
    /// As stored; 0 means 4.
    public let rawSetupSects: UInt8
    public var setupSects: Int { rawSetupSects == 0 ? 4 : Int(rawSetupSects) }
    /// Protected-mode code size in 16-byte paragraphs.
    public let syssize: UInt32
    public let loadflags: UInt8
    public let code32Start: UInt32
    /// Highest address the initrd's last byte may occupy.
    public let initrdAddrMax: UInt32
    public let kernelAlignment: UInt32
    public let relocatableKernel: Bool
    /// Protocol 2.10+: log2 of the minimum alignment a relocatable kernel accepts.
    public let minAlignment: UInt8?
    /// Protocol 2.12+.
    public let xloadflags: UInt16?
    /// Longest command line, excluding its terminating NUL.
    public let cmdlineSize: UInt32
    /// Protocol 2.10+.
    public let prefAddress: UInt64?
    /// Protocol 2.10+: bytes of linear memory the kernel needs from its runtime start.
    public let initSize: UInt32?

    public var loadedHigh: Bool { loadflags & Self.loadedHigh != 0 }
    public var supports64BitEntry: Bool { (xloadflags ?? 0) & Self.xlfKernel64 != 0 }
    /// Protocol 2.14+ reads `acpi_rsdp_addr` from boot_params.
    public var supportsACPIRSDPAddress: Bool { version >= BootProtocolVersion(major: 2, minor: 14) }
}

/// A parsed bzImage: its decoded header, the real-mode setup code and the protected-mode kernel.
public struct BzImage: Sendable {
    public let header: SetupHeader
    /// The setup sectors, boot sector included: `(setup_sects + 1) * 512` bytes.
    public let setupCode: [UInt8]
    /// Everything after the setup code; this is what is loaded at the kernel load address.
    /// It may be longer than `syssize * 16` (a signed image carries its signature behind it).
    public let protectedModeKernel: [UInt8]
    /// The raw header bytes from 0x1F1 to the header's end (0x202 + the jump byte at 0x201),
    /// clamped to what `struct boot_params` has room for; copied into boot_params verbatim.
    public let rawSetupHeader: [UInt8]

    public var setupSize: Int { setupCode.count }

    /// Where boot_params' header area ends (edd_mbr_sig_buffer starts at 0x290).
    static let bootParamsHeaderLimit = 0x290

    public init(bytes: [UInt8]) throws(BzImageError) {
        let r = HeaderReader(bytes: bytes)
        let bootFlag = try r.u16(SetupHeader.Offset.bootFlag, "boot_flag")
        guard bootFlag == 0xAA55 else { throw .badBootFlag(found: bootFlag) }
        let magic = try r.u32(SetupHeader.Offset.header, "header magic")
        guard magic == SetupHeader.magic else { throw .badMagic(found: magic) }
        let version = BootProtocolVersion(try r.u16(SetupHeader.Offset.version, "version"))
        guard version >= SetupHeader.minimumVersion else {
            throw .protocolTooOld(version: version.raw, minimum: SetupHeader.minimumVersion.raw)
        }
        let v210 = version >= BootProtocolVersion(major: 2, minor: 10)
        let v212 = version >= BootProtocolVersion(major: 2, minor: 12)
        // Read the field furthest out first so a truncated header reports the whole need.
        let initSize = v210 ? try r.u32(SetupHeader.Offset.initSize, "init_size") : nil
        let prefAddress = v210 ? try r.u64(SetupHeader.Offset.prefAddress, "pref_address") : nil
        let cmdlineSize = try r.u32(SetupHeader.Offset.cmdlineSize, "cmdline_size")
        let xloadflags = v212 ? try r.u16(SetupHeader.Offset.xloadflags, "xloadflags") : nil
        let minAlignment = v210 ? try r.u8(SetupHeader.Offset.minAlignment, "min_alignment") : nil
        let relocatable = try r.u8(SetupHeader.Offset.relocatableKernel, "relocatable_kernel") != 0
        let kernelAlignment = try r.u32(SetupHeader.Offset.kernelAlignment, "kernel_alignment")
        let header = SetupHeader(
            version: version,
            rawSetupSects: try r.u8(SetupHeader.Offset.setupSects, "setup_sects"),
            syssize: try r.u32(SetupHeader.Offset.syssize, "syssize"),
            loadflags: try r.u8(SetupHeader.Offset.loadflags, "loadflags"),
            code32Start: try r.u32(SetupHeader.Offset.code32Start, "code32_start"),
            initrdAddrMax: try r.u32(SetupHeader.Offset.initrdAddrMax, "initrd_addr_max"),
            kernelAlignment: kernelAlignment,
            relocatableKernel: relocatable,
            minAlignment: minAlignment,
            xloadflags: xloadflags,
            cmdlineSize: cmdlineSize,
            prefAddress: prefAddress,
            initSize: initSize)
        guard header.loadedHigh else { throw .notLoadedHigh(loadflags: header.loadflags) }
        if relocatable {
            guard kernelAlignment != 0, kernelAlignment & (kernelAlignment - 1) == 0 else {
                throw .invalidKernelAlignment(kernelAlignment)
            }
        }

        let setupSize = (header.setupSects + 1) * 512  // at most 256 * 512: no overflow
        guard setupSize < bytes.count else {
            throw .noProtectedModeKernel(setupSectors: header.setupSects, setupSize: setupSize,
                                         fileSize: bytes.count)
        }
        let available = bytes.count - setupSize
        let declared = UInt64(header.syssize) * 16
        guard declared <= UInt64(available) else {
            throw .syssizeExceedsFile(declaredBytes: declared, available: available)
        }

        // The header's own end, as the protocol defines it, clamped to boot_params' room for it,
        // to the setup code, and never shorter than the fields this version promised.
        let minimumEnd = v210 ? SetupHeader.Offset.kernelInfoOffset : SetupHeader.Offset.cmdlineSize + 4
        let declaredEnd = SetupHeader.Offset.header + Int(try r.u8(SetupHeader.Offset.jump + 1, "jump"))
        let headerEnd = min(max(declaredEnd, minimumEnd), Self.bootParamsHeaderLimit, setupSize)

        self.header = header
        self.setupCode = Array(bytes[0..<setupSize])
        self.protectedModeKernel = Array(bytes[setupSize...])
        self.rawSetupHeader = Array(bytes[SetupHeader.Offset.setupSects..<headerEnd])
    }
}

/// Bounds-checked little-endian reads that name the field they were reading.
private struct HeaderReader {
    let bytes: [UInt8]

    private func check(_ offset: Int, _ width: Int, _ field: String) throws(BzImageError) {
        guard offset + width <= bytes.count else {
            throw .truncated(field: field, needed: offset + width, fileSize: bytes.count)
        }
    }

    private func load(_ offset: Int, _ width: Int, _ field: String) throws(BzImageError) -> UInt64 {
        try check(offset, width, field)
        var v: UInt64 = 0
        for i in (0..<width).reversed() { v = v << 8 | UInt64(bytes[offset + i]) }
        return v
    }

    func u8(_ o: Int, _ f: String) throws(BzImageError) -> UInt8 { UInt8(try load(o, 1, f)) }
    func u16(_ o: Int, _ f: String) throws(BzImageError) -> UInt16 { UInt16(try load(o, 2, f)) }
    func u32(_ o: Int, _ f: String) throws(BzImageError) -> UInt32 { UInt32(try load(o, 4, f)) }
    func u64(_ o: Int, _ f: String) throws(BzImageError) -> UInt64 { try load(o, 8, f) }
}
