import Chipset
import HostOS
import Interrupts
import KVM
import VMMBase

/// Where a KVM guest's interrupt controllers live (QEMU's `-machine kernel-irqchip=`).
public enum KernelIRQChip: String, Hashable, Sendable {
    /// PICs, IOAPIC, local APICs and the PIT in the kernel (QEMU's default under KVM).
    case on
    /// Only the local APICs in the kernel; the IOAPIC is the machine's userspace one. There is
    /// no PIC and no PIT: Linux finds no 8259 and uses its null PIC, as under cloud-hypervisor.
    case split
}

/// The userspace half of a split irqchip: device and platform levels go into the machine's
/// IOAPIC, whose messages (and every device MSI) go to KVM's local APICs.
final class SplitIRQChipSink: InterruptSink {
    private let ioapic: IOAPIC
    private let localAPICs: any InterruptSink

    init(ioapic: IOAPIC, localAPICs: any InterruptSink) {
        self.ioapic = ioapic
        self.localAPICs = localAPICs
    }

    func setLevel(_ gsi: GSI, high: Bool) { ioapic.setLevel(gsi, high: high) }
    func signal(_ message: MSIMessage) { localAPICs.signal(message) }
}

extension KVMInterruptRoutes {
    /// A split irqchip's routes on `virtualMachine`: the PC table, with `ioapic`'s pins as MSI
    /// routes that follow its redirection entries from now on.
    static func split(_ virtualMachine: KVMVirtualMachine, ioapic: IOAPIC) throws(SystemError) -> KVMInterruptRoutes {
        let routes = try KVMInterruptRoutes(virtualMachine: virtualMachine, table: .pc,
                                            ioapicPins: IOAPIC.pinMessages(ioapic.registers.entries))
        ioapic.keepPinRoutes(routes)
        return routes
    }
}

extension IOAPIC {
    /// The message each pin's redirection entry sends.
    static func pinMessages(_ entries: [UInt64]) -> [MSIMessage] { entries.map(IOAPICRegisters.message(for:)) }

    /// Keeps `routes`' IOAPIC pins equal to this IOAPIC's redirection entries from now on.
    func keepPinRoutes(_ routes: KVMInterruptRoutes) {
        observeRedirections { [weak routes] entries in
            do throws(InterruptRouteError) {
                try routes?.updateIOAPICPins(IOAPIC.pinMessages(entries))
            } catch {
                GuestErrorLog.report(device: "ioapic", kind: "routes", "split irqchip: cannot commit the pin routes: \(error)")
            }
        }
    }
}
