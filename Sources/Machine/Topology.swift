import Chipset
import PCI
import PCIPassthrough
import Synchronization
import VMMBase

/// A device the topology placed: its id, driver, the bus it sits on and its devfn there.
public struct PlacedDevice: Sendable {
    /// The user's id, or for a device given none a generated `device[N]`: generated ids live in
    /// their own namespace (QEMU's /machine/peripheral-anon), which a user id cannot enter
    /// because brackets are not allowed in ids.
    public let id: String
    /// True when the user gave no id.
    public let anonymous: Bool
    public let driver: String
    public let function: any PCIFunction
    public let busName: String
    public let devfn: UInt8
    /// True when it was hot-plugged after the machine started.
    public let hotPlugged: Bool

    /// The id the user gave, nil for an anonymous device.
    public var userID: String? { anonymous ? nil : id }

    /// Where QEMU's object tree keeps it; DEVICE_DELETED reports this.
    public var qomPath: String { (anonymous ? "/machine/peripheral-anon/" : "/machine/peripheral/") + id }
}

/// Creates devices from specs and places them on named buses. Buses are named as QEMU names
/// them: `pcie.0` for the root, a bridge's id for the bus behind it.
final class Topology: Sendable {
    struct BusEntry {
        let bus: PCIBus
        /// The bridge in front of this bus (nil for the root bus).
        let bridge: (any PCIBridgeFunction)?
        /// Where that bridge sits: its parent bus's name and its devfn there.
        let parent: (name: String, devfn: UInt8)?
    }

    /// How many anonymous devices were named so far: the next is device[N].
    var anonymousDevicesNamed: Int {
        get { state.withLock { $0.anonymous } }
        set { state.withLock { $0.anonymous = newValue } }
    }

    private struct State {
        var buses: [String: BusEntry]
        var placed: [PlacedDevice] = []
        var anonymous = 0
        /// (chassis, physical slot) of slots that have a number, and who owns each: a guest
        /// names slots by these, so two slots may not share one.
        var chassisSlots: [ChassisSlot: String] = [:]
        /// Buses whose slots another controller serves than the bridge in front of them
        /// (ACPI PCI hot-plug), by bus name.
        var busControllers: [String: any HotPlugController] = [:]
        /// Ids and slots of devices being realized outside the lock, and how many of them
        /// are pci-bridges (whose default chassis_nr counts the bridges before them).
        var reservedIDs: Set<String> = []
        var reservedSlots: Set<ReservedSlot> = []
        var reservedBridges = 0

        mutating func release(_ r: Reservation, keepingChassisSlot: Bool = false) {
            reservedIDs.remove(r.id)
            reservedSlots.remove(ReservedSlot(bus: r.busName, devfn: r.devfn))
            if !keepingChassisSlot, let slot = r.chassisSlot { chassisSlots[slot] = nil }
        }
    }

    struct ChassisSlot: Hashable {
        let chassis: Int
        let slot: Int
    }

    /// A port with a hot-plug slot identifies it by chassis and slot (QEMU's properties).
    static func chassisSlot(of spec: DeviceSpec) -> ChassisSlot? {
        guard ["pcie-root-port", "ioh3420", "xio3130-downstream"].contains(spec.driver),
              spec.properties["hotplug"] != "off" else { return nil }
        let chassis = spec.properties["chassis"].flatMap { DeviceSpec.parseNumber(Substring($0)) } ?? 0
        let slot = spec.properties["slot"].flatMap { DeviceSpec.parseNumber(Substring($0)) } ?? 0
        return ChassisSlot(chassis: Int(clamping: chassis), slot: Int(clamping: slot))
    }
    private let state: Mutex<State>
    let rootBusName: String
    /// What devices backed by the host (vfio-pci, NICs) are made with.
    let backends: DeviceBackends

    init(rootBus: PCIBus, backends: DeviceBackends = DeviceBackends()) {
        rootBusName = rootBus.name
        self.backends = backends
        state = Mutex(State(buses: [rootBus.name: BusEntry(bus: rootBus, bridge: nil, parent: nil)]))
    }

    var placed: [PlacedDevice] { state.withLock { $0.placed } }

