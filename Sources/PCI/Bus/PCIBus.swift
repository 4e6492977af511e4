import Synchronization
import VMMBase

/// One PCI bus: 32 devices of 8 functions. Config cycles for other buses are routed through
/// the bridges on this bus by their bus-number registers, as hardware routes them; there is
/// no global address-to-device table.
public final class PCIBus: Sendable {
    public let name: String

    private struct Slots {
        var functions: [(any PCIFunction)?] = Array(repeating: nil, count: 256)
        var bridges: [any PCIBridgeFunction] = []
    }
    private let slots = Mutex(Slots())

    public init(name: String) {
        self.name = name
    }

    /// The function at `devfn`, as a config cycle sees it: a function other than 0 answers
    /// only while function 0 of its device is present.
    public func function(at devfn: UInt8) -> (any PCIFunction)? {
        slots.withLock { s in
            guard s.functions[Int(devfn & ~7)] != nil else { return nil }
            return s.functions[Int(devfn)]
        }
    }

    /// Whatever is attached at `devfn`, visible to config cycles or not.
    public func occupant(at devfn: UInt8) -> (any PCIFunction)? {
        slots.withLock { $0.functions[Int(devfn)] }
    }

    /// Every function present, in devfn order.
    public var functions: [(devfn: UInt8, function: any PCIFunction)] {
        slots.withLock { s in
            s.functions.enumerated().compactMap { i, f in f.map { (UInt8(i), $0) } }
        }
    }

    public var isEmpty: Bool { slots.withLock { s in s.functions.allSatisfy { $0 == nil } } }

    public func attach(_ function: any PCIFunction, at devfn: UInt8) throws(PCIBusError) {
        try slots.withLock { (s: inout Slots) throws(PCIBusError) in
            if let existing = s.functions[Int(devfn)] {
                throw .addressInUse(bus: name, devfn: devfn, occupant: existing.name)
            }
            s.functions[Int(devfn)] = function
            if let bridge = function as? any PCIBridgeFunction { s.bridges.append(bridge) }
        }
    }

    @discardableResult
    public func detach(at devfn: UInt8) -> (any PCIFunction)? {
        slots.withLock { s in
            guard let f = s.functions[Int(devfn)] else { return nil }
            s.functions[Int(devfn)] = nil
            s.bridges.removeAll { $0 === f }
            return f
        }
    }

    /// The bus that config cycles for `target` reach when this bus has number `number`:
    /// this bus, a bus behind one of its bridges, or nil (master abort).
    /// With `ignoringPower`, buses behind unpowered slots count too (the bus a bridge numbers,
    /// whether or not anything behind it can answer now).
    public func resolve(_ target: UInt8, thisBusNumber number: UInt8, ignoringPower: Bool = false) -> PCIBus? {
        if target == number { return self }
        let bridges = slots.withLock { $0.bridges }
        for bridge in bridges {
            let numbers = bridge.busNumbers
            if numbers.forwards(target) {
                guard ignoringPower || bridge.passesConfigCycles else { return nil }
                return bridge.secondary.resolve(target, thisBusNumber: numbers.secondary, ignoringPower: ignoringPower)
            }
        }
        return nil
    }
}

public enum PCIBusError: Error, Equatable, CustomStringConvertible {
    case addressInUse(bus: String, devfn: UInt8, occupant: String)

    public var description: String {
        switch self {
        case .addressInUse(let bus, let devfn, let occupant):
            "address \(hex(devfn >> 3, 2)).\(devfn & 7) on bus \(bus) is in use by \(occupant)"
        }
    }
}
