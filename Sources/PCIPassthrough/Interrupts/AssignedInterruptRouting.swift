import VMMBase

/// Why the machine could not give an assigned function its interrupt routes.
public struct InterruptRoutingError: Error, Hashable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// MSI or MSI-X vectors the machine made for an assigned function: one eventfd per vector,
/// which the device signals through VFIO and the machine turns into the programmed message
/// (KVM irqfds: no userspace hop). The machine's `MSIVectorGroup` is one.
public protocol MessageVectors: AnyObject, Sendable {
    /// The eventfd of each vector, in vector order, for VFIO_DEVICE_SET_IRQS.
    var eventFDs: [Int32] { get }
    /// The guest programmed `vector`: signals now send `message`; a masked vector holds them.
    func update(vector: Int, message: MSIMessage, masked: Bool) throws(InterruptRoutingError)
    /// Frees the vectors (after VFIO no longer signals them).
    func release()
}

/// What the machine provides an assigned function for its message interrupts. (Its INTx pin
/// is a `KernelINTxLine` from the function's interrupt output, which follows the pin's route.)
public protocol AssignedInterruptRouting: Sendable {
    func makeMessageVectors(count: Int) throws(InterruptRoutingError) -> any MessageVectors
}
