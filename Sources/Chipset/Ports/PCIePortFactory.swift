import PCI

/// A device property the factory could not accept, with what to do about it.
public enum PCIePortError: Error, Hashable, CustomStringConvertible {
    case unknownDriver(String, known: [String])
    case unknownProperty(driver: String, id: String, property: String, known: [String])
    case invalidValue(driver: String, id: String, property: String, value: String, expected: String)
    case outOfRange(driver: String, id: String, property: String, value: String, range: ClosedRange<Int>)
    /// The layout could not be built (a bug in a port model, not in the user's input).
    case layout(driver: String, id: String, reason: String)

    public var description: String {
        switch self {
        case .unknownDriver(let driver, let known):
            "unknown PCI Express port driver '\(driver)'; use one of: \(known.joined(separator: ", "))"
        case .unknownProperty(let driver, let id, let property, let known):
            "\(driver) '\(id)': unknown property '\(property)'; \(driver) accepts: \(known.joined(separator: ", "))"
        case .invalidValue(let driver, let id, let property, let value, let expected):
            "\(driver) '\(id)': \(property)=\(value) is not valid; use \(expected)"
        case .outOfRange(let driver, let id, let property, let value, let range):
            "\(driver) '\(id)': \(property)=\(value) is out of range; use a number from \(range.lowerBound) to \(range.upperBound)"
        case .layout(let driver, let id, let reason): "\(driver) '\(id)': \(reason)"
        }
    }
}

/// Builds PCI Express ports from -device style driver names and properties.
///
/// Properties (all optional; `bus` and `addr` are placement, handled by the machine, and ignored here):
/// - pcie-root-port, ioh3420, xio3130-downstream: `chassis` (0-255), `slot` (0-8191, the
///   Physical Slot Number), `port` (0-255, Link Capabilities port number), `hotplug=on|off`
///   (native hot-plug, default on), `x-hotplug-surprise=on|off` (Hot-Plug Surprise, which
///   allows surprise removal; default on as in QEMU 10; off makes every removal go through
///   the attention button and the guest).
/// - pcie-root-port also: `bus-reserve`, `io-reserve`, `mem-reserve`, `pref32-reserve`,
///   `pref64-reserve` (QEMU's firmware resource hints; any of them adds the Red Hat
///   vendor capability; io-reserve=0 also makes the I/O window read-only).
/// - pcie-root-port also: `x-speed` (2_5, 5, 8, 16, 32 or 64 GT/s, default 16) and `x-width`
///   (1, 2, 4, 8, 12, 16 or 32 lanes, default 32): the port's maximum link, as QEMU's.
/// - x3130-upstream: none.
public enum PCIePortFactory {
    public static let drivers = ["pcie-root-port", "ioh3420", "x3130-upstream", "xio3130-downstream"]

    static let placement: Set<String> = ["bus", "addr"]
    static let slotProperties = ["chassis", "slot", "port", "hotplug", "x-hotplug-surprise"]
    static let reserveProperties = ["bus-reserve", "io-reserve", "mem-reserve", "pref32-reserve", "pref64-reserve"]
    static let linkProperties = ["x-speed", "x-width"]

    public static func make(driver: String, id: String, properties: [String: String]) throws(PCIePortError) -> any PCIBridgeFunction {
        let known: [String]
        switch driver {
        case "pcie-root-port": known = slotProperties + reserveProperties + linkProperties
        case "ioh3420", "xio3130-downstream": known = slotProperties
        case "x3130-upstream": known = []
        default: throw .unknownDriver(driver, known: drivers)
        }
        let parser = PropertyParser(driver: driver, id: id, properties: properties)
        for property in properties.keys.sorted() where !known.contains(property) && !placement.contains(property) {
            throw .unknownProperty(driver: driver, id: id, property: property, known: known + placement.sorted())
        }
        do {
            switch driver {
            case "x3130-upstream":
                return try X3130UpstreamPort(name: id)
            case "pcie-root-port":
                let settings = try parser.slotSettings()
                let reserve = PCIePortLayout.ResourceReserve(
                    bus: try parser.number("bus-reserve", 0...Int(UInt32.max)).map(UInt32.init),
                    io: try parser.size("io-reserve"),
                    memory: try parser.number("mem-reserve", 0...Int(UInt32.max)).map(UInt32.init),
                    prefetchable32: try parser.number("pref32-reserve", 0...Int(UInt32.max)).map(UInt32.init),
                    prefetchable64: try parser.size("pref64-reserve"))
                return try PCIeRootPort(name: id, settings: settings, link: try parser.link(), resourceReserve: reserve)
            case "ioh3420":
                return try IOH3420RootPort(name: id, settings: try parser.slotSettings())
            default:
                return try XIO3130DownstreamPort(name: id, settings: try parser.slotSettings())
            }
        } catch let error as PCIePortError {
            throw error
        } catch {
            throw .layout(driver: driver, id: id, reason: "\(error)")
        }
    }
}

