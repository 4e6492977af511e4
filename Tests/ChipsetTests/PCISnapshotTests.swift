import Chipset
import Foundation
import Interrupts
import PCI
import Testing
import VMMBase

/// Guest accesses to a PCI function, as a guest's config cycles and BAR MMIO would make them.
enum FunctionAccess {
    case configRead(Int, AccessWidth)
    case configWrite(Int, AccessWidth, UInt32)
    case barRead(Int, UInt64, AccessWidth)
    case barWrite(Int, UInt64, AccessWidth, UInt64)
}

/// The answers a function gives to `script`, in order (writes answer with their effects).
func answers(_ function: any PCIFunction, _ script: [FunctionAccess]) -> [String] {
    script.map { access in
        switch access {
        case .configRead(let offset, let width): "\(function.configRead(offset, width: width))"
        case .configWrite(let offset, let width, let value): "\(function.configWrite(offset, width: width, value: value))"
        case .barRead(let bar, let offset, let width): "\(function.barRead(bar, offset: offset, width: width))"
        case .barWrite(let bar, let offset, let width, let value):
            { function.barWrite(bar, offset: offset, width: width, value: value); return "" }()
        }
    }
}

/// Every config dword of a function's config space.
func everyConfigDword(_ function: any PCIFunction) -> [FunctionAccess] {
    stride(from: 0, to: function.configSnapshot().size, by: 4).map { .configRead($0, .dword) }
}

/// Every dword of BAR `bar` up to `size` bytes.
func everyBARDword(_ bar: Int, size: UInt64) -> [FunctionAccess] {
    stride(from: 0, to: size, by: 4).map { .barRead(bar, $0, .dword) }
}

/// Drives `original` with `setup`, moves its state into `fresh` with `restore`, and expects
/// both to answer `compare` and then `further` identically, with the same interrupts raised.
/// The oracle is the original model itself, read only through the guest's accessors, never
/// through the snapshot.
func expectRestoredAnswersAsOriginal(_ original: any InterruptingFunction, _ fresh: any InterruptingFunction,
                                     setup: [FunctionAccess], compare: [FunctionAccess], further: [FunctionAccess],
                                     restore: () throws -> Void) throws {
    let originalInterrupts = RecordingInterrupts(), restoredInterrupts = RecordingInterrupts()
    original.connect(interrupts: originalInterrupts)
    fresh.connect(interrupts: restoredInterrupts)
    _ = answers(original, setup)
    let lastINTx = originalInterrupts.take().last { if case .intx = $0 { true } else { false } } ?? .intx(false)
    try restore()
    // A restored function drives its pin as the original last did.
    #expect((restoredInterrupts.take().last ?? .intx(false)) == lastINTx)
    let expected = answers(original, compare)
    #expect(answers(fresh, compare) == expected)
    #expect(answers(fresh, further) == answers(original, further))
    #expect(restoredInterrupts.take() == originalInterrupts.take())
    #expect(fresh.configSnapshot().bytes == original.configSnapshot().bytes)
}

@Suite struct PCISnapshotTests {
    /// pci-testdev (conventional, express, and an SR-IOV PF): BARs placed and decoding, MSI-X
    /// enabled with a programmed, masked vector that fired (its PBA bit set), scratch bytes.
    @Test(arguments: [(false, nil), (true, nil), (true, 4)] as [(Bool, Int?)])
    func testDevice(express: Bool, vfs: Int?) throws {
        let make = { PCITestDevice(name: "td", express: express, sriovMaxVFs: vfs) }
        let original = make()
        let msix = try #require(original.configSnapshot().capability(.msix)).offset
        var setup: [FunctionAccess] = [
            .configWrite(Reg.bar0, .dword, 0xC000), .configWrite(Reg.bar0 + 4, .dword, 0xFEB0_0000),
            .configWrite(Reg.bar0 + 8, .dword, 0xE000_000C), .configWrite(Reg.bar0 + 12, .dword, 0x1),
            .configWrite(Reg.interruptLine, .byte, 11), .configWrite(Reg.command, .word, 0x0407),
            .configWrite(msix + 2, .word, 0xC000),  // MSI-X enabled, function masked
            .barWrite(1, 0x810, .dword, 0xFEE0_1000), .barWrite(1, 0x818, .dword, 0x4031), .barWrite(1, 0x81C, .dword, 0),
            .barWrite(1, 0x100, .dword, 1),  // doorbell vector 1: pending while masked
            .barWrite(0, 0x20, .dword, 0xDEAD_BEEF), .barWrite(2, 0x44, .word, 0x1234),
        ]
        if let sriov = original.configSnapshot().capability(.extended(ExtendedCapabilityID.sriov))?.offset {
            setup += [.configWrite(sriov + 0x10, .word, 3), .configWrite(sriov + 8, .word, 0x9)]  // NumVFs 3, VF Enable + ARI
        }
        let compare = everyConfigDword(original) + everyBARDword(0, size: 256) + everyBARDword(1, size: 4096)
            + everyBARDword(2, size: 256)
        // Unmasking the function sends the pending vector; INTx-style doorbells after MSI-X is off.
        let further: [FunctionAccess] = [.configWrite(msix + 2, .word, 0x8000), .barWrite(1, 0x100, .dword, 1),
                                         .configWrite(msix + 2, .word, 0), .barWrite(1, 0x100, .dword, 0),
                                         .configRead(Reg.status, .word), .barWrite(1, 0x104, .dword, 0)]
        let fresh = make()
        try expectRestoredAnswersAsOriginal(original, fresh, setup: setup, compare: compare, further: further) {
            try fresh.restore(try transported(original.snapshot()))
        }
    }

