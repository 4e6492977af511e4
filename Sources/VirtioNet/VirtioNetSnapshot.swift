import Virtio
import VMMBase

/// virtio-net's own state in the transport's snapshot: what the control queue set (MAC, receive
/// mode, MAC tables, VLAN filter, queue pairs in use, the announce bit) and the link. The
/// backend (tap or macvtap fds) and the I/O thread are not state.
extension VirtioNetDevice {
    /// Taken with the vCPUs stopped, so the driver sends no new control command; one it
    /// kicked before may still be served on the I/O thread, but each is applied whole under
    /// the state's lock, so the snapshot holds it entirely or not at all.
    public func snapshotState() -> StateValue? {
        let control = shared.control.withLock { $0 }
        return control.stateValue(linkUp: shared.linkUp.load(ordering: .acquiring))
    }

    /// The transport calls the result after its reset joined the old I/O thread and before
    /// `activate` starts the next one, so no thread reads the state while it is replaced,
    /// and the first frame after the restore is filtered and steered by the restored state.
    public func prepareRestore(_ state: StateValue?) throws(DeviceStateError) -> @Sendable () -> Void {
        guard let state else { throw .layoutMismatch(device: name, reason: "no virtio-net state in the snapshot") }
        let (control, linkUp) = try ControlState.restored(from: StateValue.Reader(state, device: name), maximumPairs: maximumPairs)
        return { [shared] in
            shared.control.withLock { $0 = control }
            shared.linkUp.store(linkUp, ordering: .releasing)
        }
    }
}

extension ControlState {
    func stateValue(linkUp: Bool) -> StateValue {
        let f = filter
        var fields: [String: StateValue] = [
            "mac": .bytes(f.mac.bytes), "linkUp": .bool(linkUp), "announcing": .bool(announcing),
            "activePairs": .integer(Int64(activePairs)),
            "promiscuous": .bool(f.promiscuous), "allMulticast": .bool(f.allMulticast), "allUnicast": .bool(f.allUnicast),
            "noMulticast": .bool(f.noMulticast), "noUnicast": .bool(f.noUnicast), "noBroadcast": .bool(f.noBroadcast),
            "unicastTable": .array(f.unicastTable.map { .bytes($0.bytes) }),
            "multicastTable": .array(f.multicastTable.map { .bytes($0.bytes) }),
            "unicastOverflow": .bool(f.unicastOverflow), "multicastOverflow": .bool(f.multicastOverflow),
        ]
        // Absent: no VLAN filtering (CTRL_VLAN not negotiated).
        if let vlans = f.vlans { fields["vlans"] = .array(vlans.sorted().map { .integer(Int64($0)) }) }
        return .object(fields)
    }

    /// The state `value` describes for a device offering `maximumPairs`; refuses what the
    /// device could never hold (a table past QEMU's 64 entries, a VLAN id past 4095, more
    /// pairs than offered).
    static func restored(from value: StateValue.Reader,
                         maximumPairs: Int) throws(DeviceStateError) -> (control: ControlState, linkUp: Bool) {
        func table(_ key: String) throws(DeviceStateError) -> [MACAddress] {
            let entries = try value.field(key).array()
            guard entries.count <= ReceiveFilter.tableLimit else {
                throw .invalidValue(device: value.device, reason: "\(key) has \(entries.count) entries, more than \(ReceiveFilter.tableLimit)")
            }
            var addresses: [MACAddress] = []
            for entry in entries { addresses.append(MACAddress(bytes: try entry.bytes(count: 6))!) }
            return addresses
        }
        var filter = ReceiveFilter(mac: MACAddress(bytes: try value.field("mac").bytes(count: 6))!)
        filter.promiscuous = try value.field("promiscuous").bool()
        filter.allMulticast = try value.field("allMulticast").bool()
        filter.allUnicast = try value.field("allUnicast").bool()
        filter.noMulticast = try value.field("noMulticast").bool()
        filter.noUnicast = try value.field("noUnicast").bool()
        filter.noBroadcast = try value.field("noBroadcast").bool()
        filter.unicastTable = try table("unicastTable")
        filter.multicastTable = try table("multicastTable")
        filter.unicastOverflow = try value.field("unicastOverflow").bool()
        filter.multicastOverflow = try value.field("multicastOverflow").bool()
        if let listed = try value.fieldIfPresent("vlans") {
            var vlans: Set<UInt16> = []
            for vid in try listed.array() { vlans.insert(UInt16(try vid.integer(in: 0...4095))) }
            filter.vlans = vlans
        }
        var control = ControlState(filter: filter, maximumPairs: maximumPairs)
        control.activePairs = try value.field("activePairs").integer(in: 1...maximumPairs)
        control.announcing = try value.field("announcing").bool()
        return (control, try value.field("linkUp").bool())
    }
}
