import AddressSpace
import Chipset
import PCI
import Synchronization
import VMMBase

/// The machine's memory and port spaces, in two committed layers that are each a flattened
/// region tree: the platform layer (RAM, PAM/SMRAM decode, ECAM, chipset ports) and, below it
/// in priority, the PCI layer (BARs routed through bridge windows). A change commits the
/// layer it touches before the access that made it returns (a vCPU resumes against the new
/// views and memory slots). Firmware enumeration runs in a batch: thousands of BAR writes,
/// one PCI commit at the end.
final class MachineAddressSpaces: Sendable {
    let platform: CommittedLayer
    let pci: CommittedLayer
    /// Each bus's trees from earlier commits: a commit builds again only the buses it must.
    private let busTrees: BusTreeCache
    /// Open batches, and whether the PCI layer changed inside them.
    private let batch = Mutex<(depth: Int, pciChanged: Bool)>((0, false))

    init(rootBus: PCIBus, barWriteObserver: @escaping @Sendable (any PCIFunction) -> Void,
         composePCI: (@Sendable () -> (memory: Region, io: Region))? = nil,
         composePlatform: @escaping @Sendable () -> (memory: Region, io: Region)) {
        let trees = BusTreeCache(afterWrite: barWriteObserver)
        busTrees = trees
        pci = CommittedLayer(compose: composePCI ?? { PCIMappings.compose(root: rootBus, cache: trees) })
        platform = CommittedLayer(compose: composePlatform)
    }

    func rebuildPlatform() { platform.commit() }

    /// After a change that may touch any bus (plug, unplug, reset): commits the PCI layer
    /// with every bus built again.
    func invalidatePCI() {
        busTrees.invalidateAll()
        commitPCI()
    }

    private func commitPCI() {
        let deferred = batch.withLock { state in
            if state.depth > 0 { state.pciChanged = true }
            return state.depth > 0
        }
        if !deferred { pci.commit() }
    }

    /// Commits the PCI layer if attaching or detaching `functions` can change it: one of them
    /// decodes memory or I/O now, or the published views still show one of its BARs. A function
    /// that decodes neither shows no BAR and forwards through no window (one just plugged, in
    /// its power-on state), so plugging it costs no commit. Every bus is built again at the next
    /// commit either way: the kept trees know the hierarchy as it was.
    func invalidatePCI(ifAffecting functions: [any PCIFunction]) {
        busTrees.invalidateAll()
        let decoding = functions.contains {
            let command = $0.decodeSnapshot().command
            return command.contains(.memory) || command.contains(.io)
        }
        if decoding || shows(functions) { commitPCI() }
    }

    private func shows(_ functions: [any PCIFunction]) -> Bool {
        let wanted = Set(functions.map { ObjectIdentifier($0) })
        let views = pci.views
        return (views.memory.entries + views.io.entries).contains {
            guard let bar = $0.handler as? BARHandler else { return false }
            return wanted.contains(ObjectIdentifier(bar.function))
        }
    }

    /// Runs `body` with PCI-layer commits held back, then commits that layer once if it
    /// changed. Only for code that runs while no vCPU runs (firmware enumeration, reset):
    /// inside the batch BARs lag behind the config spaces. The platform layer (ECAM, which
    /// enumeration uses) still commits at once.
    func batched<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        batch.withLock { $0.depth += 1 }
        defer {
            let changed = batch.withLock { state -> Bool in
                state.depth -= 1
                guard state.depth == 0 else { return false }
                defer { state.pciChanged = false }
                return state.pciChanged
            }
            if changed { pci.commit() }
        }
        return try body()
    }

    private func view(io: Bool) -> (platform: FlatView, pci: FlatView) {
        let kind: AddressSpaceKind = io ? .io : .memory
        return (platform.view(kind), pci.view(kind))
    }

    func read(io: Bool, at address: UInt64, width: AccessWidth) -> UInt64 {
        let kind: AddressSpaceKind = io ? .io : .memory
        return platform.view(kind).readIfMapped(at: address, width: width) ?? pci.view(kind).read(at: address, width: width)
    }

    func write(io: Bool, at address: UInt64, width: AccessWidth, value: UInt64) {
        let kind: AddressSpaceKind = io ? .io : .memory
        if !platform.view(kind).writeIfMapped(at: address, width: width, value: value) {
            pci.view(kind).write(at: address, width: width, value: value)
        }
    }

    /// Where `address` falls in `ram` as the platform layer maps it now (PAM and SMRAM
    /// included): the offset into `ram` and how many bytes from there stay in the same mapping.
    func ramRun(at address: UInt64, in ram: RAMHandler) -> (offset: UInt64, count: UInt64)? {
        guard let entry = platform.view(.memory).entry(containing: address), entry.handler === ram else { return nil }
        let into = address - entry.range.base
        let (offset, overflow) = entry.handlerOffset.addingReportingOverflow(into)
        guard !overflow, offset < ram.size else { return nil }
        // last - address may be 2^64 - 1 only for a region covering everything: clamp to RAM.
        let inRegion = entry.range.last - address
        return (offset, min(inRegion, ram.size - offset - 1) + 1)
    }

    /// Text of both layers, for debugging ("info mtree"-like).
    func describe(io: Bool) -> String {
        let views = view(io: io)
        return "platform:\n" + views.platform.summary + "\npci:\n" + views.pci.summary
    }

    var rebuildCounts: (platform: Int, pci: Int) { (platform.commitCount, pci.commitCount) }

    /// Applies what a config write changed to the mappings.
    func apply(_ effects: ConfigWriteEffects, from function: any PCIFunction, at address: PCIAddress) {
        if effects.affectsMappings && !Self.leavesViewsAlone(effects, function) {
            busTrees.invalidate(after: function)
            commitPCI()
        }
        if effects.contains(.deviceSpecific) && address.bus == 0 && (function is Q35HostBridge || function is ICH9LPC) {
            rebuildPlatform()
        }
    }

    /// A BAR or ROM address written while the function decodes neither memory nor I/O shows
    /// nowhere (what BAR sizing does): nothing to commit.
    private static func leavesViewsAlone(_ effects: ConfigWriteEffects, _ function: any PCIFunction) -> Bool {
        guard effects.isSubset(of: [.anyBAR, .romChanged]) else { return false }
        let command = function.decodeSnapshot().command
        return !command.contains(.memory) && !command.contains(.io)
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
