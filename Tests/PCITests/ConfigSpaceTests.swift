import PCI
import Testing
import VMMBase

@Suite struct ConfigSpaceTests {
    func endpoint() -> ConfigSpace {
        var cs = ConfigSpace(layout: .endpoint, express: false)
        cs.setIdentity(PCIIdentity(vendorID: 0x1B36, deviceID: 0x0005, classCode: 0x00FF00))
        return cs
    }

    @Test func identityAndUnimplementedRegistersReadZero() {
        let cs = endpoint()
        #expect(cs.read(0, width: .dword) == 0x0005_1B36)
        #expect(cs.read(0x08, width: .dword) == 0x00FF_0000)
        #expect(cs.read(0x40, width: .dword) == 0)
        #expect(cs.read(0xFC, width: .dword) == 0)
        // A conventional function has no extended space: it reads as absent.
        #expect(cs.read(0x100, width: .dword) == 0xFFFF_FFFF)
        #expect(ConfigSpace(layout: .endpoint, express: true).read(0x100, width: .dword) == 0)
    }

    @Test func readOnlyRegistersIgnoreWrites() {
        var cs = endpoint()
        cs.write(0, width: .dword, value: 0xFFFF_FFFF)
        cs.write(0x08, width: .dword, value: 0xFFFF_FFFF)
        cs.write(0x0E, width: .byte, value: 0xFF)
        #expect(cs.read(0, width: .dword) == 0x0005_1B36)
        #expect(cs.read(0x08, width: .dword) == 0x00FF_0000)
        #expect(cs.read(0x0E, width: .byte) == 0)
        cs.write(0x3C, width: .byte, value: 0x0B)  // Interrupt Line is writable
        #expect(cs.read(0x3C, width: .byte) == 0x0B)
        cs.write(0x3D, width: .byte, value: 0x04)  // Interrupt Pin is not
        #expect(cs.read(0x3D, width: .byte) == 0)
    }

    @Test func commandBitsAndTheirEffects() {
        var cs = endpoint()
        let e1 = cs.write(Reg.command, width: .word, value: 0xFFFF)
        #expect(cs.read(Reg.command, width: .word) == UInt32(CommandBits.standardWritable.rawValue))
        #expect(e1.contains(.decodingChanged))
        #expect(e1.contains(.busMasterChanged))
        #expect(e1.contains(.intxDisableChanged))
        // Rewriting the same value changes nothing and reports nothing.
        #expect(cs.write(Reg.command, width: .word, value: 0xFFFF).isEmpty)
        let e2 = cs.write(Reg.command, width: .word, value: 0xFFFF & ~UInt32(CommandBits.busMaster.rawValue))
        #expect(e2 == .busMasterChanged)
    }

    @Test func statusErrorBitsAreWriteOneToClear() {
        var cs = endpoint()
        cs.setBits(Reg.status, width: 2, UInt64(StatusBits([.receivedMasterAbort, .detectedParityError]).rawValue), to: true)
        cs.setInterruptStatus(true)
        // Writing zeros clears nothing.
        cs.write(Reg.status, width: .word, value: 0)
        #expect(cs.status.contains(.receivedMasterAbort) && cs.status.contains(.detectedParityError))
        // Writing one to one bit clears only that bit; the interrupt status bit is read-only.
        cs.write(Reg.status, width: .word, value: UInt32(StatusBits.receivedMasterAbort.rawValue | StatusBits.interrupt.rawValue))
        #expect(!cs.status.contains(.receivedMasterAbort))
        #expect(cs.status.contains(.detectedParityError))
        #expect(cs.status.contains(.interrupt))
        // A dword write to Command that carries ones in the Status half clears them too.
        cs.write(Reg.command, width: .dword, value: 0xFFFF_0000)
        #expect(!cs.status.contains(.detectedParityError))
        #expect(cs.status.contains(.interrupt))
    }

