/// A function's legacy interrupt pin, INTA-INTD (Interrupt Pin register values 1-4).
public enum INTxPin: Int, Sendable, CaseIterable, CustomStringConvertible {
    case a = 0, b, c, d

    /// From the Interrupt Pin register: 1 = INTA ... 4 = INTD; 0 or >4 means no pin.
    public init?(register: UInt8) {
        guard (1...4).contains(register) else { return nil }
        self.init(rawValue: Int(register) - 1)
    }

    public var register: UInt8 { UInt8(rawValue + 1) }

    /// The pin a bridge's primary side sees for this pin of a device in slot `device` on its
    /// secondary bus (PCI-to-PCI Bridge spec, table 9-1): rotate by the device number.
    public func swizzled(throughSlot device: UInt8) -> INTxPin {
        INTxPin(rawValue: (rawValue + Int(device)) % 4)!
    }

    public var description: String { "INT" + ["A", "B", "C", "D"][rawValue] }
}

/// One of the ICH9's eight PCI interrupt links, PIRQA-PIRQH.
public enum PIRQ: Int, Sendable, CaseIterable, CustomStringConvertible {
    case a = 0, b, c, d, e, f, g, h

    public var description: String { "PIRQ" + ["A", "B", "C", "D", "E", "F", "G", "H"][rawValue] }

    /// In APIC mode each link drives its own IOAPIC input: PIRQA-H are GSIs 16-23.
    public var apicGSI: GSI { GSI(16 + UInt32(rawValue)) }
}

/// A global system interrupt: an IOAPIC input (or a legacy PIC line below 16).
public struct GSI: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public let number: UInt32
    public init(_ number: UInt32) { self.number = number }
    public static func < (a: GSI, b: GSI) -> Bool { a.number < b.number }
    public var description: String { "GSI \(number)" }
}
