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

    func connect(_ machine: Machine) { link.withLock { $0.machine = machine } }

    func open(_ host: PCIAddress) throws(VFIOError) -> MachineVFIO.Assignment {
        guard let machine = link.withLock({ $0.machine }) else {
            throw VFIOError(.invalidRequest("the machine is not built yet"), operation: "assign", subject: "host device \(host)")
        }
        return try machine.vfio(kernel: kernel).openDevice(host)
    }

    /// The device model let go of it (unplug): its DMA maps go with the last assigned device.
    func release(_ assignment: MachineVFIO.Assignment) {
        guard let machine = link.withLock({ $0.machine }) else { return }
        do throws(VFIOError) { try machine.vfio(kernel: kernel).release(assignment) } catch {
            GuestErrorLog.report(device: "vfio", kind: "release", "\(error)")
        }
    }
}

/// The machine's interrupt routes for assigned functions. MSI and MSI-X vectors are KVM irqfds
/// (`MSIVectorGroup`), so they need the in-kernel irqchip, which a KVM guest attaches after the
/// machine is built; until then (and under qtest) enabling them is refused with a logged reason.
final class AssignedInterruptRoutes: AssignedInterruptRouting {
    private let routes = Mutex<KVMInterruptRoutes?>(nil)

    func attach(_ routes: KVMInterruptRoutes) { self.routes.withLock { $0 = routes } }

    func makeMessageVectors(count: Int) throws(InterruptRoutingError) -> any MessageVectors {
        guard let routes = routes.withLock({ $0 }) else {
            throw InterruptRoutingError("MSI/MSI-X of an assigned device needs KVM's in-kernel irqchip (-accel kvm)")
        }
        do throws(InterruptRouteError) {
            return KVMMessageVectors(group: try routes.makeMSIGroup(vectors: count))
        } catch {
            throw InterruptRoutingError("\(error)")
        }
    }

    /// INTx of assigned functions (a resampled irqfd on the function's GSI) is not wired yet:
    /// the device's pin stays unconnected, and guests use MSI or MSI-X.
    func makeINTx() throws(InterruptRoutingError) -> (any INTxEventPair)? { nil }
}

/// An `MSIVectorGroup` as an assigned function's vectors.
final class KVMMessageVectors: MessageVectors {
    let group: MSIVectorGroup

    init(group: MSIVectorGroup) { self.group = group }

    var eventFDs: [Int32] { group.notifiers.map { $0.eventFD.rawValue } }

    func update(vector: Int, message: MSIMessage, masked: Bool) throws(InterruptRoutingError) {
        do throws(InterruptRouteError) { try group.update(vector: vector, message: message, masked: masked) } catch {
            throw InterruptRoutingError("\(error)")
        }
    }

    func release() {
        do throws(InterruptRouteError) { try group.release() } catch {
            GuestErrorLog.report(device: "vfio", kind: "irq-release", "releasing MSI vectors: \(error)")
        }
    }
}
