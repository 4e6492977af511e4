import AddressSpace
import PCI
import Synchronization

/// What earlier compositions built for each PCI bus: its region trees, so a commit builds again
/// only the buses a change touched (a BAR moved on one bus of sixteen reads that bus's
/// functions and the bridges above it, not every function), and the handlers of its BARs, so a
/// diff sees a BAR that stayed as unchanged and one that moved as the same handler at a new
/// range. A config write that changes mappings marks its function's bus and the buses above it
/// (whose trees alias it) stale; anything else (plug, unplug, reset, a function no composition
/// has seen) marks every bus stale. A bus that a composition did not reach is gone: it is
/// forgotten when that composition ends, with its handlers.
///
/// Compositions may run at once (commits compose outside locks). Staleness is a version per
/// bus, not a flag a composition clears: a composition uses a kept tree only when it was built
/// at the bus's current version, read when the composition reaches the bus, so one that
/// starts after a change never reuses a tree built before it.
final class BusTreeCache: Sendable {
    struct Trees: Sendable {
        var memory: Region
        var io: Region
    }

    /// What building a bus gave: its trees, every bus they contain (it first), and the
    /// functions on it.
    struct Built {
        var trees: Trees
        var buses: [ObjectIdentifier]
        var functions: [ObjectIdentifier]
    }

    private struct Stamp: Comparable {
        var epoch: Int
        var version: Int

        static func < (a: Stamp, b: Stamp) -> Bool { (a.epoch, a.version) < (b.epoch, b.version) }
    }

    private struct Entry {
        /// From `State.nextVersion`: unique, so a tree stored with a stamp read before a change
        /// never matches after it, even in an entry forgotten and made again meanwhile.
        var version: Int
        var parent: ObjectIdentifier?
        var built: (trees: Trees, stamp: Stamp, buses: [ObjectIdentifier])?
        var functions: [ObjectIdentifier] = []
        /// The handlers the last build of this bus gave its BARs (see `BARHandlerTable`).
        var handlers: [BARHandler?] = []
        /// The latest composition that built or kept this bus.
        var reachedIn = 0
    }

    private struct State {
        /// Bumped by a change that may touch any bus.
        var epoch = 0
        var versions = 0
        var composition = 0
        var buses: [ObjectIdentifier: Entry] = [:]
        /// Each function's bus, as compositions since the epoch began saw it (a function
        /// stays on one bus for its life; an epoch begins at every plug and unplug).
        var busOfFunction: [ObjectIdentifier: ObjectIdentifier] = [:]
        /// The epoch `buses` and `busOfFunction` were last cleared for.
        var prunedFor = 0

        mutating func nextVersion() -> Int {
            versions += 1
            return versions
        }
    }

    private let state = Mutex(State())
    /// Given to the BAR handlers of hot-plug controllers (see `BARHandler.afterWrite`).
    private let afterWrite: @Sendable (any PCIFunction) -> Void

    init(afterWrite: @escaping @Sendable (any PCIFunction) -> Void = { _ in }) { self.afterWrite = afterWrite }

    /// After a config write of `function` changed what it maps: its bus and those above.
    func invalidate(after function: any PCIFunction) {
        state.withLock { state in
            guard var bus = state.busOfFunction[ObjectIdentifier(function)] else {
                state.epoch += 1
                return
            }
            while true {
                guard state.buses[bus] != nil else { state.epoch += 1; return }
                state.buses[bus]!.version = state.nextVersion()
                guard let parent = state.buses[bus]!.parent else { return }
                bus = parent
            }
        }
    }

    /// After a change that may touch any bus (topology, reset).
    func invalidateAll() { state.withLock { $0.epoch += 1 } }

    /// Runs one composition (`body` gets the number to give `trees`), then forgets the buses
    /// it did not reach and a later one has not either.
    func composing<R>(_ body: (_ composition: Int) -> R) -> R {
        let now = state.withLock { state in
            state.composition += 1
            return state.composition
        }
        let result = body(now)
        state.withLock { state in
            let gone = state.buses.compactMap { $0.value.reachedIn < now ? $0.key : nil }
            for bus in gone { state.buses[bus] = nil }
        }
        return result
    }

    /// `bus`'s trees and the buses they contain: kept ones if still current, else `build`'s,
    /// which takes its BAR handlers from the table it is given. `parent` is the bus above (nil
    /// for the root).
    func trees(of bus: PCIBus, under parent: PCIBus?, in composition: Int,
               build: (inout BARHandlerTable) -> Built) -> (trees: Trees, buses: [ObjectIdentifier]) {
        let id = ObjectIdentifier(bus)
        let found = state.withLock { state -> (stamp: Stamp, kept: (Trees, [ObjectIdentifier])?, handlers: [BARHandler?]) in
            if state.buses[id] == nil { state.buses[id] = Entry(version: state.nextVersion()) }
            Self.reach(id, in: composition, &state)
            let stamp = Stamp(epoch: state.epoch, version: state.buses[id]!.version)
            guard let kept = state.buses[id]!.built, kept.stamp == stamp else {
                return (stamp, nil, state.buses[id]!.handlers)
            }
            for bus in kept.buses { Self.reach(bus, in: composition, &state) }
            return (stamp, (kept.trees, kept.buses), [])
        }
        if let kept = found.kept { return kept }
        let stamp = found.stamp
        var handlers = BARHandlerTable(previous: found.handlers, afterWrite: afterWrite)
        let made = build(&handlers)
        state.withLock { state in
            if stamp.epoch > state.prunedFor {
                // A new epoch builds every bus again, and what earlier ones recorded of the
                // hierarchy may be gone; only the handler tables stay, for buses still there.
                state.prunedFor = stamp.epoch
                state.busOfFunction = [:]
                for index in state.buses.indices {
                    state.buses.values[index].built = nil
                    state.buses.values[index].functions = []
                }
            }
            // A composition that began before the last topology change, or one that read a
            // later stamp and stored already, has nothing to add.
            guard stamp.epoch == state.prunedFor,
                  state.buses[id]?.built.map({ $0.stamp < stamp }) ?? true else { return }
            var entry = state.buses[id] ?? Entry(version: state.nextVersion())
            entry.parent = parent.map(ObjectIdentifier.init)
            entry.built = (made.trees, stamp, made.buses)
            entry.handlers = handlers.slots
            if entry.functions != made.functions {
                for function in entry.functions where state.busOfFunction[function] == id {
                    state.busOfFunction[function] = nil
                }
                entry.functions = made.functions
                for function in made.functions { state.busOfFunction[function] = id }
            }
            state.buses[id] = entry
        }
        return (made.trees, made.buses)
    }

    private static func reach(_ bus: ObjectIdentifier, in composition: Int, _ state: inout State) {
        if let reached = state.buses[bus]?.reachedIn, reached < composition { state.buses[bus]!.reachedIn = composition }
    }
}
