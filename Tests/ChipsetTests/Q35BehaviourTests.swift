import Chipset
import Interrupts
import PCI
import Testing
import TestRequirements
import VMMBase

@Suite struct Q35HostBridgeTests {
    let mch = Q35HostBridge()

    private func writePCIEXBAR(_ value: UInt64) -> (effects: ConfigWriteEffects, changes: Q35HostBridge.Change) {
        _ = mch.configWrite(0x64, width: .dword, value: UInt32(value >> 32))
        return mch.configWriteReportingChanges(0x60, width: .dword, value: UInt32(truncatingIfNeeded: value))
    }

    private func window() -> [UInt64]? { mch.ecamWindow.map { [$0.base, $0.size] } }

    @Test func ecamIsDisabledAtResetWithQEMUsDefaultBase() {
        #expect(mch.ecamWindow == nil)
        #expect(mch.pciexbar == 0xB000_0000)
    }

    @Test func pciexbarSizesAndEnable() {
        var result = writePCIEXBAR(0xB000_0001)
        #expect(window() == [0xB000_0000, 256 << 20])
        #expect(result.changes == .ecam)
        #expect(result.effects.contains(.deviceSpecific))

        result = writePCIEXBAR(0xE400_0003)
        #expect(window() == [0xE400_0000, 128 << 20])
        result = writePCIEXBAR(0xE200_0005)
        #expect(window() == [0xE200_0000, 64 << 20])

        // Rewriting the same window changes nothing platform-visible.
        result = writePCIEXBAR(0xE200_0005)
        #expect(result.changes.isEmpty)
        #expect(!result.effects.contains(.deviceSpecific))

        result = writePCIEXBAR(0xE200_0004)
        #expect(mch.ecamWindow == nil)
        #expect(result.changes == .ecam)
    }

    @Test func pciexbarFollowsQEMUsBaseBitsForSmallWindows() {
        // QEMU keeps bits 35:28 plus bit 26 (and 25) for 128 MiB, bit 25 for 64 MiB.
        _ = writePCIEXBAR(0xE800_0003)
        #expect(window() == [0xE000_0000, 128 << 20])
        _ = writePCIEXBAR(0xE400_0005)
        #expect(window() == [0xE000_0000, 64 << 20])
    }

    @Test func pciexbarReservedLengthKeepsThePreviousWindow() {
        _ = writePCIEXBAR(0xB000_0001)
        let result = writePCIEXBAR(0xC000_0007)
        #expect(mch.pciexbar == 0xC000_0007)
        #expect(window() == [0xB000_0000, 256 << 20])
        #expect(result.changes.isEmpty)
        // From disabled, a reserved length does not enable anything.
        mch.reset()
        _ = writePCIEXBAR(0xC000_0007)
        #expect(mch.ecamWindow == nil)
    }

    @Test func pciexbarAbove4GiBUsesBitsUpTo35() {
        _ = writePCIEXBAR(0xFFFF_FFFF_1000_0001)
        #expect(mch.pciexbar == 0xFFFF_FFFF_1000_0001)
        #expect(window() == [0xF_1000_0000, 256 << 20])
    }

