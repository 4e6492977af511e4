/// Register offsets inside the PCI Express capability, version 2 (PCI Express Base, 7.5.3).
public enum PCIExpressRegister {
    public static let capabilities = 0x02      // 16: version, port type, slot implemented, IRQ number
    public static let deviceCapabilities = 0x04
    public static let deviceControl = 0x08
    public static let deviceStatus = 0x0A
    public static let linkCapabilities = 0x0C
    public static let linkControl = 0x10
    public static let linkStatus = 0x12
    public static let slotCapabilities = 0x14
    public static let slotControl = 0x18
    public static let slotStatus = 0x1A
    public static let rootControl = 0x1C
    public static let rootCapabilities = 0x1E
    public static let rootStatus = 0x20
    public static let deviceCapabilities2 = 0x24
    public static let deviceControl2 = 0x28
    public static let deviceStatus2 = 0x2A
    public static let linkCapabilities2 = 0x2C
    public static let linkControl2 = 0x30
    public static let linkStatus2 = 0x32
    public static let slotCapabilities2 = 0x34
    public static let slotControl2 = 0x38
    public static let slotStatus2 = 0x3A
    public static let length = 0x3C
}

/// Device Status bits (all error bits are write-1-to-clear).
public struct PCIExpressDeviceStatus: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let correctableError = PCIExpressDeviceStatus(rawValue: 1 << 0)
    public static let nonFatalError = PCIExpressDeviceStatus(rawValue: 1 << 1)
    public static let fatalError = PCIExpressDeviceStatus(rawValue: 1 << 2)
    public static let unsupportedRequest = PCIExpressDeviceStatus(rawValue: 1 << 3)
    public static let auxPowerDetected = PCIExpressDeviceStatus(rawValue: 1 << 4)
    public static let transactionsPending = PCIExpressDeviceStatus(rawValue: 1 << 5)
    public static let errorBits: PCIExpressDeviceStatus = [.correctableError, .nonFatalError, .fatalError,
                                                           .unsupportedRequest]
}

/// Slot Capabilities bits 6:0 plus bits 17 and 18: the hardware a hot-plug slot has.
public struct PCIExpressSlotFeatures: OptionSet, Sendable, Hashable, Codable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue & 0x0006_007F }
    public static let attentionButton = PCIExpressSlotFeatures(rawValue: 1 << 0)
    public static let powerController = PCIExpressSlotFeatures(rawValue: 1 << 1)
    public static let mrlSensor = PCIExpressSlotFeatures(rawValue: 1 << 2)
    public static let attentionIndicator = PCIExpressSlotFeatures(rawValue: 1 << 3)
    public static let powerIndicator = PCIExpressSlotFeatures(rawValue: 1 << 4)
    public static let hotPlugSurprise = PCIExpressSlotFeatures(rawValue: 1 << 5)
    public static let hotPlugCapable = PCIExpressSlotFeatures(rawValue: 1 << 6)
    public static let electromechanicalInterlock = PCIExpressSlotFeatures(rawValue: 1 << 17)
    /// No Command Completed Support: the port finishes commands at once and never reports them.
    public static let noCommandCompleted = PCIExpressSlotFeatures(rawValue: 1 << 18)

    /// A native hot-plug slot as QEMU's root and downstream ports present it.
    public static let standardHotPlug: PCIExpressSlotFeatures = [.attentionButton, .powerController,
        .attentionIndicator, .powerIndicator, .hotPlugSurprise, .hotPlugCapable]
}

/// Slot Control bits.
public struct PCIExpressSlotControl: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let attentionButtonPressedEnable = PCIExpressSlotControl(rawValue: 1 << 0)
    public static let powerFaultDetectedEnable = PCIExpressSlotControl(rawValue: 1 << 1)
    public static let mrlSensorChangedEnable = PCIExpressSlotControl(rawValue: 1 << 2)
    public static let presenceDetectChangedEnable = PCIExpressSlotControl(rawValue: 1 << 3)
    public static let commandCompletedInterruptEnable = PCIExpressSlotControl(rawValue: 1 << 4)
    public static let hotPlugInterruptEnable = PCIExpressSlotControl(rawValue: 1 << 5)
    public static let attentionIndicatorControl = PCIExpressSlotControl(rawValue: 0x3 << 6)
    public static let powerIndicatorControl = PCIExpressSlotControl(rawValue: 0x3 << 8)
    /// Power Controller Control: 1 = power off.
    public static let powerControllerOff = PCIExpressSlotControl(rawValue: 1 << 10)
    public static let electromechanicalInterlockControl = PCIExpressSlotControl(rawValue: 1 << 11)
    public static let dataLinkLayerStateChangedEnable = PCIExpressSlotControl(rawValue: 1 << 12)
}

