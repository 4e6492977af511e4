import PCI

extension Machine {
    /// A bridge's Secondary Bus Reset (asserted, 0 to 1) or a Function Level Reset of the
    /// bridge itself resets every function below it, through bridges further down. Applied
    /// here, after the bridge's lock is released, so no device lock is held across devices.
    func applyResets(_ effects: ConfigWriteEffects, from function: any PCIFunction) {
        guard let bridge = function as? any PCIBridgeFunction,
              !effects.isDisjoint(with: [.secondaryBusReset, .functionLevelReset]) else { return }
        spaces.batched {
            bridge.secondary.resetAll(.secondaryBus)
            // Bus numbers, windows and BARs below are back at their reset values.
            topologyChanged()
        }
    }
}