    @Test func pamSegmentsDecodeBothNibbles() {
        #expect(mch.pam == Array(repeating: .dramDisabled, count: 13))
        // PAM0 = 0x30, PAM1 = 0x13, PAM2 = 0x00, PAM3 = 0x32.
        let result = mch.configWriteReportingChanges(0x90, width: .dword, value: 0x3200_1330)
        #expect(result.changes == .pam)
        let pam = mch.pam
        #expect(pam[0] == .readWrite)        // PAM0 high: 0xF0000-0xFFFFF
        #expect(pam[1] == .readWrite)        // PAM1 low: 0xC0000
        #expect(pam[2] == .readOnly)         // PAM1 high: 0xC4000
        #expect(pam[3] == .dramDisabled)     // PAM2 low: 0xC8000
        #expect(pam[4] == .dramDisabled)
        #expect(pam[5] == .writeOnly)        // PAM3 low: 0xD0000
        #expect(pam[6] == .readWrite)        // PAM3 high: 0xD4000
        #expect(mch.pamAttribute(at: 0xFFFFF) == .readWrite)
        #expect(mch.pamAttribute(at: 0xC7FFF) == .readOnly)
        #expect(mch.pamAttribute(at: 0xD0000) == .writeOnly)
        #expect(mch.pamAttribute(at: 0xBFFFF) == nil)
        #expect(mch.pamAttribute(at: 0x100000) == nil)
        let expansionBases: [UInt64] = (0..<12).map { 0xC0000 + UInt64($0) * 0x4000 }
        #expect(PAMSegment.all.map(\.base) == [0xF0000] + expansionBases)

        // PAM0's low nibble is reserved storage: changing it moves no memory.
        let reserved = mch.configWriteReportingChanges(0x90, width: .byte, value: 0x33)
        #expect(reserved.changes.isEmpty)
        #expect(!reserved.effects.contains(.deviceSpecific))
    }

    @Test func smramLockFreezesEverythingButDCLS() {
        _ = mch.configWrite(0x9D, width: .byte, value: 0x4A)  // D_OPEN | G_SMRAME
        _ = mch.configWrite(0x9E, width: .byte, value: 0x87)  // H_SMRAME | TSEG 8M-ext | T_EN
        var s = mch.smram
        #expect(s.open && s.globalEnable && s.highEnable && s.tsegEnable && !s.locked)
        #expect(s.highSMRAMVisibleOutsideSMM && s.highSMRAMInSMM)
        #expect(s.tsegSize == 16 << 20)  // TSEG_SZ 11b: QEMU's extended size (16 MiB)

        let lock = mch.configWriteReportingChanges(0x9D, width: .byte, value: 0x5A)
        #expect(lock.changes == .smram)
        #expect(mch.configRead(0x9D, width: .byte) == 0x1A)  // D_OPEN cleared by the lock
        s = mch.smram
        #expect(s.locked && !s.open)

        for value: UInt32 in [0x00, 0xFF, 0x40, 0x08] {
            _ = mch.configWrite(0x9D, width: .byte, value: value)
            let smram = mch.configRead(0x9D, width: .byte)
            #expect(smram & 0x5F == 0x1A, "locked bits moved after writing \(value)")
            #expect(smram & 0x20 == value & 0x20, "D_CLS stays writable")
            _ = mch.configWrite(0x9E, width: .byte, value: value)
            #expect(mch.configRead(0x9E, width: .byte) == 0xBF)
        }
        mch.reset()
        #expect(mch.configRead(0x9C, width: .dword) == 0x0038_0200)
        _ = mch.configWrite(0x9D, width: .byte, value: 0x48)
        #expect(mch.configRead(0x9D, width: .byte) == 0x4A)
    }

    @Test func smramLockAppliesAfterAWholeDwordIsWritten() {
        // One dword write reaches ESMRAMC with the pre-lock mask, as in QEMU.
        _ = mch.configWrite(0x9C, width: .dword, value: 0xFFFF_FFFF)
        #expect(mch.configRead(0x9C, width: .dword) == 0xFFBF_3A01)
        _ = mch.configWrite(0x9C, width: .dword, value: 0)
        #expect(mch.configRead(0x9C, width: .dword) == 0x00BF_1A01)
    }

    @Test func tsegSizeNeedsGlobalEnable() {
        _ = mch.configWrite(0x9E, width: .byte, value: 0x05)  // T_EN, 8 MiB
        #expect(mch.smram.tsegSize == 0)
        _ = mch.configWrite(0x9D, width: .byte, value: 0x08)
        #expect(mch.smram.tsegSize == 8 << 20)
        #expect(mch.smram.lowSMRAMInSMM)
    }

