import HostOS
import Synchronization
import VMMBase

/// A host with VFIO and the given devices bound to vfio-pci, each in its IOMMU group: the
/// `VFIOKernel` for unit tests and for hosts without VFIO. Containers and groups it hands out
/// share its `log`.
public final class VFIOTwinKernel: VFIOKernel {
    public struct Assigned: Sendable {
        public var address: PCIAddress
        public var group: Int
        public var device: VFIOTwinDevice
        /// False: another device of the group is on a host driver (the group is not viable).
        public var viable: Bool
        public init(address: PCIAddress, group: Int, device: VFIOTwinDevice, viable: Bool = true) {
            self.address = address
            self.group = group
            self.device = device
            self.viable = viable
        }
    }

    public let log: VFIOTwinLog
    public let containerConfiguration: VFIOTwinContainer.Configuration
    private let devices: [Assigned]
    private let containers = Mutex<[VFIOTwinContainer]>([])

    /// Whether it stands for a host with iommufd (what vfio-pci's iommufd= needs).
    public let usesIOMMUFD: Bool

    public init(devices: [Assigned], containerConfiguration: VFIOTwinContainer.Configuration = .init(),
                log: VFIOTwinLog = VFIOTwinLog(), usesIOMMUFD: Bool = false) {
        self.usesIOMMUFD = usesIOMMUFD
        self.devices = devices
        self.containerConfiguration = containerConfiguration
        self.log = log
    }

    /// Every container opened so far (the machine opens one).
    public var openedContainers: [VFIOTwinContainer] { containers.withLock { $0 } }

    public func openContainer() throws(VFIOError) -> any VFIOContainerIO {
        let container = VFIOTwinContainer(configuration: containerConfiguration, log: log)
        containers.withLock { $0.append(container) }
        return container
    }

    public func iommuGroup(of device: PCIAddress) throws(VFIOError) -> Int {
        guard let d = devices.first(where: { $0.address == device }) else {
            throw VFIOError(.invalidRequest("the host has no PCI device \(device) (see lspci -D)"),
                            operation: "find IOMMU group", subject: "twin host")
        }
        return d.group
    }

    public func openGroup(_ number: Int) throws(VFIOError) -> any VFIOGroupIO {
        let members = devices.filter { $0.group == number }
        guard !members.isEmpty else {
            throw VFIOError(.groupMissing(group: number), operation: "open", subject: "/dev/vfio/\(number)",
                            system: SystemError(.noSuchFileOrDirectory, operation: "open"))
        }
        return VFIOTwinGroup(number: number, members: members, log: log)
    }
}

/// A twin group: viable when all its members are; hands out its members' devices.
public final class VFIOTwinGroup: VFIOGroupIO {
    public let number: Int
    private let members: [VFIOTwinKernel.Assigned]
    private let log: VFIOTwinLog
    private let container = Mutex<VFIOTwinContainer?>(nil)

    init(number: Int, members: [VFIOTwinKernel.Assigned], log: VFIOTwinLog) {
        self.number = number
        self.members = members
        self.log = log
    }

    public func status() throws(VFIOError) -> VFIOGroupStatus {
        VFIOGroupStatus(viable: members.allSatisfy(\.viable), containerSet: container.withLock { $0 != nil })
    }

    public func setContainer(_ container: any VFIOContainerIO) throws(VFIOError) {
        log.record(.setContainer(group: number))
        guard let twin = container as? VFIOTwinContainer else {
            throw VFIOError(.invalidRequest("the container is not a twin container"), operation: "VFIO_GROUP_SET_CONTAINER",
                            subject: "group \(number)")
        }
        guard try status().viable else {
            let offenders = members.filter { !$0.viable }.map { "\($0.address) (host driver)" }
            throw VFIOError(.groupNotViable(group: number, offenders: offenders), operation: "VFIO_GROUP_SET_CONTAINER",
                            subject: "group \(number)")
        }
        guard self.container.withLock({ $0 == nil }) else {
            throw VFIOError(.busy, operation: "VFIO_GROUP_SET_CONTAINER", subject: "group \(number)",
                            system: SystemError(.busy, operation: "ioctl"))
        }
        try twin.join(group: number)
        self.container.withLock { $0 = twin }
    }

    public func openDevice(_ name: String) throws(VFIOError) -> any VFIODeviceIO {
        log.record(.openDevice(name))
        guard container.withLock({ $0 != nil }) else {
            throw VFIOError(.invalidRequest("group \(number) is in no container yet"), operation: "VFIO_GROUP_GET_DEVICE_FD",
                            subject: "device \(name)", system: SystemError(.invalidArgument, operation: "ioctl"))
        }
        guard let member = members.first(where: { "\($0.address)" == name }) else {
            throw VFIOError(.invalidRequest("\(name) is not a device of group \(number)"), operation: "VFIO_GROUP_GET_DEVICE_FD",
                            subject: "device \(name)", system: SystemError(.invalidArgument, operation: "ioctl"))
        }
        return member.device
    }
}
