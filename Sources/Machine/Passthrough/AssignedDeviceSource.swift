import PCIPassthrough
import Synchronization
import VFIO
import VMMBase

/// Where `-device vfio-pci,host=BDF` gets its device: the host's VFIO, or a twin in tests.
public protocol AssignedDeviceSource: Sendable {
    func openDevice(host: PCIAddress) throws(VFIOError) -> any VFIODeviceIO
}

/// The host's VFIO through a `VFIOKernel`: each device's IOMMU group is opened once and put
/// in the machine's one container (type1v2 IOMMU, set when the first group joins), in the
/// order the kernel requires. Guest RAM's DMA maps are the container's listener's business.
public final class VFIOKernelDeviceSource: AssignedDeviceSource {
    private struct State: @unchecked Sendable {
        // @unchecked: Sendable class existentials, guarded by the Mutex.
        var container: (any VFIOContainerIO)?
        var groups: [Int: any VFIOGroupIO] = [:]
    }

    private let kernel: any VFIOKernel
    private let state = Mutex(State())

    public init(kernel: any VFIOKernel) { self.kernel = kernel }

    public func openDevice(host: PCIAddress) throws(VFIOError) -> any VFIODeviceIO {
        let number = try kernel.iommuGroup(of: host)
        return try state.withLock { (s: inout State) throws(VFIOError) -> any VFIODeviceIO in
            let group: any VFIOGroupIO
            if let known = s.groups[number] { group = known } else { group = try join(number, &s) }
            return try group.openDevice(host.description)
        }
    }

    private func join(_ number: Int, _ s: inout State) throws(VFIOError) -> any VFIOGroupIO {
        let group = try kernel.openGroup(number)
        guard try group.status().viable else {
            throw VFIOError(.groupNotViable(group: number, offenders: []), operation: "VFIO_GROUP_GET_STATUS",
                            subject: "group \(number)")
        }
        let container: any VFIOContainerIO
        let fresh = s.container == nil
        if let known = s.container { container = known } else { container = try kernel.openContainer() }
        if fresh {
            let version = try container.apiVersion()
            guard version == 0 else {
                throw VFIOError(.unsupportedAPIVersion(version), operation: "VFIO_GET_API_VERSION", subject: "/dev/vfio/vfio")
            }
            guard try container.checkExtension(.type1v2) else {
                throw VFIOError(.extensionMissing(.type1v2), operation: "VFIO_CHECK_EXTENSION", subject: "/dev/vfio/vfio")
            }
        }
        try group.setContainer(container)
        if fresh { try container.setIOMMU(.type1v2) }
        s.container = container
        s.groups[number] = group
        return group
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
