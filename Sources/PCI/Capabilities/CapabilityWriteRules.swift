extension ConfigSpace {
    /// Guest-write rules that per-bit masks cannot express, applied byte by byte to bytes a
    /// capability owns: ignoring an unsupported D-state, clamping MSI Multiple Message Enable,
    /// and reporting write-only commands (Slot Control, Initiate FLR). Each capability's rule
    /// lives next to its builder. Returns the byte to store.
    func applyCapabilityRules(at offset: Int, old: UInt8, proposed: UInt8, written: UInt8,
                              effects: inout ConfigWriteEffects) -> UInt8 {
        let record = capabilities[ownerIndex(offset) - 1]
        let relative = offset - record.offset
        switch record.kind {
        case .standard(CapabilityID.powerManagement):
            return powerManagementRule(relative: relative, capabilityOffset: record.offset, old: old,
                                       proposed: proposed, effects: &effects)
        case .standard(CapabilityID.msi):
            return msiRule(relative: relative, old: old, proposed: proposed)
        case .standard(CapabilityID.pciExpress):
            return pciExpressRule(relative: relative, capabilityOffset: record.offset, proposed: proposed,
                                  written: written, effects: &effects)
        default:
            return proposed
        }
    }
}