/// Slot Status bits: events (write-1-to-clear) and read-only state.
public struct PCIExpressSlotStatus: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let attentionButtonPressed = PCIExpressSlotStatus(rawValue: 1 << 0)
    public static let powerFaultDetected = PCIExpressSlotStatus(rawValue: 1 << 1)
    public static let mrlSensorChanged = PCIExpressSlotStatus(rawValue: 1 << 2)
    public static let presenceDetectChanged = PCIExpressSlotStatus(rawValue: 1 << 3)
    public static let commandCompleted = PCIExpressSlotStatus(rawValue: 1 << 4)
    /// MRL Sensor State: set when the retention latch is open.
    public static let mrlOpen = PCIExpressSlotStatus(rawValue: 1 << 5)
    public static let presenceDetected = PCIExpressSlotStatus(rawValue: 1 << 6)
    public static let electromechanicalInterlockEngaged = PCIExpressSlotStatus(rawValue: 1 << 7)
    public static let dataLinkLayerStateChanged = PCIExpressSlotStatus(rawValue: 1 << 8)
}

/// Indicator states in Slot Control (attention and power indicators).
public enum PCIExpressIndicator: UInt16, Sendable, Hashable {
    case on = 1, blink = 2, off = 3
}

/// A hot-plug capable (or at least slot-carrying) port's slot.
public struct PCIExpressSlotOptions: Sendable, Hashable {
    public var features: PCIExpressSlotFeatures
    /// 13 bits, unique in the chassis.
    public var physicalSlotNumber: UInt16
    /// Slot Power Limit: value (8 bits) and scale (0 = x1, 1 = x0.1, 2 = x0.01, 3 = x0.001 W).
    public var powerLimitValue: UInt8
    public var powerLimitScale: UInt8
    /// Initial Presence Detect State (a device is cold-plugged).
    public var presenceDetected: Bool

    public init(features: PCIExpressSlotFeatures = .standardHotPlug, physicalSlotNumber: UInt16,
                powerLimitValue: UInt8 = 0, powerLimitScale: UInt8 = 0, presenceDetected: Bool = false) {
        self.features = features
        self.physicalSlotNumber = physicalSlotNumber
        self.powerLimitValue = powerLimitValue
        self.powerLimitScale = powerLimitScale
        self.presenceDetected = presenceDetected
    }
}

/// How a PCI Express function describes itself.
public struct PCIExpressOptions: Sendable, Hashable {
    public enum PortType: UInt8, Sendable, Hashable {
        case endpoint = 0x0
        case legacyEndpoint = 0x1
        case rootPort = 0x4
        case upstreamPort = 0x5
        case downstreamPort = 0x6
        case pcieToPCIBridge = 0x7
        case pciToPCIeBridge = 0x8
        case rootComplexIntegratedEndpoint = 0x9
        case rootComplexEventCollector = 0xA

        /// Ports whose link leads away from the root: they may have a slot and control the link.
        public var isDownstreamFacing: Bool { self == .rootPort || self == .downstreamPort }
        public var isEndpoint: Bool {
            self == .endpoint || self == .legacyEndpoint || self == .rootComplexIntegratedEndpoint
        }
        /// Functions with a type 1 (bridge) header.
        public var isBridge: Bool {
            [.rootPort, .upstreamPort, .downstreamPort, .pcieToPCIBridge, .pciToPCIeBridge].contains(self)
        }
        public var hasRootRegisters: Bool { self == .rootPort || self == .rootComplexEventCollector }
        /// Integrated functions have no link of their own.
        public var hasLink: Bool { self != .rootComplexIntegratedEndpoint && self != .rootComplexEventCollector }
    }

