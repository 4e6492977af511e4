import Synchronization
import VMMBase

/// One PCI bus: 32 devices of 8 functions, or, on a PCI Express link whose downstream port
/// has ARI Forwarding enabled, one device of 256 functions. Config cycles for other buses are
/// routed through the bridges on this bus by their bus-number registers, as hardware routes
/// them; there is no global address-to-device table.
public final class PCIBus: Sendable {
    public let name: String

    /// What sits on the bus, which decides the device numbers a config cycle can reach.
    public enum Kind: Sendable, Hashable {
        /// A shared bus (a root bus, a bridge's secondary bus, a switch's internal bus).
        case shared
        /// The link below a PCI Express downstream port (root port, switch downstream port):
        /// it holds one device, number 0 (PCIe Base 7.3.1); with ARI Forwarding Enable set in
        /// the port, the device and function fields form one 8-bit ARI function number.
        case link
    }
    public let kind: Kind

    private struct Slots {
        var functions: [(any PCIFunction)?] = Array(repeating: nil, count: 256)
        /// The same functions in devfn order, kept beside the table so a walk of the bus (every
        /// commit builds each bus) copies one array instead of scanning 256 slots.
        var attached: [(devfn: UInt8, function: any PCIFunction)] = []
        var bridges: [any PCIBridgeFunction] = []
        /// Attached functions that can enable SR-IOV virtual functions.
        var physicalFunctions: [(devfn: UInt8, function: any SRIOVPhysicalFunction)] = []
        var ariForwarding = false
    }
    private let slots = Mutex(Slots())

    public init(name: String, kind: Kind = .shared) {
        self.name = name
        self.kind = kind
    }

    /// ARI Forwarding Enable of the port in front of a link (its Device Control 2, bit 5).
    /// The port sets it after each of its config writes and resets.
    public var ariForwarding: Bool {
        get { slots.withLock { $0.ariForwarding } }
        set { slots.withLock { $0.ariForwarding = newValue } }
    }

    /// The function at `devfn`, as a config cycle sees it. A function other than 0 answers
    /// only while function 0 of its device is present (with ARI, function 0 of the link's
    /// device); on a link without ARI Forwarding, device numbers other than 0 master-abort.
    /// Enabled SR-IOV virtual functions answer at their routing IDs where nothing is attached.
    public func function(at devfn: UInt8) -> (any PCIFunction)? {
        let (attached, physicalFunctions) = slots.withLock { s -> ((any PCIFunction)?, [(devfn: UInt8, function: any SRIOVPhysicalFunction)]) in
            let firstFunction: UInt8
            switch kind {
            case .shared: firstFunction = devfn & ~7
            case .link:
                guard s.ariForwarding || devfn < 8 else { return (nil, []) }
                firstFunction = 0
            }
            guard s.functions[Int(firstFunction)] != nil else { return (nil, []) }
            if let function = s.functions[Int(devfn)] { return (function, []) }
            return (nil, s.physicalFunctions)
        }
        if let attached { return attached }
        return Self.virtualFunction(at: devfn, among: physicalFunctions)
    }

    /// Whatever is attached at `devfn`, visible to config cycles or not (virtual functions
    /// are not attached: they come and go with their physical function's VF Enable).
    public func occupant(at devfn: UInt8) -> (any PCIFunction)? {
        slots.withLock { $0.functions[Int(devfn)] }
    }

    /// Every function present, in devfn order: attached ones and enabled virtual functions at
    /// free routing IDs.
    public var functions: [(devfn: UInt8, function: any PCIFunction)] {
        let (attached, physicalFunctions) = slots.withLock { s in
            (s.attached, s.physicalFunctions)
        }
        guard !physicalFunctions.isEmpty else { return attached }
        var all = attached
        let taken = Set(attached.map(\.0))
        for (pfDevfn, pf) in physicalFunctions {
            for vf in pf.enabledVirtualFunctions {
                guard let devfn = Self.devfn(of: pfDevfn, plus: vf.routingOffset), !taken.contains(devfn) else { continue }
                all.append((devfn, vf.function))
            }
        }
        return all.sorted { $0.0 < $1.0 }
    }

    /// Attached functions only.
    public var isEmpty: Bool { slots.withLock { $0.attached.isEmpty } }

    public func attach(_ function: any PCIFunction, at devfn: UInt8) throws(PCIBusError) {
        try slots.withLock { (s: inout Slots) throws(PCIBusError) in
            if let existing = s.functions[Int(devfn)] {
                throw .addressInUse(bus: name, devfn: devfn, occupant: existing.name)
            }
            s.functions[Int(devfn)] = function
            let position = s.attached.firstIndex { $0.devfn > devfn } ?? s.attached.endIndex
            s.attached.insert((devfn, function), at: position)
            if let bridge = function as? any PCIBridgeFunction { s.bridges.append(bridge) }
            if let pf = function as? any SRIOVPhysicalFunction, pf.isSRIOVCapable { s.physicalFunctions.append((devfn, pf)) }
        }
    }

    /// Detaches the function at `devfn`; a physical function's virtual functions go with it.
    @discardableResult
    public func detach(at devfn: UInt8) -> (any PCIFunction)? {
        slots.withLock { s in
            guard let f = s.functions[Int(devfn)] else { return nil }
            s.functions[Int(devfn)] = nil
            s.attached.removeAll { $0.devfn == devfn }
            s.bridges.removeAll { $0 === f }
            s.physicalFunctions.removeAll { $0.function === f }
            return f
        }
    }

    /// The devfn `offset` routing IDs past `devfn` on this bus, nil past function 255 (a
    /// routing ID on the next bus number, which virtual functions here do not reach).
    public static func devfn(of devfn: UInt8, plus offset: Int) -> UInt8? {
        let target = Int(devfn) + offset
        return (0...255).contains(target) ? UInt8(target) : nil
    }

    private static func virtualFunction(at devfn: UInt8,
                                        among physicalFunctions: [(devfn: UInt8, function: any SRIOVPhysicalFunction)]) -> (any PCIFunction)? {
        for (pfDevfn, pf) in physicalFunctions where pfDevfn < devfn {
            if let vf = pf.virtualFunction(atRoutingOffset: Int(devfn - pfDevfn)) { return vf }
        }
        return nil
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
