import VMMBase

/// How a function raises interrupts. The machine gives each function one once it is placed:
/// MSI messages go to the interrupt controller (through remapping, when an IOMMU is there),
/// and the INTx line is swizzled through the bridges above the function to a PIRQ and a GSI.
/// Call it without holding the function's own lock.
public protocol PCIInterruptOutput: Sendable {
    func signal(_ message: MSIMessage)
    /// Drives this function's INTx pin. Lines are shared: the GSI is high while any function
    /// routed to it asserts.
    func setINTx(_ asserted: Bool)
    /// The pin as a line the host kernel drives, for a function whose interrupts come from the
    /// host (an assigned device): the output keeps the line on the pin's GSI as the guest's
    /// routing moves it, and drops it when the function is disconnected. One per function: a
    /// second call returns the same line. nil: this output has none (the pin stays unwired).
    func kernelINTx() throws(KernelINTxError) -> (any KernelINTxLine)?
}

extension PCIInterruptOutput {
    public func kernelINTx() throws(KernelINTxError) -> (any KernelINTxLine)? { nil }
}

/// An INTx pin driven by the host kernel rather than by this process: the host signals
/// `trigger` while the device asserts its pin (VFIO then masks it), and the machine's irqchip
/// lowers the line at the guest's end of interrupt and signals `resample`, the host's cue to
/// unmask (KVM's resampling irqfd: level-triggered with no userspace hop).
public protocol KernelINTxLine: AnyObject, Sendable {
    var trigger: Int32 { get }
    var resample: Int32 { get }
}

/// Why the machine could not give a function a kernel-driven INTx line.
public struct KernelINTxError: Error, Hashable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The output of a function that is not connected (not placed, or unplugged): drops everything.
public struct DisconnectedInterrupts: PCIInterruptOutput {
    public init() {}
    public func signal(_ message: MSIMessage) {}
    public func setINTx(_ asserted: Bool) {}
}

/// A function that raises interrupts accepts an output when the machine places it.
public protocol InterruptingFunction: PCIFunction {
    func connect(interrupts: any PCIInterruptOutput)
}
