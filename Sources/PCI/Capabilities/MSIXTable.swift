import VMMBase

/// One MSI-X table entry (16 bytes: address low, address high, data, vector control).
public struct MSIXEntry: Sendable, Hashable, Codable {
    public var addressLow: UInt32
    public var addressHigh: UInt32
    public var data: UInt32
    /// Vector Control bit 0. Entries come out of reset masked.
    public var masked: Bool

    public init(addressLow: UInt32 = 0, addressHigh: UInt32 = 0, data: UInt32 = 0, masked: Bool = true) {
        self.addressLow = addressLow
        self.addressHigh = addressHigh
        self.data = data
        self.masked = masked
    }

    public var message: MSIMessage {
        MSIMessage(address: UInt64(addressHigh) << 32 | UInt64(addressLow), data: data)
    }
}

/// What a guest write to the table or PBA did, for the caller to act on after its lock is
/// released.
public enum MSIXTableWrite: Sendable, Hashable {
    /// Not honoured: misaligned, wrong width, or aimed at the read-only PBA.
    case ignored
    /// An entry's address or data was written; routes built from it may be stale.
    case entryUpdated(vector: Int)
    case vectorMasked(vector: Int)
    /// The entry's mask bit was cleared. When the vector was pending and is now deliverable,
    /// `deliver` is its message (the pending bit is already cleared): the caller sends it.
    case vectorUnmasked(vector: Int, deliver: MSIMessage?)
}

/// The outcome of the device raising a vector.
public enum MSIXFireResult: Sendable, Hashable {
    case deliver(MSIMessage)
    /// Masked (by the entry or the function mask): the pending bit is set instead.
    case pending
    /// MSI-X is not enabled; nothing is sent or remembered.
    case disabled
    case noSuchVector
}

/// A pending vector released by an unmask.
public struct MSIXDelivery: Sendable, Hashable {
    public let vector: Int
    public let message: MSIMessage

    public init(vector: Int, message: MSIMessage) {
        self.vector = vector
        self.message = message
    }
}

/// The MSI-X vector table and Pending Bit Array that a function exposes through its BARs.
/// Guest accesses are hostile: only dword or qword accesses aligned to their size and lying
/// wholly inside the table are honoured; everything else touching the table reads 0 and is
/// dropped. The PBA is read-only to the guest.
public struct MSIXTable: Sendable, Hashable, Codable {
    public static let entrySize: UInt64 = 16

    public let layout: MSIXLayout
    public private(set) var entries: [MSIXEntry]
    private var pendingBits: [UInt64]

    public init(layout: MSIXLayout) {
        self.layout = layout
        entries = Array(repeating: MSIXEntry(), count: layout.vectors)
        pendingBits = Array(repeating: 0, count: Int(layout.pbaSize / 8))
    }

    /// Every entry masked, nothing pending.
    public mutating func reset() { self = MSIXTable(layout: layout) }

    /// Forgets every pending vector, entries unchanged (a device-level reset that leaves the
    /// function's table alone, as virtio's status 0).
    public mutating func clearPending() {
        for i in pendingBits.indices { pendingBits[i] = 0 }
    }

    private enum Region { case table, pba }

    /// The region an access touches and the access's offset inside it. An access that only
    /// partly overlaps a region still belongs to it (and is then refused as unaligned).
    private func locate(bar: Int, offset: UInt64, width: AccessWidth) -> (Region, UInt64)? {
        guard offset <= UInt64.max - 8 else { return nil }
        let end = offset + UInt64(width.bytes)
        if bar == layout.tableBAR, offset < layout.tableOffset + layout.tableSize, end > layout.tableOffset {
            return (.table, offset &- layout.tableOffset)
        }
        if bar == layout.pbaBAR, offset < layout.pbaOffset + layout.pbaSize, end > layout.pbaOffset {
            return (.pba, offset &- layout.pbaOffset)
        }
        return nil
    }

    /// True when the access falls on the table or the PBA (the caller should not handle it).
    public func claims(bar: Int, offset: UInt64, width: AccessWidth) -> Bool {
        locate(bar: bar, offset: offset, width: width) != nil
    }

    /// Honoured accesses: dword or qword, aligned to their size, wholly inside the region.
    private func isHonoured(_ relative: UInt64, _ width: AccessWidth, regionSize: UInt64) -> Bool {
        (width == .dword || width == .qword) && relative % UInt64(width.bytes) == 0
            && relative < regionSize && regionSize - relative >= UInt64(width.bytes)
    }

