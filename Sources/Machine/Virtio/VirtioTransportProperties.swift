import Virtio

/// The virtio-pci transport's own -device properties, which every virtio device here takes
/// (QEMU's spelling): iommu_platform=on|off offers and requires VIRTIO_F_ACCESS_PLATFORM,
/// packed=on|off offers VIRTIO_F_RING_PACKED (the driver chooses its ring format).
struct VirtioTransportProperties {
    static let names: Set<String> = ["iommu_platform", "packed"]
    /// For a device's list of what it takes.
    static let usage = "iommu_platform=on|off and packed=on|off"

    var accessPlatform = false
    var packedRing = false

    init(_ spec: DeviceSpec, id: String) throws(MachineConfigurationError) {
        accessPlatform = try Self.flag("iommu_platform", of: spec, id: id)
        packedRing = try Self.flag("packed", of: spec, id: id)
    }

    private static func flag(_ name: String, of spec: DeviceSpec, id: String) throws(MachineConfigurationError) -> Bool {
        guard let text = spec.properties[name] else { return false }
        guard let on = DeviceSpec.parseBool(text) else {
            throw .invalidProperty(device: id, property: name, reason: "Parameter '\(name)' expects 'on' or 'off'")
        }
        return on
    }
}