/// Reads -device style property values, naming the property in every error.
struct PropertyParser {
    let driver: String
    let id: String
    let properties: [String: String]

    func number(_ name: String, _ range: ClosedRange<Int>) throws(PCIePortError) -> Int? {
        guard let text = properties[name] else { return nil }
        let value: Int?
        if text.lowercased().hasPrefix("0x") { value = Int(text.dropFirst(2), radix: 16) } else { value = Int(text) }
        guard let value else {
            throw .invalidValue(driver: driver, id: id, property: name, value: text,
                                expected: "a decimal or 0x-prefixed hexadecimal number")
        }
        guard range.contains(value) else {
            throw .outOfRange(driver: driver, id: id, property: name, value: text, range: range)
        }
        return value
    }

    /// A byte count, with an optional K, M or G suffix (powers of 1024) as QEMU's size properties take.
    func size(_ name: String) throws(PCIePortError) -> UInt64? {
        guard let text = properties[name] else { return nil }
        let multipliers: [Character: UInt64] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30]
        var digits = Substring(text)
        var multiplier: UInt64 = 1
        if let last = digits.last?.lowercased().first, let m = multipliers[last] {
            multiplier = m
            digits = digits.dropLast()
        }
        guard let base = UInt64(digits), base <= UInt64.max / multiplier else {
            throw .invalidValue(driver: driver, id: id, property: name, value: text,
                                expected: "a byte count such as 4096, 64K, 2M or 1G")
        }
        return base * multiplier
    }

    func flag(_ name: String, default value: Bool) throws(PCIePortError) -> Bool {
        guard let text = properties[name] else { return value }
        switch text.lowercased() {
        case "on", "true", "yes": return true
        case "off", "false", "no": return false
        default: throw .invalidValue(driver: driver, id: id, property: name, value: text, expected: "on or off")
        }
    }

    /// pcie-root-port's `x-speed` (2_5, 5, 8, 16, 32, 64 GT/s) and `x-width` (lanes).
    func link() throws(PCIePortError) -> PCIeLinkCapabilities {
        var link = PCIeRootPort.defaultLink
        let speeds = PCIeLinkCapabilities.speedNames.sorted { $0.value < $1.value }.map(\.key)
        if let text = properties["x-speed"] {
            guard let speed = PCIeLinkCapabilities.speedNames[text] else {
                throw .invalidValue(driver: driver, id: id, property: "x-speed", value: text,
                                    expected: "one of \(speeds.joined(separator: "/"))")
            }
            link.maxSpeed = speed
        }
        if let text = properties["x-width"] {
            guard let width = UInt8(text), PCIeLinkCapabilities.widths.contains(width) else {
                throw .invalidValue(driver: driver, id: id, property: "x-width", value: text,
                                    expected: "one of \(PCIeLinkCapabilities.widths.map(String.init).joined(separator: "/"))")
            }
            link.maxWidth = width
        }
        return link
    }

    func slotSettings() throws(PCIePortError) -> PCIeSlotSettings {
        PCIeSlotSettings(
            chassis: UInt8(try number("chassis", 0...255) ?? 0),
            slot: UInt16(try number("slot", 0...8191) ?? 0),
            port: UInt8(try number("port", 0...255) ?? 0),
            hotplug: try flag("hotplug", default: true),
            hotplugSurprise: try flag("x-hotplug-surprise", default: true))
    }
}