    /// A device by the user's id, or by its QOM path (the only name an anonymous device has).
    func device(id reference: String) -> PlacedDevice? {
        state.withLock { s in
            if let anonymous = reference.removingPrefix("/machine/peripheral-anon/") {
                return s.placed.first { $0.anonymous && $0.id == anonymous }
            }
            let id = reference.removingPrefix("/machine/peripheral/") ?? reference
            return s.placed.first { !$0.anonymous && $0.id == id }
        }
    }

    func bus(named name: String) -> BusEntry? { state.withLock { $0.buses[name] } }

    /// The controller that hot-plugs into bus `name`: the one set for it, else its bridge's own.
    func hotPlugController(forBus name: String) -> (any HotPlugController)? {
        state.withLock { Self.controller(forBus: name, in: $0) }
    }

    /// Hands bus `name`'s slots to `controller` (until the bus goes away).
    func setHotPlugController(_ controller: any HotPlugController, forBus name: String) {
        state.withLock { $0.busControllers[name] = controller }
    }

    private static func controller(forBus name: String, in s: State) -> (any HotPlugController)? {
        s.busControllers[name] ?? (s.buses[name]?.bridge as? any HotPlugController)
    }

    /// The chain of (slot device number) from the function up to the root bus, nearest first,
    /// ending with the root-bus slot: what INTx swizzling needs.
    func slotPath(busName: String, devfn: UInt8) -> [UInt8] {
        [devfn >> 3] + ancestors(ofBus: busName).map { $0.devfn >> 3 }
    }

    /// The bridges between the function and the root bus, nearest first, for its DMA port's
    /// requester IDs.
    func dmaPath(busName: String, devfn: UInt8) -> DMARequesterPath {
        let hops = ancestors(ofBus: busName).compactMap { hop in hop.bridge.map { DMAHop(bridge: $0, devfn: hop.devfn) } }
        return DMARequesterPath(devfn: devfn, hops: hops)
    }

    /// The bridges above bus `busName`, nearest first: each one's function (nil for a bus that
    /// has a parent but no bridge model) and its devfn on the bus above.
    private func ancestors(ofBus busName: String) -> [(bridge: (any PCIBridgeFunction)?, devfn: UInt8)] {
        state.withLock { s in
            var hops: [(bridge: (any PCIBridgeFunction)?, devfn: UInt8)] = []
            var current = busName
            while let entry = s.buses[current], let parent = entry.parent {
                hops.append((entry.bridge, parent.devfn))
                current = parent.name
            }
            return hops
        }
    }

    /// Creates and attaches a device. With `requireHotPlug`, the bus must be behind a
    /// hot-plug controller whose slots include the device number; the controller is returned.
    ///
    /// The device is realized (built; vfio-pci opens host files) outside the topology lock:
    /// its id, slot and chassis/slot number are reserved under the lock first, so a concurrent
    /// add for the same slot fails at once, and a failed realize leaves nothing placed.
    func add(_ spec: DeviceSpec, requireHotPlug: Bool = false) throws(MachineConfigurationError)
        -> (device: PlacedDevice, controller: (any HotPlugController)?) {
        let reservation = try state.withLock { (s: inout State) throws(MachineConfigurationError) in
            try reserve(spec, requireHotPlug: requireHotPlug, in: &s)
        }
        let function: any PCIFunction
        do {
            function = try DeviceFactory.make(spec, id: reservation.id, bridgeOrdinal: reservation.bridgeOrdinal,
                                              backends: backends, parent: reservation.entry.bridge)
        } catch {
            state.withLock { $0.release(reservation) }
            throw error
        }
        do {
            return try state.withLock { (s: inout State) throws(MachineConfigurationError) in
                try publish(function, for: spec, reservation, requireHotPlug: requireHotPlug, in: &s)
            }
        } catch {
            Self.unrealize(function)
            throw error
        }
    }

    /// What `add` holds while the device is realized outside the lock.
    private struct Reservation {
        let id: String
        let busName: String
        let entry: BusEntry
        let devfn: UInt8
        let controller: (any HotPlugController)?
        let chassisSlot: ChassisSlot?
        let bridgeOrdinal: Int
    }

    private struct ReservedSlot: Hashable {
        let bus: String
        let devfn: UInt8
    }

