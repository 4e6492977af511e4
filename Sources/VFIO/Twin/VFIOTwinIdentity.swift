import HostOS
import VMMBase

/// What a host PCI function looks like to vfio-pci: its config space and its BARs, as captured
/// from a real device model (DeviceTables/vfio-twins, written by Tests/Oracle/qemu_vfio_twins.py
/// from QEMU 10). Interrupt counts are read from the config space's capabilities, as the kernel does.
public struct VFIOTwinIdentity: Hashable, Sendable {
    public enum BARKind: Hashable, Sendable {
        case io
        case memory32(prefetchable: Bool)
        /// A 64-bit BAR; the next index is its upper half and has no region of its own.
        case memory64(prefetchable: Bool)
    }

    public struct BAR: Hashable, Sendable {
        public var index: Int
        public var kind: BARKind
        public var size: UInt64
        public init(index: Int, kind: BARKind, size: UInt64) {
            self.index = index
            self.kind = kind
            self.size = size
        }
    }

    public var name: String
    /// 256 bytes (conventional) or 4096 (PCI Express).
    public var config: [UInt8]
    public var bars: [BAR]
    public var romSize: UInt64

    public init(name: String, config: [UInt8], bars: [BAR], romSize: UInt64 = 0) {
        precondition(config.count == 256 || config.count == 4096, "config space is 256 or 4096 bytes")
        self.name = name
        self.config = config
        self.bars = bars
        self.romSize = romSize
    }

    public var vendorID: UInt16 { UInt16(LittleEndian.load(config, at: 0, count: 2)) }
    public var deviceID: UInt16 { UInt16(LittleEndian.load(config, at: 2, count: 2)) }
    public func bar(_ index: Int) -> BAR? { bars.first { $0.index == index } }

    // MARK: Interrupts, from the capabilities

    /// Offsets of the standard capabilities with `id` (walk bounded, as a guest-proof list walk).
    func capability(_ id: UInt8) -> Int? {
        guard config[0x06] & 0x10 != 0 else { return nil }
        var offset = Int(config[0x34] & 0xfc)
        for _ in 0..<48 where offset >= 0x40 && offset + 1 < config.count {
            if config[offset] == id { return offset }
            offset = Int(config[offset + 1] & 0xfc)
        }
        return nil
    }

    /// `count` bytes at `offset`, little-endian; nil past the end of the config space, where a
    /// capability placed at its very end runs (the vfio fuzz target's devices do that).
    func field(_ offset: Int, count: Int) -> UInt64? {
        guard offset >= 0, count <= config.count, offset <= config.count - count else { return nil }
        return LittleEndian.load(config, at: offset, count: count)
    }

    /// INTx: 1 when Interrupt Pin names a pin.
    public var intxCount: UInt32 { config[0x3d] != 0 ? 1 : 0 }
    /// MSI: 2^(Multiple Message Capable); none when its control word is past the end.
    public var msiCount: UInt32 {
        guard let cap = capability(0x05), let control = field(cap + 2, count: 2) else { return 0 }
        return 1 << UInt32((control >> 1) & 7)
    }
    /// MSI-X: Table Size + 1; none when its control word is past the end.
    public var msixCount: UInt32 {
        guard let cap = capability(0x11), let control = field(cap + 2, count: 2) else { return 0 }
        return UInt32(control & 0x7ff) + 1
    }
    /// Where the MSI-X table lives: its BAR and byte range; nil when the capability has none
    /// (absent, or its table word past the end).
    public var msixTable: (bar: Int, offset: UInt64, size: UInt64)? {
        guard let cap = capability(0x11), let entry = field(cap + 4, count: 4), msixCount > 0 else { return nil }
        return (Int(entry & 7), entry & ~7, UInt64(msixCount) * 16)
    }
    /// PCI Express capability present (then the error IRQ index has one vector).
    public var isExpress: Bool { capability(0x10) != nil }

    // MARK: Parsing the captured files

