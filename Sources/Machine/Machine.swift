import AddressSpace
import Chipset
import GuestMemory
import HostNetwork
import Interrupts
import PCI
import PCIPassthrough
import Synchronization
import VFIO
import VMMBase

/// A q35 machine: the chipset, the PCI hierarchy and RAM, wired to memory and port spaces.
/// It runs with or without vCPUs: `portRead`/`portWrite`/`mmioRead`/`mmioWrite` are the same
/// entry points a vCPU exit uses, so tests can play firmware and guest through them.
public final class Machine: Sendable {
    public let configuration: MachineConfiguration
    public let rootBus: PCIBus
    public let rootComplex: PCIRootComplex
    public let hostBridge: Q35HostBridge
    public let lpc: ICH9LPC
    /// Where device interrupts go while no irqchip is attached.
    public let interrupts: RecordingSink
    /// What every device raises interrupts into: forwards to `interrupts` until
    /// `attachInterruptSink(_:)` puts an irqchip (KVM's) behind it.
    let interruptOutput: ForwardingSink
    public let ram: RAMHandler
    let spaces: MachineAddressSpaces
    let topology: Topology
    let lines: SharedLines
    let events: EventBroadcaster
    /// COM1, RTC/CMOS, i8042, RST_CNT, the ACPI PM block and APM ports, ACPI PCI hot-plug.
    public let legacy: LegacyDevices
    /// The userspace IOAPIC at 0xFEC00000: it sees the levels `interrupts` records and sends
    /// its MSIs where device interrupts go (under a split irqchip, KVM's local APICs). With KVM's
    /// full in-kernel irqchip attached, KVM's IOAPIC takes its place.
    public let ioapic: IOAPIC
    private let connections = Mutex<[ObjectIdentifier: FunctionInterrupts]>([:])
    private let dmaPorts = Mutex<[ObjectIdentifier: BusMasterPort]>([:])
    /// Where `ram` appears at guest-physical addresses.
    public let ramBanks: [RAMBank]
    /// Guest RAM as bus masters and loaders see it: `ram`'s bytes laid out by `ramBanks`.
    public let guestMemory: GuestMemory
    /// Where an IOMMU translates bus-master addresses; identity until VT-d fills it.
    let dmaTranslation: any DMATranslation = IdentityDMATranslation()
    /// In-kernel MSI/MSI-X routes (assigned functions, vhost queues), once a KVM irqchip is attached.
    let messageVectorRoutes = MessageVectorRoutes()
    /// Assigned functions' INTx pins as KVM resampling irqfds.
    let kernelINTxLines = KernelINTxLines()
    /// The VFIO container and DMA maps of assigned devices, made on first use (MachineVFIO.swift).
    let vfioSlot = Mutex<MachineVFIO?>(nil)

    /// `serialBackend` receives COM1's output; `clock` drives the RTC, PM timer and UART timeouts;
    /// `vfioKernel` is where `vfio-pci` devices' host functions are opened (the host's /dev/vfio
    /// by default; a twin in tests).
    deinit {
        // A port and its function hold each other until the port is disconnected.
        for port in dmaPorts.withLock({ Array($0.values) }) { port.disconnect(pause: Self.pauseInGracePeriod) }
    }

