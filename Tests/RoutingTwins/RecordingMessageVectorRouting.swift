import HostOS
import PCI
import Synchronization
import VMMBase

/// The machine's in-kernel message routes (`MessageVectorRouting`) as a recorder, for unit
/// tests of the functions that use them (an assigned function, a virtio function with vhost):
/// each vector is a real eventfd, as KVM would bind it, and every update is kept.
public final class RecordingMessageVectorRouting: MessageVectorRouting {
    /// One `update(vector:message:masked:)`.
    public struct Update: Hashable, Sendable {
        public let vector: Int
        public let message: MSIMessage
        public let masked: Bool
    }

    public final class Vectors: MessageVectors {
        public let fds: [SharedEventFD]
        private let recorded = Mutex<[Update]>([])
        private let releasedFlag = Mutex(false)

        init(count: Int) throws(SystemError) {
            var fds: [SharedEventFD] = []
            for _ in 0..<count { fds.append(try SharedEventFD()) }
            self.fds = fds
        }

        public var eventFDs: [Int32] { fds.map(\.rawValue) }

        public func update(vector: Int, message: MSIMessage, masked: Bool) throws(InterruptRoutingError) {
            recorded.withLock { $0.append(Update(vector: vector, message: message, masked: masked)) }
        }

        public func release() { releasedFlag.withLock { $0 = true } }

        /// Every update, in order.
        public var updates: [Update] { recorded.withLock { $0 } }
        /// Each vector's last update.
        public var latest: [Int: Update] {
            Dictionary(updates.map { ($0.vector, $0) }, uniquingKeysWith: { $1 })
        }
        public var released: Bool { releasedFlag.withLock { $0 } }

        /// The signals on `vector`'s eventfd since the last look (taken: the count restarts).
        public func signals(of vector: Int) -> UInt64 {
            ((try? fds[vector].eventFD.consume()) ?? nil) ?? 0
        }
    }

    private let made = Mutex<[Vectors]>([])

    public init() {}

    public func makeMessageVectors(count: Int) throws(InterruptRoutingError) -> any MessageVectors {
        do throws(SystemError) {
            let vectors = try Vectors(count: count)
            made.withLock { $0.append(vectors) }
            return vectors
        } catch {
            throw InterruptRoutingError("\(error)")
        }
    }

    /// The vectors made last.
    public var lastVectors: Vectors? { made.withLock { $0.last } }
}
