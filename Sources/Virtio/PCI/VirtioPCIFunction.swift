import HostOS
import PCI
import Synchronization
import VMMBase

/// A virtio device on PCI through the modern (virtio 1.x, non-transitional) interface:
/// 1af4:(1040 + type) revision 1, the common/ISR/device/notify regions in 64-bit BAR 4 and the
/// MSI-X table in BAR 1, the capabilities at QEMU's offsets, a PCI Express endpoint (with
/// Power Management and FLR) when it sits behind a PCIe port, so it hot-plugs into a root port.
///
/// The transport owns negotiation, status, queue registers and interrupts; the `VirtioDevice`
/// serves requests on the queues it gets at DRIVER_OK. A kick is a write to the notify area:
/// each queue's notify address is a doorbell (`DoorbellBARs`), so on KVM an ioeventfd signals
/// the queue's kick eventfd without an exit and a device thread answers it (`VirtioQueueKicks`);
/// without KVM (qtest) the write reaches `barWrite`. Both end in `notify(queue:)`.
public final class VirtioPCIFunction: InterruptingFunction, BusMasterFunction, DoorbellBARs, HostResourceHolder {
    public let name: String
    public let device: any VirtioDevice
    private let release: @Sendable () -> Void
    public let express: Bool

    struct State {
        var config: ConfigSpace
        var resetConfig: ConfigSpace
        var interrupts: InterruptArbiter
        var common: VirtioCommonConfiguration
        var isr: UInt8 = 0
        /// The queues handed to the device at DRIVER_OK (indexed by queue), empty before.
        var active: [VirtQueue?] = []
        var output: any PCIInterruptOutput = DisconnectedInterrupts()
        var dma: any DMAPort = DisconnectedDMAPort()
        /// The shared kick thread's watches of the active queues (none when the device
        /// answers its kicks itself or before DRIVER_OK).
        var kickWatches: [UInt64] = []
    }
    let state: Mutex<State>
    /// Where the PCI configuration access capability sits.
    private let pciConfigurationCapability: Int
    /// One kick eventfd per queue (nil where the host gave none: that queue's kicks exit): KVM
    /// signals it when the driver writes the queue's notify address. Kept for the function's
    /// life, so the ioeventfd registration never names a closed fd.
    private let kickEvents: [SharedEventFD?]
    /// Where queue interrupts can be raised in the kernel, for a device whose backend signals
    /// them itself (vhost); nil when every interrupt goes through `signalQueue`.
    private let messageRouting: (any MessageVectorRouting)?
    /// The MSI-X vectors as in-kernel routes: made at the first activation that can use them,
    /// kept in step with the table, released at unplug. Its lock is taken before `state`'s.
    private let routedVectors = Mutex<RoutedMessageVectors?>(nil)

