/// Register offsets inside the MSI-X capability (PCI Local Bus 3.0, 6.8.2).
public enum MSIXRegister {
    /// Message Control (16 bits): table size - 1 (10:0), function mask (14), enable (15).
    public static let control = 0x02
    /// Table offset (31:3) and BIR (2:0).
    public static let table = 0x04
    /// PBA offset (31:3) and BIR (2:0).
    public static let pba = 0x08
    public static let length = 12

    static let functionMask: UInt16 = 1 << 14
    static let enable: UInt16 = 1 << 15
    static let tableSizeMask: UInt16 = 0x07FF
}

/// Where an MSI-X function keeps its vector table and Pending Bit Array.
public struct MSIXLayout: Sendable, Hashable, Codable {
    public let vectors: Int
    public let tableBAR: Int
    public let tableOffset: UInt64
    public let pbaBAR: Int
    public let pbaOffset: UInt64

    public init(vectors: Int, tableBAR: Int, tableOffset: UInt64, pbaBAR: Int, pbaOffset: UInt64) {
        self.vectors = vectors
        self.tableBAR = tableBAR
        self.tableOffset = tableOffset
        self.pbaBAR = pbaBAR
        self.pbaOffset = pbaOffset
    }

    /// 16 bytes per entry.
    public var tableSize: UInt64 { UInt64(vectors) * MSIXTable.entrySize }
    /// One bit per vector, in whole qwords.
    public var pbaSize: UInt64 { UInt64((vectors + 63) / 64) * 8 }
}

/// MSI-X Message Control as the function uses it.
public struct MSIXControl: Sendable, Hashable {
    public var enabled: Bool
    public var functionMasked: Bool

    public init(enabled: Bool, functionMasked: Bool) {
        self.enabled = enabled
        self.functionMasked = functionMasked
    }
}

extension ConfigSpace {
    /// Adds an MSI-X capability whose table and PBA live in memory BARs that are already
    /// defined. Software may write only the enable and function-mask bits.
    @discardableResult
    public mutating func addMSIX(_ layout: MSIXLayout, at offset: Int? = nil) throws(ConfigSpaceError) -> Int {
        func fail(_ reason: String) -> ConfigSpaceError { .invalidCapability(name: "MSI-X", reason: reason) }
        guard (1...2048).contains(layout.vectors) else { throw fail("\(layout.vectors) vectors: must be 1 to 2048") }
        if capability(.msix) != nil { throw fail("a function has one MSI-X capability") }
        for (name, bar, start, size) in [("table", layout.tableBAR, layout.tableOffset, layout.tableSize),
                                         ("PBA", layout.pbaBAR, layout.pbaOffset, layout.pbaSize)] {
            guard bar >= 0, bar < self.layout.barCount, let descriptor = bars[bar], !descriptor.isIO else {
                throw fail("\(name) BIR \(bar) is not a defined memory BAR")
            }
            guard start % 8 == 0, start <= UInt64(UInt32.max) else { throw fail("\(name) offset must be qword aligned and 32-bit") }
            guard start + size <= descriptor.size else {
                throw fail("\(name) (\(size) bytes at 0x\(String(start, radix: 16))) does not fit BAR \(bar)")
            }
        }
        if layout.tableBAR == layout.pbaBAR,
           layout.tableOffset < layout.pbaOffset + layout.pbaSize, layout.pbaOffset < layout.tableOffset + layout.tableSize {
            throw fail("table and PBA overlap")
        }
        let base = try addCapability(id: CapabilityID.msix, length: MSIXRegister.length, at: offset)
        set(base + MSIXRegister.control, width: 2, value: UInt64(layout.vectors - 1))
        setWritable(base + MSIXRegister.control, width: 2, mask: UInt64(MSIXRegister.enable | MSIXRegister.functionMask))
        set(base + MSIXRegister.table, width: 4, value: layout.tableOffset | UInt64(layout.tableBAR))
        set(base + MSIXRegister.pba, width: 4, value: layout.pbaOffset | UInt64(layout.pbaBAR))
        return base
    }

    /// The table/PBA placement read back from the capability.
    public var msixLayout: MSIXLayout? {
        guard let record = capability(.msix) else { return nil }
        let control = UInt16(get(record.offset + MSIXRegister.control, width: 2))
        let table = get(record.offset + MSIXRegister.table, width: 4)
        let pba = get(record.offset + MSIXRegister.pba, width: 4)
        return MSIXLayout(vectors: Int(control & MSIXRegister.tableSizeMask) + 1,
                          tableBAR: Int(table & 7), tableOffset: table & ~7,
                          pbaBAR: Int(pba & 7), pbaOffset: pba & ~7)
    }

    public var msixControl: MSIXControl? {
        guard let record = capability(.msix) else { return nil }
        let control = UInt16(get(record.offset + MSIXRegister.control, width: 2))
        return MSIXControl(enabled: control & MSIXRegister.enable != 0,
                           functionMasked: control & MSIXRegister.functionMask != 0)
    }
}
