import VMMBase

/// Where device interrupts go: the machine hands one to device models. KVM's irqchip
/// implements it for running guests; tests and the qtest server record what arrives.
public protocol InterruptSink: AnyObject, Sendable {
    /// Drives a level-triggered line (a GSI) high or low.
    func setLevel(_ gsi: GSI, high: Bool)
    /// Delivers a message-signalled interrupt.
    func signal(_ message: MSIMessage)
}

/// Rewrites or blocks MSI messages before delivery: the seam for VT-d interrupt remapping.
public protocol MSIRemapper: Sendable {
    /// The message to deliver, or a fault that blocks it.
    func remap(_ message: MSIMessage, from requester: PCIAddress) -> Result<MSIMessage, MSIRemapFault>
}

public struct MSIRemapFault: Error, Hashable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The identity remapper: messages pass through unchanged (no IOMMU).
public struct PassthroughRemapper: MSIRemapper {
    public init() {}
    public func remap(_ message: MSIMessage, from requester: PCIAddress) -> Result<MSIMessage, MSIRemapFault> {
        .success(message)
    }
}

/// An interrupt sink that routes MSIs through a remapper first. Blocked messages are
/// reported to `onFault` (the IOMMU's fault log) and dropped.
public final class RemappingSink: InterruptSink {
    private let downstream: any InterruptSink
    private let remapper: any MSIRemapper
    private let requester: PCIAddress
    private let onFault: @Sendable (MSIRemapFault) -> Void

    public init(downstream: any InterruptSink, remapper: any MSIRemapper, requester: PCIAddress,
                onFault: @escaping @Sendable (MSIRemapFault) -> Void) {
        self.downstream = downstream
        self.remapper = remapper
        self.requester = requester
        self.onFault = onFault
    }

    public func setLevel(_ gsi: GSI, high: Bool) { downstream.setLevel(gsi, high: high) }

    public func signal(_ message: MSIMessage) {
        switch remapper.remap(message, from: requester) {
        case .success(let remapped): downstream.signal(remapped)
        case .failure(let fault): onFault(fault)
        }
    }
}