    /// Validates the spec against the topology and reserves its id, slot and chassis/slot.
    private func reserve(_ spec: DeviceSpec, requireHotPlug: Bool, in s: inout State) throws(MachineConfigurationError)
        -> Reservation {
        let id: String
        if let given = spec.id {
            try DeviceID.validate(given)
            guard s.buses[given] == nil, !s.placed.contains(where: { $0.id == given }), !s.reservedIDs.contains(given) else {
                throw .duplicateID(given)
            }
            id = given
        } else {
            id = "device[\(s.anonymous)]"
            s.anonymous += 1
        }
        let busName = spec.bus ?? rootBusName
        guard let entry = s.buses[busName] else { throw .noSuchBus(busName, device: id) }
        let reservedDevices = Set(s.reservedSlots.filter { $0.bus == busName }.map { $0.devfn >> 3 })
        let devfn: UInt8
        if let requested = spec.devfn {
            devfn = requested
        } else if requireHotPlug, let controller = Self.controller(forBus: busName, in: s), !controller.hotPlugSlots.isEmpty {
            // Only the controller's slots will do; QEMU's "no slot available" otherwise.
            guard let free = controller.hotPlugSlots.first(where: {
                entry.bus.occupant(at: $0 << 3) == nil && !reservedDevices.contains($0)
            }) else {
                throw .busFull(busName)
            }
            devfn = free << 3
        } else {
            devfn = try Self.firstFreeSlot(on: entry.bus, named: busName, reserved: reservedDevices)
        }
        if let occupant = entry.bus.occupant(at: devfn) {
            throw .addressInUse(bus: busName, address: Self.format(devfn), occupant: occupant.name)
        }
        if s.reservedSlots.contains(ReservedSlot(bus: busName, devfn: devfn)) {
            throw .addressInUse(bus: busName, address: Self.format(devfn), occupant: "a device being added")
        }
        var controller: (any HotPlugController)?
        if requireHotPlug {
            guard let c = Self.controller(forBus: busName, in: s), !c.hotPlugSlots.isEmpty else {
                throw .notHotPluggable(bus: busName, reason: "Bus '\(busName)' does not support hotplugging; plug into a root port, a switch downstream port or a bridge with an SHPC")
            }
            guard c.hotPlugSlots.contains(devfn >> 3) else {
                throw .notHotPluggable(bus: busName, reason: "slot \(devfn >> 3) of '\(busName)' is not hot-pluggable (slots: \(c.hotPlugSlots.map(String.init).joined(separator: ",")))")
            }
            controller = c
        }
        let chassisSlot = Self.chassisSlot(of: spec)
        if let slot = chassisSlot {
            if let owner = s.chassisSlots[slot] {
                throw .duplicateChassisSlot(chassis: slot.chassis, slot: slot.slot, owner: owner)
            }
            s.chassisSlots[slot] = id
        }
        if spec.id != nil { s.reservedIDs.insert(id) }
        s.reservedSlots.insert(ReservedSlot(bus: busName, devfn: devfn))
        let bridges = s.placed.filter { $0.driver == "pci-bridge" }.count + s.reservedBridges
        if spec.driver == "pci-bridge" { s.reservedBridges += 1 }
        return Reservation(id: id, busName: busName, entry: entry, devfn: devfn, controller: controller,
                           chassisSlot: chassisSlot, bridgeOrdinal: bridges)
    }

    /// Places a realized device in its reserved slot, unless its bus went away meanwhile.
    private func publish(_ function: any PCIFunction, for spec: DeviceSpec, _ r: Reservation, requireHotPlug: Bool,
                         in s: inout State) throws(MachineConfigurationError) -> (device: PlacedDevice, controller: (any HotPlugController)?) {
        s.release(r, keepingChassisSlot: true)
        if spec.driver == "pci-bridge" { s.reservedBridges -= 1 }
        guard let entry = s.buses[r.busName], entry.bus === r.entry.bus else {
            if let slot = r.chassisSlot { s.chassisSlots[slot] = nil }
            throw .noSuchBus(r.busName, device: r.id)
        }
        do {
            try entry.bus.attach(function, at: r.devfn)
        } catch {
            if let slot = r.chassisSlot { s.chassisSlots[slot] = nil }
            throw .addressInUse(bus: r.busName, address: Self.format(r.devfn), occupant: "\(error)")
        }
        if let bridge = function as? any PCIBridgeFunction {
            s.buses[r.id] = BusEntry(bus: bridge.secondary, bridge: bridge, parent: (r.busName, r.devfn))
        }
        let placed = PlacedDevice(id: r.id, anonymous: spec.id == nil, driver: spec.driver, function: function,
                                  busName: r.busName, devfn: r.devfn, hotPlugged: requireHotPlug)
        s.placed.append(placed)
        return (placed, r.controller)
    }

