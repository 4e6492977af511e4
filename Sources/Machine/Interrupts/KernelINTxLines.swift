import HostOS
import Interrupts
import KVM
import PCI
import Synchronization
import VMMBase

/// The INTx pins the host kernel drives (assigned devices), each a resampling irqfd in KVM on
/// the GSI the pin is routed to: VFIO signals the trigger eventfd while the device asserts its
/// pin, KVM holds the IOAPIC input high until the guest's EOI, then lowers it and signals the
/// resample eventfd, which VFIO takes as the unmask (QEMU's vfio_intx_enable_kvm).
///
/// Lines exist from the function's connection on; KVM gets them once a VM whose irqchip has
/// the IOAPIC is attached (a KVM guest attaches after the machine is built), and a line moves
/// when the guest's routing moves its pin. KVM ORs a line with the machine's own level on the
/// same input (its irqfd has a source of its own), so sharing a GSI with emulated functions
/// works. Not driven: the 8259s in PIC mode (a guest without an IOAPIC), a split irqchip
/// (whose IOAPIC is ours), qtest (no KVM): there the pin stays silent.
final class KernelINTxLines: Sendable {
    final class Line: KernelINTxLine {
        let triggerEvent: SharedEventFD
        let resampleEvent: SharedEventFD

        init() throws(SystemError) {
            triggerEvent = try SharedEventFD()
            resampleEvent = try SharedEventFD()
        }

        var trigger: Int32 { triggerEvent.rawValue }
        var resample: Int32 { resampleEvent.rawValue }
    }

    private struct Entry {
        let line: Line
        /// The function whose pin this is, for log lines.
        let owner: String
        /// Where the pin is routed now (nil: nowhere).
        var gsi: GSI?
        /// Where KVM has the irqfd.
        var bound: GSI?
    }
    private struct State {
        var vm: KVMVirtualMachine?
        var entries: [ObjectIdentifier: Entry] = [:]
    }
    private let state = Mutex(State())

    /// A new line for `owner`'s pin routed to `gsi`, bound in KVM at once when a VM is attached.
    func make(for owner: String, routedTo gsi: GSI?) throws(KernelINTxError) -> Line {
        let line: Line
        do throws(SystemError) { line = try Line() } catch {
            throw KernelINTxError("INTx eventfds: \(error)")
        }
        state.withLock { s in
            var entry = Entry(line: line, owner: owner, gsi: gsi)
            Self.bind(&entry, in: s.vm)
            s.entries[ObjectIdentifier(line)] = entry
        }
        return line
    }

    /// The guest moved the pin: the irqfd follows.
    func move(_ line: Line, to gsi: GSI?) {
        state.withLock { s in
            guard var entry = s.entries[ObjectIdentifier(line)], entry.gsi != gsi else { return }
            Self.unbind(&entry, in: s.vm)
            entry.gsi = gsi
            Self.bind(&entry, in: s.vm)
            s.entries[ObjectIdentifier(line)] = entry
        }
    }

    /// The function is gone: the irqfd is removed (KVM lowers what it held).
    func remove(_ line: Line) {
        state.withLock { s in
            guard var entry = s.entries.removeValue(forKey: ObjectIdentifier(line)) else { return }
            Self.unbind(&entry, in: s.vm)
        }
    }

    /// KVM's irqchip, with its IOAPIC, is there: every line is bound where its pin is routed.
    func attach(_ vm: KVMVirtualMachine) {
        state.withLock { s in
            s.vm = vm
            for key in Array(s.entries.keys) {
                guard var entry = s.entries[key] else { continue }
                Self.bind(&entry, in: vm)
                s.entries[key] = entry
            }
        }
    }

    /// GSIs KVM has a kernel line on, per line (for tests and leak checks).
    var bound: [GSI] { state.withLock { $0.entries.values.compactMap(\.bound).sorted { $0.number < $1.number } } }

    private static func bind(_ entry: inout Entry, in vm: KVMVirtualMachine?) {
        guard let vm, let gsi = entry.gsi, entry.bound == nil else { return }
        do throws(SystemError) {
            try vm.registerIRQFD(entry.line.triggerEvent.eventFD, gsi: gsi.number, resample: entry.line.resampleEvent.eventFD)
            entry.bound = gsi
            // An assertion while the line was unbound (or on its old GSI) left the host's pin
            // masked with no EOI to come: unmask it; a pin still asserted triggers again.
            try entry.line.resampleEvent.eventFD.signal()
        } catch {
            GuestErrorLog.report(device: entry.owner, kind: "intx-irqfd", "its kernel-driven INTx line on GSI \(gsi.number): \(error); the pin stays silent")
        }
    }

    private static func unbind(_ entry: inout Entry, in vm: KVMVirtualMachine?) {
        guard let vm, let gsi = entry.bound else { return }
        do throws(SystemError) { try vm.unregisterIRQFD(entry.line.triggerEvent.eventFD, gsi: gsi.number) } catch {
            GuestErrorLog.report(device: entry.owner, kind: "intx-irqfd", "removing its INTx line on GSI \(gsi.number): \(error)")
        }
        entry.bound = nil
    }
}
