import Chipset
import Synchronization

/// Things the machine reports to monitors (QMP events).
public enum MachineEvent: Sendable, Hashable {
    /// A device's removal completed; `id` is the user's id (nil for a device given none) and
    /// `path` its QOM path (`/machine/peripheral/ID` or `/machine/peripheral-anon/device[N]`).
    case deviceDeleted(id: String?, path: String)
    /// The guest asked for a platform reset (i8042 pulse, RST_CNT at 0xCF9, a triple fault). The machine
    /// reports it; whoever runs the vCPUs decides to call `Machine.reset()`.
    case resetRequested(ResetSource)
    /// The guest entered S5 (ACPI PM1_CNT SLP_EN with SLP_TYP 0): stop the machine.
    case powerOff
    /// The host reported an uncorrectable error (AER, through VFIO's error notice) on the host
    /// function `host` assigned as `id`: its state can no longer be trusted. The session stops
    /// the VM (QEMU's vm_stop on the same notice).
    case assignedDeviceFailed(id: String, host: String)
}

/// Listeners for machine events. Handlers run on the thread that caused the event, after
/// the machine's locks are released; they must not block.
final class EventBroadcaster: Sendable {
    private struct State {
        var next = 0
        var handlers: [Int: @Sendable (MachineEvent) -> Void] = [:]
    }
    private let state = Mutex(State())

    func add(_ handler: @escaping @Sendable (MachineEvent) -> Void) -> Int {
        state.withLock { s in
            s.next += 1
            s.handlers[s.next] = handler
            return s.next
        }
    }

    func remove(_ token: Int) { _ = state.withLock { $0.handlers.removeValue(forKey: token) } }

    func emit(_ event: MachineEvent) {
        let handlers = state.withLock { Array($0.handlers.values) }
        for handler in handlers { handler(event) }
    }
}
