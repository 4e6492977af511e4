import HostOS
import Interrupts
import KVM
import Synchronization
import VMMBase

/// Device interrupts into KVM's in-kernel irqchip: a line level becomes KVM_IRQ_LINE on the
/// GSI (KVM's default routing sends GSIs 0-15 to the PICs and the IOAPIC, 16-23 to the IOAPIC),
/// an MSI becomes KVM_SIGNAL_MSI. Attach it with `Machine.attachInterruptSink(_:)`.
public final class KVMInterruptSink: InterruptSink {
    public let virtualMachine: KVMVirtualMachine
    /// The first failure, kept for diagnosis (a failing ioctl must not stop the device).
    private let firstError = Mutex<SystemError?>(nil)

    public init(virtualMachine: KVMVirtualMachine) {
        self.virtualMachine = virtualMachine
    }

    public func setLevel(_ gsi: GSI, high: Bool) {
        do throws(SystemError) {
            try virtualMachine.setIRQLine(gsi.number, level: high)
        } catch {
            record(error)
        }
    }

    /// The guest programs MSI address and data itself: a message outside the interrupt window
    /// (0xFEE00000-0xFEEFFFFF) would be a memory write on real hardware, and vector 0-15 is
    /// reserved. Both are dropped with a log line; the guest sees a lost interrupt.
    public func signal(_ message: MSIMessage) {
        guard message.targetsInterruptWindow else {
            GuestErrorLog.report(device: "msi", kind: "address",
                                 "\(message) is outside the interrupt window 0xfee00000-0xfeefffff; dropped")
            return
        }
        let deliveryMode = message.data >> 8 & 7
        guard message.vector >= 16 || deliveryMode > 1 else {
            // Fixed or lowest-priority delivery with a reserved vector (NMI/INIT/ExtINT carry none).
            GuestErrorLog.report(device: "msi", kind: "vector", "\(message) has reserved vector \(message.vector); dropped")
            return
        }
        do throws(SystemError) {
            try virtualMachine.signalMSI(message)
        } catch {
            record(error)
        }
    }

    /// The first KVM_IRQ_LINE or KVM_SIGNAL_MSI failure, if any.
    public var error: SystemError? { firstError.withLock { $0 } }

    private func record(_ error: SystemError) {
        firstError.withLock { if $0 == nil { $0 = error } }
    }
}
