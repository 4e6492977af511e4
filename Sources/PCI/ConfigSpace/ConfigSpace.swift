import VMMBase

/// One function's configuration space: the bytes a guest reads, and per byte which bits it
/// may write (`writable`) and which it clears by writing one (`writeOneToClear`). Bytes no
/// register claims read as zero and ignore writes. Capabilities record the bytes they own so
/// that two can never overlap.
///
/// A value type: devices keep one behind their own lock and hand out copies as snapshots.
public struct ConfigSpace: Sendable, Hashable, Codable {
    public static let conventionalSize = 256
    public static let expressSize = 4096

    public private(set) var bytes: [UInt8]
    public private(set) var writable: [UInt8]
    public private(set) var writeOneToClear: [UInt8]
    /// Per byte: 0 for the header or free space, otherwise 1 + the index into `capabilities`.
    private var owner: [UInt8]
    public private(set) var capabilities: [CapabilityRecord] = []
    public private(set) var bars: [BARDescriptor?]
    public private(set) var rom: UInt64? = nil
    public let layout: HeaderLayout
    /// 256 for conventional PCI, 4096 for PCI Express functions.
    public let size: Int

    /// Bytes a function reports and enforces at reset; `reset()` returns to them.
    private var resetBytes: [UInt8]?

    /// - Parameter deviceSpecificStorage: QEMU's convention for the bytes past the header that
    ///   no capability claims: plain read/write storage instead of read-only zero. Models
    ///   of QEMU devices use it so guests and tests see what QEMU shows.
    public init(layout: HeaderLayout, express: Bool, deviceSpecificStorage: Bool = false) {
        size = express ? Self.expressSize : Self.conventionalSize
        bytes = [UInt8](repeating: 0, count: Self.expressSize)
        writable = bytes
        writeOneToClear = bytes
        owner = bytes
        self.layout = layout
        bars = Array(repeating: nil, count: layout.barCount)
        bytes[Reg.headerType] = layout.rawValue
        setWritable(Reg.command, width: 2, mask: UInt64(CommandBits.standardWritable.rawValue))
        setWriteOneToClear(Reg.status, width: 2, mask: UInt64(StatusBits.errorBits.rawValue))
        setWritable(Reg.cacheLineSize, width: 1, mask: 0xFF)
        setWritable(Reg.interruptLine, width: 1, mask: 0xFF)
        if layout == .bridge { defineBridgeRegisters() }
        if deviceSpecificStorage {
            for o in 0x40..<size { writable[o] = 0xFF }
        }
    }

    // MARK: Guest access

    /// Reads `width` bytes at `offset`, little-endian. Offsets past the function's size read
    /// as all-ones, as an absent register would.
    public func read(_ offset: Int, width: AccessWidth) -> UInt32 {
        var value: UInt32 = 0
        for i in 0..<min(width.bytes, 4) {
            let o = offset + i
            let byte: UInt8 = (o >= 0 && o < size) ? bytes[o] : 0xFF
            value |= UInt32(byte) << (8 * UInt32(i))
        }
        return value
    }

