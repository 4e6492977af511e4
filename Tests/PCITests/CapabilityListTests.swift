import Testing
import PCI

@Suite struct CapabilityListTests {
    @Test func standardAndExtendedListsLinkInOrder() throws {
        let config = try kitchenSinkRootPort()
        #expect(standardCapabilityChain(config).map(\.id) == [0x01, 0x05, 0x10, 0x11, 0x09])
        #expect(extendedCapabilityChain(config).map(\.id) == [0x0001, 0x000D, 0x000E, 0x0010, 0x000B])
        #expect(config.status.contains(.capabilityList))
        // Every recorded capability is reachable where the record says it is.
        let walked = Set(standardCapabilityChain(config).map(\.offset) + extendedCapabilityChain(config).map(\.offset))
        #expect(walked == Set(config.capabilities.map(\.offset)))
    }

    @Test func capabilitiesDoNotOverlapAndAreDwordAligned() throws {
        let config = try kitchenSinkRootPort()
        let sorted = config.capabilities.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) { #expect(a.offset + a.length <= b.offset) }
        #expect(sorted.allSatisfy { $0.offset % 4 == 0 })
    }

    @Test func explicitOffsetOverlappingAnotherCapabilityIsRejected() throws {
        var config = ConfigSpace(layout: .endpoint, express: true)
        let pm = try config.addPowerManagement(at: 0x40)
        #expect(throws: ConfigSpaceError.capabilityOverlap(offset: 0x44, length: 0x0E,
                                                           existing: "standard(1) at 0x40")) {
            try config.addMSI(MSIOptions(vectors: 1, is64Bit: true), at: pm + 4)
        }
        let vsec = try config.addVendorSpecificExtended(vsecID: 1, revision: 0, payload: Array(repeating: 0, count: 0x28),
                                                        at: 0x100)
        #expect(throws: ConfigSpaceError.self) { try config.addACS(.isolation, at: vsec + 0x2C) }
        #expect(throws: ConfigSpaceError.self) { try config.addACS(.isolation, at: 0x102) }  // misaligned
        // The failed attempts left nothing behind.
        #expect(config.capabilities.count == 2)
    }

    @Test func extendedCapabilityNeedsExpressConfigSpace() {
        var config = ConfigSpace(layout: .endpoint, express: false)
        #expect(throws: ConfigSpaceError.self) { try config.addARI(nextFunction: 0) }
        #expect(throws: ConfigSpaceError.self) {
            try config.addVendorSpecificExtended(vsecID: 1, revision: 0, payload: [])
        }
    }

    @Test func readOnlyCapabilityHeadersSurviveAllOnesWrites() throws {
        var config = try kitchenSinkRootPort()
        let before = config
        for record in config.capabilities {
            config.writeAllOnes(record.offset, length: 4)
        }
        for record in config.capabilities {
            switch record.kind {
            case .standard:
                #expect(config.read(record.offset, width: .word) == before.read(record.offset, width: .word))
            case .extended:
                #expect(config.read(record.offset, width: .dword) == before.read(record.offset, width: .dword))
            }
        }
    }

    @Test func powerManagementStateMachine() throws {
        var config = ConfigSpace(layout: .endpoint, express: false)
        let pm = try config.addPowerManagement(PowerManagementOptions(pmeStates: [.d0, .d3hot]))
        #expect(config.read(pm + PowerManagementRegister.capabilities, width: .word) == 0x4803)
        let csr = pm + PowerManagementRegister.controlStatus
        #expect(config.read(csr, width: .word) == 0x0008)  // D0, No_Soft_Reset

        let effects = config.write(csr, width: .word, value: 0xFFFF)
        #expect(effects.contains(.powerStateChanged))
        // D3hot and PME_En took; No_Soft_Reset, data select/scale and PME_Status did not move.
        #expect(config.read(csr, width: .word) == 0x0108 | 0x3)
        // D1 and D2 are unsupported: the state stays D3hot.
        #expect(!config.write(csr, width: .word, value: 0x0101).contains(.powerStateChanged))
        #expect(config.powerManagementState?.powerState == .d3hot)
        config.write(csr, width: .word, value: 0x0100)
        #expect(config.powerManagementState?.powerState == .d0)

        let signalled = config.signalPME()
        #expect(signalled)
        #expect(config.powerManagementState?.pmeStatus == true)
        config.write(csr, width: .word, value: 0x0100)  // a zero in bit 15 leaves PME_Status
        #expect(config.powerManagementState?.pmeStatus == true)
        config.write(csr, width: .word, value: 0x8100)
        #expect(config.powerManagementState?.pmeStatus == false)
    }

    @Test func powerManagementWithD1AndD2AcceptsThem() throws {
        var config = ConfigSpace(layout: .endpoint, express: false)
        let pm = try config.addPowerManagement(PowerManagementOptions(supportsD1: true, supportsD2: true, noSoftReset: false))
        config.write(pm + PowerManagementRegister.controlStatus, width: .byte, value: 2)
        #expect(config.powerManagementState?.powerState == .d2)
        #expect(config.powerManagementState?.noSoftReset == false)
        // Without PME support, PME_En is read-only.
        config.write(pm + PowerManagementRegister.controlStatus, width: .word, value: 0x0101)
        #expect(config.powerManagementState?.pmeEnabled == false)
        let signalled = config.signalPME()
        #expect(!signalled)
    }

    @Test func powerManagementRejectsPMEFromUnsupportedState() {
        var config = ConfigSpace(layout: .endpoint, express: false)
        #expect(throws: ConfigSpaceError.self) {
            try config.addPowerManagement(PowerManagementOptions(pmeStates: [.d1]))
        }
    }

    @Test func vendorSpecificCapabilities() throws {
        var config = ConfigSpace(layout: .endpoint, express: true)
        let vendor = try config.addVendorSpecific(payload: [0x11, 0x22])
        #expect(config.read(vendor + 2, width: .byte) == 5)
        #expect(config.read(vendor + 3, width: .word) == 0x2211)
        config.writeAllOnes(vendor, length: 8)
        #expect(config.read(vendor + 3, width: .word) == 0x2211)
        #expect(throws: ConfigSpaceError.self) { try config.addVendorSpecific(payload: Array(repeating: 0, count: 200)) }

        let vsec = try config.addVendorSpecificExtended(vsecID: 0xABCD, revision: 3, payload: [9, 8, 7, 6])
        #expect(config.read(vsec + 4, width: .dword) == 0xABCD | 3 << 16 | 12 << 20)
        #expect(config.read(vsec + 8, width: .dword) == 0x0607_0809)
        #expect(throws: ConfigSpaceError.self) {
            try config.addVendorSpecificExtended(vsecID: 1, revision: 16, payload: [])
        }
    }
}
