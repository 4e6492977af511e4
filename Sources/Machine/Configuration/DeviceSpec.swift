import Chipset
import VMMBase

/// A device as QEMU's `-device` spells it: `driver,id=x,bus=y,addr=0x3.0x1,multifunction=on,...`.
public struct DeviceSpec: Sendable, Hashable {
    public var driver: String
    public var id: String?
    public var bus: String?
    /// Device and function on the parent bus (`addr=SLOT[.FN]`), or nil for the first free slot.
    public var devfn: UInt8?
    public var multifunction: Bool
    /// Properties not interpreted here, for the device's own factory.
    public var properties: [String: String]

    public init(driver: String, id: String? = nil, bus: String? = nil, devfn: UInt8? = nil,
                multifunction: Bool = false, properties: [String: String] = [:]) {
        self.driver = driver
        self.id = id
        self.bus = bus
        self.devfn = devfn
        self.multifunction = multifunction
        self.properties = properties
    }

    public init(parsing text: String) throws(MachineConfigurationError) {
        let fields = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let driver = fields.first, !driver.isEmpty, !driver.contains("=") else {
            throw .malformedDevice(text, reason: "it must start with a driver name, e.g. pci-testdev,id=t1")
        }
        self.init(driver: driver)
        for field in fields.dropFirst() {
            guard let eq = field.firstIndex(of: "=") else {
                throw .malformedDevice(text, reason: "'\(field)' is not of the form name=value")
            }
            do {
                try set(String(field[..<eq]), String(field[field.index(after: eq)...]))
            } catch {
                throw .malformedDevice(text, reason: error.reason)
            }
        }
    }

    /// A value one of the keys every device has cannot take.
    public enum Refusal: Error, Hashable {
        case address(String)
        case multifunction(String)
        case romFile(String)

        /// In the command line's words; QMP words them as QEMU's monitor does.
        public var reason: String {
            switch self {
            case .address(let value): "addr=\(value) must be SLOT[.FN] with slot 0-31 and function 0-7"
            case .multifunction(let value): "multifunction must be on or off, not '\(value)'"
            // Switchyard loads no option ROMs (a direct kernel boot has no firmware to run
            // them): only the empty value, "no ROM", as QEMU command lines and libvirt's
            // `<rom file=''/>` write it, is accepted, for any device.
            case .romFile(let value): "romfile=\(value): Switchyard loads no option ROMs; leave romfile out or give it empty (romfile=)"
            }
        }
    }

    /// Takes one `key=value` of `-device` or device_add: the keys every device has (id, bus,
    /// addr, multifunction, romfile) here, any other into `properties` for the device's factory.
    public mutating func set(_ key: String, _ value: String) throws(Refusal) {
        switch key {
        case "id": id = value
        case "bus": bus = value
        case "addr":
            guard let devfn = Self.address(value) else { throw .address(value) }
            self.devfn = devfn
        case "multifunction":
            guard let on = Self.parseBool(value) else { throw .multifunction(value) }
            multifunction = on
        case "romfile":
            guard value.isEmpty else { throw .romFile(value) }
        default: properties[key] = value
        }
    }

    /// `SLOT[.FN]`, each decimal or 0x-hex, as QEMU accepts it, as a devfn.
    static func address(_ value: String) -> UInt8? {
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let slot = parseNumber(parts[0]),
              let fn = parts.count == 2 ? parseNumber(parts[1]) : 0, slot < 32, fn < 8 else { return nil }
        return UInt8(slot << 3 | fn)
    }

    static func parseNumber(_ s: Substring) -> UInt64? {
        if s.hasPrefix("0x") || s.hasPrefix("0X") { return UInt64(s.dropFirst(2), radix: 16) }
        return UInt64(s)
    }

    public static func parseBool(_ s: String) -> Bool? {
        switch s {
        case "on", "true", "yes": true
        case "off", "false", "no": false
        default: nil
        }
    }
}

public enum MachineConfigurationError: Error, Hashable, CustomStringConvertible {
    case malformedDevice(String, reason: String)
    case unknownDriver(String, known: [String])
    case noSuchBus(String, device: String)
    case addressInUse(bus: String, address: String, occupant: String)
    case busFull(String)
    case duplicateID(String)
    case invalidID(String)
    case invalidProperty(device: String, property: String, reason: String)
    case notHotPluggable(bus: String, reason: String)
    case noSuchDevice(String)
    case hotPlug(HotPlugError)
    case hostResource(String)
    case memoryTooLarge(requested: UInt64, maximum: UInt64)
    case device(id: String, reason: String)
    case duplicateChassisSlot(chassis: Int, slot: Int, owner: String)
    /// A bad -netdev: the text and QEMU's reason.
    case netdev(String, reason: String)

    public var description: String {
        switch self {
        case .malformedDevice(let text, let reason): "bad device '\(text)': \(reason)"
        case .unknownDriver(let driver, let known):
            "unknown device driver '\(driver)'; known drivers: \(known.joined(separator: ", "))"
        case .noSuchBus(let bus, let device):
            "device '\(device)': no bus named '\(bus)' (use pcie.0 or the id of a bridge or port defined earlier)"
        case .addressInUse(let bus, let address, let occupant):
            "address \(address) on bus \(bus) is already used by \(occupant); choose another addr="
        case .busFull(let bus): "bus \(bus) has no free slot; add a bridge, a switch or another root port"
        case .duplicateID(let id): "duplicate device id '\(id)'; ids must be unique"
        case .invalidID(let id):
            "id '\(id.count > 40 ? String(id.prefix(40)) + "..." : id)' is not an identifier: ids start with a letter and contain only letters, digits, '-', '.' and '_' (at most \(DeviceID.maximumLength) characters)"
        case .invalidProperty(let device, let property, let reason): "device '\(device)': \(property): \(reason)"
        case .notHotPluggable(_, let reason): reason
        case .noSuchDevice(let id): "Device '\(id)' not found"
        case .hotPlug(let error): "\(error)"
        case .hostResource(let reason): reason
        case .memoryTooLarge(let requested, let maximum):
            "guest RAM of \(memorySizeText(requested)) does not fit this q35 layout: RAM above 4 GiB would reach the 64-bit PCI window; use at most -m \(memorySizeText(maximum))"
        case .device(_, let reason): reason
        case .duplicateChassisSlot(let chassis, let slot, let owner):
            "chassis \(chassis) slot \(slot) is already used by '\(owner)'; give each hot-pluggable port its own chassis=/slot="
        case .netdev(let text, let reason): "-netdev \(text): \(reason)"
        }
    }
}

/// A byte count as `-m` spells it: the largest unit that divides it (512M, 2G, 3T), else bytes.
public func memorySizeText(_ bytes: UInt64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
        return "\(bytes >> shift)\(unit)"
    }
    return "\(bytes) bytes"
}