    /// Link speeds by their Supported Link Speeds Vector position.
    public enum LinkSpeed: UInt8, Sendable, Hashable, Comparable {
        case gt2_5 = 1, gt5 = 2, gt8 = 3, gt16 = 4, gt32 = 5
        public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    }

    public var portType: PortType
    /// Max Payload Size Supported in bytes: 128 ... 4096.
    public var maxPayloadSize: Int
    public var extendedTagField: Bool
    /// Function Level Reset capable (endpoints only).
    public var functionLevelReset: Bool
    public var linkSpeed: LinkSpeed
    /// Maximum (and negotiated) link width: 1, 2, 4, 8, 12, 16 or 32.
    public var linkWidth: Int
    public var portNumber: UInt8
    /// Data Link Layer Link Active Reporting: required of hot-plug capable downstream ports.
    /// Nil chooses it for downstream-facing ports with a hot-plug capable slot.
    public var dataLinkLayerActiveReporting: Bool?
    /// Initial Data Link Layer Link Active state (only when reporting is capable).
    public var linkActive: Bool
    /// The slot behind a root or downstream port.
    public var slot: PCIExpressSlotOptions?
    /// ARI Forwarding Supported (downstream-facing ports).
    public var ariForwarding: Bool
    /// MSI/MSI-X vector used for the capability's own interrupts (hot-plug, PME): 0...31.
    public var interruptMessageNumber: UInt8

    public init(portType: PortType, maxPayloadSize: Int = 256, extendedTagField: Bool = true,
                functionLevelReset: Bool = false, linkSpeed: LinkSpeed = .gt2_5, linkWidth: Int = 1,
                portNumber: UInt8 = 0, dataLinkLayerActiveReporting: Bool? = nil, linkActive: Bool = false,
                slot: PCIExpressSlotOptions? = nil, ariForwarding: Bool = false, interruptMessageNumber: UInt8 = 0) {
        self.portType = portType
        self.maxPayloadSize = maxPayloadSize
        self.extendedTagField = extendedTagField
        self.functionLevelReset = functionLevelReset
        self.linkSpeed = linkSpeed
        self.linkWidth = linkWidth
        self.portNumber = portNumber
        self.dataLinkLayerActiveReporting = dataLinkLayerActiveReporting
        self.linkActive = linkActive
        self.slot = slot
        self.ariForwarding = ariForwarding
        self.interruptMessageNumber = interruptMessageNumber
    }
}

/// The slot registers of a downstream-facing port, decoded.
public struct PCIExpressSlotState: Sendable, Hashable {
    public let features: PCIExpressSlotFeatures
    public let physicalSlotNumber: UInt16
    public let control: PCIExpressSlotControl
    public let status: PCIExpressSlotStatus

    public var attentionIndicator: PCIExpressIndicator? { PCIExpressIndicator(rawValue: (control.rawValue >> 6) & 3) }
    public var powerIndicator: PCIExpressIndicator? { PCIExpressIndicator(rawValue: (control.rawValue >> 8) & 3) }
    /// True unless a power controller exists and has been told to switch off.
    public var poweredOn: Bool { !features.contains(.powerController) || !control.contains(.powerControllerOff) }
}

