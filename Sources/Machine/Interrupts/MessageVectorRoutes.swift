import PCI
import Synchronization
import VMMBase

/// The machine's in-kernel routes for message interrupts a host backend raises (an assigned
/// function's through VFIO, a virtio queue's through vhost). Vectors are KVM irqfds
/// (`MSIVectorGroup`), so they need the in-kernel irqchip, which a KVM guest attaches after the
/// machine is built; until then (and under qtest) making them is refused with the reason.
final class MessageVectorRoutes: MessageVectorRouting {
    private let routes = Mutex<KVMInterruptRoutes?>(nil)

    func attach(_ routes: KVMInterruptRoutes) { self.routes.withLock { $0 = routes } }

    func makeMessageVectors(count: Int) throws(InterruptRoutingError) -> any MessageVectors {
        guard let routes = routes.withLock({ $0 }) else {
            throw InterruptRoutingError("in-kernel MSI routes need KVM's in-kernel irqchip (-accel kvm)")
        }
        do throws(InterruptRouteError) {
            return KVMMessageVectors(group: try routes.makeMSIGroup(vectors: count))
        } catch {
            throw InterruptRoutingError("\(error)")
        }
    }
}

/// An `MSIVectorGroup` as a function's routed vectors.
final class KVMMessageVectors: MessageVectors {
    let group: MSIVectorGroup

    init(group: MSIVectorGroup) { self.group = group }

    var eventFDs: [Int32] { group.notifiers.map { $0.event.rawValue } }

    func update(vector: Int, message: MSIMessage, masked: Bool) throws(InterruptRoutingError) {
        do throws(InterruptRouteError) { try group.update(vector: vector, message: message, masked: masked) } catch {
            throw InterruptRoutingError("\(error)")
        }
    }

    func release() {
        do throws(InterruptRouteError) { try group.release() } catch {
            GuestErrorLog.report(device: "msi-routes", kind: "release", "releasing MSI vectors: \(error)")
        }
    }
}
