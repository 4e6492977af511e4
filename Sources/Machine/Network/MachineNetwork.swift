import Virtio
import VirtioNet

extension Machine {
    /// QMP set_link: `name` is a NIC's id or the id of the netdev it uses, as in QEMU.
    public func setLink(name: String, up: Bool) throws(MachineConfigurationError) {
        if let placed = device(id: name), let nic = (placed.function as? VirtioPCIFunction)?.device as? VirtioNetDevice {
            nic.setLink(up: up)
        } else if let nic = topology.networks?.nic(onNetdev: name) {
            nic.setLink(up: up)
        } else {
            throw .noSuchDevice(name)
        }
    }
}