    public init(_ configuration: MachineConfiguration = .defaultMachine,
                serialBackend: any SerialBackend = NullSerialBackend(),
                clock: any PlatformClock = SystemClock(),
                vfioKernel: any VFIOKernel = VFIOHost.automatic()) throws(MachineConfigurationError) {
        self.configuration = configuration
        let rootBus = PCIBus(name: "pcie.0")
        let sink = WeakEffectSink()
        let root = PCIRootComplex(rootBus: rootBus, effectSink: sink)
        let hostBridge = Q35HostBridge(name: "mch")
        let lpc = ICH9LPC(name: "lpc")
        let ram: RAMHandler
        guard configuration.memorySize <= configuration.layout.maximumRAM else {
            throw .memoryTooLarge(requested: configuration.memorySize, maximum: configuration.layout.maximumRAM)
        }
        do {
            ram = try RAMHandler(size: configuration.memorySize)
        } catch {
            throw .hostResource("cannot map \(memorySizeText(configuration.memorySize)) of guest RAM on this host: \(error); use a smaller -m")
        }
        let networks = try NetworkBackends(configuration.netdevs)
        let configAddress = ConfigAddressPort()
        let configData = ConfigDataPort(address: configAddress, root: root)
        let ecam = ECAMHandler(root: root)
        let layout = configuration.layout
        let interrupts = RecordingSink()
        let interruptOutput = ForwardingSink(interrupts)
        let ioapic = IOAPIC(output: interruptOutput)
        // Weak: the IOAPIC's output leads back to `interrupts`, and a strong capture made the two
        // a cycle that outlived the machine (LeakSanitizer, make test-asan); the machine holds it.
        _ = interrupts.addObserver { [weak ioapic] event in
            if case .level(let gsi, let high) = event { ioapic?.setLevel(gsi, high: high) }
        }
        let events = EventBroadcaster()
        let lowMemory = min(ram.size, layout.lowMemoryLimit)
        let ramBanks = ram.banks(lowMemoryTop: lowMemory)
        let legacy = LegacyDevices(interrupts: interruptOutput, events: PlatformEventForwarder(events), clock: clock,
                                   serialBackend: serialBackend, lpc: lpc, belowFourGiB: lowMemory,
                                   aboveFourGiB: ram.size - lowMemory)
        let configAddressAndReset = ConfigAddressAndResetControl(configAddress: configAddress,
                                                                 resetControl: legacy.resetControl)

        let spaces = MachineAddressSpaces(rootBus: rootBus, barWriteObserver: { function in
            if let controller = function as? any HotPlugController { sink.target?.drainHotPlugEvents(controller) }
        }) {
            var memory = Region.container("system", size: .max)
            for bank in ramBanks {
                memory.add(.alias(bank.name, of: .leaf("ram", size: ram.size, handler: ram), offset: bank.offset,
                                  size: bank.size), at: bank.guestBase)
            }
            memory.addChipsetDecode(hostBridge: hostBridge, lpc: lpc, ram: ram, lowMemoryTop: lowMemory,
                                    pinRoutingChanged: { sink.target?.rerouteINTx() })
            memory.add(.leaf("ioapic", size: IOAPIC.size, handler: ioapic), at: IOAPIC.base, priority: 1)
            if let window = hostBridge.ecamWindow {
                memory.add(.leaf("ecam", size: window.size, handler: ecam), at: window.base, priority: 1)
            }
            var io = Region.container("io", size: 1 << 16)
            io.add(.leaf("pci-config-address", size: 4, handler: configAddressAndReset), at: ConfigAddressPort.port)
            io.add(.leaf("pci-config-data", size: 4, handler: configData), at: ConfigDataPort.port)
            io.addLegacyDevices(legacy, lpc: lpc)
            return (memory, io)
        }

        self.rootBus = rootBus
        self.rootComplex = root
        self.hostBridge = hostBridge
        self.lpc = lpc
        self.ram = ram
        self.ramBanks = ramBanks
        self.guestMemory = ram.guestMemory(ramBanks)
        self.interrupts = interrupts
        self.interruptOutput = interruptOutput
        self.events = events
        self.legacy = legacy
        self.ioapic = ioapic
        self.lines = SharedLines(sink: interruptOutput)
        self.spaces = spaces
        let assignedDevices = AssignedDeviceOpener(kernel: vfioKernel)
        self.topology = Topology(rootBus: rootBus, backends: DeviceBackends(
            vfioPCI: VFIOPCIDevice(opener: assignedDevices, routes: messageVectorRoutes,
                                   iommufdObjects: Set(configuration.iommufdObjects)), networks: networks,
            messageRoutes: messageVectorRoutes))
        sink.connect(self)
        assignedDevices.connect(self)
        // vhost-net reads guest RAM through its own table: the same banks VFIO maps for DMA.
        networks.provideGuestRAM { [spaces, ramBanks, ram] in
            GuestRAMDMA.mappings(in: spaces.platform.view(.memory), knownBanks: ramBanks, of: ram).map {
                VhostMemoryRegion(guestAddress: $0.iova, size: $0.size, hostAddress: UInt64($0.hostAddress))
            }
        }

        do {
            try rootBus.attach(hostBridge, at: 0)
            try rootBus.attach(lpc, at: 0x1F << 3)
            try rootBus.attach(ICH9Functions.ahci(), at: 0x1F << 3 | 2)
            try rootBus.attach(ICH9Functions.smbus(), at: 0x1F << 3 | 3)
        } catch {
            preconditionFailure("q35 chipset placement: \(error)")
        }
        for spec in configuration.devices {
            let placed = try topology.add(spec).device
            connectOutputs(placed)
            announceColdPlugged(placed)
        }
        legacy.acpiHotPlug.setEventHandler { [weak self] bus in self?.drainHotPlugEvents(bus) }
        if configuration.acpiPCIHotplug { attachACPIHotPlug() }
    }

