import AddressSpace
import Chipset
import PCI
import Synchronization
import VMMBase

/// The machine's memory and port spaces, in two layers that are each a flattened region
/// tree: the platform layer (RAM, ECAM, chipset ports) and, below it in priority, the PCI
/// layer (BARs routed through bridge windows). Each layer is rebuilt only when something it
/// shows changed, and the PCI layer lazily, on the first access after a change: firmware
/// enumeration moves thousands of BARs with config cycles alone and pays for one rebuild.
final class MachineAddressSpaces: Sendable {
    private struct Views {
        var platformMemory: FlatView
        var platformIO: FlatView
        var pciMemory: FlatView?
        var pciIO: FlatView?
        var pciRebuilds = 0
        var platformRebuilds = 0
        /// Bumped by every invalidation: a view built from state older than this is never cached.
        var pciGeneration = 0
        /// Bumped by every platform rebuild that starts: only the newest one stores its views.
        var platformGeneration = 0
    }

    private let views: Mutex<Views>
    private let composePlatform: @Sendable () -> (memory: Region, io: Region)
    /// Renders the PCI layer's region trees from the live topology.
    private let composePCI: @Sendable () -> (memory: Region, io: Region)

    init(rootBus: PCIBus, barWriteObserver: @escaping @Sendable (any PCIFunction) -> Void,
         composePCI: (@Sendable () -> (memory: Region, io: Region))? = nil,
         composePlatform: @escaping @Sendable () -> (memory: Region, io: Region)) {
        self.composePCI = composePCI ?? { PCIMappings.build(bus: rootBus, observer: barWriteObserver) }
        self.composePlatform = composePlatform
        let platform = composePlatform()
        views = Mutex(Views(platformMemory: FlatView(rendering: platform.memory),
                            platformIO: FlatView(rendering: platform.io)))
    }

    func rebuildPlatform() {
        let generation = views.withLock { $0.platformGeneration += 1; return $0.platformGeneration }
        let platform = composePlatform()
        let memory = FlatView(rendering: platform.memory), io = FlatView(rendering: platform.io)
        views.withLock {
            // A rebuild that started later composed newer state: it stores, not this one.
            guard $0.platformGeneration == generation else { return }
            $0.platformMemory = memory
            $0.platformIO = io
            $0.platformRebuilds += 1
        }
    }

    func invalidatePCI() {
        views.withLock {
            $0.pciMemory = nil
            $0.pciIO = nil
            $0.pciGeneration += 1
        }
    }

    private func platform(io: Bool) -> FlatView {
        views.withLock { io ? $0.platformIO : $0.platformMemory }
    }

    /// The PCI layer, rebuilt first if something invalidated it.
    private func pci(io: Bool) -> FlatView {
        var attempts = 0
        while true {
            let (ready, generation) = views.withLock { ((io ? $0.pciIO : $0.pciMemory), $0.pciGeneration) }
            if let ready { return ready }
            // Build outside the lock: building takes device locks for config snapshots.
            let trees = composePCI()
            let memory = FlatView(rendering: trees.memory), ioView = FlatView(rendering: trees.io)
            let current = views.withLock { v -> Bool in
                // Invalidated while building (a device left, a BAR moved): this view may show
                // what is gone, so it is not cached; build again from the newer state.
                guard v.pciGeneration == generation else { return false }
                v.pciMemory = memory
                v.pciIO = ioView
                v.pciRebuilds += 1
                return true
            }
            attempts += 1
            // Under a storm of invalidations, serve this access from the view just built.
            if current || attempts >= 4 { return io ? ioView : memory }
        }
    }

    func read(io: Bool, at address: UInt64, width: AccessWidth) -> UInt64 {
        platform(io: io).readIfMapped(at: address, width: width) ?? pci(io: io).read(at: address, width: width)
    }

    func write(io: Bool, at address: UInt64, width: AccessWidth, value: UInt64) {
        if !platform(io: io).writeIfMapped(at: address, width: width, value: value) {
            pci(io: io).write(at: address, width: width, value: value)
        }
    }

    /// Where `address` falls in `ram` as the platform layer maps it now (PAM and SMRAM
    /// included): the offset into `ram` and how many bytes from there stay in the same mapping.
    func ramRun(at address: UInt64, in ram: RAMHandler) -> (offset: UInt64, count: UInt64)? {
        guard let entry = platform(io: false).entry(containing: address), entry.handler === ram else { return nil }
        let into = address - entry.range.base
        let (offset, overflow) = entry.handlerOffset.addingReportingOverflow(into)
        guard !overflow, offset < ram.size else { return nil }
        // last - address may be 2^64 - 1 only for a region covering everything: clamp to RAM.
        let inRegion = entry.range.last - address
        return (offset, min(inRegion, ram.size - offset - 1) + 1)
    }

    /// Text of both layers, for debugging ("info mtree"-like).
    func describe(io: Bool) -> String {
        "platform:\n" + platform(io: io).summary + "\npci:\n" + pci(io: io).summary
    }

    var rebuildCounts: (platform: Int, pci: Int) { views.withLock { ($0.platformRebuilds, $0.pciRebuilds) } }

    /// Applies what a config write changed to the mappings.
    func apply(_ effects: ConfigWriteEffects, from function: any PCIFunction, at address: PCIAddress) {
        if effects.affectsMappings { invalidatePCI() }
        if effects.contains(.deviceSpecific) && address.bus == 0 && (function is Q35HostBridge || function is ICH9LPC) {
            rebuildPlatform()
        }
    }
}

/// Forwards effects to a machine it does not own, breaking the reference cycle
/// machine -> root complex -> sink -> machine.
final class WeakEffectSink: ConfigEffectSink {
    private struct Box: @unchecked Sendable { weak var target: Machine? }
    private let box = Mutex(Box())

    func connect(_ target: Machine) { box.withLock { $0.target = target } }

    var target: Machine? { box.withLock { $0.target } }

    func apply(_ effects: ConfigWriteEffects, from function: any PCIFunction, at address: PCIAddress) {
        target?.apply(effects, from: function, at: address)
    }
}
