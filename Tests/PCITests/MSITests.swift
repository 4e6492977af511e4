import Testing
import PCI
import VMMBase

@Suite struct MSITests {
    @Test(arguments: [(false, false, 0x0A), (true, false, 0x0E), (false, true, 0x14), (true, true, 0x18)])
    func layoutLengths(is64Bit: Bool, masking: Bool, length: Int) throws {
        var config = ConfigSpace(layout: .endpoint, express: false)
        try config.addMSI(MSIOptions(vectors: 1, is64Bit: is64Bit, perVectorMasking: masking))
        #expect(config.capability(.msi)?.length == length)
        #expect(config.msiState?.is64Bit == is64Bit)
        #expect(config.msiState?.perVectorMasking == masking)
    }

    @Test func invalidVectorCountsAreRejected() {
        for vectors in [0, 3, 64] {
            var config = ConfigSpace(layout: .endpoint, express: false)
            #expect(throws: ConfigSpaceError.self) { try config.addMSI(MSIOptions(vectors: vectors)) }
        }
    }

    @Test func controlBitsAndMultipleMessageEnableClamp() throws {
        var config = ConfigSpace(layout: .endpoint, express: false)
        let msi = try config.addMSI(MSIOptions(vectors: 4, is64Bit: true, perVectorMasking: true))
        #expect(config.read(msi + MSIRegister.control, width: .word) == 0x0184)
        let effects = config.write(msi + MSIRegister.control, width: .word, value: 0xFFFF)
        #expect(effects.contains(.msiChanged))
        // Enable and MME took; MME was clamped to the 4 vectors capable; the rest is read-only.
        #expect(config.read(msi + MSIRegister.control, width: .word) == 0x01A5)
        let state = try #require(config.msiState)
        #expect(state.enabled && state.vectorsCapable == 4 && state.vectorsAllocated == 4)
    }

    @Test func sixtyFourBitMessagesReplaceLowDataBitsByVector() throws {
        var config = ConfigSpace(layout: .endpoint, express: false)
        let msi = try config.addMSI(MSIOptions(vectors: 8, is64Bit: true))
        config.write(msi + 4, width: .dword, value: 0xFEE0_1003)  // low two bits are read-only
        config.write(msi + 8, width: .dword, value: 0x0000_0001)
        config.write(msi + 0x0C, width: .dword, value: 0xFFFF_4047)  // data is 16 bits
        config.write(msi + MSIRegister.control, width: .word, value: 0x0021)  // enable, 4 vectors
        let state = try #require(config.msiState)
        #expect(state.address == 0x1_FEE0_1000)
        #expect(state.data == 0x4047)
        #expect(state.message(forVector: 0) == MSIMessage(address: 0x1_FEE0_1000, data: 0x4044))
        #expect(state.message(forVector: 3) == MSIMessage(address: 0x1_FEE0_1000, data: 0x4047))
        #expect(state.message(forVector: 4) == nil)
        #expect(state.message(forVector: -1) == nil)
    }

    @Test func thirtyTwoBitMessagesHaveNoHighAddress() throws {
        var config = ConfigSpace(layout: .endpoint, express: false)
        let msi = try config.addMSI(MSIOptions(vectors: 2, is64Bit: false))
        config.write(msi + 4, width: .dword, value: 0xFEE0_0000)
        config.write(msi + 8, width: .word, value: 0x0031)
        // Would be the high address in a 64-bit capability; here it lies outside the capability.
        config.write(msi + 0x0C, width: .dword, value: 0xFFFF_FFFF)
        config.write(msi + MSIRegister.control, width: .word, value: 0x0011)
        let state = try #require(config.msiState)
        #expect(state.message(forVector: 1) == MSIMessage(address: 0xFEE0_0000, data: 0x0031))
        #expect(state.message(forVector: 0) == MSIMessage(address: 0xFEE0_0000, data: 0x0030))
        #expect(config.read(msi + 0x0C, width: .dword) == 0)
    }

    @Test func maskBitsWritableOnlyForAdvertisedVectorsAndPendingReadOnly() throws {
        var config = ConfigSpace(layout: .endpoint, express: false)
        let msi = try config.addMSI(MSIOptions(vectors: 4, is64Bit: true, perVectorMasking: true))
        config.write(msi + 0x10, width: .dword, value: 0xFFFF_FFFF)
        config.write(msi + 0x14, width: .dword, value: 0xFFFF_FFFF)
        #expect(config.read(msi + 0x10, width: .dword) == 0xF)
        #expect(config.read(msi + 0x14, width: .dword) == 0)
    }

    @Test func maskedVectorBecomesPendingAndIsDeliveredOnUnmask() throws {
        var config = ConfigSpace(layout: .endpoint, express: false)
        let msi = try config.addMSI(MSIOptions(vectors: 4, is64Bit: false, perVectorMasking: true))
        let whileDisabled = config.signalMSI(0)
        #expect(whileDisabled == nil)  // MSI disabled: dropped, not pending
        #expect(config.msiState?.pendingBits == 0)

        config.write(msi + 4, width: .dword, value: 0xFEE0_0000)
        config.write(msi + 8, width: .word, value: 0x0050)
        config.write(msi + MSIRegister.control, width: .word, value: 0x0021)
        config.write(msi + 0x0C, width: .dword, value: 0b0100)
        let unmasked = config.signalMSI(1)
        let masked = config.signalMSI(2)
        #expect(unmasked == MSIMessage(address: 0xFEE0_0000, data: 0x51))
        #expect(masked == nil)
        #expect(config.msiState?.isPending(2) == true)
        #expect(config.read(msi + 0x10, width: .dword) == 0b0100)
        let whileMasked = config.takeUnmaskedPendingMSI()
        #expect(whileMasked.isEmpty)

        let effects = config.write(msi + 0x0C, width: .dword, value: 0)
        #expect(effects.contains(.msiChanged))
        let released = config.takeUnmaskedPendingMSI()
        #expect(released == [MSIMessage(address: 0xFEE0_0000, data: 0x52)])
        #expect(config.msiState?.pendingBits == 0)

        config.setMSIPending(3, true)
        #expect(config.msiState?.isPending(3) == true)
        config.setMSIPending(3, false)
        config.setMSIPending(9, true)  // no such vector: ignored
        #expect(config.msiState?.pendingBits == 0)
    }
}
