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