extension ConfigSpace {
    /// Adds the PCI Express capability, version 2 (0x3C bytes). Slot registers are filled for
    /// root and downstream ports given a slot; root registers for root ports and event
    /// collectors. Error, link and slot control bits are writable where the function has the
    /// feature; status event bits are write-1-to-clear.
    @discardableResult
    public mutating func addPCIExpress(_ options: PCIExpressOptions, at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        func fail(_ reason: String) -> ConfigSpaceError { .invalidCapability(name: "PCI Express", reason: reason) }
        let type = options.portType
        guard (128...4096).contains(options.maxPayloadSize), options.maxPayloadSize.nonzeroBitCount == 1 else {
            throw fail("Max Payload Size \(options.maxPayloadSize) must be a power of two from 128 to 4096")
        }
        guard [1, 2, 4, 8, 12, 16, 32].contains(options.linkWidth) else { throw fail("link width x\(options.linkWidth)") }
        guard options.interruptMessageNumber < 32 else { throw fail("interrupt message number above 31") }
        if options.slot != nil && !type.isDownstreamFacing { throw fail("only root and downstream ports have slots") }
        if let slot = options.slot, slot.physicalSlotNumber >= 1 << 13 { throw fail("physical slot number above 8191") }
        if options.functionLevelReset && !type.isEndpoint { throw fail("only endpoints do Function Level Reset") }
        if options.ariForwarding && !type.isDownstreamFacing { throw fail("ARI forwarding is a downstream port feature") }
        if capability(.standard(CapabilityID.pciExpress)) != nil { throw fail("a function has one PCI Express capability") }
        if type.isBridge != (layout == .bridge) {
            throw fail("a \(type) needs a \(layout == .bridge ? "type 0" : "type 1") header")
        }
        let base = try addCapability(id: CapabilityID.pciExpress, length: PCIExpressRegister.length, at: offset)
        let hotPlugCapable = options.slot?.features.contains(.hotPlugCapable) ?? false
        let dllActiveReporting = options.dataLinkLayerActiveReporting ?? (type.isDownstreamFacing && hotPlugCapable)
        let linkBandwidthNotification = type.isDownstreamFacing && (options.linkWidth > 1 || options.linkSpeed > .gt2_5)

        // PCI Express Capabilities: version 2, type, slot implemented, interrupt message number.
        var flags = UInt16(2) | UInt16(type.rawValue) << 4 | UInt16(options.interruptMessageNumber) << 9
        if options.slot != nil { flags |= 1 << 8 }
        set(base + PCIExpressRegister.capabilities, width: 2, value: UInt64(flags))

        // Device: role-based error reporting is mandatory since 1.1.
        var deviceCap = UInt32(options.maxPayloadSize.trailingZeroBitCount - 7) | 1 << 15
        if options.extendedTagField { deviceCap |= 1 << 5 }
        if options.functionLevelReset { deviceCap |= 1 << 28 }
        set(base + PCIExpressRegister.deviceCapabilities, width: 4, value: UInt64(deviceCap))
        // Defaults per spec: Relaxed Ordering and No Snoop enabled, Max Read Request 512 bytes.
        set(base + PCIExpressRegister.deviceControl, width: 2, value: 0x2810)
        var deviceControlWritable: UInt16 = 0x000F | 1 << 4 | 0x7 << 5 | 1 << 11 | 0x7 << 12
        if options.extendedTagField { deviceControlWritable |= 1 << 8 }
        // Bit 15 is Bridge Configuration Retry Enable on PCIe-to-PCI bridges. On FLR-capable
        // endpoints it is Initiate FLR, which always reads 0 (see pciExpressRule).
        if type == .pcieToPCIBridge { deviceControlWritable |= 1 << 15 }
        setWritable(base + PCIExpressRegister.deviceControl, width: 2, mask: UInt64(deviceControlWritable))
        setWriteOneToClear(base + PCIExpressRegister.deviceStatus, width: 2,
                           mask: UInt64(PCIExpressDeviceStatus.errorBits.rawValue))

        if type.hasLink {
            var linkCap = UInt32(options.linkSpeed.rawValue) | UInt32(options.linkWidth) << 4
                | UInt32(options.portNumber) << 24
            if type.isDownstreamFacing { linkCap |= 1 << 19 }  // surprise down error reporting
            if dllActiveReporting { linkCap |= 1 << 20 }
            if linkBandwidthNotification { linkCap |= 1 << 21 }
            set(base + PCIExpressRegister.linkCapabilities, width: 4, value: UInt64(linkCap))
            // Common Clock Configuration and Extended Synch everywhere; Read Completion Boundary
            // on endpoints; Link Disable on downstream-facing ports; bandwidth interrupts when
            // notification is capable. Retrain Link always reads 0, so it is not stored.
            var linkControlWritable: UInt16 = 1 << 6 | 1 << 7
            if type.isEndpoint { linkControlWritable |= 1 << 3 }
            if type.isDownstreamFacing { linkControlWritable |= 1 << 4 }
            if linkBandwidthNotification { linkControlWritable |= 1 << 10 | 1 << 11 }
            setWritable(base + PCIExpressRegister.linkControl, width: 2, mask: UInt64(linkControlWritable))
            var linkStatus = UInt16(options.linkSpeed.rawValue) | UInt16(options.linkWidth) << 4
            if dllActiveReporting && options.linkActive { linkStatus |= 1 << 13 }
            set(base + PCIExpressRegister.linkStatus, width: 2, value: UInt64(linkStatus))
            if linkBandwidthNotification { setWriteOneToClear(base + PCIExpressRegister.linkStatus, width: 2, mask: 0xC000) }

            // Supported Link Speeds Vector: every speed up to the maximum.
            let speeds = UInt32((1 << (options.linkSpeed.rawValue + 1)) - 2)
            set(base + PCIExpressRegister.linkCapabilities2, width: 4, value: UInt64(speeds))
            // Target Link Speed defaults to the highest supported speed.
            set(base + PCIExpressRegister.linkControl2, width: 2, value: UInt64(options.linkSpeed.rawValue))
            setWritable(base + PCIExpressRegister.linkControl2, width: 2, mask: 0x003F)
        }

        if let slot = options.slot { defineSlotRegisters(base, slot, dllActiveReporting: dllActiveReporting) }

        if type.hasRootRegisters {
            // System error on correctable/non-fatal/fatal, PME interrupt enable.
            setWritable(base + PCIExpressRegister.rootControl, width: 2, mask: 0x000F)
            setWriteOneToClear(base + PCIExpressRegister.rootStatus, width: 4, mask: 1 << 16)
        }

        // Version 2 registers: extended fmt field and end-end TLP prefixes as QEMU advertises.
        var deviceCap2: UInt32 = 1 << 20 | 1 << 21
        var deviceControl2Writable: UInt16 = 1 << 15
        if options.ariForwarding {
            deviceCap2 |= 1 << 5
            deviceControl2Writable |= 1 << 5
        }
        set(base + PCIExpressRegister.deviceCapabilities2, width: 4, value: UInt64(deviceCap2))
        setWritable(base + PCIExpressRegister.deviceControl2, width: 2, mask: UInt64(deviceControl2Writable))
        return base
    }

