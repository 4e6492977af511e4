import HostOS
import PCIPassthrough
import Synchronization
import VFIO
import VMMBase

/// Opens the host functions of `vfio-pci` devices through the machine's VFIO (`Machine.vfio`:
/// one container, DMA maps following guest RAM). The topology makes devices while the machine
/// is being built, so the machine is linked in once it exists.
final class AssignedDeviceOpener: Sendable {
    private struct Link { weak var machine: Machine? }
    private let link = Mutex(Link())
    private let kernel: any VFIOKernel

    init(kernel: any VFIOKernel) { self.kernel = kernel }

    var usesIOMMUFD: Bool { kernel.usesIOMMUFD }

    func connect(_ machine: Machine) { link.withLock { $0.machine = machine } }

    func open(_ host: PCIAddress) throws(VFIOError) -> MachineVFIO.Assignment {
        guard let machine = link.withLock({ $0.machine }) else {
            throw VFIOError(.invalidRequest("the machine is not built yet"), operation: "assign", subject: "host device \(host)")
        }
        return try machine.vfio(kernel: kernel).openDevice(host)
    }

    /// The host asked for `host` back (VFIO's request notice): unplug it as device_del does,
    /// so the guest lets go and the host's unbind can complete. The kernel repeats the request
    /// every 10 s; repeats while the unplug is under way change nothing.
    /// `reference` is what unplug finds it by (its id, or its QOM path), `name` what the log calls it.
    func hostAsksBack(reference: String, name: String, host: PCIAddress) {
        guard let machine = link.withLock({ $0.machine }) else { return }
        do throws(MachineConfigurationError) {
            try machine.unplug(id: reference, mode: .attentionButton)
            GuestErrorLog.report(device: name, kind: "vfio-request", "the host asks for \(host) back; unplugging it from the guest")
        } catch {
            if case .hotPlug(.unplugInProgress) = error { return }
            GuestErrorLog.report(device: name, kind: "vfio-request",
                                 "the host asks for \(host) back, but it cannot be unplugged: \(error); the host waits until the VM ends")
        }
    }

    /// AER reported an uncorrectable error on `host` (VFIO's error notice).
    func hostReportsError(id: String, host: PCIAddress) {
        guard let machine = link.withLock({ $0.machine }) else { return }
        machine.reportAssignedDeviceFailure(id: id, host: host)
    }

    /// A secondary-bus reset of the device (it has no function reset), through the machine's VFIO.
    func busReset(_ assignment: MachineVFIO.Assignment) throws(VFIOError) {
        guard let machine = link.withLock({ $0.machine }) else { return }
        try machine.vfio(kernel: kernel).busReset(assignment)
    }

    /// The device model let go of it (unplug): its DMA maps go with the last assigned device.
    func release(_ assignment: MachineVFIO.Assignment) {
        guard let machine = link.withLock({ $0.machine }) else { return }
        do throws(VFIOError) { try machine.vfio(kernel: kernel).release(assignment) } catch {
            GuestErrorLog.report(device: "vfio", kind: "release", "\(error)")
        }
    }
}

/// The two notices vfio-pci sends about an assigned device, each an eventfd answered on the
/// `vfio-notices` thread (QEMU's vfio_req_notifier_handler and vfio_err_notifier_handler):
/// - request (VFIO_PCI_REQ_IRQ_INDEX): the host wants the device back (its driver is being
///   unbound, the device removed). The machine unplugs it as `device_del` does (attention button:
///   the guest lets go), and the host's unbind completes once the device is released. The kernel
///   repeats the request every 10 s meanwhile; repeats during the unplug change nothing.
/// - error (VFIO_PCI_ERR_IRQ_INDEX): AER reported an uncorrectable error. The device's state can
///   no longer be trusted: the machine reports `assignedDeviceFailed`, and the session stops the
///   VM (QMP STOP), as QEMU does, for the operator to collect what they need and end it.
/// A device that offers neither (no PCIe AER, an old kernel) is assigned without them.
final class AssignedDeviceNotices: Sendable {
    static let thread = ReadinessThread(name: "vfio-notices")

    /// An eventfd the notice's handler and the owner share.
    private struct Notice: Sendable {
        let index: UInt32
        let event: SharedEventFD
        let token: UInt64
    }
    private let device: any VFIODeviceIO
    private let notices: Mutex<[Notice]>

    /// Wires the notices `device` offers; `onRequest` and `onError` run on the notices thread.
    init(device: any VFIODeviceIO, id: String, onRequest: @escaping @Sendable () -> Void,
         onError: @escaping @Sendable () -> Void) {
        self.device = device
        var wired: [Notice] = []
        for (index, handler) in [(VFIOPCIIRQ.request, onRequest), (VFIOPCIIRQ.error, onError)] {
            guard let info = try? device.irqInfo(index), info.count > 0, info.eventfd else { continue }
            do throws(VFIOError) {
                let event: SharedEventFD
                do throws(SystemError) { event = try SharedEventFD() } catch {
                    throw VFIOError(.kernel, operation: "eventfd", subject: device.name, system: error)
                }
                let descriptor = event.rawValue
                let token: UInt64
                do throws(SystemError) {
                    token = try Self.thread.watch(descriptor) {
                        // One answer per burst of signals: the count says nothing more.
                        guard (try? event.eventFD.consume()) != nil else { return }
                        handler()
                    }
                } catch {
                    throw VFIOError(.kernel, operation: "epoll_ctl", subject: device.name, system: error)
                }
                do throws(VFIOError) {
                    try device.setIRQs(VFIOIRQRequest(index: index, .trigger(eventfds: [descriptor])))
                } catch {
                    Self.thread.unwatch(token)
                    throw error
                }
                wired.append(Notice(index: index, event: event, token: token))
            } catch {
                GuestErrorLog.report(device: id, kind: "vfio-notice",
                                     "\(index == VFIOPCIIRQ.request ? "release requests" : "error reports") of \(device.name) not wired: \(error)")
            }
        }
        notices = Mutex(wired)
    }

    /// The indices wired (for tests and the log).
    var wiredIndices: [UInt32] { notices.withLock { $0.map(\.index) } }

    /// A machine dropped with the device still assigned (tests, fuzzing: many machines in one
    /// process) never unplugs it: the notices go with the device model, or the notices thread
    /// would keep their eventfds and handlers (and the device) for the life of the process.
    deinit { stop() }

    /// Unwires them: before the device is released (unplug, machine end).
    func stop() {
        let taken = notices.withLock { n -> [Notice] in
            defer { n = [] }
            return n
        }
        for notice in taken {
            try? device.setIRQs(VFIOIRQRequest(index: notice.index, .disable))
            Self.thread.unwatch(notice.token)
        }
    }
}
