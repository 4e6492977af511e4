import Testing
import PCI
import VMMBase

/// The arbitration rules of PCI Local Bus 3.0 section 6.8 (MSI, MSI-X), 6.2.2-6.2.3 (Command
/// Interrupt Disable, Status Interrupt Status) and PCI Express Base 6.1 section 6.7.3.4
/// (hot-plug interrupts on the rising edge of the pending condition), checked one by one.
@Suite struct InterruptArbiterTests {
    static let msix = MSIXLayout(vectors: 4, tableBAR: 1, tableOffset: 0x800, pbaBAR: 1, pbaOffset: 0xC00)
    static let statusInterrupt: UInt32 = 1 << 3     // Status bit 3 (6.2.3)
    static let interruptDisable: UInt32 = 1 << 10   // Command bit 10 (6.2.2)

    struct Function {
        var config = ConfigSpace(layout: .endpoint, express: false)
        var arbiter = InterruptArbiter(msix: InterruptArbiterTests.msix)
        let msiOffset: Int
        let msixOffset: Int

        init(msiVectors: Int = 4, pin: UInt8 = 1) throws {
            try config.defineBAR(1, BARDescriptor(.memory32(prefetchable: false), size: 4096))
            msixOffset = try config.addMSIX(InterruptArbiterTests.msix)
            msiOffset = try config.addMSI(MSIOptions(vectors: msiVectors, is64Bit: true, perVectorMasking: true))
            config.setInterruptPin(pin)
            config.captureResetState()
        }

        /// A guest config write, then what the arbiter makes of it.
        mutating func write(_ offset: Int, _ width: AccessWidth, _ value: UInt32) -> InterruptDelivery {
            let effects = config.write(offset, width: width, value: value)
            return arbiter.configWritten(effects, in: &config)
        }

        /// Programs MSI-X entry `vector` with a message, leaving its mask bit as `masked`.
        mutating func program(msix vector: Int, data: UInt32, masked: Bool) {
            let entry = InterruptArbiterTests.msix.tableOffset + UInt64(vector) * 16
            _ = arbiter.msixWrite(bar: 1, offset: entry, width: .dword, value: 0xFEE0_0000, in: config)
            _ = arbiter.msixWrite(bar: 1, offset: entry + 8, width: .dword, value: UInt64(data), in: config)
            _ = arbiter.msixWrite(bar: 1, offset: entry + 12, width: .dword, value: masked ? 1 : 0, in: config)
        }

        mutating func setVectorMask(msix vector: Int, _ masked: Bool) -> (table: MSIXTableWrite, delivery: InterruptDelivery)? {
            let control = InterruptArbiterTests.msix.tableOffset + UInt64(vector) * 16 + 12
            return arbiter.msixWrite(bar: 1, offset: control, width: .dword, value: masked ? 1 : 0, in: config)
        }

        var pba: UInt64? { arbiter.msixRead(bar: 1, offset: InterruptArbiterTests.msix.pbaOffset, width: .qword) }
        var statusInterrupt: Bool { config.read(Reg.status, width: .word) & InterruptArbiterTests.statusInterrupt != 0 }

        /// MSI with a 64-bit address, data 0x4040, MME = log2(`vectors`).
        mutating func enableMSI(vectors: Int) -> InterruptDelivery {
            config.write(msiOffset + 4, width: .dword, value: 0xFEE0_0000)
            config.write(msiOffset + 8, width: .dword, value: 0)
            config.write(msiOffset + 0x0C, width: .word, value: 0x4040)
            return write(msiOffset + MSIRegister.control, .word, 1 | UInt32(vectors.trailingZeroBitCount) << 4)
        }
    }

    static func message(_ data: UInt32) -> MSIMessage { MSIMessage(address: 0xFEE0_0000, data: data) }

    // MARK: MSI-X (6.8.2)

