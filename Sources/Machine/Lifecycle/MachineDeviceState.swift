import Chipset
import PCI
import VMMBase

/// Every device model's state in a machine, as a value (what migration will carry): each
/// placed function by its QOM path, and the platform's own devices. Guest RAM, vCPUs and host
/// backends are not part of it.
public struct MachineDeviceState: Sendable, Hashable, Codable {
    public var functions: [String: PlacedFunctionState]
    public var platform: PlatformDeviceState
}

/// A placed function's driver (as on the command line) and its model's state.
public struct PlacedFunctionState: Sendable, Hashable, Codable {
    public let driver: String
    let model: ModelState
}

/// The q35 chipset's functions on bus 0 and the devices at fixed ports.
public struct PlatformDeviceState: Sendable, Hashable, Codable {
    var mch: Q35HostBridge.Snapshot
    var lpc: ICH9LPC.Snapshot
    var ahci: ConfigOnlyFunction.Snapshot
    var smbus: ConfigOnlyFunction.Snapshot
    var powerManagement: ICH9PowerManagement.Snapshot
    var serial: UART16550.Snapshot
    var rtc: CMOSRTC.Snapshot
    var keyboardController: I8042.Snapshot
    var ioapic: IOAPIC.Snapshot
    var acpiHotPlug: ACPIHotPlugController.Snapshot
}

/// Why a machine's device state could not be taken or put back.
public enum MachineDeviceStateError: Error, Hashable, CustomStringConvertible {
    /// A placed function whose model has no snapshot yet.
    case notSnapshottable(path: String, driver: String)
    /// The snapshot's devices are not this machine's.
    case deviceSetMismatch(path: String, reason: String)
    /// A device refused its part.
    case device(path: String, DeviceStateError)

    public var description: String {
        switch self {
        case .notSnapshottable(let path, let driver):
            "device '\(path)' (\(driver)) cannot be snapshotted yet; unplug it with device_del first"
        case .deviceSetMismatch(let path, let reason):
            "cannot restore device state: at '\(path)' \(reason); restore into a machine built from the same command line"
        case .device(let path, let error): "cannot restore device state of '\(path)': \(error)"
        }
    }
}

extension Machine {
    /// Every device's state now. Take it with the vCPUs stopped, so it is one instant.
    public func snapshotDevices() throws(MachineDeviceStateError) -> MachineDeviceState {
        var functions: [String: PlacedFunctionState] = [:]
        for placed in devices {
            guard let function = placed.function as? any SnapshottableFunction else {
                throw .notSnapshottable(path: placed.qomPath, driver: placed.driver)
            }
            functions[placed.qomPath] = PlacedFunctionState(driver: placed.driver, model: function.modelState())
        }
        let (ahci, smbus) = chipsetStorageFunctions
        return MachineDeviceState(functions: functions, platform: PlatformDeviceState(
            mch: hostBridge.snapshot(), lpc: lpc.snapshot(), ahci: ahci.snapshot(), smbus: smbus.snapshot(),
            powerManagement: legacy.powerManagement.snapshot(), serial: legacy.serial.snapshot(), rtc: legacy.rtc.snapshot(),
            keyboardController: legacy.keyboardController.snapshot(), ioapic: ioapic.snapshot(),
            acpiHotPlug: legacy.acpiHotPlug.snapshot()))
    }

