import AddressSpace
import PCI
import Synchronization

/// The region trees of each PCI bus from earlier compositions, so a commit builds again only
/// the buses a change touched: a BAR moved on one bus of sixteen reads that bus's functions
/// and the bridges above it, not every function. A config write that changes mappings marks
/// its function's bus and the buses above it (whose trees alias it) stale; anything else
/// (plug, unplug, reset, a function no composition has seen) marks every bus stale.
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

    private struct Stamp: Equatable {
        var epoch: Int
        var version: Int
    }

    private struct Entry {
        var version = 0
        var parent: ObjectIdentifier?
        var built: (trees: Trees, stamp: Stamp, buses: [ObjectIdentifier])?
        var functions: [ObjectIdentifier] = []
    }

    private struct State {
        /// Bumped by a change that may touch any bus.
        var epoch = 0
        var buses: [ObjectIdentifier: Entry] = [:]
        /// Each function's bus, as compositions since the epoch began saw it (a function
        /// stays on one bus for its life; an epoch begins at every plug and unplug).
        var busOfFunction: [ObjectIdentifier: ObjectIdentifier] = [:]
        /// The epoch `buses` and `busOfFunction` were last pruned for.
        var prunedFor = 0
    }

    private let state = Mutex(State())

    /// After a config write of `function` changed what it maps: its bus and those above.
    func invalidate(after function: any PCIFunction) {
        state.withLock { state in
            guard var bus = state.busOfFunction[ObjectIdentifier(function)] else {
                state.epoch += 1
                return
            }
            while true {
                guard state.buses[bus] != nil else { state.epoch += 1; return }
                state.buses[bus]!.version += 1
                guard let parent = state.buses[bus]!.parent else { return }
                bus = parent
            }
        }
    }

    /// After a change that may touch any bus (topology, reset).
    func invalidateAll() { state.withLock { $0.epoch += 1 } }

    /// `bus`'s trees and the buses they contain: kept ones if still current, else `build`'s.
    /// `parent` is the bus above (nil for the root).
    func trees(of bus: PCIBus, under parent: PCIBus?, handlers: BARHandlerCache,
               build: () -> Built) -> (trees: Trees, buses: [ObjectIdentifier]) {
        let id = ObjectIdentifier(bus)
        let (stamp, kept) = state.withLock { state in
            (Stamp(epoch: state.epoch, version: state.buses[id]?.version ?? 0), state.buses[id]?.built)
        }
        if let kept, kept.stamp == stamp {
            handlers.keep(kept.buses)
            return (kept.trees, kept.buses)
        }
        let made = build()
        state.withLock { state in
            if stamp.epoch > state.prunedFor {
                // A new epoch rebuilds every bus: what earlier ones recorded may be gone.
                state.prunedFor = stamp.epoch
                state.busOfFunction = [:]
                state.buses = state.buses.filter { $0.value.built.map { $0.stamp.epoch >= stamp.epoch } ?? false }
            }
            var entry = state.buses[id] ?? Entry()
            entry.parent = parent.map(ObjectIdentifier.init)
            // A composition that read a later stamp may have stored its trees already.
            if entry.built.map({ ($0.stamp.epoch, $0.stamp.version) <= (stamp.epoch, stamp.version) }) ?? true {
                entry.built = (made.trees, stamp, made.buses)
            }
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
}
