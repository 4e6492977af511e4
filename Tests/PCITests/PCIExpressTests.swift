import Testing
import PCI

@Suite struct PCIExpressTests {
    private func rootPort(_ slot: PCIExpressSlotOptions? = PCIExpressSlotOptions(physicalSlotNumber: 5)) throws -> (ConfigSpace, Int) {
        var config = ConfigSpace(layout: .bridge, express: true)
        let base = try config.addPCIExpress(PCIExpressOptions(portType: .rootPort, slot: slot))
        return (config, base)
    }

    @Test func capabilityRegisterEncodesVersionTypeAndSlot() throws {
        let (config, base) = try rootPort()
        #expect(config.read(base + PCIExpressRegister.capabilities, width: .word) == 0x0142)
        #expect(config.pciExpressPortType == .rootPort)
        #expect(config.capability(.standard(CapabilityID.pciExpress))?.length == 0x3C)
        // Max payload 256 (encoding 1), extended tags, role-based error reporting.
        #expect(config.read(base + PCIExpressRegister.deviceCapabilities, width: .dword) == 0x0000_8021)
    }

    @Test func slotRegistersFollowTheSlotHardware() throws {
        var (config, base) = try rootPort()
        #expect(config.read(base + PCIExpressRegister.slotCapabilities, width: .dword) == 0x0028_007B)
        // Indicators off and power off while the slot is empty.
        #expect(config.read(base + PCIExpressRegister.slotControl, width: .word) == 0x07C0)
        let effects = config.write(base + PCIExpressRegister.slotControl, width: .word, value: 0xFFFF)
        #expect(effects.contains(.slotControlWritten))
        // No MRL sensor, no interlock control: bits 2 and 11 stay 0, as do reserved 13-15.
        #expect(config.read(base + PCIExpressRegister.slotControl, width: .word) == 0x17FB)
        // Writing the same value again is still a command.
        #expect(config.write(base + PCIExpressRegister.slotControl, width: .word, value: 0x17FB) == .slotControlWritten)
        // Slot Capabilities is read-only and writing it is no slot command; a byte write to
        // Slot Control's upper half is one.
        #expect(config.write(base + PCIExpressRegister.slotCapabilities, width: .dword, value: 0) == [])
        #expect(config.read(base + PCIExpressRegister.slotCapabilities, width: .dword) == 0x0028_007B)
        #expect(config.write(base + PCIExpressRegister.slotControl + 1, width: .byte, value: 0x01).contains(.slotControlWritten))
        let slot = try #require(config.pciExpressSlotState)
        #expect(slot.attentionIndicator == .off)  // bits 7:6 are untouched by the byte write
        #expect(slot.powerIndicator == .on && slot.poweredOn)
    }

    @Test func slotStatusEventsAreWriteOneToClearAndStateIsReadOnly() throws {
        var (config, base) = try rootPort()
        let status = base + PCIExpressRegister.slotStatus
        config.setSlotStatus([.presenceDetected, .presenceDetectChanged, .attentionButtonPressed,
                              .dataLinkLayerStateChanged], true)
        #expect(config.read(status, width: .word) == 0x0149)
        config.write(status, width: .word, value: 0x0008)
        #expect(config.read(status, width: .word) == 0x0141)
        config.write(status, width: .word, value: 0xFFFF)
        #expect(config.read(status, width: .word) == 0x0040)  // presence is state, not an event
        #expect(config.pciExpressSlotState?.status == .presenceDetected)
    }