    /// - Parameters:
    ///   - express: a PCI Express endpoint (QEMU's choice on a PCIe port's link).
    ///   - accessPlatform: offer (and require) VIRTIO_F_ACCESS_PLATFORM, QEMU's iommu_platform=on.
    ///   - packedRing: offer VIRTIO_F_RING_PACKED, QEMU's packed=on (the driver chooses).
    ///   - vectors: MSI-X vectors; QEMU's default is one per queue plus one for configuration.
    ///   - messageRouting: in-kernel routes for the MSI-X vectors, offered to the device at
    ///     activation as per-queue interrupt eventfds (`VirtioActivation.queueInterruptEvents`).
    /// - Parameter release: gives back what the device holds of the machine's (a NIC's netdev),
    ///   once it is unplugged (`unrealize`).
    public init(name: String, device: any VirtioDevice, express: Bool, accessPlatform: Bool = false, packedRing: Bool = false,
                multiFunction: Bool = false, vectors: Int? = nil, messageRouting: (any MessageVectorRouting)? = nil,
                release: @escaping @Sendable () -> Void = {}) {
        self.name = name
        self.messageRouting = messageRouting
        self.device = device
        self.release = release
        self.express = express
        let queueSizes = device.queueMaximumSizes
        precondition(!queueSizes.isEmpty && queueSizes.count <= VirtioPCI.maximumQueues, "a device has 1...1024 queues")
        precondition(queueSizes.allSatisfy { $0 > 0 && $0 & ($0 - 1) == 0 && $0 <= 32768 }, "queue sizes are powers of two")
        let vectorCount = vectors ?? queueSizes.count + 1
        precondition((1...128).contains(vectorCount), "MSI-X vectors fit BAR 1's 2 KiB table")

        var cs = ConfigSpace(layout: .endpoint, express: express)
        cs.setIdentity(PCIIdentity(vendorID: VirtioPCI.vendorID, deviceID: device.deviceType.pciDeviceID,
                                   revision: VirtioPCI.revision, classCode: device.deviceType.pciClassCode,
                                   subsystemVendorID: VirtioPCI.subsystemVendorID, subsystemID: VirtioPCI.subsystemID))
        cs.setInterruptPin(1)
        cs.setMultiFunction(multiFunction)
        let layout = VirtioPCI.msixLayout(vectors: vectorCount)
        var configCap = 0
        // The layout is fixed and valid; a failure here is a bug in this file. QEMU adds each
        // capability at the head of its list, so the chain runs from the last-placed one down;
        // ours links in order of adding, so they are added last to first.
        do {
            try cs.defineBAR(VirtioPCI.msixBAR, BARDescriptor(.memory32(prefetchable: false), size: VirtioPCI.msixBARSize))
            try cs.defineBAR(VirtioPCI.regionsBAR, BARDescriptor(.memory64(prefetchable: true), size: VirtioPCI.regionsBARSize))
            let offsets = express ? Self.expressOffsets : Self.conventionalOffsets
            try cs.addMSIX(layout, at: offsets.msix)
            configCap = try cs.addVendorSpecific(payload: Self.capabilityPayload(.pciConfigurationAccess, offset: 0, length: 0, extra: 0),
                                                 at: offsets.pciConfiguration)
            try cs.addVendorSpecific(payload: Self.capabilityPayload(.notification, offset: VirtioPCI.notifyOffset,
                                                                     length: VirtioPCI.regionSize, extra: VirtioPCI.notifyOffsetMultiplier),
                                     at: offsets.notification)
            try cs.addVendorSpecific(payload: Self.capabilityPayload(.deviceConfiguration, offset: VirtioPCI.deviceOffset, length: VirtioPCI.regionSize),
                                     at: offsets.device)
            try cs.addVendorSpecific(payload: Self.capabilityPayload(.isr, offset: VirtioPCI.isrOffset, length: VirtioPCI.regionSize),
                                     at: offsets.isr)
            try cs.addVendorSpecific(payload: Self.capabilityPayload(.commonConfiguration, offset: VirtioPCI.commonOffset, length: VirtioPCI.regionSize),
                                     at: offsets.common)
            if express {
                try cs.addPowerManagement(at: 0x7C)
                try cs.addPCIExpress(PCIExpressOptions(portType: .endpoint, maxPayloadSize: 128, functionLevelReset: true), at: 0x40)
            }
        } catch {
            preconditionFailure("VirtioPCIFunction layout: \(error)")
        }
        // The PCI configuration access window: bar, offset, length and data are the driver's.
        let f = VirtioPCI.CapabilityField.self
        cs.setWritable(configCap + f.bar, width: 1, mask: 0xFF)
        cs.setWritable(configCap + f.offset, width: 4, mask: 0xFFFF_FFFF)
        cs.setWritable(configCap + f.regionLength, width: 4, mask: 0xFFFF_FFFF)
        cs.setWritable(configCap + f.pciConfigurationData, width: 4, mask: 0xFFFF_FFFF)
        cs.captureResetState()
        pciConfigurationCapability = configCap
        kickEvents = queueSizes.indices.map { queue in
            do {
                return try SharedEventFD()
            } catch {
                GuestErrorLog.report(device: name, kind: "kick-eventfd", "queue \(queue): \(error); its kicks exit to the VMM")
                return nil
            }
        }
        var offered = device.deviceFeatures.intersection(.deviceSpecificMask).union(.transport)
        if accessPlatform { offered.insert(.accessPlatform) }
        if packedRing { offered.insert(.ringPacked) }
        state = Mutex(State(config: cs, resetConfig: cs, interrupts: InterruptArbiter(msix: layout),
                            common: VirtioCommonConfiguration(offeredFeatures: offered, queueMaximumSizes: queueSizes,
                                                              vectorCount: vectorCount)))
    }

