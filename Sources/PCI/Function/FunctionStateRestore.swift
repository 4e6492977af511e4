import VMMBase

/// The rules every PCI function's restore shares: a snapshot's config space must have this
/// function's layout, and the INTx pin follows the restored arbiter.
extension ConfigSpace {
    /// Throws unless `snapshot` has this config space's layout: header, size, capabilities
    /// and BARs (what a device model fixes at realize). Writable bits are state, not layout:
    /// lock bits (SMRAM's D_LCK, the LPC's locks) make registers read-only at run time.
    public func checkLayout(of snapshot: ConfigSpace, device: String) throws(DeviceStateError) {
        let differences = [
            (layout != snapshot.layout || size != snapshot.size, "header or size"),
            (capabilities != snapshot.capabilities, "capability list"),
            (bars != snapshot.bars || rom != snapshot.rom, "BARs"),
        ].filter(\.0).map(\.1)
        guard differences.isEmpty else {
            throw .layoutMismatch(device: device, reason: "different " + differences.joined(separator: ", "))
        }
    }
}

extension InterruptArbiter {
    /// Throws unless `snapshot` has this arbiter's MSI-X layout.
    public func checkLayout(of snapshot: InterruptArbiter, device: String) throws(DeviceStateError) {
        guard msixTable?.layout == snapshot.msixTable?.layout else {
            throw .layoutMismatch(device: device, reason: "different MSI-X table")
        }
    }

    /// What to send when this state is replaced by `snapshot`: the pin's new level, if any.
    public func delivery(restoring snapshot: InterruptArbiter) -> InterruptDelivery {
        InterruptDelivery(intx: intxDriven == snapshot.intxDriven ? nil : snapshot.intxDriven)
    }
}
