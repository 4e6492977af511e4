import VMMBase

/// One queue's registers as the driver programs them through common config.
public struct VirtioQueueRegisters: Hashable, Sendable, Codable {
    public let maximumSize: UInt16
    public var size: UInt16
    public var vector: UInt16 = VirtioPCI.noVector
    public var enabled = false
    public var addresses = VirtQueueAddresses(descriptorTable: 0, driverArea: 0, deviceArea: 0)

    public init(maximumSize: UInt16) {
        self.maximumSize = maximumSize
        size = maximumSize
    }
}

/// What a common-config write asks the transport to do once its lock is released.
public enum VirtioCommonConfigurationEffect: Hashable, Sendable {
    case none
    /// Status 0 was written: reset the device.
    case reset
    /// DRIVER_OK was set (with FEATURES_OK): start the device.
    case activate
    /// A rule was broken; the transport logs it. With `needsReset` the device stops as after
    /// bad descriptors (QEMU's virtio_error, e.g. queue_enable written with 0).
    case guestError(String, needsReset: Bool)
}

/// struct virtio_pci_common_cfg as a value: feature negotiation, the status state machine and
/// the queue registers (virtio 1.2, 4.1.4.3 and 3.1). No device, no memory: the transport
/// acts on the returned effects.
public struct VirtioCommonConfiguration: Hashable, Sendable, Codable {
    public let offeredFeatures: VirtioFeatures
    public let vectorCount: Int
    public private(set) var deviceFeatureSelect: UInt32 = 0
    public private(set) var driverFeatureSelect: UInt32 = 0
    /// The two driver_feature words as written (read back unchanged, as QEMU's).
    public private(set) var driverFeatureWords: [UInt32] = [0, 0]
    public private(set) var configurationVector = VirtioPCI.noVector
    public var status: VirtioDeviceStatus = []
    public private(set) var generation: UInt8 = 0
    public private(set) var queueSelect: UInt16 = 0
    public private(set) var queues: [VirtioQueueRegisters]

    public init(offeredFeatures: VirtioFeatures, queueMaximumSizes: [UInt16], vectorCount: Int) {
        self.offeredFeatures = offeredFeatures
        self.vectorCount = vectorCount
        queues = queueMaximumSizes.map(VirtioQueueRegisters.init)
    }

    /// The power-on state (status 0 written, or a function reset).
    public mutating func reset() {
        self = VirtioCommonConfiguration(offeredFeatures: offeredFeatures, queueMaximumSizes: queues.map(\.maximumSize),
                                         vectorCount: vectorCount)
    }

    /// What the driver accepted, limited to what was offered.
    public var negotiatedFeatures: VirtioFeatures {
        VirtioFeatures(rawValue: UInt64(driverFeatureWords[0]) | UInt64(driverFeatureWords[1]) << 32)
            .intersection(offeredFeatures)
    }

    /// The configuration changed: config_generation moves on (4.1.4.3.1).
    public mutating func advanceGeneration() { generation &+= 1 }

    private var selected: Int? { Int(queueSelect) < queues.count ? Int(queueSelect) : nil }

    // MARK: Driver reads

    public func read(at offset: UInt64, width: AccessWidth) -> UInt64 {
        let value: UInt64
        let q = selected.map { queues[$0] }
        switch offset {
        case VirtioCommonRegister.deviceFeatureSelect: value = UInt64(deviceFeatureSelect)
        case VirtioCommonRegister.deviceFeature: value = UInt64(offeredFeatures.word(deviceFeatureSelect))
        case VirtioCommonRegister.driverFeatureSelect: value = UInt64(driverFeatureSelect)
        case VirtioCommonRegister.driverFeature:
            value = driverFeatureSelect < 2 ? UInt64(driverFeatureWords[Int(driverFeatureSelect)]) : 0
        case VirtioCommonRegister.configMSIXVector: value = UInt64(configurationVector)
        case VirtioCommonRegister.numberOfQueues: value = UInt64(queues.count)
        case VirtioCommonRegister.deviceStatus: value = UInt64(status.rawValue)
        case VirtioCommonRegister.configGeneration: value = UInt64(generation)
        case VirtioCommonRegister.queueSelect: value = UInt64(queueSelect)
        case VirtioCommonRegister.queueSize: value = UInt64(q?.size ?? 0)
        case VirtioCommonRegister.queueMSIXVector: value = UInt64(q?.vector ?? VirtioPCI.noVector)
        case VirtioCommonRegister.queueEnable: value = q?.enabled == true ? 1 : 0
        case VirtioCommonRegister.queueNotifyOffset: value = UInt64(queueSelect)
        case VirtioCommonRegister.queueDescriptorLow: value = (q?.addresses.descriptorTable ?? 0) & 0xFFFF_FFFF
        case VirtioCommonRegister.queueDescriptorHigh: value = (q?.addresses.descriptorTable ?? 0) >> 32
        case VirtioCommonRegister.queueDriverLow: value = (q?.addresses.driverArea ?? 0) & 0xFFFF_FFFF
        case VirtioCommonRegister.queueDriverHigh: value = (q?.addresses.driverArea ?? 0) >> 32
        case VirtioCommonRegister.queueDeviceLow: value = (q?.addresses.deviceArea ?? 0) & 0xFFFF_FFFF
        case VirtioCommonRegister.queueDeviceHigh: value = (q?.addresses.deviceArea ?? 0) >> 32
        default: value = 0
        }
        return width.truncate(value)
    }

    // MARK: Driver writes