    /// A guest write: each bit changes only where `writable` allows; bits in
    /// `writeOneToClear` written as one are cleared. Returns what the write changed.
    @discardableResult
    public mutating func write(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        var changes: [(offset: Int, old: UInt8)] = []
        // Effects of rules that masks cannot express (see CapabilityWriteRules.swift).
        var ruleEffects: ConfigWriteEffects = []
        for i in 0..<min(width.bytes, 4) {
            let o = offset + i
            guard o >= 0 && o < size else { continue }
            let v = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i)))
            let old = bytes[o]
            var new = (old & ~writable[o]) | (v & writable[o])
            new &= ~(v & writeOneToClear[o])
            if ownerIndex(o) != 0 {
                new = applyCapabilityRules(at: o, old: old, proposed: new, written: v, effects: &ruleEffects)
            }
            if new != old {
                bytes[o] = new
                changes.append((o, old))
            }
        }
        return changes.isEmpty ? ruleEffects : effects(ofChanges: changes).union(ruleEffects)
    }

    // MARK: Device-side set-up (not subject to masks)

    /// Sets a register's value as the device presents it, bypassing the write masks.
    public mutating func set(_ offset: Int, width: Int, value: UInt64) {
        precondition(offset >= 0 && offset + width <= Self.expressSize && width <= 8)
        LittleEndian.store(value, into: &bytes, at: offset, count: width)
    }

    public func get(_ offset: Int, width: Int) -> UInt64 {
        precondition(offset >= 0 && offset + width <= Self.expressSize && width <= 8)
        return LittleEndian.load(bytes, at: offset, count: width)
    }

    public mutating func setWritable(_ offset: Int, width: Int, mask: UInt64) {
        LittleEndian.store(mask, into: &writable, at: offset, count: width)
    }

    public mutating func setWriteOneToClear(_ offset: Int, width: Int, mask: UInt64) {
        LittleEndian.store(mask, into: &writeOneToClear, at: offset, count: width)
    }

    /// Sets bits the device owns (read-only to the guest), such as Status.interrupt.
    public mutating func setBits(_ offset: Int, width: Int, _ mask: UInt64, to on: Bool) {
        let v = get(offset, width: width)
        set(offset, width: width, value: on ? v | mask : v & ~mask)
    }

    /// Records the current bytes as the reset state (call once set-up is complete).
    public mutating func captureResetState() { resetBytes = bytes }

    /// Returns every register to its reset value.
    public mutating func reset() {
        if let resetBytes { bytes = resetBytes }
    }

    // MARK: Identity helpers

    public mutating func setIdentity(_ identity: PCIIdentity) {
        set(Reg.vendorID, width: 2, value: UInt64(identity.vendorID))
        set(Reg.deviceID, width: 2, value: UInt64(identity.deviceID))
        set(Reg.revisionID, width: 1, value: UInt64(identity.revision))
        set(Reg.classCode, width: 3, value: UInt64(identity.classCode))
        if layout == .endpoint {
            set(Reg.subsystemVendorID, width: 2, value: UInt64(identity.subsystemVendorID))
            set(Reg.subsystemID, width: 2, value: UInt64(identity.subsystemID))
        }
    }

    public var vendorID: UInt16 { UInt16(get(Reg.vendorID, width: 2)) }
    public var deviceID: UInt16 { UInt16(get(Reg.deviceID, width: 2)) }
    public var command: CommandBits { CommandBits(rawValue: UInt16(get(Reg.command, width: 2))) }
    public var status: StatusBits { StatusBits(rawValue: UInt16(get(Reg.status, width: 2))) }
    public var isMultiFunction: Bool { bytes[Reg.headerType] & 0x80 != 0 }

    public mutating func setMultiFunction(_ on: Bool) { setBits(Reg.headerType, width: 1, 0x80, to: on) }

    /// INTx pin, 1 = INTA ... 4 = INTD, 0 = none.
    public mutating func setInterruptPin(_ pin: UInt8) { set(Reg.interruptPin, width: 1, value: UInt64(pin)) }
    public var interruptPin: UInt8 { bytes[Reg.interruptPin] }

    /// Sets Status.interrupt, the device's view of its INTx line.
    public mutating func setInterruptStatus(_ asserted: Bool) {
        setBits(Reg.status, width: 2, UInt64(StatusBits.interrupt.rawValue), to: asserted)
    }

    // MARK: Internals shared with extensions

    func ownerIndex(_ offset: Int) -> Int { Int(owner[offset]) }

    /// Gives bytes to a capability. They start read-only (the builder then opens the bits
    /// its registers define), whatever the function's default for free bytes is.
    mutating func claim(_ offset: Int, length: Int, for recordIndex: Int) {
        for o in offset..<(offset + length) {
            owner[o] = UInt8(recordIndex + 1)
            writable[o] = 0
            writeOneToClear[o] = 0
        }
    }

    mutating func appendCapability(_ record: CapabilityRecord) -> Int {
        capabilities.append(record)
        return capabilities.count - 1
    }

    mutating func setBAR(_ index: Int, _ descriptor: BARDescriptor?) { bars[index] = descriptor }
    mutating func setROMSize(_ size: UInt64?) { rom = size }

    private mutating func defineBridgeRegisters() {
        for reg in [Reg.primaryBus, Reg.secondaryBus, Reg.subordinateBus, Reg.secondaryLatency] {
            setWritable(reg, width: 1, mask: 0xFF)
        }
        setWritable(Reg.ioBase, width: 1, mask: 0xF0)
        setWritable(Reg.ioLimit, width: 1, mask: 0xF0)
        // 32-bit I/O addressing and 64-bit prefetchable addressing are advertised in the
        // read-only low bits.
        set(Reg.ioBase, width: 1, value: 0x01)
        set(Reg.ioLimit, width: 1, value: 0x01)
        setWritable(Reg.memoryBase, width: 2, mask: 0xFFF0)
        setWritable(Reg.memoryLimit, width: 2, mask: 0xFFF0)
        setWritable(Reg.prefetchBase, width: 2, mask: 0xFFF0)
        setWritable(Reg.prefetchLimit, width: 2, mask: 0xFFF0)
        set(Reg.prefetchBase, width: 2, value: 0x0001)
        set(Reg.prefetchLimit, width: 2, value: 0x0001)
        setWritable(Reg.prefetchBaseUpper, width: 4, mask: 0xFFFF_FFFF)
        setWritable(Reg.prefetchLimitUpper, width: 4, mask: 0xFFFF_FFFF)
        setWritable(Reg.ioBaseUpper, width: 2, mask: 0xFFFF)
        setWritable(Reg.ioLimitUpper, width: 2, mask: 0xFFFF)
        setWriteOneToClear(Reg.secondaryStatus, width: 2, mask: UInt64(StatusBits.errorBits.rawValue))
        let control: BridgeControlBits = [.parityErrorResponse, .serr, .isa, .vga, .vga16, .masterAbortMode,
                                          .secondaryBusReset]
        setWritable(Reg.bridgeControl, width: 2, mask: UInt64(control.rawValue))
    }
}

extension CommandBits {
    /// The Command bits every function lets software change: 0x0507, as QEMU's devices do
    /// (parity error response stays read-only zero: no emulated bus has parity errors).
    public static let standardWritable: CommandBits = [.io, .memory, .busMaster, .serr, .intxDisable]
}

/// Vendor, device, class and subsystem: what lspci names a function by.
public struct PCIIdentity: Sendable, Hashable {
    public var vendorID: UInt16
    public var deviceID: UInt16
    public var revision: UInt8
    /// 24 bits: base class << 16 | subclass << 8 | programming interface.
    public var classCode: UInt32
    public var subsystemVendorID: UInt16
    public var subsystemID: UInt16

    public init(vendorID: UInt16, deviceID: UInt16, revision: UInt8 = 0, classCode: UInt32,
                subsystemVendorID: UInt16 = 0, subsystemID: UInt16 = 0) {
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.revision = revision
        self.classCode = classCode
        self.subsystemVendorID = subsystemVendorID
        self.subsystemID = subsystemID
    }
}