    @Test func barSizingProtocol() throws {
        var cs = endpoint()
        try cs.defineBAR(0, BARDescriptor(.io, size: 32))
        try cs.defineBAR(1, BARDescriptor(.memory32(prefetchable: false), size: 4096))
        try cs.defineBAR(2, BARDescriptor(.memory64(prefetchable: true), size: 1 << 32))
        for i in 0..<6 { cs.write(ConfigSpace.barOffset(i), width: .dword, value: 0xFFFF_FFFF) }
        #expect(cs.read(0x10, width: .dword) == 0xFFFF_FFE1)
        #expect(cs.read(0x14, width: .dword) == 0xFFFF_F000)
        #expect(cs.read(0x18, width: .dword) == 0x0000_000C)   // 4 GiB: no low address bits
        #expect(cs.read(0x1C, width: .dword) == 0xFFFF_FFFF)
        #expect(cs.read(0x20, width: .dword) == 0)              // undefined BARs stay zero
        #expect(cs.decodedBARRange(1) == nil)                   // sizing pattern, decode off
        cs.write(0x14, width: .dword, value: 0xC000_0123)
        cs.write(Reg.command, width: .word, value: 0x2)
        #expect(cs.barAddress(1) == 0xC000_0000)
        #expect(cs.decodedBARRange(1) == AddressRange(base: 0xC000_0000, size: 4096))
        #expect(cs.decodedBARRange(0) == nil)  // I/O decode is off
        cs.write(0x18, width: .dword, value: 0)
        cs.write(0x1C, width: .dword, value: 0x80)
        #expect(cs.barAddress(2) == 0x80_0000_0000)
        #expect(cs.decodedBARRange(2) == AddressRange(base: 0x80_0000_0000, size: 1 << 32))
    }

    @Test func barWritesReportTheirBAR() throws {
        var cs = endpoint()
        try cs.defineBAR(2, BARDescriptor(.memory64(prefetchable: true), size: 1 << 20))
        #expect(cs.write(0x1C, width: .dword, value: 1) == .bar(2))  // the upper half belongs to BAR 2
        #expect(cs.write(0x18, width: .dword, value: 0x100000) == .bar(2))
        #expect(cs.write(0x10, width: .dword, value: 0xFFFF_FFFF).isEmpty)  // BAR 0 undefined
    }

    @Test func invalidBARDefinitionsAreRejected() {
        var cs = endpoint()
        #expect(throws: ConfigSpaceError.self) { try cs.defineBAR(0, BARDescriptor(.io, size: 24)) }
        #expect(throws: ConfigSpaceError.self) { try cs.defineBAR(5, BARDescriptor(.memory64(prefetchable: false), size: 4096)) }
        #expect(throws: ConfigSpaceError.self) { try cs.defineBAR(6, BARDescriptor(.io, size: 4)) }
        #expect(throws: ConfigSpaceError.self) { try cs.defineBAR(0, BARDescriptor(.io, size: 512)) }
        #expect(throws: Never.self) { try cs.defineBAR(0, BARDescriptor(.memory64(prefetchable: false), size: 4096)) }
        #expect(throws: ConfigSpaceError.self) { try cs.defineBAR(1, BARDescriptor(.io, size: 4)) }  // upper half of BAR 0
    }

    @Test func expansionROM() throws {
        var cs = endpoint()
        try cs.defineROM(size: 64 << 10)
        cs.write(Reg.romType0, width: .dword, value: 0xFFFF_FFFF)
        #expect(cs.read(Reg.romType0, width: .dword) == 0xFFFF_0001)
        cs.write(Reg.romType0, width: .dword, value: 0xC010_0001)
        #expect(cs.decodedROMRange() == nil)  // memory decode off
        cs.write(Reg.command, width: .word, value: 0x2)
        #expect(cs.decodedROMRange() == AddressRange(base: 0xC010_0000, size: 64 << 10))
        #expect(throws: ConfigSpaceError.self) { try cs.defineROM(size: 1000) }
    }