    /// Puts `state` back into this machine, which must have been built from the same command
    /// line (the same devices at the same paths), then rebuilds what follows from device
    /// state: config routes, BAR and window mappings, platform windows, INTx routing (nothing
    /// to do when every device already holds `state`). A
    /// snapshot of other devices is refused first; a device refusing its part puts back what
    /// was restored before it, so a refused snapshot leaves the machine as it was.
    public func restoreDevices(_ state: MachineDeviceState) throws(MachineDeviceStateError) {
        let placed = Dictionary(devices.map { ($0.qomPath, $0) }, uniquingKeysWith: { first, _ in first })
        for path in Set(placed.keys).union(state.functions.keys).sorted() {
            switch (placed[path], state.functions[path]) {
            case (nil, let saved?):
                throw .deviceSetMismatch(path: path, reason: "the snapshot has a \(saved.driver) and this machine nothing")
            case (let device?, nil):
                throw .deviceSetMismatch(path: path, reason: "this machine has a \(device.driver) and the snapshot nothing")
            case (let device?, let saved?) where device.driver != saved.driver:
                throw .deviceSetMismatch(path: path, reason: "the snapshot has a \(saved.driver), this machine a \(device.driver)")
            default: break
            }
        }
        let before = try snapshotDevices()
        // Every device already holds its part: routes, mappings and INTx routing follow from
        // device state at each change, so they are this state's already (the fuzz targets put
        // a machine back after every input, most of which changed no device).
        if before == state { return }
        let outcome = spaces.batched { () -> Result<Void, MachineDeviceStateError> in
            defer {
                intxRoutingChanged()
                topologyChanged()
                spaces.rebuildPlatform()
            }
            do throws(MachineDeviceStateError) {
                try put(state, placed: placed)
                return .success(())
            } catch {
                try? put(before, placed: placed)
                return .failure(error)
            }
        }
        try outcome.get()
    }

    /// Restores the platform, then every placed function; stops at the first refusal.
    private func put(_ state: MachineDeviceState, placed: [String: PlacedDevice]) throws(MachineDeviceStateError) {
        func step(_ path: String, _ body: () throws(DeviceStateError) -> Void) throws(MachineDeviceStateError) {
            do throws(DeviceStateError) { try body() } catch { throw .device(path: path, error) }
        }
        let p = state.platform
        let (ahci, smbus) = chipsetStorageFunctions
        try step("mch") { () throws(DeviceStateError) in try hostBridge.restore(p.mch) }
        try step("lpc") { () throws(DeviceStateError) in try lpc.restore(p.lpc) }
        try step("ahci") { () throws(DeviceStateError) in try ahci.restore(p.ahci) }
        try step("smbus") { () throws(DeviceStateError) in try smbus.restore(p.smbus) }
        try step("ich9-pm") { () throws(DeviceStateError) in try legacy.powerManagement.restore(p.powerManagement) }
        try step("serial0") { () throws(DeviceStateError) in try legacy.serial.restore(p.serial) }
        try step("rtc") { () throws(DeviceStateError) in try legacy.rtc.restore(p.rtc) }
        try step("i8042") { () throws(DeviceStateError) in try legacy.keyboardController.restore(p.keyboardController) }
        try step("ioapic") { () throws(DeviceStateError) in try ioapic.restore(p.ioapic) }
        try step("acpi-pci-hotplug") { () throws(DeviceStateError) in try legacy.acpiHotPlug.restore(p.acpiHotPlug) }
        for (path, saved) in state.functions.sorted(by: { $0.key < $1.key }) {
            guard let device = placed[path] else { continue }  // checked by the caller
            try step(path) { () throws(DeviceStateError) in
                guard let function = device.function as? any SnapshottableFunction else {
                    throw .layoutMismatch(device: device.id, reason: "a \(device.driver) keeps no snapshot")
                }
                try function.restoreModel(saved.model)
            }
        }
    }

    /// 00:1f.2 and 00:1f.3, which the machine attaches itself.
    private var chipsetStorageFunctions: (ahci: ConfigOnlyFunction, smbus: ConfigOnlyFunction) {
        guard let ahci = rootBus.function(at: 0x1F << 3 | 2) as? ConfigOnlyFunction,
              let smbus = rootBus.function(at: 0x1F << 3 | 3) as? ConfigOnlyFunction else {
            preconditionFailure("q35 has AHCI and SMBus at 00:1f.2 and 00:1f.3 from its creation")
        }
        return (ahci, smbus)
    }
}
