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

/// The INTx line of an assigned function: the eventfd VFIO signals when the device asserts its
/// pin (the kernel then masks it), and the one KVM signals when the guest's EOI ends the
/// interrupt, which VFIO takes as the unmask (level-triggered, resampled).
public protocol INTxEventPair: AnyObject, Sendable {
    var trigger: Int32 { get }
    var resample: Int32 { get }
    func release()
}

/// What the machine provides an assigned function for its interrupts.
public protocol AssignedInterruptRouting: Sendable {
    func makeMessageVectors(count: Int) throws(InterruptRoutingError) -> any MessageVectors
    /// The function's INTx line as the guest's topology routes it (nil: the line is not wired,
    /// e.g. no in-kernel irqchip).
    func makeINTx() throws(InterruptRoutingError) -> (any INTxEventPair)?
}
