import PCI

/// Why a bridge could not be made from a driver name and QEMU-style properties. Each case
/// names the property and says how to fix it.
public enum PCIBridgeFactoryError: Error, Hashable, CustomStringConvertible {
    case unknownDriver(String, known: [String])
    case missingProperty(driver: String, property: String, fix: String)
    case invalidValue(driver: String, property: String, value: String, expected: String)
    case unknownProperty(driver: String, property: String, known: [String])
    case conflictingProperties(driver: String, properties: [String], fix: String)
    /// The config space could not be built (a bug in the layout, not in the properties).
    case layout(driver: String, reason: String)

    public var description: String {
        switch self {
        case .unknownDriver(let d, let known):
            "unknown bridge driver '\(d)'; known bridge drivers: \(known.joined(separator: ", "))"
        case .missingProperty(let d, let p, let fix): "\(d) needs property '\(p)': \(fix)"
        case .invalidValue(let d, let p, let v, let expected): "\(d) property '\(p)'=\(v) is invalid: expected \(expected)"
        case .unknownProperty(let d, let p, let known):
            "\(d) has no property '\(p)'; its properties are \(known.joined(separator: ", "))"
        case .conflictingProperties(let d, let ps, let fix): "\(d): \(ps.joined(separator: " with ")): \(fix)"
        case .layout(let d, let reason): "\(d) config space: \(reason)"
        }
    }
}

/// Makes `pci-bridge` and `pcie-pci-bridge` from QEMU-style `-device` properties.
public enum PCIBridgeFactory {
    public static let drivers = [PCIBridgeOptions.Kind.pciBridge.rawValue, PCIBridgeOptions.Kind.pcieToPCIBridge.rawValue]

    /// Placement properties the topology handles; accepted and ignored here.
    static let placement: Set<String> = ["id", "bus", "addr"]

    static func known(_ kind: PCIBridgeOptions.Kind) -> [String] {
        switch kind {
        case .pciBridge: ["chassis_nr", "shpc", "msi", "multifunction"]
        case .pcieToPCIBridge: ["msi", "multifunction"]
        }
    }

    /// `pci-bridge`: `chassis_nr` (required, 1-255), `shpc` (on|off, default on), `msi`
    /// (on|off|auto, default auto = on when the SHPC is there), `multifunction`.
    /// `pcie-pci-bridge`: `msi` (on|off|auto, default auto = on), `multifunction`.
    public static func make(driver: String, id: String,
                            properties: [String: String]) throws(PCIBridgeFactoryError) -> any PCIBridgeFunction {
        guard let kind = PCIBridgeOptions.Kind(rawValue: driver) else {
            throw .unknownDriver(driver, known: drivers)
        }
        let knownProperties = known(kind)
        for key in properties.keys.sorted() where !knownProperties.contains(key) && !placement.contains(key) {
            throw .unknownProperty(driver: driver, property: key, known: knownProperties)
        }
        var options = PCIBridgeOptions(kind: kind)
        if kind == .pciBridge {
            guard let raw = properties["chassis_nr"] else {
                throw .missingProperty(driver: driver, property: "chassis_nr",
                                       fix: "give each pci-bridge a distinct chassis number from 1 to 255, e.g. chassis_nr=1")
            }
            guard let n = UInt8(raw.hasPrefix("0x") ? String(raw.dropFirst(2)) : raw, radix: raw.hasPrefix("0x") ? 16 : 10),
                  n != 0 else {
                throw .invalidValue(driver: driver, property: "chassis_nr", value: raw, expected: "an integer from 1 to 255")
            }
            options.chassisNumber = n
            options.shpc = try flag(driver, "shpc", properties["shpc"], default: true)
        }
        options.multiFunction = try flag(driver, "multifunction", properties["multifunction"], default: false)
        switch try onOffAuto(driver, "msi", properties["msi"]) {
        case nil:
            options.msi = options.shpc
        case true?:
            guard options.shpc else {
                throw .conflictingProperties(driver: driver, properties: ["msi=on", "shpc=off"],
                                             fix: "MSI serves only the SHPC; use shpc=on or drop msi=on")
            }
            options.msi = true
        case false?:
            options.msi = false
        }
        do {
            return try PCIBridge(name: id, options: options)
        } catch {
            throw .layout(driver: driver, reason: "\(error)")
        }
    }

    private static func flag(_ driver: String, _ property: String, _ raw: String?,
                             default value: Bool) throws(PCIBridgeFactoryError) -> Bool {
        guard let raw else { return value }
        switch raw.lowercased() {
        case "on", "yes", "true": return true
        case "off", "no", "false": return false
        default: throw .invalidValue(driver: driver, property: property, value: raw, expected: "on or off")
        }
    }

    /// nil for auto.
    private static func onOffAuto(_ driver: String, _ property: String,
                                  _ raw: String?) throws(PCIBridgeFactoryError) -> Bool? {
        guard let raw, raw.lowercased() != "auto" else { return nil }
        do {
            return try flag(driver, property, raw, default: false)
        } catch {
            throw .invalidValue(driver: driver, property: property, value: raw, expected: "on, off or auto")
        }
    }
}
