import Synchronization

/// Which flat view of a layer a diff belongs to.
public enum AddressSpaceKind: Sendable, Hashable { case memory, io }

/// Keeps something outside the dispatch path in step with a layer's views: KVM memory slots,
/// ioeventfds, DMA maps. Called for every commit that changed the view, in commit order,
/// before the new views serve accesses; it must not commit in turn.
public protocol AddressSpaceListener: AnyObject, Sendable {
    func commit(_ diff: FlatViewDiff, in space: AddressSpaceKind, view: FlatView)
}

/// A handler that can be taken out of service: once `retire` returns, no call that started
/// before it is still running and none starts after it, until a newer commit revives it.
/// `generation` orders a retire against a revive from a later commit that raced it.
public protocol RetirableHandler: IORegionHandler {
    func revive(generation: Int)
    func retire(generation: Int)
}

/// One layer of a machine's address spaces (a memory and an I/O flat view), committed eagerly:
/// every change composes the region trees again, flattens them, hands the diff to the
/// listeners and publishes the new views before `commit` returns. A commit composed before a
/// later one never replaces it (generations), so no change is lost; a handler the new views
/// no longer show is retired after publication (its in-flight calls drain: the grace period).
public final class CommittedLayer: Sendable {
    public struct Views: Sendable {
        public var memory: FlatView
        public var io: FlatView
    }

    private struct Published {
        var views: Views
        var generation = 0
        var commits = 0
    }

    private let compose: @Sendable () -> (memory: Region, io: Region)
    /// Bumped by every commit that starts: its value orders compositions.
    private let requested = Atomic<Int>(0)
    /// What accesses read: held only to copy the views out.
    private let published: Mutex<Published>
    /// Serialises publication and the listener calls; holds the listeners.
    private let publication = Mutex<[any AddressSpaceListener]>([])

    public init(compose: @escaping @Sendable () -> (memory: Region, io: Region)) {
        self.compose = compose
        let trees = compose()
        published = Mutex(Published(views: Views(memory: FlatView(rendering: trees.memory),
                                                 io: FlatView(rendering: trees.io))))
    }

    public var views: Views { published.withLock { $0.views } }

    public func view(_ kind: AddressSpaceKind) -> FlatView {
        published.withLock { kind == .io ? $0.views.io : $0.views.memory }
    }

    /// Commits that published new views (a composition overtaken by a newer one is not counted).
    public var commitCount: Int { published.withLock { $0.commits } }

    /// Adds a listener and replays the current views to it as additions.
    public func addListener(_ listener: any AddressSpaceListener) {
        publication.withLock { listeners in
            let current = views
            let empty = FlatView(rendering: .container("empty", size: 0))
            listener.commit(FlatViewDiff(from: empty, to: current.memory), in: .memory, view: current.memory)
            listener.commit(FlatViewDiff(from: empty, to: current.io), in: .io, view: current.io)
            listeners.append(listener)
        }
    }

    public func removeListener(_ listener: any AddressSpaceListener) {
        publication.withLock { $0.removeAll { $0 === listener } }
    }

    /// Composes the layer from the state as it is now and publishes it. When this returns,
    /// every access sees views composed after the call began, listeners have seen them, and
    /// no handler the views dropped is running or will run.
    public func commit() {
        let generation = requested.add(1, ordering: .sequentiallyConsistent).newValue
        // Composed outside every lock: composition takes device locks for config snapshots.
        let trees = compose()
        let next = Views(memory: FlatView(rendering: trees.memory), io: FlatView(rendering: trees.io))
        let dropped: [any RetirableHandler] = publication.withLock { listeners in
            let old = published.withLock { $0 }
            // A commit that began later composed newer state and published it: it covers this one.
            guard old.generation < generation else { return [] }
            let memoryDiff = FlatViewDiff(from: old.views.memory, to: next.memory)
            let ioDiff = FlatViewDiff(from: old.views.io, to: next.io)
            for entry in memoryDiff.added + ioDiff.added {
                (entry.handler as? any RetirableHandler)?.revive(generation: generation)
            }
            for listener in listeners {
                if !memoryDiff.isEmpty { listener.commit(memoryDiff, in: .memory, view: next.memory) }
                if !ioDiff.isEmpty { listener.commit(ioDiff, in: .io, view: next.io) }
            }
            published.withLock {
                $0.views = next
                $0.generation = generation
                $0.commits += 1
            }
            return Self.handlersGone(memoryDiff.removed + ioDiff.removed, added: memoryDiff.added + ioDiff.added,
                                     stillIn: next)
        }
        // Outside the publication lock: a draining call may itself commit (a hot-plug
        // controller's register write unplugging a device).
        for handler in dropped { handler.retire(generation: generation) }
    }

    /// Retirable handlers of `removed` that no entry of `views` uses any more. A handler that
    /// only moved is among the added entries, so a BAR move settles it without a pass over
    /// every entry of the views.
    private static func handlersGone(_ removed: [FlatView.Entry], added: [FlatView.Entry],
                                     stillIn views: Views) -> [any RetirableHandler] {
        var candidates: [any RetirableHandler] = []
        var gone = Set<ObjectIdentifier>()
        for entry in removed {
            if let handler = entry.handler as? any RetirableHandler, gone.insert(ObjectIdentifier(handler)).inserted {
                candidates.append(handler)
            }
        }
        for entries in [added, views.memory.entries, views.io.entries] {
            for entry in entries {
                if gone.isEmpty { return [] }
                gone.remove(ObjectIdentifier(entry.handler))
            }
        }
        return candidates.filter { gone.contains(ObjectIdentifier($0)) }
    }
}