    /// Capability offsets QEMU 10 uses (read from its config space under qtest).
    private struct CapabilityOffsets {
        let common, isr, device, notification, pciConfiguration, msix: Int
    }
    private static let expressOffsets = CapabilityOffsets(common: 0x84, isr: 0x94, device: 0xA4, notification: 0xB4,
                                                          pciConfiguration: 0xC8, msix: 0xDC)
    private static let conventionalOffsets = CapabilityOffsets(common: 0x40, isr: 0x50, device: 0x60, notification: 0x70,
                                                               pciConfiguration: 0x84, msix: 0x98)

    /// struct virtio_pci_cap after ID/next/len: cfg_type, bar, id, padding, offset, length
    /// (and notify_off_multiplier or pci_cfg_data).
    private static func capabilityPayload(_ type: VirtioPCI.CapabilityType, offset: UInt64, length: UInt64,
                                          extra: UInt32? = nil) -> [UInt8] {
        let bar = type == .pciConfigurationAccess ? 0 : UInt8(VirtioPCI.regionsBAR)
        var bytes: [UInt8] = [type.rawValue, bar, 0, 0, 0]
        for value in [UInt32(offset), UInt32(length)] + (extra.map { [$0] } ?? []) {
            withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
        }
        return bytes
    }

    // MARK: Connections

    public func connect(interrupts: any PCIInterruptOutput) { state.withLock { $0.output = interrupts } }
    public func connect(dma: any DMAPort) { state.withLock { $0.dma = dma } }

    /// The status register as the driver reads it.
    public var status: VirtioDeviceStatus { state.withLock { $0.common.status } }

    /// Notify addresses inside BAR 4, one per queue: where an ioeventfd catches a kick.
    public var notifyAddresses: [(queue: Int, offset: UInt64)] {
        (0..<device.queueMaximumSizes.count).map { ($0, VirtioPCI.notifyOffset + UInt64($0) * UInt64(VirtioPCI.notifyOffsetMultiplier)) }
    }

    /// A doorbell per queue at its notify address: the driver's notify is a 16-bit write of
    /// the queue index (4.1.4.4; NOTIFICATION_DATA is not offered), so any 2-byte write rings
    /// it; other widths still exit and reach `barWrite`.
    public func doorbells(ofBAR index: Int) -> [Doorbell] {
        guard index == VirtioPCI.regionsBAR else { return [] }
        return notifyAddresses.compactMap { queue, offset in
            kickEvents[queue].map { Doorbell(offset: offset, length: 2, eventDescriptor: $0.rawValue) }
        }
    }

    deinit {
        for token in state.withLock({ $0.kickWatches }) { VirtioKickThread.unwatch(token) }
    }