    @Test func msixSendsTheEntrysMessageAndNeverThePin() throws {
        var f = try Function()
        f.program(msix: 2, data: 0x31, masked: false)
        #expect(f.write(f.msixOffset + MSIXRegister.control, .word, 0x8000).isEmpty)
        #expect(f.arbiter.request(vector: 2, in: &f.config) == InterruptDelivery(messages: [Self.message(0x31)]))
        // A function with MSI-X enabled does not use INTx (6.8): no pin, no Interrupt Status.
        #expect(!f.statusInterrupt && !f.arbiter.intxDriven)
        // A vector beyond the table is dropped.
        #expect(f.arbiter.request(vector: 4, in: &f.config).isEmpty)
    }

    @Test func maskedMSIXVectorSetsItsPendingBitAndUnmaskingSendsIt() throws {
        var f = try Function()
        f.program(msix: 1, data: 0x41, masked: true)
        _ = f.write(f.msixOffset + MSIXRegister.control, .word, 0x8000)
        // 6.8.2.9: a masked vector's message is not sent; its Pending Bit is set.
        #expect(f.arbiter.request(vector: 1, in: &f.config).isEmpty)
        #expect(f.pba == 0b10)
        // Clearing the entry's mask bit with the bit pending sends the message and clears it.
        let unmasked = f.setVectorMask(msix: 1, false)
        let unmask = try #require(unmasked)
        #expect(unmask.delivery == InterruptDelivery(messages: [Self.message(0x41)]))
        #expect(unmask.table == .vectorUnmasked(vector: 1, deliver: Self.message(0x41)))
        #expect(f.pba == 0)
        // Masking again and unmasking with nothing pending sends nothing.
        _ = f.setVectorMask(msix: 1, true)
        #expect(f.setVectorMask(msix: 1, false)?.delivery.isEmpty == true)
    }

