import PCI

/// One rule of DeviceTables/vfio-quirks.txt: what an assigned function must not show the
/// guest (a capability) or let it change (bits of a register).
public struct VFIOQuirk: Sendable, Hashable {
    public enum Action: Sendable, Hashable {
        case hide(CapabilityRecord.Kind)
        /// Guest writes to `mask` of the `width`-byte register at `offset` stay in the VMM.
        case readOnly(offset: Int, width: Int, mask: UInt32)
    }

    /// Nil matches any vendor or device.
    public let vendorID: UInt16?
    public let deviceID: UInt16?
    public let action: Action

    public init(vendorID: UInt16?, deviceID: UInt16?, action: Action) {
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.action = action
    }

    public func applies(vendorID vendor: UInt16, deviceID device: UInt16) -> Bool {
        (vendorID ?? vendor) == vendor && (deviceID ?? device) == device
    }
}

/// A malformed line of the quirk table, named by its line number.
public struct VFIOQuirkTableError: Error, Hashable, CustomStringConvertible {
    public let line: Int
    public let reason: String

    public init(line: Int, reason: String) {
        self.line = line
        self.reason = reason
    }

    public var description: String { "vfio-quirks.txt line \(line): \(reason)" }
}

/// The quirks of every device, parsed from the table's text.
public struct VFIOQuirkTable: Sendable, Hashable {
    public let quirks: [VFIOQuirk]

    public init(quirks: [VFIOQuirk]) { self.quirks = quirks }

    public init(parsing text: String) throws(VFIOQuirkTableError) {
        var quirks: [VFIOQuirk] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard !words.isEmpty else { continue }
            func fail(_ reason: String) -> VFIOQuirkTableError { VFIOQuirkTableError(line: index + 1, reason: reason) }
            guard words.count >= 4 else { throw fail("expected VENDOR DEVICE ACTION ARGUMENTS") }
            func identity(_ word: Substring) throws(VFIOQuirkTableError) -> UInt16? {
                if word == "*" { return nil }
                guard word.count == 4, let value = UInt16(word, radix: 16) else { throw fail("'\(word)' is not 4 hex digits or *") }
                return value
            }
            func number(_ word: Substring) throws(VFIOQuirkTableError) -> UInt64 {
                let value = word.hasPrefix("0x") ? UInt64(word.dropFirst(2), radix: 16) : UInt64(word)
                guard let value else { throw fail("'\(word)' is not a number") }
                return value
            }
            let vendor = try identity(words[0]), device = try identity(words[1])
            let action: VFIOQuirk.Action
            switch (words[2], words.count) {
            case ("hide-capability", 4):
                let id = try number(words[3])
                guard id <= 0xFF else { throw fail("a standard capability ID has 8 bits") }
                action = .hide(.standard(UInt8(id)))
            case ("hide-extended-capability", 4):
                let id = try number(words[3])
                guard id <= 0xFFFF else { throw fail("an extended capability ID has 16 bits") }
                action = .hide(.extended(UInt16(id)))
            case ("read-only", 6):
                let offset = try number(words[3]), width = try number(words[4]), mask = try number(words[5])
                guard [1, 2, 4].contains(width), offset % width == 0, offset + width <= UInt64(ConfigSpace.expressSize) else {
                    throw fail("a register is 1, 2 or 4 bytes, aligned, inside the 4 KiB config space")
                }
                guard mask < 1 << (8 * width) else { throw fail("mask 0x\(String(mask, radix: 16)) is wider than \(width) bytes") }
                action = .readOnly(offset: Int(offset), width: Int(width), mask: UInt32(mask))
            default:
                throw fail("unknown rule '\(words[2...].joined(separator: " "))' (hide-capability ID, hide-extended-capability ID, read-only OFFSET WIDTH MASK)")
            }
            quirks.append(VFIOQuirk(vendorID: vendor, deviceID: device, action: action))
        }
        self.quirks = quirks
    }

    /// The quirks of one device.
    public func quirks(vendorID: UInt16, deviceID: UInt16) -> [VFIOQuirk] {
        quirks.filter { $0.applies(vendorID: vendorID, deviceID: deviceID) }
    }

    /// DeviceTables/vfio-quirks.txt as built into the binary.
    public static func builtIn() throws(VFIOQuirkTableError) -> VFIOQuirkTable {
        try VFIOQuirkTable(parsing: String(decoding: PackageResources.vfio_quirks_txt, as: UTF8.self))
    }
}