    public enum ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        case malformed(file: String, line: String)
        public var description: String {
            switch self { case .malformed(let file, let line): "\(file): cannot read line '\(line)'" }
        }
    }

    /// From an `lspci -xxxx` text dump and the BAR-sizing record (`bar N reset R sizing S`,
    /// `rom reset R sizing S`: the register at reset and after all ones were written).
    public init(name: String, configDump: String, barSizing: String) throws(ParseError) {
        var config: [UInt8] = []
        for line in configDump.split(separator: "\n") where !line.isEmpty {
            let fields = line.split(separator: " ")
            if fields[0].hasSuffix(":"), let row = Int(fields[0].dropLast(), radix: 16), row == config.count {
                for field in fields.dropFirst() {
                    guard let byte = UInt8(field, radix: 16) else { throw .malformed(file: name, line: String(line)) }
                    config.append(byte)
                }
            } else if !line.contains("Class") {
                throw .malformed(file: name, line: String(line))
            }
        }
        guard config.count == 256 || config.count == 4096 else { throw .malformed(file: name, line: "\(config.count) bytes") }
        var sizing: [Int: UInt32] = [:]
        var rom: UInt32 = 0
        for line in barSizing.split(separator: "\n") where !line.hasPrefix("#") && !line.isEmpty {
            let f = line.split(separator: " ")
            if f.count == 6, f[0] == "bar", let i = Int(f[1]), (0..<6).contains(i), let s = UInt32(f[5], radix: 16) {
                sizing[i] = s
            } else if f.count == 5, f[0] == "rom", let s = UInt32(f[4], radix: 16) {
                rom = s
            } else {
                throw .malformed(file: name, line: String(line))
            }
        }
        self.init(name: name, config: config, bars: Self.decodeBARs(sizing), romSize: Self.size(rom & 0xffff_f800))
    }

    /// BAR sizes from the all-ones read-backs (PCI Local Bus 3.0, 6.2.5.1).
    static func decodeBARs(_ sizing: [Int: UInt32]) -> [BAR] {
        var bars: [BAR] = []
        var index = 0
        while index < 6 {
            let value = sizing[index] ?? 0
            defer { index += 1 }
            guard value != 0 else { continue }
            if value & 1 != 0 {
                let size = (~UInt64(value & 0xffff_fffc) & 0xffff_ffff) + 1
                bars.append(BAR(index: index, kind: .io, size: size & 0xffff))
                continue
            }
            let prefetchable = value & 8 != 0
            if (value >> 1) & 3 == 2, index < 5 {
                let high = UInt64(sizing[index + 1] ?? 0)
                bars.append(BAR(index: index, kind: .memory64(prefetchable: prefetchable),
                                size: ~(high << 32 | UInt64(value & 0xffff_fff0)) &+ 1))
                index += 1
            } else {
                bars.append(BAR(index: index, kind: .memory32(prefetchable: prefetchable), size: size(value & 0xffff_fff0)))
            }
        }
        return bars
    }

    private static func size(_ mask: UInt32) -> UInt64 { mask == 0 ? 0 : (~UInt64(mask) & 0xffff_ffff) + 1 }

    /// DeviceTables/vfio-twins in this checkout (for tests; the files are QEMU's).
    public static let capturedDirectory: String = {
        let parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
        return parts.dropLast(4).joined(separator: "/") + "/DeviceTables/vfio-twins"
    }()

    /// One of the captured identities: "qemu10-nvme", "qemu10-igb".
    public static func captured(_ name: String) throws -> VFIOTwinIdentity {
        let config = try FileSystem.readFile(capturedDirectory + "/" + name + ".config.txt")
        let bars = try FileSystem.readFile(capturedDirectory + "/" + name + ".bars.txt")
        return try VFIOTwinIdentity(name: name, configDump: String(decoding: config, as: UTF8.self),
                                    barSizing: String(decoding: bars, as: UTF8.self))
    }
}
