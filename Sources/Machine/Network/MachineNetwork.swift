import Virtio
import VirtioNet

extension Machine {
    /// QMP set_link: `name` is a NIC's id or the id of the netdev it uses, as in QEMU.
    public func setLink(name: String, up: Bool) throws(MachineConfigurationError) {
        if let placed = device(id: name), let nic = (placed.function as? VirtioPCIFunction)?.device as? VirtioNetDevice {
            nic.setLink(up: up)
        } else if let nic = topology.backends.networks?.nic(onNetdev: name) {
            nic.setLink(up: up)
        } else {
            throw .noSuchDevice(name)
        }
    }
}

extension Machine {
    /// At exit: deletes the macvtap links the -netdevs made and gives SR-IOV VFs their settings
    /// back (a crash leaves links that the next start removes, and VF reservations die with it).
    public func closeNetworkBackends() {
        topology.backends.networks?.close()
    }
}