    /// Both bridge models: bus numbers, windows, Bridge Control, the SHPC programmed through
    /// BAR 0 as shpchp does, and MSI (pci-bridge) enabled.
    @Test(arguments: PCIBridgeFactory.drivers)
    func bridge(driver: String) throws {
        let make = { () throws -> PCIBridge in
            try #require(try PCIBridgeFactory.make(driver: driver, id: "br", properties: driver == "pci-bridge" ? ["chassis_nr": "3"] : [:]) as? PCIBridge)
        }
        let original = try make()
        var setup: [FunctionAccess] = [
            .configWrite(Reg.bar0, .dword, 0xFE80_0000), .configWrite(Reg.primaryBus, .dword, 0x00_05_02_01),
            .configWrite(Reg.ioBase, .word, 0x2010), .configWrite(Reg.memoryBase, .dword, 0xFE90_FE80),
            .configWrite(Reg.command, .word, 0x0007), .configWrite(Reg.bridgeControl, .word, 0x0013),
            .barWrite(0, UInt64(SHPCRegister.serrInt), .dword, 0x0000_0000),
            .barWrite(0, UInt64(SHPCRegister.slot(4)), .dword, 0x001F_0000),
        ]
        if let msi = original.configSnapshot().capability(.msi)?.offset {
            setup += [.configWrite(msi + 4, .dword, 0xFEE0_0000), .configWrite(msi + 12, .word, 0x4055),
                      .configWrite(msi + 2, .word, 0x0001)]
        }
        let compare = everyConfigDword(original) + everyBARDword(0, size: SHPCController.barSize)
        // shpchp powers slot 5 on, then reads the command status.
        let further: [FunctionAccess] = [.barWrite(0, UInt64(SHPCRegister.commandCode), .word, 0x0438),
                                         .barRead(0, UInt64(SHPCRegister.commandStatus), .word),
                                         .barRead(0, UInt64(SHPCRegister.interruptLocator), .dword)]
            + everyBARDword(0, size: SHPCController.barSize)
        let fresh = try make()
        try expectRestoredAnswersAsOriginal(original, fresh, setup: setup, compare: compare, further: further) {
            try fresh.restore(try transported(original.snapshot()))
        }
    }

    /// Every PCIe port model: bus numbers, windows, the slot powered on by the guest with
    /// hot-plug interrupts enabled, MSI-X/MSI enabled where the port has it.
    @Test(arguments: PCIePortFactory.drivers)
    func port(driver: String) throws {
        let make = { () throws -> any PCIExpressPort in
            try #require(try PCIePortFactory.make(driver: driver, id: "p", properties: [:]) as? any PCIExpressPort)
        }
        let original = try make()
        let config = original.configSnapshot()
        var setup: [FunctionAccess] = [
            .configWrite(Reg.primaryBus, .dword, 0x00_06_03_02), .configWrite(Reg.memoryBase, .dword, 0xFEA0_FE90),
            .configWrite(Reg.command, .word, 0x0006), .configWrite(Reg.bridgeControl, .word, 0x0002),
        ]
        if let msix = config.capability(.msix)?.offset {
            setup += [.configWrite(msix + 2, .word, 0x8000), .barWrite(0, 0, .dword, 0xFEE0_2000), .barWrite(0, 8, .dword, 0x22)]
        } else if let msi = config.capability(.msi)?.offset {
            setup += [.configWrite(msi + 4, .dword, 0xFEE0_0000), .configWrite(msi + 2, .word, 0x0001)]
        }
        let express = try #require(config.pciExpressOffset)
        let slotControl = express + PCIExpressRegister.slotControl
        if config.pciExpressSlotState != nil {
            setup += [.configWrite(slotControl, .word, 0x0028)]  // power on, hot-plug interrupt enabled
        }
        let compare = everyConfigDword(original) + everyBARDword(0, size: 64)
        let further: [FunctionAccess] = config.pciExpressSlotState == nil ? [.configRead(Reg.bridgeControl, .word)] : [
            .configWrite(slotControl, .word, 0x0428), .configRead(express + PCIExpressRegister.slotStatus, .word),
            .configWrite(express + PCIExpressRegister.slotStatus, .word, 0x1F), .configRead(slotControl, .dword),
        ]
        let fresh = try make()
        try expectRestoredAnswersAsOriginal(original, fresh, setup: setup, compare: compare, further: further) {
            try fresh.engine.restore(try transported(original.engine.snapshot()))
        }
    }

