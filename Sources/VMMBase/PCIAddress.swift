/// A PCI function's address: segment (domain), bus, device (0-31), function (0-7).
public struct PCIAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let segment: UInt16
    public let bus: UInt8
    public let device: UInt8
    public let function: UInt8

    /// Returns nil when device > 31 or function > 7.
    public init?(segment: UInt16 = 0, bus: UInt8, device: UInt8, function: UInt8) {
        guard device < 32, function < 8 else { return nil }
        self.segment = segment
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// Device and function packed as in a config cycle: device << 3 | function.
    public var devfn: UInt8 { device << 3 | function }

    public init(segment: UInt16 = 0, bus: UInt8, devfn: UInt8) {
        self.segment = segment
        self.bus = bus
        self.device = devfn >> 3
        self.function = devfn & 7
    }

    public static func < (a: PCIAddress, b: PCIAddress) -> Bool {
        (a.segment, a.bus, a.devfn) < (b.segment, b.bus, b.devfn)
    }

    /// "0000:00:1f.0"
    public var description: String { hex(segment, 4) + ":" + shortDescription }
    /// "00:1f.0", as lspci prints addresses in segment 0.
    public var shortDescription: String { hex(bus, 2) + ":" + hex(device, 2) + "." + String(function) }

    /// Parses "SSSS:BB:DD.F" or "BB:DD.F" (hexadecimal, as lspci prints them).
    public init?(parsing text: some StringProtocol) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3 else { return nil }
        let segment = parts.count == 3 ? UInt16(parts[0], radix: 16) : 0
        let bus = UInt8(parts[parts.count - 2], radix: 16)
        let df = parts[parts.count - 1].split(separator: ".", omittingEmptySubsequences: false)
        guard let segment, let bus, df.count == 2,
              let device = UInt8(df[0], radix: 16), let function = UInt8(df[1], radix: 16)
        else { return nil }
        self.init(segment: segment, bus: bus, device: device, function: function)
    }
}

/// Lower-case hexadecimal, zero-padded to `digits`.
public func hex<T: BinaryInteger>(_ value: T, _ digits: Int) -> String {
    let s = String(value, radix: 16)
    return s.count >= digits ? s : String(repeating: "0", count: digits - s.count) + s
}