    // MARK: Config space

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 {
        if let access = pciConfigurationAccess(offset, width) {
            // A read of pci_cfg_data fetches the window first (4.1.4.9).
            let value = barRead(access.bar, offset: access.offset, width: access.width)
            state.withLock { $0.config.set(pciConfigurationCapability + VirtioPCI.CapabilityField.pciConfigurationData,
                                           width: access.width.bytes, value: value) }
        }
        return state.withLock { $0.config.read(offset, width: width) }
    }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        let (effects, delivery, output) = state.withLock { s in
            let effects = s.config.write(offset, width: width, value: value)
            return (effects, s.interrupts.configWritten(effects, in: &s.config), s.output)
        }
        delivery.send(to: output)
        if effects.contains(.msixChanged) { syncRoutedVectors() }
        if effects.contains(.functionLevelReset) { reset() }
        if let access = pciConfigurationAccess(offset, width) {
            let data = state.withLock {
                $0.config.get(pciConfigurationCapability + VirtioPCI.CapabilityField.pciConfigurationData, width: access.width.bytes)
            }
            barWrite(access.bar, offset: access.offset, width: access.width, value: data)
        }
        return effects
    }

    /// The BAR access the PCI configuration access capability describes, when a config access
    /// touches its pci_cfg_data: length 1, 2 or 4, aligned, inside BAR 4 (else nothing).
    private func pciConfigurationAccess(_ offset: Int, _ width: AccessWidth) -> (bar: Int, offset: UInt64, width: AccessWidth)? {
        let data = pciConfigurationCapability + VirtioPCI.CapabilityField.pciConfigurationData
        guard offset < data + 4, offset + width.bytes > data else { return nil }
        let (bar, start, length) = state.withLock { s in
            (Int(s.config.get(pciConfigurationCapability + VirtioPCI.CapabilityField.bar, width: 1)),
             s.config.get(pciConfigurationCapability + VirtioPCI.CapabilityField.offset, width: 4),
             s.config.get(pciConfigurationCapability + VirtioPCI.CapabilityField.regionLength, width: 4))
        }
        guard bar == VirtioPCI.regionsBAR, let w = AccessWidth(bytes: Int(length)), w != .qword,
              start % length == 0, start + length <= VirtioPCI.regionsBARSize else { return nil }
        return (bar, start, w)
    }

    public func configSnapshot() -> ConfigSpace { state.withLock { $0.config } }

    // MARK: BARs

    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 {
        if width == .qword {
            // Registers are at most 32 bits wide; a qword is two dword accesses (QEMU splits too).
            return barRead(index, offset: offset, width: .dword) | barRead(index, offset: offset + 4, width: .dword) << 32
        }
        if index == VirtioPCI.regionsBAR {
            switch offset {
            case VirtioPCI.commonOffset..<VirtioPCI.isrOffset:
                return state.withLock { $0.common.read(at: offset, width: width) }
            case VirtioPCI.isrOffset..<VirtioPCI.deviceOffset:
                return readISR(offset: offset - VirtioPCI.isrOffset)
            case VirtioPCI.deviceOffset..<VirtioPCI.notifyOffset:
                let relative = Int(offset - VirtioPCI.deviceOffset)
                // QEMU answers all ones past the device's configuration.
                guard relative + width.bytes <= device.configurationSize else { return width.allOnes }
                return width.truncate(device.readConfiguration(at: relative, width: width))
            default:
                return 0
            }
        }
        return state.withLock { $0.interrupts.msixRead(bar: index, offset: offset, width: width) } ?? 0
    }

    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        if width == .qword {
            barWrite(index, offset: offset, width: .dword, value: value & 0xFFFF_FFFF)
            barWrite(index, offset: offset + 4, width: .dword, value: value >> 32)
            return
        }
        guard index == VirtioPCI.regionsBAR else {
            let (delivery, output) = state.withLock { s in
                (s.interrupts.msixWrite(bar: index, offset: offset, width: width, value: value, in: s.config)?.delivery ?? InterruptDelivery(),
                 s.output)
            }
            delivery.send(to: output)
            syncRoutedVectors()
            return
        }
        switch offset {
        case VirtioPCI.commonOffset..<VirtioPCI.isrOffset:
            writeCommon(offset: offset, width: width, value: value)
        case VirtioPCI.deviceOffset..<VirtioPCI.notifyOffset:
            let relative = Int(offset - VirtioPCI.deviceOffset)
            guard relative + width.bytes <= device.configurationSize else { return }
            device.writeConfiguration(at: relative, width: width, value: width.truncate(value))
        case VirtioPCI.notifyOffset..<VirtioPCI.regionsBARSize:
            notify(queue: Int((offset - VirtioPCI.notifyOffset) / UInt64(VirtioPCI.notifyOffsetMultiplier)))
        default:
            break  // the ISR is read-only
        }
    }

    /// ISR status: reading returns and clears it, and lowers INTx (4.1.4.5).
    private func readISR(offset: UInt64) -> UInt64 {
        guard offset == 0 else { return 0 }
        let (value, delivery, output) = state.withLock { s in
            let value = s.isr
            s.isr = 0
            return (value, s.interrupts.lowerINTx(in: &s.config), s.output)
        }
        delivery.send(to: output)
        return UInt64(value)
    }

    // MARK: Driver actions

    private func writeCommon(offset: UInt64, width: AccessWidth, value: UInt64) {
        let effect = state.withLock { $0.common.write(at: offset, width: width, value: value) }
        switch effect {
        case .none: break
        case .reset: resetDevice()
        case .activate: activate()
        case .guestError(let message, let needsReset):
            if needsReset {
                deviceNeedsReset(message)
            } else {
                GuestErrorLog.report(device: name, kind: "virtio-common", message)
            }
        }
    }

    /// A kick: the device serves the queue when it is active (a kick before DRIVER_OK, for a
    /// queue past the count or a disabled one is dropped, as QEMU drops it).
    public func notify(queue: Int) {
        let live = state.withLock { s in queue < s.active.count && s.active[queue] != nil && !s.common.status.contains(.needsReset) }
        if live { device.queueNotified(queue) }
    }

    /// Starts the device on the enabled queues; a restore passes each queue's saved position.
    func activate(restoring positions: [VirtQueue.Cursor?] = []) {
        let signaller = TransportSignaller(function: self)
        let answersItself = device.answersKicksItself
        let vectorEvents = routeVectors()
        let (activation, unanswered) = state.withLock { s -> (VirtioActivation, Bool) in
            let features = s.common.negotiatedFeatures
            let queues = s.common.queues.enumerated().map { index, q -> VirtQueue? in
                // A size the ring format refuses cannot be set (writeQueueSize, restore): kept off.
                guard q.enabled, VirtQueue.acceptsSize(q.size, packed: features.contains(.ringPacked)) else { return nil }
                let queue = VirtQueue(index: index, size: q.size, addresses: q.addresses, features: features,
                                      port: s.dma, interrupts: signaller)
                if index < positions.count, let position = positions[index] { queue.cursor.withLock { $0 = position } }
                return queue
            }
            // A driver that set DRIVER_OK again without a reset gets fresh queues; the old ones stop.
            for queue in s.active { queue?.stop() }
            s.active = queues
            // Kicks of the enabled queues are answered from now on (a kick that came before
            // DRIVER_OK is answered at once: harmless, the device serves every queue then).
            let kicks = VirtioQueueKicks(events: queues.indices.map { queues[$0] == nil ? nil : kickEvents[$0] }, transport: self)
            for token in s.kickWatches { VirtioKickThread.unwatch(token) }
            let tokens = answersItself ? [] : kicks.descriptors.map { VirtioKickThread.watch(kicks, queue: $0.queue) }
            s.kickWatches = tokens.compactMap { $0 }
            // Under MSI-X, a queue's vector eventfd raises its interrupt without this process.
            let interruptEvents = queues.indices.map { index -> Int32? in
                let vector = Int(s.common.queues[index].vector)
                guard queues[index] != nil, s.config.msixControl?.enabled == true, let vectorEvents,
                      vectorEvents.indices.contains(vector) else { return nil }
                return vectorEvents[vector]
            }
            return (VirtioActivation(features: features, queues: queues, interrupts: signaller,
                                     kicks: answersItself ? kicks : .none,
                                     queueInterruptEvents: vectorEvents == nil ? [] : interruptEvents),
                    tokens.contains(nil))
        }
        do {
            try device.activate(activation)
        } catch {
            deviceNeedsReset("activation failed: \(error)")
        }
        // KVM keeps catching those kicks: unanswered, the queue would hang without a word.
        if unanswered { deviceNeedsReset("the kick thread cannot wait on a queue's kicks") }
    }

    /// Virtio reset (status 0): queues stop, registers return to power-on, the device resets,
    /// ISR clears and INTx drops. MSI-X table entries are the PCI function's and stay.
    func resetDevice() {
        let (delivery, output) = state.withLock { s in
            for queue in s.active { queue?.stop() }
            s.active = []
            for token in s.kickWatches { VirtioKickThread.unwatch(token) }
            s.kickWatches = []
            s.common.reset()
            s.isr = 0
            // QEMU's virtio reset releases every vector, which clears its pending bit.
            s.interrupts.clearPendingMessages()
            return (s.interrupts.lowerINTx(in: &s.config), s.output)
        }
        delivery.send(to: output)
        device.reset()
    }

    /// A function reset (conventional reset or FLR): the PCI side and the virtio side.
    /// Unplugged: the device stops using its queues and backend (a reset, as the driver's), then
    /// gives back what it claimed, so a later device can take it.
    public func unrealize() {
        reset()
        routedVectors.withLock { routed in
            routed?.vectors.release()
            routed = nil
        }
        release()
    }

    public func reset() {
        let (delivery, output) = state.withLock { s in
            s.config = s.resetConfig
            return (s.interrupts.reset(in: &s.config), s.output)
        }
        delivery.send(to: output)
        syncRoutedVectors()
        resetDevice()
    }

    // MARK: In-kernel vector routes

    /// The vectors' eventfds once routed (made now when the machine offers routes), or nil.
    private func routeVectors() -> [Int32]? {
        guard let messageRouting else { return nil }
        let events = routedVectors.withLock { routed -> [Int32]? in
            if routed == nil {
                let count = state.withLock { $0.interrupts.msixTable?.entries.count ?? 0 }
                do throws(InterruptRoutingError) {
                    routed = RoutedMessageVectors(vectors: try messageRouting.makeMessageVectors(count: count))
                } catch {
                    GuestErrorLog.report(device: name, kind: "msix-routes", "no in-kernel MSI-X routes: \(error); queue interrupts pass through the VMM")
                }
            }
            return routed?.vectors.eventFDs
        }
        syncRoutedVectors()
        return events
    }

    /// Brings the routed vectors in step with the MSI-X table. The table is read under the
    /// routes' lock, so of two writers racing the later one applies the latest table.
    func syncRoutedVectors() {
        routedVectors.withLock { routed in
            guard routed != nil else { return }
            let states = state.withLock { s in
                s.interrupts.msixTable?.vectorStates(control: s.config.msixControl ?? MSIXControl(enabled: false, functionMasked: false)) ?? []
            }
            routed?.apply(states, device: name)
        }
    }

    // MARK: Device-side interrupts

    fileprivate func signalQueue(_ index: Int) {
        let (delivery, output) = state.withLock { s in
            s.isr |= VirtioPCI.isrQueue
            let vector = index < s.common.queues.count ? s.common.queues[index].vector : VirtioPCI.noVector
            return (raise(vector, &s), s.output)
        }
        delivery.send(to: output)
    }

    fileprivate func signalConfigurationChange() {
        let (delivery, output) = state.withLock { s in
            s.common.advanceGeneration()
            // QEMU sets bit 0 with the configuration bit (virtio_notify_config), so an INTx
            // driver that only looks at bit 0 still runs; the driver reads both.
            s.isr |= VirtioPCI.isrConfiguration | VirtioPCI.isrQueue
            return (raise(s.common.configurationVector, &s), s.output)
        }
        delivery.send(to: output)
    }

    /// MSI-X when enabled (nothing for NO_VECTOR), else the INTx pin, which stays up until the
    /// driver reads the ISR.
    private func raise(_ vector: UInt16, _ s: inout State) -> InterruptDelivery {
        if s.config.msixControl?.enabled == true {
            guard vector != VirtioPCI.noVector else { return InterruptDelivery() }
            return s.interrupts.request(vector: Int(vector), in: &s.config)
        }
        return s.interrupts.request(vector: 0, in: &s.config)
    }

    /// Bad guest input: NEEDS_RESET (when the driver got as far as FEATURES_OK, as QEMU's
    /// virtio_error), every queue stops, a configuration interrupt, one log line.
    fileprivate func deviceNeedsReset(_ reason: String) {
        GuestErrorLog.report(device: name, kind: "virtio", "\(reason); device needs reset")
        let announce = state.withLock { s -> Bool in
            for queue in s.active { queue?.stop() }
            guard s.common.status.contains(.featuresOK), !s.common.status.contains(.needsReset) else { return false }
            s.common.status.insert(.needsReset)
            return true
        }
        if announce { signalConfigurationChange() }
    }
}

/// The signaller a device and its queues get: weak, so queues kept by a device after an
/// unplug do not keep the function alive.
private struct TransportSignaller: VirtioInterruptSignaller {
    weak var function: VirtioPCIFunction?

    func signalQueue(_ index: Int) { function?.signalQueue(index) }
    func signalConfigurationChange() { function?.signalConfigurationChange() }
    func deviceNeedsReset(_ reason: String) { function?.deviceNeedsReset(reason) }
}