    @Test func smbaseHandshake() {
        _ = mch.configWrite(0x9C, width: .byte, value: 0x02)  // not queried yet: discarded
        #expect(mch.configRead(0x9C, width: .byte) == 0)
        #expect(mch.smbaseWindow == nil)
        let query = mch.configWriteReportingChanges(0x9C, width: .byte, value: 0xFF)
        #expect(query.changes == .smbase)
        #expect(mch.configRead(0x9C, width: .byte) == 0x01)
        _ = mch.configWrite(0x9C, width: .byte, value: 0x02)
        #expect(mch.configRead(0x9C, width: .byte) == 0x02)
        #expect(mch.smbaseWindow.map { [$0.base, $0.size] } == [0x30000, 0x20000])
        _ = mch.configWrite(0x9C, width: .byte, value: 0xFF)
        #expect(mch.configRead(0x9C, width: .byte) == 0x02)
    }

    @Test func extendedTSEGQueryAnswersTheSize() {
        #expect(mch.configRead(0x50, width: .word) == 16)
        _ = mch.configWrite(0x50, width: .word, value: 0x1234)
        #expect(mch.configRead(0x50, width: .word) == 0x1234)
        _ = mch.configWrite(0x50, width: .word, value: 0xFFFF)
        #expect(mch.configRead(0x50, width: .word) == 16)
        let other = Q35HostBridge(extendedTSEGMegabytes: 64)
        _ = other.configWrite(0x50, width: .word, value: 0xFFFF)
        #expect(other.configRead(0x50, width: .word) == 64)
    }

    @Test func toludIsPlainStorage() {
        #expect(mch.tolud == 0)
        _ = mch.configWrite(0xB0, width: .word, value: 0x8001)
        #expect(mch.tolud == 0x8000_0000)
    }
}

@Suite struct ICH9LPCTests {
    let lpc = ICH9LPC()