    /// Gives back what a device unplugged, or built but never placed, holds on the host
    /// (vfio-pci's files, virtio-net's I/O thread and netdev).
    static func unrealize(_ function: any PCIFunction) {
        (function as? any HostResourceHolder)?.unrealize()
    }

    /// Detaches every function in device slot `device` of bus `busName` (all functions of a
    /// multi-function device leave together) and everything behind them. Returns what left.
    func removeSlot(busName: String, device: UInt8) -> [PlacedDevice] {
        state.withLock { s in
            guard let entry = s.buses[busName] else { return [] }
            var removed: [PlacedDevice] = []
            func removeBus(named name: String) {
                for child in s.placed where child.busName == name {
                    removed.append(child)
                    s.chassisSlots = s.chassisSlots.filter { $0.value != child.id }
                    if s.buses[child.id] != nil { removeBus(named: child.id) }
                }
                s.placed.removeAll { $0.busName == name }
                s.buses[name] = nil
                s.busControllers[name] = nil
            }
            for function in 0..<UInt8(8) {
                let devfn = device << 3 | function
                guard entry.bus.detach(at: devfn) != nil else { continue }
                if let index = s.placed.firstIndex(where: { $0.busName == busName && $0.devfn == devfn }) {
                    let placed = s.placed.remove(at: index)
                    s.chassisSlots = s.chassisSlots.filter { $0.value != placed.id }
                    removed.append(placed)
                    if s.buses[placed.id] != nil { removeBus(named: placed.id) }
                }
            }
            return removed
        }
    }

    /// Detaches one function that was just attached (a failed hot-plug's rollback): its
    /// neighbours in the slot stay.
    func remove(_ placed: PlacedDevice) {
        state.withLock { s in
            guard let entry = s.buses[placed.busName], entry.bus.occupant(at: placed.devfn) === placed.function else { return }
            _ = entry.bus.detach(at: placed.devfn)
            s.placed.removeAll { $0.function === placed.function }
            s.chassisSlots = s.chassisSlots.filter { $0.value != placed.id }
            if s.buses[placed.id]?.bridge === placed.function { s.buses[placed.id] = nil }
        }
    }

    static func format(_ devfn: UInt8) -> String { "\(hex(devfn >> 3, 2)).\(devfn & 7)" }

    private static func firstFreeSlot(on bus: PCIBus, named name: String, reserved: Set<UInt8>) throws(MachineConfigurationError) -> UInt8 {
        let used = Set(bus.functions.map { $0.devfn >> 3 }).union(reserved)
        guard let slot = (0..<32).first(where: { !used.contains(UInt8($0)) }) else { throw .busFull(name) }
        return UInt8(slot) << 3
    }
}

/// QEMU's rule for ids (id_wellformed): a letter, then letters, digits, '-', '.' or '_'.
enum DeviceID {
    static let maximumLength = 128

    static func validate(_ id: String) throws(MachineConfigurationError) {
        let scalars = id.unicodeScalars
        guard let first = scalars.first, first.isASCIILetter,
              scalars.allSatisfy({ $0.isASCIILetter || ("0"..."9").contains($0) || "-._".unicodeScalars.contains($0) }) else {
            throw .invalidID(id)
        }
        guard id.utf8.count <= maximumLength else { throw .invalidID(id) }
    }
}

private extension Unicode.Scalar {
    var isASCIILetter: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) }
}

extension String {
    func removingPrefix(_ prefix: String) -> String? { hasPrefix(prefix) ? String(dropFirst(prefix.count)) : nil }
}

/// What devices backed by the host are made with: nil where this machine has none.
struct DeviceBackends: Sendable {
    var vfioPCI: VFIOPCIDevice?
    var networks: NetworkBackends?
    /// In-kernel MSI/MSI-X routes for functions whose interrupts a host backend raises.
    var messageRoutes: (any MessageVectorRouting)?

