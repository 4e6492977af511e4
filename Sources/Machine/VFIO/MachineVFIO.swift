import AddressSpace
import Synchronization
import VFIO
import VMMBase

/// VFIO for one machine, the machine-side entry point for device assignment: one container for
/// every assigned device (one IOMMU context for the guest's address space, as QEMU shares one),
/// each IOMMU group opened once and put in it, and DMA maps that follow guest RAM through every
/// commit. The device model (PCIPassthrough) gets its `VFIODeviceIO` from `openDevice` and
/// shows its mmap'd BAR areas through `DirectlyMappedBARs`, which the KVM memory slots follow.
///
///     let vfio = try machine.vfio()                  // the host's VFIO (iommufd or container), a twin in tests
///     let assigned = try vfio.openDevice(PCIAddress(bus: 1, device: 0, function: 0)!)
///     // ... hand assigned.device to the device model; on unplug:
///     vfio.release(assigned)
public final class MachineVFIO: Sendable {
    public let kernel: any VFIOKernel
    public let container: any VFIOContainerIO

    /// A host device opened for assignment, with its group (a hot reset names every group).
    public struct Assignment: Sendable {
        public let address: PCIAddress
        public let group: any VFIOGroupIO
        public let device: any VFIODeviceIO
    }

    private struct State {
        var groups: [Int: any VFIOGroupIO] = [:]
        var assigned: [PCIAddress: Int] = [:]
        /// The container's IOMMU type is set once, for its life (the kernel refuses a second time).
        var iommuSet = false
        var dma: GuestRAMDMAListener?
    }

    private let layer: CommittedLayer
    private let ram: RAMHandler
    private let banks: [RAMBank]
    private let state = Mutex(State())

    init(kernel: any VFIOKernel, layer: CommittedLayer, ram: RAMHandler, banks: [RAMBank]) throws(VFIOError) {
        let container = try kernel.openContainer()
        let version = try container.apiVersion()
        guard version == 0 else {
            throw VFIOError(.unsupportedAPIVersion(version), operation: "VFIO_GET_API_VERSION", subject: "/dev/vfio/vfio")
        }
        guard try container.checkExtension(.type1v2) else {
            throw VFIOError(.extensionMissing(.type1v2), operation: "VFIO_CHECK_EXTENSION", subject: "/dev/vfio/vfio")
        }
        self.kernel = kernel
        self.container = container
        self.layer = layer
        self.ram = ram
        self.banks = banks
    }

    /// Opens host function `address` (bound to vfio-pci) for assignment. Its group joins the
    /// container on first use; the first group also sets the type1v2 IOMMU and maps guest RAM
    /// for DMA (failing with the fix when the IOMMU cannot take it all).
    public func openDevice(_ address: PCIAddress) throws(VFIOError) -> Assignment {
        let number = try kernel.iommuGroup(of: address)
        return try state.withLock { (s) throws(VFIOError) -> Assignment in
            guard s.assigned[address] == nil else {
                throw VFIOError(.busy, operation: "assign", subject: "host device \(address)",
                                system: nil)
            }
            let group: any VFIOGroupIO
            if let open = s.groups[number] {
                group = open
            } else {
                group = try kernel.openGroup(number)
                try group.setContainer(container)
                s.groups[number] = group
            }
            if !s.iommuSet {
                try container.setIOMMU(.type1v2)
                s.iommuSet = true
            }
            if s.dma == nil {
                let listener = GuestRAMDMAListener(mirror: try VFIODMAMirror(container: container), knownBanks: banks, ram: ram)
                try listener.sync(to: layer.view(.memory))
                layer.addListener(listener)
                s.dma = listener
            }
            let device = try group.openDevice("\(address)")
            s.assigned[address] = number
            return Assignment(address: address, group: group, device: device)
        }
    }

