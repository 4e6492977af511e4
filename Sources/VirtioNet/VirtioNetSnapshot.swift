import Virtio
import VMMBase

/// virtio-net's own state in the transport's snapshot: what the control queue set (MAC, receive
/// mode, MAC tables, VLAN filter, queue pairs in use, the announce bit) and the link. The
/// backend (tap or macvtap fds) and the I/O thread are not state.
extension VirtioNetDevice {
    public static let snapshotModel = "virtio-net"

    /// Taken with the vCPUs stopped, so the driver sends no new control command; one it
    /// kicked before may still be served on the I/O thread, but each is applied whole under
    /// the state's lock, so the snapshot holds it entirely or not at all.
    public func snapshotState() -> ModelState? {
        let control = shared.control.withLock { $0 }
        return ModelState(model: Self.snapshotModel, NetState(control, linkUp: shared.linkUp.load(ordering: .acquiring)))
    }

    /// The transport calls the result after its reset joined the old I/O thread and before
    /// `activate` starts the next one, so no thread reads the state while it is replaced,
    /// and the first frame after the restore is filtered and steered by the restored state.
    public func prepareRestore(_ state: ModelState?) throws(DeviceStateError) -> @Sendable () -> Void {
        guard let state else { throw .layoutMismatch(device: name, reason: "no virtio-net state in the snapshot") }
        let taken = try state.snapshot(as: NetState.self, model: Self.snapshotModel, device: name)
        let control = try taken.control(maximumPairs: maximumPairs, device: name)
        let linkUp = taken.linkUp
        return { [shared] in
            shared.control.withLock { $0 = control }
            shared.linkUp.store(linkUp, ordering: .releasing)
        }
    }
}

/// The state as a snapshot holds it: untrusted when restored (`control` checks it).
struct NetState: Sendable, Hashable, Codable {
    var mac: MACAddress
    var linkUp: Bool
    var announcing: Bool
    var activePairs: Int
    var promiscuous, allMulticast, allUnicast, noMulticast, noUnicast, noBroadcast: Bool
    var unicastTable, multicastTable: [MACAddress]
    var unicastOverflow, multicastOverflow: Bool
    /// Absent: no VLAN filtering (CTRL_VLAN not negotiated).
    var vlans: [UInt16]?

    init(_ control: ControlState, linkUp: Bool) {
        let f = control.filter
        mac = f.mac
        self.linkUp = linkUp
        announcing = control.announcing
        activePairs = control.activePairs
        (promiscuous, allMulticast, allUnicast) = (f.promiscuous, f.allMulticast, f.allUnicast)
        (noMulticast, noUnicast, noBroadcast) = (f.noMulticast, f.noUnicast, f.noBroadcast)
        (unicastTable, multicastTable) = (f.unicastTable, f.multicastTable)
        (unicastOverflow, multicastOverflow) = (f.unicastOverflow, f.multicastOverflow)
        vlans = f.vlans?.sorted()
    }

    /// The control state for a device offering `maximumPairs`; refuses what the device could
    /// never hold (a table past QEMU's 64 entries, a VLAN id past 4095, more pairs than offered).
    func control(maximumPairs: Int, device: String) throws(DeviceStateError) -> ControlState {
        func refuse(_ reason: String) -> DeviceStateError { .invalidValue(device: device, reason: reason) }
        for (name, table) in [("unicastTable", unicastTable), ("multicastTable", multicastTable)]
        where table.count > ReceiveFilter.tableLimit {
            throw refuse("\(name) has \(table.count) entries, more than \(ReceiveFilter.tableLimit)")
        }
        if let vlans, let bad = vlans.first(where: { $0 > 4095 }) { throw refuse("VLAN id \(bad) is past 4095") }
        guard (1...maximumPairs).contains(activePairs) else {
            throw refuse("activePairs \(activePairs) is not in 1...\(maximumPairs)")
        }
        var filter = ReceiveFilter(mac: mac)
        (filter.promiscuous, filter.allMulticast, filter.allUnicast) = (promiscuous, allMulticast, allUnicast)
        (filter.noMulticast, filter.noUnicast, filter.noBroadcast) = (noMulticast, noUnicast, noBroadcast)
        (filter.unicastTable, filter.multicastTable) = (unicastTable, multicastTable)
        (filter.unicastOverflow, filter.multicastOverflow) = (unicastOverflow, multicastOverflow)
        filter.vlans = vlans.map(Set.init)
        var control = ControlState(filter: filter, maximumPairs: maximumPairs)
        control.activePairs = activePairs
        control.announcing = announcing
        return control
    }
}