    @Test func pirqRoutesAreDisabledAtResetAndDecodeIRQEN() {
        for pirq in PIRQ.allCases { #expect(lpc.pirqRoute(pirq) == nil) }
        var result = lpc.configWriteReportingChanges(0x60, width: .dword, value: 0x0B0A_0905)
        #expect(result.changes == .pirqRoutes)
        #expect(result.effects.contains(.deviceSpecific))
        #expect([PIRQ.a, .b, .c, .d].map { lpc.pirqRoute($0) } == [5, 9, 10, 11])
        result = lpc.configWriteReportingChanges(0x68, width: .dword, value: 0x8B7F_0F03)
        #expect([PIRQ.e, .f, .g, .h].map { lpc.pirqRoute($0) } == [3, 15, 15, nil])
        // Routes still reach the IOAPIC at GSI 16-23 whatever the ISA route.
        #expect(PIRQ.h.apicGSI == GSI(23))
    }

    @Test func pinToPIRQFollowsQEMU() {
        // Slots with a DxxIR register: INTA-D -> PIRQA-D at reset.
        for slot: UInt8 in [25, 26, 27, 28, 29, 31] {
            #expect(INTxPin.allCases.map { lpc.pirq(forSlot: slot, pin: $0) } == [.a, .b, .c, .d])
        }
        // The DMI-to-PCI bridge slot: PIRQE-H.
        #expect(INTxPin.allCases.map { lpc.pirq(forSlot: 30, pin: $0) } == [.e, .f, .g, .h])
        // Everything else rotates through PIRQE-H.
        #expect(INTxPin.allCases.map { lpc.pirq(forSlot: 0, pin: $0) } == [.e, .f, .g, .h])
        #expect(INTxPin.allCases.map { lpc.pirq(forSlot: 1, pin: $0) } == [.f, .g, .h, .e])
        #expect(INTxPin.allCases.map { lpc.pirq(forSlot: 2, pin: $0) } == [.g, .h, .e, .f])
        #expect(lpc.pirq(forSlot: 24, pin: .a) == .e)

        // The chipset configuration block rewrites the table; D30IR is ignored.
        let change = lpc.chipsetConfigWrite(0x3140, width: .word, value: 0x7654)
        #expect(change == .pinRouting)
        #expect(INTxPin.allCases.map { lpc.pirq(forSlot: 31, pin: $0) } == [.e, .f, .g, .h])
        #expect(lpc.chipsetConfigWrite(0x3142, width: .word, value: 0x3210).isEmpty)
        #expect(lpc.pirq(forSlot: 30, pin: .a) == .e)
        lpc.reset()
        #expect(lpc.pirq(forSlot: 31, pin: .a) == .a)
    }

    @Test func chipsetConfigBlockDefaultsAndEdges() {
        #expect(lpc.chipsetConfigRead(0x3140, width: .dword) == 0x0000_3210)
        #expect(lpc.chipsetConfigRead(0x3144, width: .dword) == 0x3210_3210)
        #expect(lpc.chipsetConfigRead(0x3410, width: .dword) == 0x20)
        // Offsets wrap within the 16 KiB block; accesses past its end are cut short.
        #expect(lpc.chipsetConfigRead(0x4000 + 0x3140, width: .word) == 0x3210)
        lpc.chipsetConfigWrite(0x3FFE, width: .qword, value: .max)
        #expect(lpc.chipsetConfigRead(0x3FFE, width: .dword) == 0xFFFF)
    }

    @Test func pmBaseNeedsACPIEnable() {
        #expect(lpc.configRead(0x40, width: .dword) == 1)
        #expect(lpc.pmBase == nil)
        var result = lpc.configWriteReportingChanges(0x40, width: .dword, value: 0x0000_0601)
        #expect(result.changes == .acpi)
        #expect(lpc.pmBase == nil)
        result = lpc.configWriteReportingChanges(0x44, width: .byte, value: 0x80)
        #expect(result.changes == .acpi)
        #expect(lpc.pmBase == 0x600)
        #expect(lpc.sciIRQ == 9)
        _ = lpc.configWrite(0x44, width: .byte, value: 0x84)
        #expect(lpc.sciIRQ == 20)
        _ = lpc.configWrite(0x44, width: .byte, value: 0x83)
        #expect(lpc.sciIRQ == nil)
        // QEMU's PMBASE mask: bits 15:7 plus 2:0 (its ACPI_CNTL mask landed on PMBASE).
        _ = lpc.configWrite(0x40, width: .dword, value: 0xFFFF_FFFF)
        #expect(lpc.configRead(0x40, width: .dword) == 0xFF87)
        #expect(lpc.pmBase == 0xFF80)
        _ = lpc.configWrite(0x40, width: .dword, value: 0)
        #expect(lpc.pmBase == nil)
    }

    @Test func rcbaEnable() {
        #expect(lpc.rcba == nil)
        let result = lpc.configWriteReportingChanges(0xF0, width: .dword, value: 0xFED1_C001)
        #expect(result.changes == .rcba)
        #expect(lpc.rcba == 0xFED1_C000)
        _ = lpc.configWrite(0xF0, width: .dword, value: 0xFED1_FFFF)
        #expect(lpc.rcba == 0xFED1_C000)
        _ = lpc.configWrite(0xF0, width: .byte, value: 0)
        #expect(lpc.rcba == nil)
    }

    @Test func smiLockSticksUntilReset() {
        #expect(!lpc.smiLocked)
        let result = lpc.configWriteReportingChanges(0xA0, width: .word, value: 0x0010)
        #expect(result.changes == .pmControl)
        #expect(lpc.smiLocked)
        _ = lpc.configWrite(0xA0, width: .word, value: 0x0000)
        #expect(lpc.genPMCon1 == 0x0010)
        _ = lpc.configWrite(0xA0, width: .word, value: 0xFFEF)
        #expect(lpc.genPMCon1 == 0xFFFF)
        _ = lpc.configWrite(0xA2, width: .dword, value: 0x1234_5678)
        #expect(lpc.genPMCon2 == 0x5678 && lpc.genPMCon3 == 0x1234)
        lpc.reset()
        #expect(!lpc.smiLocked)
        _ = lpc.configWrite(0xA0, width: .word, value: 0x00EF)
        #expect(lpc.genPMCon1 == 0x00EF)
    }
}

/// Hostile guest writes: every offset, every width, many values. Bits neither writable nor
/// write-1-to-clear (as the mask stood before the write) never change, except where a
/// register's documented side effect moves them; bytes outside the access never change;
/// the identity and everything past 0xFF stay as QEMU shows them.
@Suite struct Q35HostileWriteTests {
    /// Per function: bytes and bits a write may change beyond its masks.
    /// MCH: 0x50-0x51 the extended-TSEG answer, 0x9C the SMBASE handshake, 0x9D D_OPEN
    /// cleared by D_LCK.
    static let mchSideEffects: [Int: UInt8] = [0x50: 0xFF, 0x51: 0xFF, 0x9C: 0xFF, 0x9D: 0x40]

