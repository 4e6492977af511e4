import VMMBase

/// Why the machine could not give a function in-kernel routes for its message interrupts.
public struct InterruptRoutingError: Error, Hashable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One MSI or MSI-X vector as the guest programmed it.
public struct MessageVectorState: Sendable, Hashable {
    public var message: MSIMessage
    public var masked: Bool

    public init(message: MSIMessage, masked: Bool) {
        self.message = message
        self.masked = masked
    }
}

/// MSI or MSI-X vectors the machine made for a function whose interrupts a host backend raises
/// (VFIO for an assigned device, vhost for a virtio queue): one eventfd per vector, which the
/// backend signals and the machine turns into the programmed message in the kernel (KVM
/// irqfds: no userspace hop). The machine's `MSIVectorGroup` is one.
public protocol MessageVectors: AnyObject, Sendable {
    /// The eventfd of each vector, in vector order.
    var eventFDs: [Int32] { get }
    /// The guest programmed `vector`: signals now send `message`; a masked vector holds them.
    func update(vector: Int, message: MSIMessage, masked: Bool) throws(InterruptRoutingError)
    /// Frees the vectors (after the backend no longer signals them).
    func release()
}

/// What the machine provides a function for message interrupts raised in the kernel.
public protocol MessageVectorRouting: Sendable {
    func makeMessageVectors(count: Int) throws(InterruptRoutingError) -> any MessageVectors
}

extension MSIXTable {
    /// Every entry as its vector's route carries it: masked while MSI-X is off or the function
    /// or the entry is masked (PCI Local Bus 3.0, 6.8.2.9).
    public func vectorStates(control: MSIXControl) -> [MessageVectorState] {
        entries.indices.map { vector in
            MessageVectorState(message: entries[vector].message, masked: !control.enabled || isMasked(vector, control: control))
        }
    }
}

/// Message vectors kept in step with the guest's programming: each `apply` updates only the
/// vectors whose message or mask changed since the last one (each update is a routing-table
/// commit in the kernel).
public struct RoutedMessageVectors: Sendable {
    public let vectors: any MessageVectors
    private var applied: [MessageVectorState?]

    public init(vectors: any MessageVectors) {
        self.vectors = vectors
        applied = Array(repeating: nil, count: vectors.eventFDs.count)
    }

    /// - Parameter device: names the function in the line a refused update logs.
    public mutating func apply(_ states: [MessageVectorState], device: String) {
        for (index, state) in states.enumerated() where applied.indices.contains(index) && applied[index] != state {
            do throws(InterruptRoutingError) {
                try vectors.update(vector: index, message: state.message, masked: state.masked)
                applied[index] = state
            } catch {
                GuestErrorLog.report(device: device, kind: "msi-route", "vector \(index): \(error)")
            }
        }
    }
}