    @Test func slotOptionsShapeTheMasks() throws {
        let features: PCIExpressSlotFeatures = [.mrlSensor, .hotPlugCapable, .noCommandCompleted]
        var (config, base) = try rootPort(PCIExpressSlotOptions(features: features, physicalSlotNumber: 0x1FFF,
                                                                presenceDetected: true))
        config.write(base + PCIExpressRegister.slotControl, width: .word, value: 0xFFFF)
        // MRL sensor changed, presence detect changed, hot-plug interrupt, DLL state changed;
        // no command-completed interrupt because of No Command Completed Support.
        #expect(config.read(base + PCIExpressRegister.slotControl, width: .word) == 0x102C)
        #expect(config.read(base + PCIExpressRegister.slotCapabilities, width: .dword) == 0xFFF8_0000 | 0x0004_0044)
        config.setSlotStatus([.commandCompleted, .mrlSensorChanged, .mrlOpen], true)
        config.write(base + PCIExpressRegister.slotStatus, width: .word, value: 0xFFFF)
        // Command Completed is not a W1C event here, so it cannot be cleared; MRL state stays.
        #expect(config.read(base + PCIExpressRegister.slotStatus, width: .word) == 0x0070)
    }

    @Test func portsWithoutSlotIgnoreSlotRegisters() throws {
        var (config, base) = try rootPort(nil)
        #expect(config.read(base + PCIExpressRegister.capabilities, width: .word) & 0x0100 == 0)
        let effects = config.write(base + PCIExpressRegister.slotControl, width: .word, value: 0xFFFF)
        #expect(!effects.contains(.slotControlWritten))
        #expect(config.read(base + PCIExpressRegister.slotControl, width: .dword) == 0)
        #expect(config.pciExpressSlotState == nil)
    }

    @Test func deviceStatusErrorsClearOnlyWhereWrittenAsOne() throws {
        var config = ConfigSpace(layout: .endpoint, express: true)
        let base = try config.addPCIExpress(PCIExpressOptions(portType: .endpoint))
        config.setDeviceStatus([.correctableError, .unsupportedRequest, .transactionsPending], true)
        config.write(base + PCIExpressRegister.deviceStatus, width: .word, value: 0x0001)
        #expect(config.read(base + PCIExpressRegister.deviceStatus, width: .word) == 0x0028)
        config.write(base + PCIExpressRegister.deviceStatus, width: .word, value: 0xFFFF)
        #expect(config.read(base + PCIExpressRegister.deviceStatus, width: .word) == 0x0020)
    }

    @Test func readOnlyRegistersSurviveAllOnes() throws {
        var (config, base) = try rootPort()
        let readOnly = [PCIExpressRegister.capabilities, PCIExpressRegister.deviceCapabilities,
                        PCIExpressRegister.linkCapabilities, PCIExpressRegister.slotCapabilities,
                        PCIExpressRegister.deviceCapabilities2, PCIExpressRegister.linkCapabilities2]
        let before = readOnly.map { config.read(base + $0, width: .word) }
        config.writeAllOnes(base, length: PCIExpressRegister.length)
        #expect(readOnly.map { config.read(base + $0, width: .word) } == before)
        // Device Control: error reporting, relaxed ordering, MPS, ext tag, no snoop, MRRS.
        #expect(config.read(base + PCIExpressRegister.deviceControl, width: .word) == 0x79FF)
        // Link Control: common clock, extended synch, link disable (no bandwidth notification at x1 2.5GT/s).
        #expect(config.read(base + PCIExpressRegister.linkControl, width: .word) == 0x00D0)
        #expect(config.read(base + PCIExpressRegister.rootControl, width: .word) == 0x000F)
        #expect(config.read(base + PCIExpressRegister.deviceControl2, width: .word) == 0x8000)
    }

    @Test func functionLevelResetIsReportedNotStored() throws {
        var config = ConfigSpace(layout: .endpoint, express: true)
        let base = try config.addPCIExpress(PCIExpressOptions(portType: .endpoint, functionLevelReset: true))
        #expect(config.read(base + PCIExpressRegister.deviceCapabilities, width: .dword) & (1 << 28) != 0)
        let effects = config.write(base + PCIExpressRegister.deviceControl, width: .word, value: 0x8000 | 0x2810)
        #expect(effects.contains(.functionLevelReset))
        #expect(config.read(base + PCIExpressRegister.deviceControl, width: .word) == 0x2810)

        var plain = ConfigSpace(layout: .endpoint, express: true)
        let other = try plain.addPCIExpress(PCIExpressOptions(portType: .endpoint))
        #expect(!plain.write(other + PCIExpressRegister.deviceControl, width: .word, value: 0x8000).contains(.functionLevelReset))
    }

