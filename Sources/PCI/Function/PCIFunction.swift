import VMMBase

/// One PCI function as the platform sees it. Config accesses arrive already split into
/// in-range pieces (`offset + width <= 4096`, width 1, 2 or 4); a write returns its effects
/// for the caller to apply once the function's lock is released.
public protocol PCIFunction: AnyObject, Sendable {
    /// A short name for logs and the monitor ("mch", "rp1", "testdev3").
    var name: String { get }
    func configRead(_ offset: Int, width: AccessWidth) -> UInt32
    func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects
    /// A copy of the config space as the guest reads it (monitors, lspci-style dumps).
    func configSnapshot() -> ConfigSpace
    /// A copy that is exact in what the platform decodes: Command, the BARs and ROM, bridge
    /// windows and bus numbers, the interrupt pin, the capability chain and SR-IOV control.
    /// Mappings and interrupt routing read this. Other bytes may be stale.
    func decodeSnapshot() -> ConfigSpace
    /// An access to BAR `index` (the ROM is index 6) at `offset` within it.
    func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64
    func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64)
    /// Returns to the power-on state (a conventional reset).
    func reset()
    /// A reset of `kind`; a function whose kinds differ (an assigned device) tells them apart.
    func reset(_ kind: PCIResetKind)
}

extension PCIFunction {
    /// Most functions hold their whole config space: the two snapshots are the same copy.
    public func decodeSnapshot() -> ConfigSpace { configSnapshot() }
    public func reset(_ kind: PCIResetKind) { reset() }
    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 { width.allOnes }
    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {}
}

/// A function that holds something of the host's beyond its own memory (device files, an I/O
/// thread, a netdev claimed from the machine). The machine calls `unrealize` once, after the
/// function was unplugged or when it was built but never placed, and the function gives it back.
public protocol HostResourceHolder: PCIFunction {
    func unrealize()
}

/// Primary, secondary and subordinate bus numbers of a bridge.
public struct BridgeBusNumbers: Sendable, Hashable {
    public var primary: UInt8
    public var secondary: UInt8
    public var subordinate: UInt8

    public init(primary: UInt8, secondary: UInt8, subordinate: UInt8) {
        self.primary = primary
        self.secondary = secondary
        self.subordinate = subordinate
    }

    /// True when config cycles for `bus` go through this bridge.
    public func forwards(_ bus: UInt8) -> Bool { secondary != 0 && bus >= secondary && bus <= subordinate }
}

/// A function that forwards config cycles to a secondary bus (PCI-PCI bridge, PCIe port).
/// Routing asks it, by bus number, which bus lies behind it.
public protocol PCIBridgeFunction: PCIFunction {
    var secondary: PCIBus { get }
    var busNumbers: BridgeBusNumbers { get }
    /// False while nothing behind the bridge can answer (a PCIe slot whose power is off):
    /// config cycles for its buses then end in a master abort.
    var passesConfigCycles: Bool { get }
}

extension PCIBridgeFunction {
    public var passesConfigCycles: Bool { true }
}