    func hammer(_ function: any PCIFunction, sideEffects: [Int: UInt8], seed: UInt64) {
        var rng = SplitMix64(state: seed)
        // Vendor, device, revision, class, header type and subsystem IDs.
        let identityOffsets = Array(0..<4) + Array(8..<0x0C) + [0x0E] + Array(0x2C..<0x30)
        let identity = identityOffsets.map { function.configSnapshot().bytes[$0] }
        for round in 0..<3 {
            for width in [AccessWidth.byte, .word, .dword] {
                for offset in stride(from: 0, through: 4096 - width.bytes, by: round == 0 ? 1 : 3) {
                    let value: UInt32 = switch rng.next() % 4 {
                    case 0: 0xFFFF_FFFF
                    case 1: 0
                    default: UInt32(truncatingIfNeeded: rng.next())
                    }
                    let before = function.configSnapshot()
                    _ = function.configWrite(offset, width: width, value: value)
                    let after = function.configSnapshot()
                    for o in 0..<ConfigSpace.conventionalSize {
                        let changed = before.bytes[o] ^ after.bytes[o]
                        guard changed != 0 else { continue }
                        let inAccess = o >= offset && o < offset + width.bytes
                        let allowed = inAccess
                            ? before.writable[o] | before.writeOneToClear[o] | (sideEffects[o] ?? 0) : 0
                        #expect(changed & ~allowed == 0,
                                "\(function.name) byte 0x\(hex(o, 2)) bits \(hex(changed & ~allowed, 2)) changed by \(width) write of \(hex(value, 8)) at 0x\(hex(offset, 3))")
                    }
                }
            }
        }
        let final = function.configSnapshot()
        #expect(identityOffsets.map { final.bytes[$0] } == identity)
        for o in stride(from: 0x100, to: 4096, by: 4) {
            #expect(function.configRead(o, width: .dword) == 0xFFFF_FFFF)
        }
    }

    @Test func hostileWritesToTheMCH() {
        hammer(Q35HostBridge(), sideEffects: Self.mchSideEffects, seed: 0x35)
    }

    @Test func hostileWritesToTheLPC() {
        hammer(ICH9LPC(), sideEffects: [:], seed: 0x1F)
    }

    @Test func resetUndoesHostileWrites() {
        let mch = Q35HostBridge(), lpc = ICH9LPC()
        let pristine = (mch.configSnapshot(), lpc.configSnapshot())
        for o in 0..<256 {
            _ = mch.configWrite(o, width: .byte, value: 0xFF)
            _ = lpc.configWrite(o, width: .byte, value: 0xFF)
        }
        #expect(mch.smram.locked && lpc.smiLocked)
        mch.reset()
        lpc.reset()
        #expect(mch.configSnapshot() == pristine.0)
        #expect(lpc.configSnapshot() == pristine.1)
        #expect(mch.ecamWindow == nil && lpc.rcba == nil && lpc.pmBase == nil)
    }
}
