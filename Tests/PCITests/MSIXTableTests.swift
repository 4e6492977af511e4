import Testing
import PCI
import VMMBase

@Suite struct MSIXCapabilityTests {
    private func endpointWithBAR() throws -> ConfigSpace {
        var config = ConfigSpace(layout: .endpoint, express: true)
        try config.defineBAR(0, BARDescriptor(.memory64(prefetchable: false), size: 0x4000))
        try config.defineBAR(2, BARDescriptor(.io, size: 0x100))
        return config
    }

    @Test func registersAndWritableBits() throws {
        var config = try endpointWithBAR()
        let msix = try config.addMSIX(MSIXLayout(vectors: 3, tableBAR: 0, tableOffset: 0x1000, pbaBAR: 0, pbaOffset: 0x2000))
        #expect(config.read(msix + MSIXRegister.control, width: .word) == 2)
        #expect(config.read(msix + MSIXRegister.table, width: .dword) == 0x1000)
        #expect(config.read(msix + MSIXRegister.pba, width: .dword) == 0x2000)
        let effects = config.write(msix + MSIXRegister.control, width: .word, value: 0xFFFF)
        #expect(effects.contains(.msixChanged))
        #expect(config.read(msix + MSIXRegister.control, width: .word) == 0xC002)
        #expect(config.msixControl == MSIXControl(enabled: true, functionMasked: true))
        // Table and PBA registers are read-only; writing them reports no MSI-X change.
        #expect(config.write(msix + MSIXRegister.table, width: .dword, value: 0xFFFF_FFFF) == [])
        #expect(config.msixLayout == MSIXLayout(vectors: 3, tableBAR: 0, tableOffset: 0x1000, pbaBAR: 0, pbaOffset: 0x2000))
    }

    @Test func insaneLayoutsAreRejected() throws {
        let bad: [MSIXLayout] = [
            MSIXLayout(vectors: 0, tableBAR: 0, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800),
            MSIXLayout(vectors: 2049, tableBAR: 0, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x3F00),
            MSIXLayout(vectors: 4, tableBAR: 1, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800),   // upper half of BAR 0
            MSIXLayout(vectors: 4, tableBAR: 2, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800),   // I/O BAR
            MSIXLayout(vectors: 4, tableBAR: 4, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800),   // undefined
            MSIXLayout(vectors: 4, tableBAR: 0, tableOffset: 0x4, pbaBAR: 0, pbaOffset: 0x800), // misaligned
            MSIXLayout(vectors: 4, tableBAR: 0, tableOffset: 0x3FF0, pbaBAR: 0, pbaOffset: 0x800), // past the BAR
            MSIXLayout(vectors: 4, tableBAR: 0, tableOffset: 0x0, pbaBAR: 0, pbaOffset: 0x38),   // overlap
        ]
        for layout in bad {
            var config = try endpointWithBAR()
            #expect(throws: ConfigSpaceError.self, "\(layout)") { try config.addMSIX(layout) }
        }
    }
}

@Suite struct MSIXTableTests {
    let layout = MSIXLayout(vectors: 3, tableBAR: 0, tableOffset: 0x1000, pbaBAR: 0, pbaOffset: 0x2000)
    let on = MSIXControl(enabled: true, functionMasked: false)

