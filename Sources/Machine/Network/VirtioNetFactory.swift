import VMMBase
import PCI
import Virtio
import VirtioNet

/// `-device virtio-net-pci,netdev=ID[,mac=][,mq=on|off][,vectors=N][,iommu_platform=][,packed=]`
/// (QEMU's properties).
enum VirtioNetFactory {
    static let driver = "virtio-net-pci"

    /// - Parameter express: the device sits behind a PCIe port (QEMU then makes it a PCI
    ///   Express endpoint; on pcie.0 it is a conventional function).
    static func make(_ spec: DeviceSpec, id: String, express: Bool, multiFunction: Bool, networks: NetworkBackends?,
                     messageRoutes: (any MessageVectorRouting)? = nil) throws(MachineConfigurationError) -> any PCIFunction {
        for key in spec.properties.keys.sorted() where !VirtioTransportProperties.names.union(["netdev", "mac", "mq", "vectors"]).contains(key) {
            throw .invalidProperty(device: id, property: key, reason: "Property 'virtio-net-pci.\(key)' not found; virtio-net-pci takes netdev=, mac=, mq=on|off, vectors=, \(VirtioTransportProperties.usage)")
        }
        let transport = try VirtioTransportProperties(spec, id: id)
        let mac: MACAddress?
        if let text = spec.properties["mac"] {
            guard let parsed = MACAddress(text), !parsed.isMulticast else {
                throw .invalidProperty(device: id, property: "mac", reason: "Property 'virtio-net-device.mac' doesn't take value '\(text)'; give a unicast address such as 52:54:00:12:34:57")
            }
            mac = parsed
        } else {
            mac = nil
        }
        var multiQueue = false
        if let text = spec.properties["mq"] {
            guard let on = DeviceSpec.parseBool(text) else {
                throw .invalidProperty(device: id, property: "mq", reason: "Parameter 'mq' expects 'on' or 'off'")
            }
            multiQueue = on
        }
        var vectors: Int?
        if let text = spec.properties["vectors"] {
            guard let n = DeviceSpec.parseNumber(Substring(text)), (1...VirtioNetFactory.maximumVectors).contains(n) else {
                throw .invalidProperty(device: id, property: "vectors", reason: "'\(text)' must be a number of MSI-X vectors from 1 to \(maximumVectors)")
            }
            vectors = Int(n)
        }
        // Claimed last: nothing after it throws, so no claim is left behind by a refusal.
        var queues: [any PacketQueue] = []
        if let netdev = spec.properties["netdev"] {
            guard let networks else { throw NetworkBackends.unknown(netdev, user: id) }
            queues = try networks.claim(netdev, for: id)
        }
        let pairs = multiQueue ? max(queues.count, 1) : 1
        // On a macvtap netdev the default is the link's own address (macvtap delivers by it).
        let linkAddress = spec.properties["netdev"].flatMap { networks?.linkAddress(of: $0) }
        let vhost = spec.properties["netdev"].flatMap { networks?.vhostBackend(of: $0) }
        let nic = VirtioNetDevice(name: id, mac: mac ?? linkAddress ?? networks?.nextDefaultMAC() ?? .qemuDefault(index: 0),
                                  backend: queues, pairs: pairs, vhost: vhost)
        networks?.attach(nic, to: spec.properties["netdev"])
        let netdev = spec.properties["netdev"]
        // vhost-net has no packed rings: as QEMU does, the NIC then offers split rings only.
        return VirtioPCIFunction(name: id, device: nic, express: express, accessPlatform: transport.accessPlatform,
                                 packedRing: transport.packedRing && vhost == nil, multiFunction: multiFunction,
                                 vectors: vectors ?? 2 * pairs + 2,
                                 // vhost raises the data queues' interrupts through KVM irqfds.
                                 messageRouting: vhost == nil ? nil : messageRoutes,
                                 release: { if let netdev { networks?.release(netdev, from: id) } })
    }

    /// What the transport's MSI-X table in BAR 1 holds.
    static let maximumVectors: UInt64 = 128
}
