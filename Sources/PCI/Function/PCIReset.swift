/// Why a function returns to its reset state. Emulated functions treat every kind alike; an
/// assigned device maps each to what its host can do (FLR, bus reset).
public enum PCIResetKind: Sendable, Hashable, CaseIterable {
    /// Power-on (a new machine, or a hot-plugged function).
    case cold
    /// Platform reset (QMP `system_reset`, a guest reboot through the reset control).
    case warm
    /// Function Level Reset initiated through the function's own Device Control.
    case functionLevel
    /// Secondary Bus Reset asserted by a bridge above the function.
    case secondaryBus
}

extension PCIBus {
    /// Resets every function on this bus and, through bridges, on every bus below, each once.
    /// Called with no function's lock held: the machine applies resets as effects.
    public func resetAll(_ kind: PCIResetKind) {
        for (_, function) in functions {
            function.reset(kind)
            (function as? any PCIBridgeFunction)?.secondary.resetAll(kind)
        }
    }
}