    private mutating func defineSlotRegisters(_ base: Int, _ slot: PCIExpressSlotOptions, dllActiveReporting: Bool) {
        let features = slot.features
        let slotCap = features.rawValue | UInt32(slot.powerLimitValue) << 7 | UInt32(slot.powerLimitScale & 3) << 15
            | UInt32(slot.physicalSlotNumber) << 19
        set(base + PCIExpressRegister.slotCapabilities, width: 4, value: UInt64(slotCap))

        // Each control bit exists only with the hardware it drives.
        var writable: PCIExpressSlotControl = [.presenceDetectChangedEnable]
        var events: PCIExpressSlotStatus = [.presenceDetectChanged]
        var control: PCIExpressSlotControl = []
        if features.contains(.attentionButton) {
            writable.insert(.attentionButtonPressedEnable)
            events.insert(.attentionButtonPressed)
        }
        if features.contains(.powerController) {
            writable.formUnion([.powerFaultDetectedEnable, .powerControllerOff])
            events.insert(.powerFaultDetected)
            if !slot.presenceDetected { control.insert(.powerControllerOff) }
        }
        if features.contains(.mrlSensor) {
            writable.insert(.mrlSensorChangedEnable)
            events.insert(.mrlSensorChanged)
        }
        if features.contains(.attentionIndicator) {
            writable.insert(.attentionIndicatorControl)
            control.formUnion(PCIExpressSlotControl(rawValue: PCIExpressIndicator.off.rawValue << 6))
        }
        if features.contains(.powerIndicator) {
            writable.insert(.powerIndicatorControl)
            let initial: PCIExpressIndicator = slot.presenceDetected ? .on : .off
            control.formUnion(PCIExpressSlotControl(rawValue: initial.rawValue << 8))
        }
        if features.contains(.hotPlugCapable) {
            writable.insert(.hotPlugInterruptEnable)
            if !features.contains(.noCommandCompleted) {
                writable.insert(.commandCompletedInterruptEnable)
                events.insert(.commandCompleted)
            }
        }
        if dllActiveReporting {
            writable.insert(.dataLinkLayerStateChangedEnable)
            events.insert(.dataLinkLayerStateChanged)
        }
        // Electromechanical Interlock Control always reads 0; the hot-plug controller sees
        // the command through `.slotControlWritten` and the raw written value.
        set(base + PCIExpressRegister.slotControl, width: 2, value: UInt64(control.rawValue))
        setWritable(base + PCIExpressRegister.slotControl, width: 2, mask: UInt64(writable.rawValue))
        var status: PCIExpressSlotStatus = []
        if slot.presenceDetected { status.insert(.presenceDetected) }
        set(base + PCIExpressRegister.slotStatus, width: 2, value: UInt64(status.rawValue))
        setWriteOneToClear(base + PCIExpressRegister.slotStatus, width: 2, mask: UInt64(events.rawValue))
    }

