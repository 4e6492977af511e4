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

    public func signal(_ message: MSIMessage) {
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