    init(vfioPCI: VFIOPCIDevice? = nil, networks: NetworkBackends? = nil, messageRoutes: (any MessageVectorRouting)? = nil) {
        self.vfioPCI = vfioPCI
        self.networks = networks
        self.messageRoutes = messageRoutes
    }
}

/// Builds device models from specs: the one place that knows driver names.
enum DeviceFactory {
    static var drivers: [String] {
        ["pci-testdev", VFIOPCIDevice.driver] + PCIBridgeFactory.drivers + PCIePortFactory.drivers + VirtioDeviceFactory.drivers
            + [VirtioNetFactory.driver]
    }

    /// - Parameters:
    ///   - bridgeOrdinal: how many PCI-PCI bridges the machine already has.
    ///   - backends: what host-backed devices are made with (vfio-pci's opener, -netdev backends).
    ///   - parent: the bridge in front of the device's bus (nil on the root bus).
    static func make(_ spec: DeviceSpec, id: String, bridgeOrdinal: Int = 0, backends: DeviceBackends = DeviceBackends(),
                     parent: (any PCIBridgeFunction)? = nil) throws(MachineConfigurationError) -> any PCIFunction {
        // The bus is the link below a PCIe root or downstream port.
        let expressLink = parent?.configSnapshot().pciExpressPortType?.isDownstreamFacing ?? false
        switch spec.driver {
        case VFIOPCIDevice.driver where backends.vfioPCI != nil:
            return try backends.vfioPCI!.make(spec, id: id, parent: parent)
        case VirtioNetFactory.driver:
            return try VirtioNetFactory.make(spec, id: id, express: expressLink, multiFunction: spec.multifunction,
                                             networks: backends.networks, messageRoutes: backends.messageRoutes)
        case let driver where VirtioDeviceFactory.drivers.contains(driver):
            return try VirtioDeviceFactory.make(spec, id: id, expressLink: expressLink)
        case "pci-testdev":
            for key in spec.properties.keys where key != "express" && key != "sriov_max_vfs" {
                throw .invalidProperty(device: id, property: key,
                                       reason: "pci-testdev accepts only express=on|off and sriov_max_vfs=1-\(PCITestDevice.maximumVFs)")
            }
            let express: Bool?
            switch spec.properties["express"] {
            case nil: express = nil
            case "off": express = false
            case "on": express = true
            case let other?: throw .invalidProperty(device: id, property: "express", reason: "'\(other)' must be on or off")
            }
            var sriovMaxVFs: Int?
            if let text = spec.properties["sriov_max_vfs"] {
                guard let count = DeviceSpec.parseNumber(Substring(text)), (1...UInt64(PCITestDevice.maximumVFs)).contains(count) else {
                    throw .invalidProperty(device: id, property: "sriov_max_vfs",
                                           reason: "'\(text)' must be a number of VFs from 1 to \(PCITestDevice.maximumVFs) (the functions after the PF's in its link's 8-bit ARI function space)")
                }
                guard express != false else {
                    throw .invalidProperty(device: id, property: "sriov_max_vfs",
                                           reason: "SR-IOV is a PCI Express capability; drop express=off")
                }
                sriovMaxVFs = Int(count)
            }
            return PCITestDevice(name: id, express: express ?? false, multiFunction: spec.multifunction, sriovMaxVFs: sriovMaxVFs)
        case let driver where PCIBridgeFactory.drivers.contains(driver):
            var properties = spec.properties
            if spec.multifunction { properties["multifunction"] = "on" }
            // QEMU insists on chassis_nr; we pick one when it is left out (numbers may repeat
            // past 255 bridges, which QEMU does not check either).
            if driver == "pci-bridge" && properties["chassis_nr"] == nil {
                properties["chassis_nr"] = String(bridgeOrdinal % 255 + 1)
            }
            do {
                return try PCIBridgeFactory.make(driver: driver, id: id, properties: properties)
            } catch {
                throw .device(id: id, reason: "\(error)")
            }
        case let driver where PCIePortFactory.drivers.contains(driver):
            do {
                let port = try PCIePortFactory.make(driver: driver, id: id, properties: spec.properties)
                if spec.multifunction, let port = port as? any PCIExpressPort { port.setMultiFunction() }
                return port
            } catch {
                throw .device(id: id, reason: "\(error)")
            }
        default:
            throw .unknownDriver(spec.driver, known: drivers)
        }
    }
}