    /// A secondary-bus (hot) reset of `assignment`'s device, for a device with neither FLR nor
    /// PM reset, as QEMU's single-device hot reset: every function the reset reaches must be in
    /// a group this VM holds (the kernel wants each group's fd as proof), and none may be another
    /// device assigned to this VM, whose state the reset would lose behind the guest's back.
    public func busReset(_ assignment: Assignment) throws(VFIOError) {
        let affected = try assignment.device.hotResetInfo()
        let groups = try state.withLock { (s) throws(VFIOError) -> [any VFIOGroupIO] in
            var groups: [Int: any VFIOGroupIO] = [:]
            for dependency in affected {
                switch dependency.owner {
                case .group(let id):
                    guard let group = s.groups[id] else {
                        throw VFIOError(.invalidRequest("a bus reset would also reset \(dependency.address) (IOMMU group \(id)), which this VM does not hold"),
                                        operation: "VFIO_DEVICE_PCI_HOT_RESET", subject: "\(assignment.address)")
                    }
                    groups[id] = group
                case .iommufd(let owned):
                    // The kernel judged ownership by our iommufd (a device of ours, or in a group of ours).
                    guard owned else {
                        throw VFIOError(.invalidRequest("a bus reset would also reset \(dependency.address), which this VM's iommufd does not own (bind it to vfio-pci: switchyard host bind \(dependency.address))"),
                                        operation: "VFIO_DEVICE_PCI_HOT_RESET", subject: "\(assignment.address)")
                    }
                }
                if dependency.address != assignment.address, s.assigned[dependency.address] != nil {
                    throw VFIOError(.invalidRequest("a bus reset would also reset \(dependency.address), assigned to this VM too"),
                                    operation: "VFIO_DEVICE_PCI_HOT_RESET", subject: "\(assignment.address)")
                }
            }
            return groups.keys.sorted().compactMap { groups[$0] }
        }
        do {
            try assignment.device.hotReset(groups: groups)
        } catch where error.system?.errno == .invalidArgument {
            // Linux refuses with EINVAL when a function the reset reaches is not on vfio-pci
            // (vfio-pci's dev_set must hold them all), whatever the groups passed.
            let others = affected.map(\.address).filter { $0 != assignment.address }
            let fix = others.isEmpty ? "" : "; Linux resets a bus only when every function on it is bound to vfio-pci: "
                + others.map { "switchyard host bind \($0)" }.joined(separator: ", ")
                + " (or the whole group: switchyard host bind \(assignment.address) --group)"
            throw VFIOError(.invalidRequest("the kernel refused the bus reset (EINVAL)\(fix)"),
                            operation: "VFIO_DEVICE_PCI_HOT_RESET", subject: "\(assignment.address)")
        }
    }

    /// Forgets an assignment (the device model closed its device). When the last device goes,
    /// DMA maps stop following guest RAM and are removed.
    public func release(_ assignment: Assignment) {
        let listener: GuestRAMDMAListener? = state.withLock { s in
            s.assigned[assignment.address] = nil
            guard s.assigned.isEmpty, let dma = s.dma else { return nil }
            s.dma = nil
            return dma
        }
        guard let listener else { return }
        layer.removeListener(listener)
        do { try listener.mirror.clear() } catch {
            GuestErrorLog.report(device: "vfio-dma", kind: "unmap", "\(error)")
        }
    }

    /// The DMA maps in force (empty until a device is assigned).
    public var dmaMappings: [VFIODMAMapping] { state.withLock { $0.dma?.mirror.mappings ?? [] } }
    /// The last refusal of a DMA update after assignment (a commit cannot fail; it logs).
    public var lastDMAError: VFIOError? { state.withLock { $0.dma?.lastError } }
}

extension Machine {
    /// This machine's VFIO: made on first use over `kernel` (the host's iommufd or /dev/vfio
    /// container unless a test passes a twin); later calls return the same one whatever `kernel` they pass.
    public func vfio(kernel: @autoclosure () -> any VFIOKernel = VFIOHost.automatic()) throws(VFIOError) -> MachineVFIO {
        try vfioSlot.withLock { (slot) throws(VFIOError) -> MachineVFIO in
            if let made = slot { return made }
            let made = try MachineVFIO(kernel: kernel(), layer: spaces.platform, ram: ram, banks: ramBanks)
            slot = made
            return made
        }
    }
}