    @Test func linkRegistersAndActiveReporting() throws {
        var config = ConfigSpace(layout: .bridge, express: true)
        let base = try config.addPCIExpress(PCIExpressOptions(
            portType: .downstreamPort, linkSpeed: .gt8, linkWidth: 4, portNumber: 9,
            slot: PCIExpressSlotOptions(physicalSlotNumber: 1)))
        // Speed 3, width 4, surprise down, DLL active reporting, bandwidth notification, port 9.
        #expect(config.read(base + PCIExpressRegister.linkCapabilities, width: .dword) == 0x0938_0043)
        #expect(config.read(base + PCIExpressRegister.linkStatus, width: .word) == 0x0043)
        config.setLinkActive(true)
        #expect(config.read(base + PCIExpressRegister.linkStatus, width: .word) == 0x2043)
        #expect(config.read(base + PCIExpressRegister.linkCapabilities2, width: .dword) == 0x0E)
        #expect(config.read(base + PCIExpressRegister.linkControl2, width: .word) == 3)
        // Root registers exist only on root ports.
        config.write(base + PCIExpressRegister.rootControl, width: .word, value: 0xFFFF)
        #expect(config.read(base + PCIExpressRegister.rootControl, width: .word) == 0)
    }

    @Test func insaneOptionsAreRejected() {
        let cases: [(HeaderLayout, PCIExpressOptions)] = [
            (.endpoint, PCIExpressOptions(portType: .endpoint, slot: PCIExpressSlotOptions(physicalSlotNumber: 1))),
            (.endpoint, PCIExpressOptions(portType: .rootPort)),
            (.bridge, PCIExpressOptions(portType: .endpoint)),
            (.endpoint, PCIExpressOptions(portType: .endpoint, maxPayloadSize: 96)),
            (.endpoint, PCIExpressOptions(portType: .endpoint, linkWidth: 3)),
            (.bridge, PCIExpressOptions(portType: .rootPort, functionLevelReset: true)),
            (.bridge, PCIExpressOptions(portType: .rootPort, slot: PCIExpressSlotOptions(physicalSlotNumber: 0x2000))),
            (.endpoint, PCIExpressOptions(portType: .endpoint, ariForwarding: true)),
        ]
        for (layout, options) in cases {
            var config = ConfigSpace(layout: layout, express: true)
            #expect(throws: ConfigSpaceError.self, "\(options)") { try config.addPCIExpress(options) }
        }
    }
}

@Suite struct ExtendedCapabilityTests {
    @Test func aerOnARootPort() throws {
        var config = ConfigSpace(layout: .bridge, express: true)
        #expect(throws: ConfigSpaceError.self) { try config.addAER() }
        try config.addPCIExpress(PCIExpressOptions(portType: .rootPort))
        let aer = try config.addAER(AEROptions(ecrcCheckCapable: true, interruptMessageNumber: 2))
        #expect(config.capability(.extended(ExtendedCapabilityID.aer))?.length == 0x38)
        #expect(config.read(aer, width: .dword) & 0x000F_FFFF == 0x0002_0001)
        #expect(config.read(aer + AERRegister.uncorrectableSeverity, width: .dword) == 0x0046_2030)
        #expect(config.read(aer + AERRegister.correctableMask, width: .dword) == 0xE000)
        config.writeAllOnes(aer + 8, length: AERRegister.rootLength - 8)
        #expect(config.read(aer + AERRegister.uncorrectableMask, width: .dword) == 0x03FF_F030)
        #expect(config.read(aer + AERRegister.correctableMask, width: .dword) == 0xF1C1)
        #expect(config.read(aer + AERRegister.capabilitiesControl, width: .dword) == 0x0180)
        #expect(config.read(aer + AERRegister.rootErrorCommand, width: .dword) == 0x7)

        // Status bits clear where written as one; the message number is read-only.
        config.setBits(aer + AERRegister.uncorrectableStatus, width: 4, 0x0010_1000, to: true)
        config.write(aer + AERRegister.uncorrectableStatus, width: .dword, value: 0x0000_1000)
        #expect(config.read(aer + AERRegister.uncorrectableStatus, width: .dword) == 0x0010_0000)
        config.setBits(aer + AERRegister.rootErrorStatus, width: 4, 0x45, to: true)
        config.write(aer + AERRegister.rootErrorStatus, width: .dword, value: 0xFFFF_FF01)
        #expect(config.read(aer + AERRegister.rootErrorStatus, width: .dword) == 0x1000_0044)
    }