    /// A guest read. Nil when the access touches neither the table nor the PBA.
    public func read(bar: Int, offset: UInt64, width: AccessWidth) -> UInt64? {
        guard let (region, relative) = locate(bar: bar, offset: offset, width: width) else { return nil }
        switch region {
        case .table:
            guard isHonoured(relative, width, regionSize: layout.tableSize) else { return 0 }
            let low = tableDword(at: relative)
            return width == .qword ? UInt64(low) | UInt64(tableDword(at: relative + 4)) << 32 : UInt64(low)
        case .pba:
            guard isHonoured(relative, width, regionSize: layout.pbaSize) else { return 0 }
            let qword = pendingBits[Int(relative / 8)]
            return width == .qword ? qword : (qword >> ((relative % 8) * 8)) & 0xFFFF_FFFF
        }
    }

    private func tableDword(at relative: UInt64) -> UInt32 {
        let entry = entries[Int(relative / Self.entrySize)]
        switch relative % Self.entrySize {
        case 0: return entry.addressLow
        case 4: return entry.addressHigh
        case 8: return entry.data
        default: return entry.masked ? 1 : 0
        }
    }

    /// A guest write. Nil when the access touches neither the table nor the PBA.
    @discardableResult
    public mutating func write(bar: Int, offset: UInt64, width: AccessWidth, value: UInt64,
                               control: MSIXControl) -> MSIXTableWrite? {
        guard let (region, relative) = locate(bar: bar, offset: offset, width: width) else { return nil }
        guard region == .table, isHonoured(relative, width, regionSize: layout.tableSize) else {
            GuestErrorLog.report(device: "msix", kind: "bad-access",
                                 "ignored \(width.bytes)-byte write at BAR\(bar)+0x\(String(offset, radix: 16)) (\(region == .table ? "misaligned table access" : "PBA is read-only"))")
            return .ignored
        }
        let vector = Int(relative / Self.entrySize)
        let wasMasked = entries[vector].masked
        setTableDword(at: relative, UInt32(truncatingIfNeeded: value))
        if width == .qword { setTableDword(at: relative + 4, UInt32(truncatingIfNeeded: value >> 32)) }
        switch (wasMasked, entries[vector].masked) {
        case (false, true): return .vectorMasked(vector: vector)
        case (true, false): return .vectorUnmasked(vector: vector, deliver: releaseIfDeliverable(vector, control: control))
        default: return .entryUpdated(vector: vector)
        }
    }

    private mutating func setTableDword(at relative: UInt64, _ value: UInt32) {
        let index = Int(relative / Self.entrySize)
        switch relative % Self.entrySize {
        case 0: entries[index].addressLow = value & ~0x3  // messages are dword aligned
        case 4: entries[index].addressHigh = value
        case 8: entries[index].data = value
        default: entries[index].masked = value & 1 != 0  // the other control bits are reserved
        }
    }

    public func isPending(_ vector: Int) -> Bool {
        guard vector >= 0, vector < entries.count else { return false }
        return pendingBits[vector / 64] & (1 << UInt64(vector % 64)) != 0
    }

    public func isMasked(_ vector: Int, control: MSIXControl) -> Bool {
        guard vector >= 0, vector < entries.count else { return true }
        return control.functionMasked || entries[vector].masked
    }

    private mutating func setPending(_ vector: Int, _ on: Bool) {
        let bit = UInt64(1) << UInt64(vector % 64)
        if on { pendingBits[vector / 64] |= bit } else { pendingBits[vector / 64] &= ~bit }
    }

    /// Device side: raises `vector`. A masked vector is remembered in the PBA instead.
    public mutating func fire(_ vector: Int, control: MSIXControl) -> MSIXFireResult {
        guard vector >= 0, vector < entries.count else { return .noSuchVector }
        guard control.enabled else { return .disabled }
        if isMasked(vector, control: control) {
            setPending(vector, true)
            return .pending
        }
        return .deliver(entries[vector].message)
    }

    /// After Message Control changed (`.msixChanged`): every pending vector that is now
    /// deliverable, in vector order, with its pending bit cleared.
    public mutating func deliverPending(control: MSIXControl) -> [MSIXDelivery] {
        var deliveries: [MSIXDelivery] = []
        for vector in entries.indices {
            if let message = releaseIfDeliverable(vector, control: control) {
                deliveries.append(MSIXDelivery(vector: vector, message: message))
            }
        }
        return deliveries
    }

    private mutating func releaseIfDeliverable(_ vector: Int, control: MSIXControl) -> MSIMessage? {
        guard control.enabled, isPending(vector), !isMasked(vector, control: control) else { return nil }
        setPending(vector, false)
        return entries[vector].message
    }
}
