import Chipset
import HostOS
import PCI
import VMMBase

extension Machine {
    /// Hot-plugs a device into a slot of a hot-plug controller (a root or downstream port,
    /// or a bridge slot). Functions other than 0 are attached silently, as QEMU does; plugging
    /// function 0 signals the slot. On error the machine is left as it was.
    @discardableResult
    public func hotPlug(_ spec: DeviceSpec) throws(MachineConfigurationError) -> PlacedDevice {
        let (placed, controller) = try topology.add(spec, requireHotPlug: true)
        connectOutputs(placed)
        topologyChanged(attachingOrDetaching: [placed])
        if placed.devfn & 7 == 0, let controller {
            do {
                if let port = controller as? any PCIExpressPort {
                    try port.engine.plug(device: placed.devfn >> 3, linkPartner: Self.linkCapabilities(of: placed))
                } else {
                    try controller.plug(device: placed.devfn >> 3)
                }
            } catch {
                // Only what this call added goes: functions already in the slot stay.
                disconnectOutputs(placed)
                topology.remove(placed)
                topologyChanged(attachingOrDetaching: [placed])
                throw .hotPlug(error)
            }
            if controller is ACPIHotPlugBus { powerACPISlot(forBus: placed.busName) }
            drainHotPlugEvents(controller)
        }
        return placed
    }

    /// Tells the hot-plug controller in front of a cold-plugged device's bus (a PCIe port's slot,
    /// a bridge's SHPC) that the device is there, so that it can be deleted like a hot-plugged
    /// one (function 0 stands for the device, as at hot plug).
    func announceColdPlugged(_ placed: PlacedDevice) {
        guard placed.devfn & 7 == 0, let bridge = topology.bus(named: placed.busName)?.bridge else { return }
        if let port = bridge as? any PCIExpressPort {
            port.engine.coldPlug(device: placed.devfn >> 3, linkPartner: Self.linkCapabilities(of: placed))
        } else if let shpcBridge = bridge as? PCIBridge {
            shpcBridge.coldPlug(device: placed.devfn >> 3)
        }
    }

    static func linkCapabilities(of placed: PlacedDevice) -> PCIeLinkCapabilities? {
        PCIeLinkCapabilities(config: placed.function.configSnapshot())
    }

    /// Requests removal of a device. Removal completes when the guest lets go (or at once for
    /// a surprise removal); `MachineEvent.deviceDeleted` reports it.
    public func unplug(id: String, mode: UnplugMode = .attentionButton) throws(MachineConfigurationError) {
        guard let placed = topology.device(id: id) else { throw .noSuchDevice(id) }
        guard let controller = topology.hotPlugController(forBus: placed.busName) else {
            throw .notHotPluggable(bus: placed.busName, reason: "Bus '\(placed.busName)' does not support hotplugging")
        }
        do {
            try controller.requestUnplug(device: placed.devfn >> 3, mode: mode)
        } catch {
            throw .hotPlug(error)
        }
        drainHotPlugEvents(controller)
    }

    /// Acts on what a controller reports: an ejected slot's devices are detached, their
    /// interrupt routes released and mappings dropped, and DEVICE_DELETED is reported.
    func drainHotPlugEvents(_ controller: any HotPlugController) {
        let pending = controller.takeEvents()
        guard !pending.isEmpty else { return }
        guard let busName = topology.busName(behind: controller) else { return }
        var deleted: [PlacedDevice] = []
        for event in pending {
            if case .ejected(let device) = event {
                deleted += topology.removeSlot(busName: busName, device: device)
            }
        }
        guard !deleted.isEmpty else { return }
        for placed in deleted { disconnectOutputs(placed) }
        topologyChanged(attachingOrDetaching: deleted)
        for placed in deleted {
            events.emit(.deviceDeleted(id: placed.userID, path: placed.qomPath))
        }
    }
}

extension Machine {
    /// How the machine waits for calls that could still reach a detached function (a config
    /// cycle routed before, a DMA admitted before). They are short device calls, so a
    /// millisecond between checks is plenty.
    static func pauseInGracePeriod() { HostClock.sleep(milliseconds: 1) }
}

extension Topology {
    func busName(behind controller: any HotPlugController) -> String? {
        if let bus = controller as? ACPIHotPlugBus { return bus.name }
        return placed.first { $0.function === controller }?.id
    }
}
