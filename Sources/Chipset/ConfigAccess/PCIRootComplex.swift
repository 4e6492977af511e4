import PCI
import Synchronization
import VMMBase

/// Receives what config writes changed, after the function's lock is released. The machine
/// implements it to remap BARs and windows; tests may record.
public protocol ConfigEffectSink: AnyObject, Sendable {
    func apply(_ effects: ConfigWriteEffects, from function: any PCIFunction, at address: PCIAddress)
}

/// The root of one PCI segment: the host bridge's view of bus numbers. Every config cycle,
/// whether it came through CF8/CFC or ECAM, is routed here and then through bridges by bus
/// number. An access to nothing reads all-ones and a write is dropped (master abort).
public final class PCIRootComplex: Sendable {
    public let segment: UInt16
    public let rootBus: PCIBus
    /// The root bus's number (0 on q35).
    public let rootBusNumber: UInt8
    private let effectSink: any ConfigEffectSink
    /// Bus number -> bus, filled on demand by walking the bridges. Dropped whenever bus
    /// numbers or the topology may have changed, so routing stays what the bridges say.
    private let routes = Mutex(RouteTable())
    private enum Route { case unknown, absent, present(PCIBus) }
    private struct RouteTable {
        var entries = [Route](repeating: .unknown, count: 256)
        /// Bumped by every invalidation, so a walk that raced with one is not cached.
        var generation = 0
    }
    /// Config cycles in progress: a detach waits for those routed before it (`invalidateRoutes`).
    private let cycles = GracePeriod()

    public init(segment: UInt16 = 0, rootBus: PCIBus, rootBusNumber: UInt8 = 0, effectSink: any ConfigEffectSink) {
        self.segment = segment
        self.rootBus = rootBus
        self.rootBusNumber = rootBusNumber
        self.effectSink = effectSink
    }

    /// Forgets cached routes: call after attaching or detaching functions, or resetting them.
    /// Config writes through this root complex invalidate on their own. Cycles routed before
    /// may still reach a detached function: `waitForCyclesInProgress` waits them out.
    public func invalidateRoutes() {
        routes.withLock { table in
            table.entries = [Route](repeating: .unknown, count: 256)
            table.generation += 1
        }
    }

    /// Returns once every config cycle that began before the call has ended (after a detach,
    /// no cycle can reach the detached function any more). `pause` waits between checks.
    public func waitForCyclesInProgress(pause: () -> Void) {
        cycles.waitForCallsInProgress(pause: pause)
    }

    /// The bus that config cycles for `number` reach, or nil (master abort).
    public func bus(_ number: UInt8) -> PCIBus? {
        let (route, generation) = routes.withLock { ($0.entries[Int(number)], $0.generation) }
        switch route {
        case .present(let bus): return bus
        case .absent: return nil
        case .unknown:
            let found = rootBus.resolve(number, thisBusNumber: rootBusNumber)
            routes.withLock { table in
                if table.generation == generation { table.entries[Int(number)] = found.map { .present($0) } ?? .absent }
            }
            return found
        }
    }

    /// The bus the bridges number `number`, also when it lies behind a slot whose power is off
    /// (firmware tables describe such buses, empty). Not cached: for descriptions, not cycles.
    public func numberedBus(_ number: UInt8) -> PCIBus? {
        rootBus.resolve(number, thisBusNumber: rootBusNumber, ignoringPower: true)
    }

    public func function(bus: UInt8, devfn: UInt8) -> (any PCIFunction)? {
        self.bus(bus)?.function(at: devfn)
    }

    /// A config read of 1, 2 or 4 bytes. Accesses that cross a dword boundary are split into
    /// bytes, so each register sees only in-range, register-local accesses.
    public func configRead(bus: UInt8, devfn: UInt8, offset: Int, width: AccessWidth) -> UInt32 {
        guard offset >= 0, offset < ConfigSpace.expressSize else { return UInt32(truncatingIfNeeded: width.allOnes) }
        let epoch = cycles.enter()
        defer { cycles.leave(epoch) }
        guard let function = function(bus: bus, devfn: devfn) else {
            return UInt32(truncatingIfNeeded: width.allOnes)
        }
        if width == .qword || offset % 4 + width.bytes > 4 {
            var value: UInt64 = 0
            for i in 0..<width.bytes {
                let byte: UInt64 = offset + i < ConfigSpace.expressSize
                    ? UInt64(function.configRead(offset + i, width: .byte) & 0xFF) : 0xFF
                value |= byte << (8 * UInt64(i))
            }
            return UInt32(truncatingIfNeeded: value)
        }
        return function.configRead(offset, width: width)
    }

    public func configWrite(bus: UInt8, devfn: UInt8, offset: Int, width: AccessWidth, value: UInt32) {
        guard offset >= 0, offset < ConfigSpace.expressSize else { return }
        // The cycle ends before its effects apply: applying them may detach functions and wait
        // for the cycles in progress.
        let written = cycles.during { () -> (function: any PCIFunction, effects: ConfigWriteEffects)? in
            guard let function = function(bus: bus, devfn: devfn) else { return nil }
            var effects: ConfigWriteEffects = []
            if width == .qword || offset % 4 + width.bytes > 4 {
                for i in 0..<min(width.bytes, 4) where offset + i < ConfigSpace.expressSize {
                    effects.formUnion(function.configWrite(offset + i, width: .byte,
                                                           value: (value >> (8 * UInt32(i))) & 0xFF))
                }
            } else {
                effects = function.configWrite(offset, width: width, value: value)
            }
            return (function, effects)
        }
        guard let (function, effects) = written else { return }
        // Slot Control writes may switch a slot's power, which gates config cycles behind it.
        if !effects.intersection([.busNumbersChanged, .bridgeControlChanged, .slotControlWritten]).isEmpty { invalidateRoutes() }
        if !effects.isEmpty {
            effectSink.apply(effects, from: function, at: PCIAddress(segment: segment, bus: bus, devfn: devfn))
        }
    }
}