    /// Offset of the PCI Express capability, if any.
    public var pciExpressOffset: Int? { capability(.standard(CapabilityID.pciExpress))?.offset }

    /// ARI Forwarding Enable (Device Control 2, bit 5): a downstream port then treats the
    /// device number of config requests for its link as part of an 8-bit function number.
    public var ariForwardingEnabled: Bool {
        guard let base = pciExpressOffset else { return false }
        return get(base + PCIExpressRegister.deviceControl2, width: 2) & (1 << 5) != 0
    }

    public var pciExpressPortType: PCIExpressOptions.PortType? {
        pciExpressOffset.flatMap { PCIExpressOptions.PortType(rawValue: UInt8((get($0 + PCIExpressRegister.capabilities, width: 2) >> 4) & 0xF)) }
    }

    /// Slot registers, when the function is a port with a slot.
    public var pciExpressSlotState: PCIExpressSlotState? {
        guard let base = pciExpressOffset, get(base + PCIExpressRegister.capabilities, width: 2) & (1 << 8) != 0 else {
            return nil
        }
        let cap = UInt32(get(base + PCIExpressRegister.slotCapabilities, width: 4))
        return PCIExpressSlotState(
            features: PCIExpressSlotFeatures(rawValue: cap),
            physicalSlotNumber: UInt16(cap >> 19),
            control: PCIExpressSlotControl(rawValue: UInt16(get(base + PCIExpressRegister.slotControl, width: 2))),
            status: PCIExpressSlotStatus(rawValue: UInt16(get(base + PCIExpressRegister.slotStatus, width: 2))))
    }

    /// Device side: sets or clears Slot Status bits (events and presence/MRL state) and
    /// returns the new status.
    @discardableResult
    public mutating func setSlotStatus(_ bits: PCIExpressSlotStatus, _ on: Bool) -> PCIExpressSlotStatus? {
        guard let base = pciExpressOffset, pciExpressSlotState != nil else { return nil }
        setBits(base + PCIExpressRegister.slotStatus, width: 2, UInt64(bits.rawValue), to: on)
        return pciExpressSlotState?.status
    }

    /// Device side: Data Link Layer Link Active, when the port reports it.
    public mutating func setLinkActive(_ active: Bool) {
        guard let base = pciExpressOffset,
              get(base + PCIExpressRegister.linkCapabilities, width: 4) & (1 << 20) != 0 else { return }
        setBits(base + PCIExpressRegister.linkStatus, width: 2, 1 << 13, to: active)
    }

    /// Device side: sets Device Status error bits (the guest clears them by writing one).
    public mutating func setDeviceStatus(_ bits: PCIExpressDeviceStatus, _ on: Bool) {
        guard let base = pciExpressOffset else { return }
        setBits(base + PCIExpressRegister.deviceStatus, width: 2, UInt64(bits.rawValue), to: on)
    }

    /// Any write touching Slot Control is a command; Initiate FLR is reported, never stored.
    func pciExpressRule(relative: Int, capabilityOffset: Int, proposed: UInt8, written: UInt8,
                        effects: inout ConfigWriteEffects) -> UInt8 {
        switch relative {
        case PCIExpressRegister.slotControl, PCIExpressRegister.slotControl + 1:
            if get(capabilityOffset + PCIExpressRegister.capabilities, width: 2) & (1 << 8) != 0 {
                effects.insert(.slotControlWritten)
            }
        case PCIExpressRegister.deviceControl + 1:
            let flrCapable = get(capabilityOffset + PCIExpressRegister.deviceCapabilities, width: 4) & (1 << 28) != 0
            if flrCapable && written & 0x80 != 0 { effects.insert(.functionLevelReset) }
        default:
            break
        }
        return proposed
    }
}
