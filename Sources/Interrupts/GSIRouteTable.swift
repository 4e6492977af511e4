import VMMBase

/// Where a GSI's interrupts go.
public enum GSIRoute: Hashable, Sendable {
    /// IOAPIC input `pin`; below 16 also the 8259 line of the same number (ISA IRQs reach
    /// both controllers, as on a PC).
    case ioapic(pin: UInt32)
    /// A message-signalled interrupt: raising the GSI writes `message`.
    case msi(MSIMessage)
}

public enum GSIRouteError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Every GSI up to the table's limit is in use.
    case exhausted(limit: UInt32)
    /// The GSI was never allocated (or was released).
    case notAllocated(GSI)
    /// The GSI is one of the IOAPIC's inputs, whose routes are fixed.
    case fixed(GSI)
    /// The IOAPIC has no such input.
    case noSuchPin(UInt32, pins: UInt32)

    public var description: String {
        switch self {
        case .exhausted(let limit): "no free GSI: all \(limit) are routed"
        case .notAllocated(let gsi): "\(gsi) is not allocated"
        case .fixed(let gsi): "\(gsi) is an IOAPIC input; its route is fixed"
        case .noSuchPin(let pin, let pins): "IOAPIC pin \(pin) does not exist (the IOAPIC has \(pins) inputs)"
        }
    }
}

/// The machine's GSIs and the route of each: the IOAPIC's inputs are GSIs 0..<ioapicPins,
/// routed one to one to their pins; GSIs from `ioapicPins` on are allocated on demand (a
/// device's MSI or MSI-X vector, a host backend's interrupt) and routed wherever their owner
/// says. It is the one description the hypervisor's routing (KVM_SET_GSI_ROUTING) is made from.
public struct GSIRouteTable: Hashable, Sendable {
    public let ioapicPins: UInt32
    /// GSIs are below this (KVM: KVM_MAX_IRQ_ROUTES, 4096).
    public let limit: UInt32
    public private(set) var routes: [GSI: GSIRoute]

    public init(ioapicPins: UInt32 = 24, limit: UInt32 = 4096) {
        self.ioapicPins = ioapicPins
        self.limit = max(limit, ioapicPins)
        routes = Dictionary(uniqueKeysWithValues: (0..<ioapicPins).map { (GSI($0), GSIRoute.ioapic(pin: $0)) })
    }

    /// Routes the lowest free GSI above the IOAPIC's inputs to `route`.
    public mutating func allocate(_ route: GSIRoute) throws(GSIRouteError) -> GSI {
        try check(route)
        var number = ioapicPins
        while number < limit, routes[GSI(number)] != nil { number += 1 }
        guard number < limit else { throw .exhausted(limit: limit) }
        routes[GSI(number)] = route
        return GSI(number)
    }

    /// Points an allocated GSI somewhere else (a guest rewrote the MSI message).
    public mutating func update(_ gsi: GSI, to route: GSIRoute) throws(GSIRouteError) {
        guard gsi.number >= ioapicPins else { throw .fixed(gsi) }
        guard routes[gsi] != nil else { throw .notAllocated(gsi) }
        try check(route)
        routes[gsi] = route
    }

    /// Frees an allocated GSI; the IOAPIC's inputs stay.
    public mutating func release(_ gsi: GSI) {
        guard gsi.number >= ioapicPins else { return }
        routes[gsi] = nil
    }

    /// Every route, by GSI.
    public var sorted: [(gsi: GSI, route: GSIRoute)] {
        routes.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    private func check(_ route: GSIRoute) throws(GSIRouteError) {
        if case .ioapic(let pin) = route, pin >= ioapicPins { throw .noSuchPin(pin, pins: ioapicPins) }
    }
}