    /// The MCH with ECAM (PCIEXBAR), PAM, SMRAM and TOLUD programmed as firmware does: every
    /// config dword and the decoded windows agree, and a later SMRAM lock acts alike.
    @Test func mch() throws {
        let original = Q35HostBridge(), fresh = Q35HostBridge()
        let setup: [FunctionAccess] = [
            .configWrite(0x60, .dword, 0xB000_0001), .configWrite(0x64, .dword, 0),  // PCIEXBAR 256 MiB at 0xB0000000
            .configWrite(0x90, .byte, 0x30), .configWrite(0x91, .byte, 0x11), .configWrite(0x96, .byte, 0x33),  // PAM
            .configWrite(0x9D, .byte, 0x4A), .configWrite(0xB0, .word, 0x8000),  // SMRAM open, TOLUD 2 GiB
        ]
        _ = answers(original, setup)
        try fresh.restore(try transported(original.snapshot()))
        let further: [FunctionAccess] = [.configWrite(0x9D, .byte, 0x1A), .configWrite(0x9D, .byte, 0x4A),
                                         .configWrite(0x60, .dword, 0)] + everyConfigDword(original)
        #expect(answers(fresh, everyConfigDword(original)) == answers(original, everyConfigDword(original)))
        #expect(fresh.ecamWindow?.base == original.ecamWindow?.base && fresh.pam == original.pam
                && fresh.smram == original.smram && fresh.tolud == original.tolud)
        #expect(answers(fresh, further) == answers(original, further))
    }

    /// The ICH9 LPC bridge with PMBASE, ACPI control, PIRQ routes, GEN_PMCON and RCBA set,
    /// and a chipset configuration register (D31IR) written through RCBA.
    @Test func lpc() throws {
        let original = ICH9LPC(), fresh = ICH9LPC()
        _ = answers(original, [.configWrite(0x40, .dword, 0x0601), .configWrite(0x44, .byte, 0x80),
                               .configWrite(0x60, .dword, 0x0B0A_800B), .configWrite(0x68, .dword, 0x0A0B_0B0A),
                               .configWrite(0xA0, .word, 0x0210), .configWrite(0xF0, .dword, 0xFED1_C001)])
        _ = original.chipsetConfigWrite(0x3140, width: .word, value: 0x3210)
        try fresh.restore(try transported(original.snapshot()))
        let rcba = stride(from: UInt64(0x3100), to: 0x3160, by: 4)
        #expect(answers(fresh, everyConfigDword(original)) == answers(original, everyConfigDword(original)))
        #expect(rcba.map { fresh.chipsetConfigRead($0, width: .dword) } == rcba.map { original.chipsetConfigRead($0, width: .dword) })
        #expect(PIRQ.allCases.map { fresh.pirqRoute($0) } == PIRQ.allCases.map { original.pirqRoute($0) })
        let further: [FunctionAccess] = [.configWrite(0xA0, .word, 0x0010), .configWrite(0x60, .byte, 0x80)]
            + everyConfigDword(original)
        #expect(answers(fresh, further) == answers(original, further))
    }

    /// A snapshot of one layout is refused by a function of another, which stays as it was.
    @Test func aSnapshotOfAnotherLayoutIsRefused() throws {
        let conventional = PCITestDevice(name: "a"), express = PCITestDevice(name: "b", express: true)
        _ = express.configWrite(Reg.command, width: .word, value: 0x0002)
        let before = answers(conventional, everyConfigDword(conventional))
        #expect(throws: DeviceStateError.self) { try conventional.restore(express.snapshot()) }
        #expect(answers(conventional, everyConfigDword(conventional)) == before)
    }
}