    // MARK: vCPU exit entry points

    public func portRead(_ port: UInt16, width: AccessWidth) -> UInt64 {
        spaces.read(io: true, at: UInt64(port), width: width)
    }

    public func portWrite(_ port: UInt16, width: AccessWidth, value: UInt64) {
        spaces.write(io: true, at: UInt64(port), width: width, value: value)
    }

    public func mmioRead(_ address: UInt64, width: AccessWidth) -> UInt64 {
        spaces.read(io: false, at: address, width: width)
    }

    public func mmioWrite(_ address: UInt64, width: AccessWidth, value: UInt64) {
        spaces.write(io: false, at: address, width: width, value: value)
    }

    /// Writes `bytes` from `address` on as the CPU would, byte by byte, except that runs of
    /// RAM are copied whole through `guestMemory` (qtest's write and memset of megabytes). The
    /// range must not wrap past 2^64; callers check.
    public func writeMemory(_ address: UInt64, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { all in
            var done = 0
            while done < all.count {
                let here = address &+ UInt64(done)
                let count = cpuRAMRun(at: here, upTo: all.count - done)
                if count > 0, copyToRAM(UnsafeRawBufferPointer(rebasing: all[done..<done + count]), at: here) {
                    done += count
                } else {
                    mmioWrite(here, width: .byte, value: UInt64(all[done]))
                    done += 1
                }
            }
        }
    }

    private func copyToRAM(_ bytes: UnsafeRawBufferPointer, at address: UInt64) -> Bool {
        do throws(GuestMemoryError) {
            try guestMemory.write(at: GuestAddress(address), from: bytes)
            return true
        } catch {
            return false
        }
    }

