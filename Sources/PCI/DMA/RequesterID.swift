/// The ID a PCI requester puts in its transactions: the bus number it sits on and its
/// device/function number there (PCIe Base spec, "Transaction Descriptor: Requester ID").
/// An IOMMU picks a device's page tables and interrupt-remapping entries by it.
public struct RequesterID: Hashable, Sendable, CustomStringConvertible {
    public let bus: UInt8
    public let devfn: UInt8

    public init(bus: UInt8, devfn: UInt8) {
        self.bus = bus
        self.devfn = devfn
    }

    public init(raw: UInt16) {
        self.init(bus: UInt8(truncatingIfNeeded: raw >> 8), devfn: UInt8(truncatingIfNeeded: raw))
    }

    /// bus << 8 | devfn, as VT-d's context tables and DMAR fault records hold it.
    public var raw: UInt16 { UInt16(bus) << 8 | UInt16(devfn) }

    public var description: String { "\(hex(bus)):\(hex(devfn >> 3)).\(devfn & 7)" }

    private func hex(_ value: UInt8) -> String {
        let digits = String(value, radix: 16)
        return digits.count == 1 ? "0" + digits : digits
    }
}

/// A function's requester IDs right now: its own, and the one its requests carry when they
/// reach the root complex (`alias`), which differs when a bridge on the way takes them over.
public struct DMARequester: Hashable, Sendable, CustomStringConvertible {
    public let id: RequesterID
    public let alias: RequesterID

    public init(id: RequesterID, alias: RequesterID) {
        self.id = id
        self.alias = alias
    }

    public var description: String { id == alias ? "\(id)" : "\(id) (seen as \(alias))" }
}

/// What a bridge does to the requester ID of a request it forwards upstream.
public enum DMAAliasing: Hashable, Sendable {
    /// A PCI Express port (root, switch upstream or downstream): IDs pass unchanged.
    case none
    /// A PCI Express-to-PCI bridge: conventional PCI carries no requester ID, so the bridge
    /// issues the request as its secondary bus, device 0, function 0 (PCI Express to PCI/PCI-X
    /// Bridge spec, section 2.3).
    case secondaryBus
    /// A conventional PCI-PCI bridge (or a PCI-to-PCIe bridge): requests appear as the bridge's
    /// own ID.
    case bridgeItself

    /// The aliasing of a bridge, from its config space: Linux's pci_for_each_dma_alias
    /// (drivers/pci/search.c) keys on the PCI Express capability's port type, and treats a
    /// bridge without the capability as conventional.
    public init(bridge config: ConfigSpace) {
        guard config.pciExpressOffset != nil else {
            self = .bridgeItself
            return
        }
        switch config.pciExpressPortType {
        case .pcieToPCIBridge?: self = .secondaryBus
        case .pciToPCIeBridge?: self = .bridgeItself
        default: self = .none
        }
    }
}

/// One bridge between a function and the root bus.
public struct DMAHop: Sendable {
    /// Weak: the port holding the path must not keep an unplugged bridge (and the bus of
    /// functions behind it) alive.
    public weak var bridge: (any PCIBridgeFunction)?
    /// The bridge's device/function number on its own (primary) bus.
    public let devfn: UInt8
    public let aliasing: DMAAliasing

    public init(bridge: any PCIBridgeFunction, devfn: UInt8) {
        self.bridge = bridge
        self.devfn = devfn
        aliasing = DMAAliasing(bridge: bridge.configSnapshot())
    }
}

/// Where a function sits: its devfn and the bridges above it, nearest first. Bus numbers are
/// read from the bridges each time, so the IDs follow the guest's renumbering.
public struct DMARequesterPath: Sendable {
    public let devfn: UInt8
    public let hops: [DMAHop]

    public init(devfn: UInt8, hops: [DMAHop]) {
        self.devfn = devfn
        self.hops = hops
    }

    /// The requester IDs from the bus numbers the guest programmed now; nil while a bridge on
    /// the way has no secondary bus number (an unconfigured bridge: nothing behind it can
    /// master) or is gone.
    ///
    /// The alias follows Linux's pci_for_each_dma_alias: walking up from the function, a PCIe
    /// port changes nothing, a PCIe-to-PCI bridge replaces the ID with (its secondary bus,
    /// 00.0), a conventional bridge with its own ID; the last replacement (the bridge nearest
    /// the root) is what the root complex sees. QEMU's pci_device_get_iommu_bus_devfn agrees.
    ///
    /// Called on every DMA access: each bridge's bus numbers are read once, nothing allocated.
    public func resolve() -> DMARequester? {
        var id = RequesterID(bus: 0, devfn: devfn)
        var alias = id
        // A conventional bridge's own bus is the secondary of the next hop up (or bus 0).
        var bridgeAwaitingItsBus: UInt8?
        for (index, hop) in hops.enumerated() {
            guard let bridge = hop.bridge else { return nil }
            let secondary = bridge.busNumbers.secondary
            guard secondary != 0 else { return nil }
            if index == 0 {
                id = RequesterID(bus: secondary, devfn: devfn)
                alias = id
            }
            if let bridgeDevfn = bridgeAwaitingItsBus {
                alias = RequesterID(bus: secondary, devfn: bridgeDevfn)
                bridgeAwaitingItsBus = nil
            }
            switch hop.aliasing {
            case .none: continue
            case .secondaryBus: alias = RequesterID(bus: secondary, devfn: 0)
            case .bridgeItself: bridgeAwaitingItsBus = hop.devfn
            }
        }
        if let bridgeDevfn = bridgeAwaitingItsBus { alias = RequesterID(bus: 0, devfn: bridgeDevfn) }
        return DMARequester(id: id, alias: alias)
    }
}