    public mutating func write(at offset: UInt64, width: AccessWidth, value raw: UInt64) -> VirtioCommonConfigurationEffect {
        let value = width.truncate(raw)
        switch offset {
        case VirtioCommonRegister.deviceFeatureSelect: deviceFeatureSelect = UInt32(truncatingIfNeeded: value)
        case VirtioCommonRegister.driverFeatureSelect: driverFeatureSelect = UInt32(truncatingIfNeeded: value)
        case VirtioCommonRegister.driverFeature:
            // Features are fixed once FEATURES_OK is set (3.1.1); QEMU ignores such writes too.
            guard driverFeatureSelect < 2, !status.contains(.featuresOK) else { return .none }
            driverFeatureWords[Int(driverFeatureSelect)] = UInt32(truncatingIfNeeded: value)
        case VirtioCommonRegister.configMSIXVector: configurationVector = usableVector(value)
        case VirtioCommonRegister.deviceStatus: return writeStatus(UInt8(truncatingIfNeeded: value))
        case VirtioCommonRegister.queueSelect:
            // QEMU ignores selectors past its queue limit, keeping the old one.
            if value < UInt64(VirtioPCI.maximumQueues) { queueSelect = UInt16(value) }
        case VirtioCommonRegister.queueSize: return writeQueueSize(UInt16(truncatingIfNeeded: value))
        case VirtioCommonRegister.queueMSIXVector:
            if let i = selected { queues[i].vector = usableVector(value) }
        case VirtioCommonRegister.queueEnable:
            guard let i = selected else { return .none }
            guard value == 1 else {
                return .guestError("queue_enable written with \(value) for queue \(i) (only 1 is allowed)", needsReset: true)
            }
            queues[i].enabled = true
        case VirtioCommonRegister.queueDescriptorLow...VirtioCommonRegister.queueDeviceHigh:
            guard let i = selected else { return .none }
            guard !queues[i].enabled else {
                return .guestError("queue \(i) address written while the queue is enabled", needsReset: false)
            }
            writeQueueAddress(&queues[i].addresses, offset: offset, value: UInt32(truncatingIfNeeded: value))
        default: break  // read-only or reserved
        }
        return .none
    }

    /// A vector the function has, else NO_VECTOR, which the driver reads back to learn of the
    /// failure (4.1.5.1.2).
    private func usableVector(_ value: UInt64) -> UInt16 {
        value < UInt64(vectorCount) ? UInt16(value) : VirtioPCI.noVector
    }

    private mutating func writeQueueSize(_ size: UInt16) -> VirtioCommonConfigurationEffect {
        guard let i = selected else { return .none }
        guard !queues[i].enabled else { return .guestError("queue \(i) size written while enabled", needsReset: false) }
        // A split ring's size is a power of two no larger than the device's maximum (2.7); a
        // packed ring's any size up to it (2.8), once FEATURES_OK has fixed the ring format.
        let packed = status.contains(.featuresOK) && negotiatedFeatures.contains(.ringPacked)
        guard VirtQueue.acceptsSize(size, packed: packed), size <= queues[i].maximumSize else {
            return .guestError("queue \(i) size \(size) is not \(packed ? "a size" : "a power of two") from 1 up to \(queues[i].maximumSize); kept \(queues[i].size)",
                               needsReset: false)
        }
        queues[i].size = size
        return .none
    }

    private func writeQueueAddress(_ addresses: inout VirtQueueAddresses, offset: UInt64, value: UInt32) {
        func set(_ field: inout UInt64, high: Bool) {
            field = high ? field & 0xFFFF_FFFF | UInt64(value) << 32 : field & ~0xFFFF_FFFF | UInt64(value)
        }
        switch offset {
        case VirtioCommonRegister.queueDescriptorLow: set(&addresses.descriptorTable, high: false)
        case VirtioCommonRegister.queueDescriptorHigh: set(&addresses.descriptorTable, high: true)
        case VirtioCommonRegister.queueDriverLow: set(&addresses.driverArea, high: false)
        case VirtioCommonRegister.queueDriverHigh: set(&addresses.driverArea, high: true)
        case VirtioCommonRegister.queueDeviceLow: set(&addresses.deviceArea, high: false)
        case VirtioCommonRegister.queueDeviceHigh: set(&addresses.deviceArea, high: true)
        default: break
        }
    }

    /// The device status state machine (3.1.1, 2.1.2).
    private mutating func writeStatus(_ raw: UInt8) -> VirtioCommonConfigurationEffect {
        guard raw != 0 else { return .reset }
        let new = VirtioDeviceStatus(rawValue: raw)
        if new.contains(.featuresOK) && !status.contains(.featuresOK) {
            if let refusal = featuresRefusal() {
                // The write is dropped: the driver reads FEATURES_OK back as clear (3.1.1 step 6).
                return .guestError("FEATURES_OK refused: \(refusal)", needsReset: false)
            }
        }
        let old = status
        status = new
        if new.contains(.driverOK) && !old.contains(.driverOK) {
            guard new.contains(.featuresOK) else {
                return .guestError("DRIVER_OK set without FEATURES_OK; the device stays stopped", needsReset: false)
            }
            return .activate
        }
        return .none
    }

    /// Why the accepted features cannot be used, or nil.
    private func featuresRefusal() -> String? {
        let accepted = VirtioFeatures(rawValue: UInt64(driverFeatureWords[0]) | UInt64(driverFeatureWords[1]) << 32)
        let unoffered = accepted.subtracting(offeredFeatures)
        if !unoffered.isEmpty { return "features \(unoffered) were not offered" }
        if !accepted.contains(.version1) { return "VERSION_1 (bit 32) not accepted by the driver of a modern-only device" }
        // A device that needs the platform's DMA translation may refuse a driver that ignores
        // it (6.1; QEMU's virtio_validate_features does).
        if offeredFeatures.contains(.accessPlatform) && !accepted.contains(.accessPlatform) {
            return "ACCESS_PLATFORM (bit 33) not accepted"
        }
        return nil
    }
}