    @Test func entriesStartMaskedAndDwordAccessesWork() {
        var table = MSIXTable(layout: layout)
        #expect(table.read(bar: 0, offset: 0x100C, width: .dword) == 1)
        #expect(table.write(bar: 0, offset: 0x1010, width: .dword, value: 0xFEE0_0003, control: on) == .entryUpdated(vector: 1))
        #expect(table.read(bar: 0, offset: 0x1010, width: .dword) == 0xFEE0_0000)  // dword aligned address
        #expect(table.write(bar: 0, offset: 0x1018, width: .dword, value: 0x41, control: on) == .entryUpdated(vector: 1))
        #expect(table.write(bar: 0, offset: 0x101C, width: .dword, value: 0xFFFF_FFFE, control: on)
                == .vectorUnmasked(vector: 1, deliver: nil))
        #expect(table.read(bar: 0, offset: 0x101C, width: .dword) == 0)  // reserved control bits read 0
        #expect(table.entries[1] == MSIXEntry(addressLow: 0xFEE0_0000, addressHigh: 0, data: 0x41, masked: false))
    }

    @Test func qwordAccessesCoverTwoDwordsOfOneEntry() {
        var table = MSIXTable(layout: layout)
        #expect(table.write(bar: 0, offset: 0x1020, width: .qword, value: 0x0000_0002_FEE0_1000, control: on)
                == .entryUpdated(vector: 2))
        #expect(table.write(bar: 0, offset: 0x1028, width: .qword, value: 0x0000_0000_0000_0033, control: on)
                == .vectorUnmasked(vector: 2, deliver: nil))
        #expect(table.read(bar: 0, offset: 0x1020, width: .qword) == 0x0000_0002_FEE0_1000)
        #expect(table.read(bar: 0, offset: 0x1028, width: .qword) == 0x33)
        #expect(table.entries[2].message == MSIMessage(address: 0x2_FEE0_1000, data: 0x33))
    }

    @Test func hostileAccessesReadZeroAndAreIgnored() {
        var table = MSIXTable(layout: layout)
        table.write(bar: 0, offset: 0x1000, width: .dword, value: 0xFEE0_0000, control: on)
        let before = table
        // Misaligned or narrow accesses inside the table.
        for (offset, width) in [(UInt64(0x1002), AccessWidth.dword), (0x1000, .byte), (0x1000, .word), (0x1004, .qword),
                                (0x102E, .dword) /* straddles the table's end */, (0x0FFE, .dword) /* its start */] {
            #expect(table.read(bar: 0, offset: offset, width: width) == 0, "read 0x\(String(offset, radix: 16))")
            #expect(table.write(bar: 0, offset: offset, width: width, value: .max, control: on) == .ignored)
        }
        #expect(table == before)
        // Outside the table and PBA, or in another BAR: not the table's business.
        #expect(table.read(bar: 0, offset: 0x1030, width: .dword) == nil)
        #expect(table.read(bar: 1, offset: 0x1000, width: .dword) == nil)
        #expect(table.write(bar: 0, offset: 0x0FF8, width: .qword, value: 0, control: on) == nil)
        #expect(table.read(bar: 0, offset: UInt64.max - 2, width: .dword) == nil)
        #expect(!table.claims(bar: 0, offset: 0x3000, width: .dword))
        #expect(table.claims(bar: 0, offset: 0x2004, width: .dword))
    }

    @Test func pbaIsReadOnlyAndReflectsPendingVectors() {
        var table = MSIXTable(layout: layout)
        #expect(table.fire(2, control: on) == .pending)  // entries come out of reset masked
        #expect(table.read(bar: 0, offset: 0x2000, width: .qword) == 0b100)
        #expect(table.read(bar: 0, offset: 0x2000, width: .dword) == 0b100)
        #expect(table.read(bar: 0, offset: 0x2004, width: .dword) == 0)
        #expect(table.read(bar: 0, offset: 0x2001, width: .byte) == 0)
        #expect(table.write(bar: 0, offset: 0x2000, width: .qword, value: 0, control: on) == .ignored)
        #expect(table.isPending(2))
    }

    @Test func firingFollowsEnableAndMasks() {
        var table = MSIXTable(layout: layout)
        table.write(bar: 0, offset: 0x1000, width: .qword, value: 0xFEE0_0000, control: on)
        table.write(bar: 0, offset: 0x1008, width: .qword, value: 0x0000_0000_0000_0040, control: on)  // unmask 0
        #expect(table.fire(0, control: MSIXControl(enabled: false, functionMasked: false)) == .disabled)
        #expect(!table.isPending(0))
        #expect(table.fire(3, control: on) == .noSuchVector)
        #expect(table.fire(-1, control: on) == .noSuchVector)
        #expect(table.fire(0, control: on) == .deliver(MSIMessage(address: 0xFEE0_0000, data: 0x40)))

        // The function mask holds every vector back; clearing it releases them once.
        let masked = MSIXControl(enabled: true, functionMasked: true)
        #expect(table.fire(0, control: masked) == .pending)
        #expect(table.deliverPending(control: masked).isEmpty)
        #expect(table.deliverPending(control: on) == [MSIXDelivery(vector: 0, message: MSIMessage(address: 0xFEE0_0000, data: 0x40))])
        #expect(!table.isPending(0))
        #expect(table.deliverPending(control: on).isEmpty)
    }

    @Test func unmaskingAPendingVectorDeliversAndClearsIt() {
        var table = MSIXTable(layout: layout)
        table.write(bar: 0, offset: 0x1010, width: .dword, value: 0xFEE0_2000, control: on)
        table.write(bar: 0, offset: 0x1018, width: .dword, value: 0x51, control: on)
        #expect(table.fire(1, control: on) == .pending)
        #expect(table.write(bar: 0, offset: 0x101C, width: .dword, value: 0, control: on)
                == .vectorUnmasked(vector: 1, deliver: MSIMessage(address: 0xFEE0_2000, data: 0x51)))
        #expect(!table.isPending(1))
        #expect(table.write(bar: 0, offset: 0x101C, width: .dword, value: 1, control: on) == .vectorMasked(vector: 1))
        // Unmasking under the function mask delivers nothing and keeps the bit pending.
        #expect(table.fire(1, control: on) == .pending)
        #expect(table.write(bar: 0, offset: 0x101C, width: .dword, value: 0,
                            control: MSIXControl(enabled: true, functionMasked: true)) == .vectorUnmasked(vector: 1, deliver: nil))
        #expect(table.isPending(1))
        table.reset()
        #expect(!table.isPending(1) && table.entries[1].masked)
    }

    @Test func pendingBitArraySpansSeveralQwords() {
        var table = MSIXTable(layout: MSIXLayout(vectors: 65, tableBAR: 0, tableOffset: 0, pbaBAR: 1, pbaOffset: 0x100))
        #expect(table.layout.pbaSize == 16)
        #expect(table.fire(64, control: on) == .pending)
        #expect(table.read(bar: 1, offset: 0x108, width: .qword) == 1)
        #expect(table.read(bar: 1, offset: 0x100, width: .qword) == 0)
        #expect(table.read(bar: 1, offset: 0x110, width: .qword) == nil)
    }
}

@Suite struct MSIXGuestErrorTests {
    @Test func misalignedTableWritesAreReportedAndIgnored() {
        var table = MSIXTable(layout: MSIXLayout(vectors: 2, tableBAR: 0, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800))
        let before = GuestErrorLog.recent.count
        let reports = GuestErrorLog.reportCount(device: "msix", kind: "bad-access")
        let result = table.write(bar: 0, offset: 2, width: .dword, value: 0xFFFF_FFFF,
                                 control: MSIXControl(enabled: true, functionMasked: false))
        #expect(result == .ignored)
        #expect(GuestErrorLog.reportCount(device: "msix", kind: "bad-access") == reports + 1)
        // Other tests in this process (the fuzz corpus replays) may have used up the kind's lines.
        if reports < GuestErrorLog.limitPerKind {
            #expect(GuestErrorLog.recent.count > before || before >= 256)
            #expect(GuestErrorLog.recent.last?.device == "msix")
        }
    }
}
