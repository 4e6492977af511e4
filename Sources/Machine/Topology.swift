import Chipset
import PCI
import Synchronization
import VMMBase

/// A device the topology placed: its id, driver, the bus it sits on and its devfn there.
public struct PlacedDevice: Sendable {
    public let id: String
    public let driver: String
    public let function: any PCIFunction
    public let busName: String
    public let devfn: UInt8
}

/// Creates devices from specs and places them on named buses. Buses are named as QEMU names
/// them: `pcie.0` for the root, a bridge's id for the bus behind it.
final class Topology: Sendable {
    private struct State {
        var buses: [String: PCIBus]
        var placed: [PlacedDevice] = []
        var anonymous = 0
    }
    private let state: Mutex<State>

    static let drivers = ["pci-testdev", "pci-bridge"]

    init(rootBus: PCIBus) {
        state = Mutex(State(buses: [rootBus.name: rootBus]))
    }

    var placed: [PlacedDevice] { state.withLock { $0.placed } }

    func add(_ spec: DeviceSpec) throws(MachineConfigurationError) -> PlacedDevice {
        try state.withLock { (s: inout State) throws(MachineConfigurationError) -> PlacedDevice in
            let id: String
            if let given = spec.id {
                guard s.buses[given] == nil, !s.placed.contains(where: { $0.id == given }) else {
                    throw .duplicateID(given)
                }
                id = given
            } else {
                s.anonymous += 1
                id = "\(spec.driver)-\(s.anonymous)"
            }
            let busName = spec.bus ?? "pcie.0"
            guard let bus = s.buses[busName] else { throw .noSuchBus(busName, device: id) }
            let devfn: UInt8
            if let requested = spec.devfn { devfn = requested } else { devfn = try Self.firstFreeSlot(on: bus, named: busName) }
            if let occupant = bus.occupant(at: devfn) {
                throw .addressInUse(bus: busName, address: "\(hex(devfn >> 3, 2)).\(devfn & 7)", occupant: occupant.name)
            }
            let function: any PCIFunction
            switch spec.driver {
            case "pci-testdev":
                function = PCITestDevice(name: id, multiFunction: spec.multifunction)
            case "pci-bridge":
                do {
                    let bridge = try PCIBridge(name: id) { cs in cs.setMultiFunction(spec.multifunction) }
                    s.buses[id] = bridge.secondary
                    function = bridge
                } catch {
                    throw .invalidProperty(device: id, property: "pci-bridge", reason: "\(error)")
                }
            default:
                throw .unknownDriver(spec.driver, known: Self.drivers)
            }
            do {
                try bus.attach(function, at: devfn)
            } catch {
                s.buses[id] = nil
                throw .addressInUse(bus: busName, address: "\(hex(devfn >> 3, 2)).\(devfn & 7)", occupant: "\(error)")
            }
            let placed = PlacedDevice(id: id, driver: spec.driver, function: function, busName: busName, devfn: devfn)
            s.placed.append(placed)
            return placed
        }
    }

    private static func firstFreeSlot(on bus: PCIBus, named name: String) throws(MachineConfigurationError) -> UInt8 {
        let used = Set(bus.functions.map { $0.devfn >> 3 })
        guard let slot = (0..<32).first(where: { !used.contains(UInt8($0)) }) else { throw .busFull(name) }
        return UInt8(slot) << 3
    }
}