    /// Reads `count` bytes from `address` on, as `writeMemory` writes them.
    public func readMemory(_ address: UInt64, count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let here = address &+ UInt64(out.count)
            let run = cpuRAMRun(at: here, upTo: count - out.count)
            if run > 0, let bytes = copyFromRAM(at: here, count: run) {
                out += bytes
            } else {
                out.append(UInt8(truncatingIfNeeded: mmioRead(here, width: .byte)))
            }
        }
        return out
    }

    private func copyFromRAM(at address: UInt64, count: Int) -> [UInt8]? {
        do throws(GuestMemoryError) {
            return try guestMemory.read(at: GuestAddress(address), count: count)
        } catch {
            return nil
        }
    }

    /// How many bytes from `address` on (at most `limit`) the CPU sees as RAM at their own
    /// guest-physical address, as the platform decodes them now (PAM and SMRAM included);
    /// 0 when `address` is not such RAM.
    private func cpuRAMRun(at address: UInt64, upTo limit: Int) -> Int {
        guard let run = spaces.ramRun(at: address, in: ram),
              ramBanks.contains(where: { $0.offset <= run.offset && run.offset - $0.offset < $0.size
                                         && $0.guestBase &+ (run.offset - $0.offset) == address }) else { return 0 }
        return Int(min(run.count, UInt64(limit)))
    }

    // MARK: Topology

    /// Creates a device from its description and attaches it (cold plug, before firmware).
    @discardableResult
    public func add(_ spec: DeviceSpec) throws(MachineConfigurationError) -> PlacedDevice {
        let placed = try topology.add(spec).device
        connectOutputs(placed)
        announceColdPlugged(placed)
        topologyChanged(attachingOrDetaching: [placed])
        return placed
    }

    public var devices: [PlacedDevice] { topology.placed }

    /// The device drivers `DeviceSpec.driver` may name.
    public static var knownDrivers: [String] { DeviceFactory.drivers }

    public func device(id: String) -> PlacedDevice? { topology.device(id: id) }

    /// Every function config cycles reach right now, by address, routed as the root complex
    /// routes them (through the bridges' bus numbers).
    public func reachableFunctions() -> [(address: PCIAddress, function: any PCIFunction)] {
        var found: [(address: PCIAddress, function: any PCIFunction)] = []
        for number in 0...255 {
            guard let bus = rootComplex.bus(UInt8(number)) else { continue }
            for (devfn, function) in bus.functions where bus.function(at: devfn) != nil {
                found.append((PCIAddress(segment: rootComplex.segment, bus: UInt8(number), devfn: devfn), function))
            }
        }
        return found
    }

    /// Listens for machine events (DEVICE_DELETED). Returns a token for `removeEventListener`.
    public func addEventListener(_ handler: @escaping @Sendable (MachineEvent) -> Void) -> Int { events.add(handler) }
    public func removeEventListener(_ token: Int) { events.remove(token) }

    /// Reports a reset request that came from outside the chipset's registers (a vCPU's
    /// triple fault) to the listeners, as the reset registers report theirs.
    public func requestReset(_ source: ResetSource) { events.emit(.resetRequested(source)) }

    /// The host reported an uncorrectable error on an assigned function: listeners (the session)
    /// stop the VM.
    func reportAssignedDeviceFailure(id: String, host: PCIAddress) {
        events.emit(.assignedDeviceFailed(id: id, host: "\(host)"))
    }

    /// The flattened maps as text, for debugging.
    public func describeMemory() -> String { spaces.describe(io: false) }
    public func describePorts() -> String { spaces.describe(io: true) }

    /// How often each address-space layer committed new views.
    public var mappingRebuilds: (platform: Int, pci: Int) { spaces.rebuildCounts }

    /// Drives IOAPIC input `number` directly, as a device wired to it would (qtest's
    /// `set_irq_in ioapic`). Observers of `interrupts` see the change.
    public func setIOAPICInput(_ number: UInt32, high: Bool) {
        interruptOutput.setLevel(GSI(number), high: high)
    }

    /// The GSIs KVM has an assigned function's INTx line on (for tests and leak checks).
    public var kernelINTxGSIs: [UInt32] { kernelINTxLines.bound.map(\.number) }

    /// Gives assigned functions' MSI/MSI-X vectors KVM irqfds on `routes` (a KVM guest's), and
    /// their INTx pins resampling irqfds when KVM's irqchip has the IOAPIC.
    public func attachInterruptRoutes(_ routes: KVMInterruptRoutes) {
        messageVectorRoutes.attach(routes)
        if routes.hasKernelIOAPIC { kernelINTxLines.attach(routes.virtualMachine) }
    }

    /// Sends device interrupts (INTx line levels, MSIs, legacy IRQs) to `sink` instead of
    /// `interrupts` from now on, e.g. to KVM's in-kernel irqchip. Attach before the guest runs:
    /// line levels are not replayed. Returns the previous sink.
    @discardableResult
    public func attachInterruptSink(_ sink: any InterruptSink) -> any InterruptSink {
        interruptOutput.attach(sink)
    }

    /// The IOAPIC's input count (q35: 24, GSI 0-23).
    public static let ioapicInputs: UInt32 = 24

    /// INTx lines currently asserted, by GSI, with how many functions assert each.
    public var assertedINTxLines: [GSI: Int] { lines.snapshot }

    /// Functions with a connected interrupt output (each placed function that raises interrupts).
    public var connectedInterruptOutputs: Int { connections.withLock { $0.count } }

    // MARK: Interrupt wiring

    /// The GSI a function's INTx pin reaches: swizzled up to bus 0, then through the LPC's
    /// PIRQ links (each link is its own IOAPIC input in APIC mode).
    func intxGSI(for placed: PlacedDevice) -> GSI? {
        guard let pin = INTxPin(register: placed.function.decodeSnapshot().interruptPin) else { return nil }
        let route = INTxRoute(pin: pin, slotPath: topology.slotPath(busName: placed.busName, devfn: placed.devfn))
        return lpc.pirq(forSlot: route.rootSlot, pin: route.rootPin).apicGSI
    }

    /// Hands a placed function its bus-master port and, when it raises interrupts, its
    /// interrupt output (whose MSIs go through the port).
    func connectOutputs(_ placed: PlacedDevice) {
        let port = BusMasterPort(function: placed.function,
                                 path: topology.dmaPath(busName: placed.busName, devfn: placed.devfn),
                                 memory: guestMemory, translation: dmaTranslation, interrupts: interruptOutput)
        dmaPorts.withLock { $0[ObjectIdentifier(placed.function)] = port }
        (placed.function as? any BusMasterFunction)?.connect(dma: port)
        guard let function = placed.function as? any InterruptingFunction else { return }
        let output = FunctionInterrupts(owner: placed.id, gsi: intxGSI(for: placed), lines: lines, kernelLines: kernelINTxLines, port: port)
        connections.withLock { $0[ObjectIdentifier(function)] = output }
        function.connect(interrupts: output)
    }

    /// After the guest rewrote the LPC's PIRQ or DxxIR routing (or a reset restored it): every
    /// connected function's INTx pin moves to the GSI the routing gives now; a pin asserted at
    /// the time lowers its old GSI and raises the new one.
    func rerouteINTx() {
        let outputs = connections.withLock { $0 }
        for placed in topology.placed {
            guard let output = outputs[ObjectIdentifier(placed.function)] else { continue }
            output.reroute(to: intxGSI(for: placed))
        }
    }

    /// After the LPC's PIRQ or DxxIR routing changed: pins move, and the irqchip's steering.
    func intxRoutingChanged() {
        rerouteINTx()
        (interruptOutput.downstream as? PIRQSteeringSink)?.routesChanged()
    }

    /// Takes back what `connectOutputs` handed out (unplug): the port refuses everything after.
    func disconnectOutputs(_ placed: PlacedDevice) {
        // An assigned function goes back to the host reset, still bound to vfio-pci.
        Topology.unrealize(placed.function)
        (placed.function as? any BusMasterFunction)?.connect(dma: DisconnectedDMAPort())
        if let port = dmaPorts.withLock({ $0.removeValue(forKey: ObjectIdentifier(placed.function)) }) {
            port.disconnect(pause: Self.pauseInGracePeriod)
        }
        guard let function = placed.function as? any InterruptingFunction else { return }
        function.connect(interrupts: DisconnectedInterrupts())
        let output = connections.withLock { $0.removeValue(forKey: ObjectIdentifier(function)) }
        output?.release()
    }

    /// The bus-master port of a placed function (nil once it is unplugged).
    public func dmaPort(of placed: PlacedDevice) -> (any DMAPort)? {
        dmaPorts.withLock { $0[ObjectIdentifier(placed.function)] }
    }

    /// After functions were attached, detached or reset: routes and mappings may differ.
    func topologyChanged() {
        rootComplex.invalidateRoutes()
        spaces.invalidatePCI()
    }

    /// After `placed` were attached or detached: routes differ; mappings only if they show.
    func topologyChanged(attachingOrDetaching placed: [PlacedDevice]) {
        rootComplex.invalidateRoutes()
        rootComplex.waitForCyclesInProgress(pause: Self.pauseInGracePeriod)
        spaces.invalidatePCI(ifAffecting: placed.map(\.function))
    }

    // MARK: Config write effects

    /// Applies a config write's effects: mappings, and hot-plug controller events.
    func apply(_ effects: ConfigWriteEffects, from function: any PCIFunction, at address: PCIAddress) {
        applyResets(effects, from: function)
        spaces.apply(effects, from: function, at: address)
        if effects.contains(.deviceSpecific), function === lpc { intxRoutingChanged() }
        if effects.contains(.sriovChanged), let pf = function as? any SRIOVPhysicalFunction {
            reportUnplacedVirtualFunctions(of: pf, at: address)
        }
        if let controller = function as? any HotPlugController,
           !effects.intersection([.slotControlWritten, .deviceSpecific]).isEmpty {
            drainHotPlugEvents(controller)
        }
    }
}

extension Machine {
    /// A platform reset (QMP `system_reset`): every function returns to its power-on state,
    /// which closes ECAM and every BAR and window until firmware runs again. RAM keeps its
    /// contents, as on a warm reset.
    public func reset() {
        spaces.batched {
            rootBus.resetAll(.warm)
            legacy.reset()
            ioapic.reset()
            rerouteINTx()
            topologyChanged()
            spaces.rebuildPlatform()
        }
    }
}
