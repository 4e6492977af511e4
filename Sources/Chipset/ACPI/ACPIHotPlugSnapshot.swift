import VMMBase

extension ACPIHotPlugController: DeviceStateSnapshotting {
    /// What the guest sees through the register block: the bus select (BNUM), a latched
    /// acpi-index (PIDX), and per BSEL the pending plug (PCIU) and removal (PCID) bits with
    /// the slots the bus holds.
    public struct Snapshot: Sendable, Hashable, Codable {
        var select: UInt32
        var acpiIndex: UInt32
        var buses: [UInt32: BusSnapshot]
    }

    public struct BusSnapshot: Sendable, Hashable, Codable {
        var up: UInt32
        var down: UInt32
        var slots: ACPIHotPlugBus.Snapshot
    }

    public func snapshot() -> Snapshot {
        state.withLock { s in
            Snapshot(select: s.select, acpiIndex: s.acpiIndex, buses: s.buses.mapValues { bus in
                let status = s.status[bus.bsel] ?? BusState()
                return BusSnapshot(up: status.up, down: status.down, slots: bus.snapshot())
            })
        }
    }

    /// Refuses a snapshot of another set of BSELs (the machine registers them from its
    /// topology) or whose slots do not fit a bus; then changes nothing.
    public func restore(_ snapshot: Snapshot) throws(DeviceStateError) {
        try state.withLock { s throws(DeviceStateError) in
            guard Set(snapshot.buses.keys) == Set(s.buses.keys) else {
                throw .layoutMismatch(device: "acpi-pci-hotplug",
                                      reason: "BSELs \(snapshot.buses.keys.sorted()), not \(s.buses.keys.sorted())")
            }
            for (bsel, bus) in s.buses { try bus.check(snapshot.buses[bsel]!.slots) }
            s.select = snapshot.select
            s.acpiIndex = snapshot.acpiIndex
            for (bsel, bus) in s.buses {
                let saved = snapshot.buses[bsel]!
                s.status[bsel] = BusState(up: saved.up, down: saved.down)
                bus.replaceState(with: saved.slots)
            }
        }
    }
}

extension ACPIHotPlugBus {
    /// The occupied slots (what B0EJ can eject) and those fixed by a cold-plugged bridge.
    public struct Snapshot: Sendable, Hashable, Codable {
        var occupied: Set<UInt8>
        var fixed: Set<UInt8>
    }

    func snapshot() -> Snapshot { state.withLock { Snapshot(occupied: $0.occupied, fixed: $0.fixed) } }

    /// Which slots hold a bridge is fixed by the command line; a bus has 32 slots.
    func check(_ snapshot: Snapshot) throws(DeviceStateError) {
        let fixed = state.withLock { $0.fixed }
        guard snapshot.fixed == fixed else {
            throw .layoutMismatch(device: name, reason: "bridges in slots \(snapshot.fixed.sorted()), not \(fixed.sorted())")
        }
        let stray = snapshot.occupied.filter { $0 >= 32 }
        guard stray.isEmpty else {
            throw .invalidValue(device: name, reason: "slots \(stray.sorted()) do not exist")
        }
    }

    func replaceState(with snapshot: Snapshot) { state.withLock { $0.occupied = snapshot.occupied } }
}