    @Test func functionMaskHoldsEveryVectorUntilItIsCleared() throws {
        var f = try Function()
        f.program(msix: 0, data: 0x50, masked: false)
        f.program(msix: 3, data: 0x53, masked: false)
        _ = f.write(f.msixOffset + MSIXRegister.control, .word, 0xC000)   // Enable + Function Mask
        #expect(f.arbiter.request(vector: 3, in: &f.config).isEmpty)
        #expect(f.arbiter.request(vector: 0, in: &f.config).isEmpty)
        #expect(f.pba == 0b1001)
        // Clearing Function Mask sends the pending vectors (in vector order) and clears their bits.
        #expect(f.write(f.msixOffset + MSIXRegister.control, .word, 0x8000)
                == InterruptDelivery(messages: [Self.message(0x50), Self.message(0x53)]))
        #expect(f.pba == 0)
    }

    @Test func msixEntryRewritesAreReportedForRouteUpdates() throws {
        var f = try Function()
        let entry = Self.msix.tableOffset + 16
        let written = f.arbiter.msixWrite(bar: 1, offset: entry + 8, width: .dword, value: 0x77, in: f.config)
        let result = try #require(written)
        #expect(result.table == .entryUpdated(vector: 1) && result.delivery.isEmpty)
        // The PBA is read-only (6.8.2.10) and accesses outside table and PBA are not claimed.
        #expect(f.arbiter.msixWrite(bar: 1, offset: Self.msix.pbaOffset, width: .qword, value: ~0, in: f.config)?.table == .ignored)
        #expect(f.arbiter.msixWrite(bar: 1, offset: 0x100, width: .dword, value: 1, in: f.config) == nil)
    }

    // MARK: MSI (6.8.1)

    @Test func msiPutsTheVectorInTheLowDataBitsItWasAllocated() throws {
        var f = try Function(msiVectors: 8)
        #expect(f.enableMSI(vectors: 4).isEmpty)
        // 6.8.1.6: the function modifies the low log2(allocated) bits of Message Data.
        #expect(f.arbiter.request(vector: 2, in: &f.config) == InterruptDelivery(messages: [Self.message(0x4042)]))
        #expect(f.arbiter.request(vector: 5, in: &f.config).isEmpty)  // not allocated
        #expect(!f.statusInterrupt && !f.arbiter.intxDriven)
    }

    @Test func maskedMSIVectorIsPendingUntilUnmasked() throws {
        var f = try Function()
        _ = f.enableMSI(vectors: 2)
        let mask = f.msiOffset + 0x10, pending = f.msiOffset + 0x14
        _ = f.write(mask, .dword, 0b10)
        // 6.8.1.7/6.8.1.8: a masked vector sets its Pending bit instead of sending.
        #expect(f.arbiter.request(vector: 1, in: &f.config).isEmpty)
        #expect(f.config.read(pending, width: .dword) == 0b10)
        // Pending bits are read-only to software.
        _ = f.write(pending, .dword, 0)
        #expect(f.config.read(pending, width: .dword) == 0b10)
        // Unmasking sends the pending message and clears the bit.
        #expect(f.write(mask, .dword, 0) == InterruptDelivery(messages: [Self.message(0x4041)]))
        #expect(f.config.read(pending, width: .dword) == 0)
    }

    @Test func msixWinsOverMSI() throws {
        var f = try Function()
        _ = f.enableMSI(vectors: 1)
        f.program(msix: 0, data: 0x60, masked: false)
        _ = f.write(f.msixOffset + MSIXRegister.control, .word, 0x8000)
        #expect(f.arbiter.request(vector: 0, in: &f.config) == InterruptDelivery(messages: [Self.message(0x60)]))
    }

    // MARK: INTx (6.2.2, 6.2.3, 6.8)

    @Test func intxFollowsTheRequestInterruptStatusAndInterruptDisable() throws {
        var f = try Function()
        #expect(f.arbiter.request(vector: 0, in: &f.config) == InterruptDelivery(intx: true))
        #expect(f.statusInterrupt)
        #expect(f.arbiter.request(vector: 0, in: &f.config).isEmpty)   // already high
        // Interrupt Disable releases the pin; Interrupt Status keeps showing the request.
        #expect(f.write(Reg.command, .word, Self.interruptDisable) == InterruptDelivery(intx: false))
        #expect(f.statusInterrupt)
        #expect(f.write(Reg.command, .word, 0) == InterruptDelivery(intx: true))
        #expect(f.arbiter.lowerINTx(in: &f.config) == InterruptDelivery(intx: false))
        #expect(!f.statusInterrupt)
    }

    @Test func enablingMessagesReleasesThePin() throws {
        var f = try Function()
        #expect(f.arbiter.setCondition(true, in: &f.config) == InterruptDelivery(intx: true))
        // 6.8: with MSI enabled the function must not use INTx; the condition stays and comes
        // back on the pin when MSI is disabled again.
        #expect(f.enableMSI(vectors: 1) == InterruptDelivery(intx: false))
        #expect(!f.statusInterrupt)
        #expect(f.write(f.msiOffset + MSIRegister.control, .word, 0) == InterruptDelivery(intx: true))
        #expect(f.statusInterrupt)
    }

    @Test func functionWithoutAPinNeverAssertsOne() throws {
        var f = try Function(pin: 0)
        #expect(f.arbiter.request(vector: 0, in: &f.config).isEmpty)
        #expect(!f.statusInterrupt)
    }

    // MARK: Level conditions (PCIe 6.7.3.4) and reset

    @Test func conditionSendsOneMessagePerRisingEdge() throws {
        var f = try Function()
        _ = f.enableMSI(vectors: 1)
        #expect(f.arbiter.setCondition(true, in: &f.config) == InterruptDelivery(messages: [Self.message(0x4040)]))
        #expect(f.arbiter.setCondition(true, in: &f.config).isEmpty)
        #expect(f.arbiter.setCondition(false, in: &f.config).isEmpty)
        #expect(f.arbiter.setCondition(true, in: &f.config) == InterruptDelivery(messages: [Self.message(0x4040)]))
    }

    @Test func resetLowersThePinAndForgetsPendingVectors() throws {
        var f = try Function()
        f.program(msix: 0, data: 0x70, masked: true)
        _ = f.write(f.msixOffset + MSIXRegister.control, .word, 0x8000)
        _ = f.arbiter.request(vector: 0, in: &f.config)
        _ = f.write(f.msixOffset + MSIXRegister.control, .word, 0)
        #expect(f.pba == 1)
        #expect(f.arbiter.request(vector: 0, in: &f.config) == InterruptDelivery(intx: true))
        f.config.reset()
        #expect(f.arbiter.reset(in: &f.config) == InterruptDelivery(intx: false))
        #expect(f.pba == 0 && !f.statusInterrupt)
    }
}