    @Test func aerOnAnEndpointHasNoRootRegisters() throws {
        var config = ConfigSpace(layout: .endpoint, express: true)
        try config.addPCIExpress(PCIExpressOptions(portType: .endpoint))
        let aer = try config.addAER()
        #expect(config.capability(.extended(ExtendedCapabilityID.aer))?.length == 0x2C)
        config.write(aer + AERRegister.rootErrorCommand, width: .dword, value: 0xFFFF_FFFF)
        #expect(config.read(aer + AERRegister.rootErrorCommand, width: .dword) == 0)
        config.write(aer + AERRegister.capabilitiesControl, width: .dword, value: 0xFFFF_FFFF)
        #expect(config.read(aer + AERRegister.capabilitiesControl, width: .dword) == 0)
    }

    @Test func acsControlIsWritableOnlyWhereCapable() throws {
        var config = ConfigSpace(layout: .bridge, express: true)
        let acs = try config.addACS([.sourceValidation, .p2pRequestRedirect])
        config.write(acs + ACSRegister.capability, width: .dword, value: 0xFFFF_FFFF)
        #expect(config.read(acs + ACSRegister.capability, width: .dword) == 0x0005_0005)
        #expect(config.acsControl == [.sourceValidation, .p2pRequestRedirect])

        let egress = try config.addACS([.p2pEgressControl], egressVectorBits: 40)
        #expect(config.capability(.extended(ExtendedCapabilityID.acs))?.offset == acs)  // the first ACS wins lookups
        #expect(config.read(egress + ACSRegister.capability, width: .word) == 0x2820)
        config.writeAllOnes(egress + ACSRegister.egressControlVector, length: 8)
        #expect(config.read(egress + ACSRegister.egressControlVector, width: .dword) == 0xFFFF_FFFF)
        #expect(config.read(egress + ACSRegister.egressControlVector + 4, width: .dword) == 0xFF)
        #expect(throws: ConfigSpaceError.self) { try config.addACS([.sourceValidation], egressVectorBits: 8) }
        #expect(throws: ConfigSpaceError.self) { try config.addACS([.p2pEgressControl]) }
    }

    @Test func ariNextFunctionAndGroups() throws {
        var config = ConfigSpace(layout: .endpoint, express: true)
        let ari = try config.addARI(nextFunction: 2, acsFunctionGroups: true)
        config.write(ari + ARIRegister.capability, width: .dword, value: 0xFFFF_FFFF)
        #expect(config.read(ari + ARIRegister.capability, width: .dword) == 0x0072_0202)

        var plain = ConfigSpace(layout: .endpoint, express: true)
        let other = try plain.addARI(nextFunction: 0)
        plain.write(other + ARIRegister.capability, width: .dword, value: 0xFFFF_FFFF)
        #expect(plain.read(other + ARIRegister.capability, width: .dword) == 0)
    }
}