    @Test func bridgeHeaderWindowsAndBusNumbers() {
        var cs = ConfigSpace(layout: .bridge, express: false)
        #expect(cs.write(Reg.primaryBus, width: .dword, value: 0x0005_0100).contains(.busNumbersChanged))
        #expect(cs.busNumbers == BridgeBusNumbers(primary: 0, secondary: 1, subordinate: 5))
        #expect(cs.write(Reg.ioBase, width: .word, value: 0x2010).contains(.windowsChanged))
        cs.write(Reg.memoryBase, width: .dword, value: 0xC01F_C000)
        cs.write(Reg.prefetchBase, width: .dword, value: 0x001F_0001)
        cs.write(Reg.prefetchBaseUpper, width: .dword, value: 0x80)
        cs.write(Reg.prefetchLimitUpper, width: .dword, value: 0x80)
        let w = cs.programmedWindows
        #expect(w.io == AddressRange(base: 0x1000, last: 0x2FFF))
        #expect(w.memory == AddressRange(base: 0xC000_0000, last: 0xC01F_FFFF))
        #expect(w.prefetchable == AddressRange(base: 0x80_0000_0000, last: 0x80_001F_FFFF))
        #expect(cs.decodedWindows.memory == nil)  // Command.memory off
        // The low nibbles advertising 32-bit I/O and 64-bit prefetchable are read-only.
        cs.write(Reg.ioBase, width: .byte, value: 0x00)
        #expect(cs.read(Reg.ioBase, width: .byte) == 0x01)
        #expect(cs.write(Reg.bridgeControl, width: .word, value: 0x40).contains(.bridgeControlChanged))
        #expect(cs.bridgeControl.contains(.secondaryBusReset))
    }

    @Test func resetRestoresCapturedState() throws {
        var cs = endpoint()
        try cs.defineBAR(0, BARDescriptor(.io, size: 16))
        cs.captureResetState()
        cs.write(0x10, width: .dword, value: 0x1000)
        cs.write(Reg.command, width: .word, value: 0x7)
        cs.reset()
        #expect(cs.read(0x10, width: .dword) == 0x1)
        #expect(cs.read(Reg.command, width: .word) == 0)
    }

    @Test func capabilityListLinksAndRejectsOverlap() throws {
        var cs = ConfigSpace(layout: .endpoint, express: true)
        let a = try cs.addCapability(id: 0x01, length: 8)
        let b = try cs.addCapability(id: 0x05, length: 14)
        #expect(a == 0x40 && b == 0x48)
        #expect(cs.status.contains(.capabilityList))
        #expect(cs.read(Reg.capabilitiesPointer, width: .byte) == 0x40)
        #expect(cs.read(0x41, width: .byte) == 0x48)
        #expect(cs.read(0x49, width: .byte) == 0)
        #expect(throws: ConfigSpaceError.self) { try cs.addCapability(id: 0x09, length: 4, at: 0x44) }
        #expect(throws: ConfigSpaceError.self) { try cs.addCapability(id: 0x09, length: 8, at: 0xFC) }
        let e1 = try cs.addExtendedCapability(id: 0x0001, version: 2, length: 0x48)
        let e2 = try cs.addExtendedCapability(id: 0x000D, version: 1, length: 8)
        #expect(e1 == 0x100)
        #expect(cs.read(0x100, width: .dword) == UInt32(0x0001 | 2 << 16 | e2 << 20))
        #expect(throws: ConfigSpaceError.self) {
            try ConfigSpace(layout: .endpoint, express: false).addingExtended()
        }
    }
}

extension ConfigSpace {
    fileprivate func addingExtended() throws(ConfigSpaceError) {
        var copy = self
        try copy.addExtendedCapability(id: 1, version: 1, length: 8)
    }
}
