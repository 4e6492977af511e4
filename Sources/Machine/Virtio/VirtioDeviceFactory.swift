import PCI
import Virtio

/// Virtio devices by QEMU's -device names. Only the modern (virtio 1.x) interface exists here:
/// `...-non-transitional` always, the plain name where QEMU's `disable-legacy=auto` also gives a
/// modern-only device (on a PCIe port's link) or with `disable-legacy=on`.
enum VirtioDeviceFactory {
    static let drivers = ["virtio-rng-pci", "virtio-rng-pci-non-transitional"]

    static func make(_ spec: DeviceSpec, id: String, expressLink: Bool) throws(MachineConfigurationError) -> any PCIFunction {
        let known = VirtioTransportProperties.names.union(["disable-legacy", "disable-modern"])
        for key in spec.properties.keys.sorted() where !known.contains(key) {
            throw .invalidProperty(device: id, property: key,
                                   reason: "\(spec.driver) accepts only disable-legacy=on|auto, disable-modern=off, \(VirtioTransportProperties.usage)")
        }
        let transitional = !spec.driver.hasSuffix("-non-transitional")
        if transitional {
            switch spec.properties["disable-legacy"] ?? "auto" {
            case "on", "true", "yes": break
            case "auto" where expressLink: break
            case "auto":
                throw .invalidProperty(device: id, property: "disable-legacy",
                                       reason: "QEMU makes \(spec.driver) transitional here (legacy virtio 0.9 in an I/O BAR), which is not implemented; plug it into a PCIe root port or switch downstream port, add disable-legacy=on, or use \(spec.driver)-non-transitional")
            case let other:
                throw .invalidProperty(device: id, property: "disable-legacy",
                                       reason: "'\(other)': only the modern interface is implemented; use disable-legacy=on or auto")
            }
        } else if spec.properties["disable-legacy"] != nil {
            throw .invalidProperty(device: id, property: "disable-legacy", reason: "\(spec.driver) has no legacy interface to disable")
        }
        if let modern = spec.properties["disable-modern"], DeviceSpec.parseBool(modern) != false {
            throw .invalidProperty(device: id, property: "disable-modern", reason: "'\(modern)': the modern interface is the only one implemented; use disable-modern=off")
        }
        let transport = try VirtioTransportProperties(spec, id: id)
        return VirtioPCIFunction(name: id, device: VirtioEntropyDevice(name: id), express: expressLink,
                                 accessPlatform: transport.accessPlatform, packedRing: transport.packedRing,
                                 multiFunction: spec.multifunction)
    }
}
