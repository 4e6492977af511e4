import VMMBase

/// Where a GSI's interrupts go.
public enum GSIRoute: Hashable, Sendable {
    /// Inputs of the interrupt controllers: IOAPIC pin `ioapic` and, for an ISA IRQ, line `pic`
    /// of the 8259 pair (0-7 the master, 8-15 the slave).
    case controllers(ioapic: UInt32?, pic: UInt32?)
    /// A message-signalled interrupt: raising the GSI writes `message`.
    case msi(MSIMessage)

    /// IOAPIC pin `pin` alone.
    public static func ioapic(_ pin: UInt32) -> GSIRoute { .controllers(ioapic: pin, pic: nil) }
}

public enum GSIRouteError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Every GSI up to the table's limit is in use.
    case exhausted(limit: UInt32)
    /// The GSI was never allocated (or was released).
    case notAllocated(GSI)
    /// The GSI is one of the platform's fixed ones (below `firstAllocatable`).
    case fixed(GSI)
    /// The route names an IOAPIC pin or 8259 line that does not exist.
    case noSuchInput(GSIRoute)

    public var description: String {
        switch self {
        case .exhausted(let limit): "no free GSI: all \(limit) are routed"
        case .notAllocated(let gsi): "\(gsi) is not allocated"
        case .fixed(let gsi): "\(gsi) is wired by the platform; its route is fixed"
        case .noSuchInput(let route): "\(route) names an interrupt controller input that does not exist"
        }
    }
}

/// The machine's GSIs and the route of each. GSIs below `firstAllocatable` are the platform's
/// wiring (ISA IRQs and PCI links into the 8259s and the IOAPIC); the ones above are handed out
/// on demand (a device's MSI or MSI-X vector, a host backend's interrupt) and routed wherever
/// their owner says. It is the one description the hypervisor's routing
/// (KVM_SET_GSI_ROUTING) is made from.
public struct GSIRouteTable: Hashable, Sendable {
    public let ioapicPins: UInt32
    public let firstAllocatable: UInt32
    /// GSIs are below this (KVM: KVM_MAX_IRQ_ROUTES, 4096).
    public let limit: UInt32
    public private(set) var routes: [GSI: GSIRoute]

    public init(fixed: [GSI: GSIRoute], ioapicPins: UInt32 = 24, firstAllocatable: UInt32 = 24,
                limit: UInt32 = 4096) {
        self.ioapicPins = ioapicPins
        self.firstAllocatable = firstAllocatable
        self.limit = max(limit, firstAllocatable)
        routes = fixed.filter { $0.key.number < firstAllocatable }
    }

    /// A PC's wiring, as QEMU routes it for KVM (hw/i386/kvm/ioapic.c, kvm_pc_setup_irq_routing):
    /// ISA IRQs 0-15 reach the 8259 line and the IOAPIC pin of their number, except IRQ 0 (the
    /// PIT), which reaches IOAPIC pin 2 as the MADT's interrupt source override says, and IRQ 2,
    /// the 8259 cascade, which is not routed; GSIs 16-23 (PCI links) reach their IOAPIC pin.
    public static let pc: GSIRouteTable = {
        var fixed: [GSI: GSIRoute] = [:]
        for irq: UInt32 in 0..<16 where irq != 2 {
            fixed[GSI(irq)] = .controllers(ioapic: irq == 0 ? 2 : irq, pic: irq)
        }
        for gsi: UInt32 in 16..<24 { fixed[GSI(gsi)] = .ioapic(gsi) }
        return GSIRouteTable(fixed: fixed)
    }()

    /// Routes the lowest free allocatable GSI to `route`.
    public mutating func allocate(_ route: GSIRoute) throws(GSIRouteError) -> GSI {
        try check(route)
        var number = firstAllocatable
        while number < limit, routes[GSI(number)] != nil { number += 1 }
        guard number < limit else { throw .exhausted(limit: limit) }
        routes[GSI(number)] = route
        return GSI(number)
    }

    /// Points an allocated GSI somewhere else (a guest rewrote the MSI message).
    public mutating func update(_ gsi: GSI, to route: GSIRoute) throws(GSIRouteError) {
        guard gsi.number >= firstAllocatable else { throw .fixed(gsi) }
        guard routes[gsi] != nil else { throw .notAllocated(gsi) }
        try check(route)
        routes[gsi] = route
    }

    /// Frees an allocated GSI; the fixed ones stay.
    public mutating func release(_ gsi: GSI) {
        guard gsi.number >= firstAllocatable else { return }
        routes[gsi] = nil
    }

    /// Every route, by GSI.
    public var sorted: [(gsi: GSI, route: GSIRoute)] {
        routes.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    private func check(_ route: GSIRoute) throws(GSIRouteError) {
        guard case .controllers(let ioapic, let pic) = route else { return }
        if let ioapic, ioapic >= ioapicPins { throw .noSuchInput(route) }
        if let pic, pic >= 16 { throw .noSuchInput(route) }
    }
}
