import Chipset
import PCI
import PCIPassthrough
import VFIO
import VMMBase

/// `-device vfio-pci,host=BDF[,rombar=0|1][,x-no-mmap=on|off][,iommufd=ID]`: QEMU's
/// properties and errors, the guest topology's PCI Express position, and the machine's VFIO and
/// interrupt routes. iommufd= (an `-object iommufd`) insists on iommufd, which the machine
/// otherwise takes by itself where the kernel has it; it is refused where the kernel has not.
struct VFIOPCIDevice: Sendable {
    static let driver = "vfio-pci"
    static let properties = ["host", "rombar", "x-no-mmap", "iommufd"]

    let opener: AssignedDeviceOpener
    let routes: MessageVectorRoutes
    /// The machine's `-object iommufd` ids.
    let iommufdObjects: Set<String>

    func make(_ spec: DeviceSpec, id: String, parent: (any PCIBridgeFunction)?) throws(MachineConfigurationError) -> AssignedPCIFunction {
        for key in spec.properties.keys.sorted() where !Self.properties.contains(key) {
            throw .device(id: id, reason: "Property '\(Self.driver).\(key)' not found")
        }
        guard let hostText = spec.properties["host"] else {
            throw .device(id: id, reason: "No provided host device; use -device vfio-pci,host=DDDD:BB:DD.F")
        }
        guard let host = PCIAddress(parsing: hostText) else {
            throw .device(id: id, reason: "Property '\(Self.driver).host' doesn't take value '\(hostText)'")
        }
        if let object = spec.properties["iommufd"] {
            guard iommufdObjects.contains(object) else {
                throw .device(id: id, reason: "Device '\(object)' not found (define it first: -object iommufd,id=\(object))")
            }
            guard opener.usesIOMMUFD else {
                throw .device(id: id, reason: "iommufd=\(object): this host's VFIO has no iommufd, which needs /dev/iommu and VFIO device cdevs (Linux 6.6 or later built with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV); leave iommufd= out to use the type1 container")
            }
        }
        var options = AssignmentOptions(position: Self.position(behind: parent))
        if let text = spec.properties["rombar"] {
            guard let value = DeviceSpec.parseNumber(Substring(text)), value <= UInt32.max else {
                throw .device(id: id, reason: "Parameter 'rombar' expects integer")
            }
            options.romBAR = value != 0
        }
        if let text = spec.properties["x-no-mmap"] {
            guard let noMmap = DeviceSpec.parseBool(text) else {
                throw .device(id: id, reason: "Parameter 'x-no-mmap' expects 'on' or 'off'")
            }
            options.mmap = !noMmap
        }
        let quirks: VFIOQuirkTable
        let assignment: MachineVFIO.Assignment
        do throws(VFIOQuirkTableError) { quirks = try VFIOQuirkTable.builtIn() } catch {
            throw .device(id: id, reason: "\(AssignmentError.quirks(error))")
        }
        do throws(VFIOError) { assignment = try opener.open(host) } catch {
            throw .device(id: id, reason: "vfio \(host): \(error)")
        }
        let opener = opener
        // What unplug finds the device by: its id, or the QOM path of one given none.
        let reference = spec.id ?? "/machine/peripheral-anon/\(id)"
        let notices = AssignedDeviceNotices(device: assignment.device, id: id,
                                            onRequest: { opener.hostAsksBack(reference: reference, name: id, host: host) },
                                            onError: { opener.hostReportsError(id: id, host: host) })
        do throws(AssignmentError) {
            return try AssignedPCIFunction(name: id, device: assignment.device, options: options, quirks: quirks,
                                           routing: routes,
                                           busReset: { () throws(VFIOError) in try opener.busReset(assignment) },
                                           release: {
                                               notices.stop()
                                               opener.release(assignment)
                                           })
        } catch {
            notices.stop()
            opener.release(assignment)
            throw .device(id: id, reason: "\(error)")
        }
    }

    /// What the function's PCI Express capability says: the link of the port above it, an
    /// integrated endpoint on the root bus, none behind a conventional bridge.
    static func position(behind parent: (any PCIBridgeFunction)?) -> GuestPCIExpressPosition {
        guard let parent else { return .rootComplexIntegrated }
        let config = parent.configSnapshot()
        guard config.pciExpressPortType?.isDownstreamFacing == true, let link = PCIeLinkCapabilities(config: config) else {
            return .conventionalBus
        }
        let speed = PCIExpressOptions.LinkSpeed(rawValue: min(max(link.maxSpeed, 1), PCIExpressOptions.LinkSpeed.gt32.rawValue)) ?? .gt2_5
        return .behindPort(speed: speed, width: Int(max(link.maxWidth, 1)))
    }
}
