import PCI
import PCIPassthrough
import TestRequirements
import Testing
import VMMBase

/// The overlay over QEMU 10's igb (an SR-IOV PF with MSI, MSI-X, PCIe, AER, ARI) as a VFIO
/// config region would give it.
@Suite("virtual config space of an assigned igb")
struct VirtualConfigSpaceTests {
    static let guestLink = GuestPCIExpressPosition.behindPort(speed: .gt8, width: 4)

    static func igb(position: GuestPCIExpressPosition = guestLink,
                    quirks: [VFIOQuirk]? = nil) throws -> (VirtualConfigSpace, CapturedDevice) {
        let host = try QEMUFixtures.config("igb")
        let bars = VirtualBARs.descriptors(host: host, regionSizes: try QEMUFixtures.regionSizes("igb"))
        #expect(bars.skipped.isEmpty)
        let table = try VFIOQuirkTable.builtIn()
        let space = try VirtualConfigSpace(host: host, bars: bars.bars, romSize: nil, position: position,
                                           quirks: quirks ?? table.quirks(vendorID: 0x8086, deviceID: 0x10C9))
        return (space, CapturedDevice(host))
    }

    @Test("BAR sizing answers as QEMU's own igb does, and never reaches the device")
    func barSizingMatchesQEMU() throws {
        var (space, device) = try Self.igb()
        for (offset, qemu) in try QEMUFixtures.sizingAnswers("igb").sorted(by: { $0.key < $1.key }) {
            _ = space.write(offset, width: .dword, value: 0xFFFF_FFFF, host: device)
            #expect(space.read(offset, width: .dword, host: device) == qemu,
                    "offset 0x\(String(offset, radix: 16)): QEMU answers 0x\(String(qemu, radix: 16))")
        }
        #expect(device.writes.filter { (0x10..<0x34).contains($0.offset) }.isEmpty)
    }

    @Test("odd patterns keep only the address bits above the BAR's size (PCI 3.0, 6.2.5.1)")
    func oddBARPatterns() throws {
        var (space, device) = try Self.igb()
        let effects = space.write(0x10, width: .dword, value: 0x1234_5677, host: device)
        #expect(effects.contains(.bar(0)))
        #expect(space.read(0x10, width: .dword, host: device) == 0x1234_0000)  // 128 KiB, 32-bit memory
        _ = space.write(0x18, width: .dword, value: 0x0000_C0DE, host: device)
        #expect(space.read(0x18, width: .dword, host: device) == 0x0000_C0C1)  // 32-byte I/O: bit 0 stays set
        _ = space.write(0x1F, width: .byte, value: 0xAB, host: device)         // a byte into BAR 3's top
        _ = space.write(0x20, width: .word, value: 0xBEEF, host: device)       // half of its upper dword
        #expect(space.read(0x1C, width: .dword, host: device) == 0xAB00_0004)
        #expect(space.read(0x20, width: .dword, host: device) == 0x0000_BEEF)
        #expect(space.cells.barAddress(3) == 0x0000_BEEF_AB00_0000)
        _ = space.write(0x24, width: .dword, value: 0xFFFF_FFFF, host: device)  // not a BAR (BAR 3's pair ends at 0x23)
        #expect(space.read(0x24, width: .dword, host: device) == 0)
        #expect(device.writes.filter { (0x10..<0x28).contains($0.offset) }.isEmpty)
    }

    @Test("real lspci sees the guest's link, MSI-X in BAR 3 and no SR-IOV capability")
    func lspciDecodesTheGuestView() throws {
        try require(RealLspci.isInstalled, RealLspci.missing)
        let (space, device) = try Self.igb()
        let view = space.merged(host: device)
        let output = try RealLspci.decode([("01:00.0", Array(view.bytes))], arguments: ["-vvv"])
        for line in ["Express (v2) Endpoint", "LnkCap:\tPort #0, Speed 8GT/s, Width x4", "LnkSta:\tSpeed 8GT/s, Width x4",
                     "MSI: Enable- Count=1/1 Maskable+ 64bit+", "MSI-X: Enable- Count=10 Masked-",
                     "Vector table: BAR=3 offset=00000000", "PBA: BAR=3 offset=00002000",
                     "Advanced Error Reporting", "Alternative Routing-ID Interpretation (ARI)",
                     "Region 2: I/O ports at <unassigned>", "Region 3: Memory at <unassigned> (64-bit, non-prefetchable)"] {
            #expect(output.contains(line), "lspci -vvv lacks \"\(line)\"")
        }
        #expect(!output.contains("SR-IOV"))
        #expect(!output.contains("<BAD"))
        // The host's own bytes do carry SR-IOV: the fixture is what we think it is.
        let hostOutput = try RealLspci.decode([("01:00.0", try QEMUFixtures.config("igb"))], arguments: ["-vvv"])
        #expect(hostOutput.contains("Single Root I/O Virtualization (SR-IOV)"))
        #expect(hostOutput.contains("LnkCap:\tPort #0, Speed 2.5GT/s, Width x1"))
    }

    @Test("the hidden SR-IOV capability reads zero, leaves the chain, and writes stay out of the device")
    func sriovIsHidden() throws {
        var (space, device) = try Self.igb()
        let host = try QEMUFixtures.config("igb")
        let sriov = try #require(HostCapabilities.walk(host).first { $0.kind == .extended(ExtendedCapabilityID.sriov) })
        #expect(space.hidden.map(\.kind).contains(.extended(ExtendedCapabilityID.sriov)))
        for offset in stride(from: sriov.offset, to: sriov.offset + sriov.span, by: 4) {
            #expect(space.read(offset, width: .dword, host: device) == 0)
        }
        // NumVFs (0x10) and VF Enable (control, 0x08): a guest that knows the offset gets nowhere.
        _ = space.write(sriov.offset + 0x10, width: .word, value: 8, host: device)
        _ = space.write(sriov.offset + 0x08, width: .word, value: 0x0009, host: device)
        #expect(device.writes.isEmpty)
        // Every extended capability the guest can walk to is one the host has, and SR-IOV is not among them.
        let walked = HostCapabilities.walk(Array(space.merged(host: device).bytes))
        #expect(walked.map(\.kind) == HostCapabilities.walk(host).map(\.kind).filter { $0 != .extended(ExtendedCapabilityID.sriov) })
    }

    @Test("ARI's Next Function is the guest's (0: alone in its slot), whatever the host's says")
    func ariNextFunctionIsVirtualized() throws {
        try require(RealLspci.isInstalled, RealLspci.missing)
        var host = try QEMUFixtures.config("igb")
        let ari = try #require(HostCapabilities.walk(host).first { $0.kind == .extended(ExtendedCapabilityID.ari) })
        // A host PF whose ARI chain goes on to function 2 (as a multi-function device's would).
        host[ari.offset + ARIRegister.capability + 1] = 2
        let hostOutput = try RealLspci.decode([("01:00.0", host)], arguments: ["-vvv"])
        #expect(hostOutput.contains("Next Function: 2"))
        let bars = VirtualBARs.descriptors(host: host, regionSizes: try QEMUFixtures.regionSizes("igb"))
        let space = try VirtualConfigSpace(host: host, bars: bars.bars, romSize: nil, position: Self.guestLink,
                                           quirks: try VFIOQuirkTable.builtIn().quirks(vendorID: 0x8086, deviceID: 0x10C9))
        let output = try RealLspci.decode([("01:00.0", Array(space.merged(host: CapturedDevice(host)).bytes))], arguments: ["-vvv"])
        #expect(output.contains("Alternative Routing-ID Interpretation (ARI)"))
        #expect(output.contains("Next Function: 0"))
        #expect(!output.contains("Next Function: 2"))
    }

    @Test("Command: decode enables pass through and are followed; host-only bits never reach the device")
    func commandIsFiltered() throws {
        var (space, device) = try Self.igb()
        let effects = space.write(Reg.command, width: .word, value: 0xFFFF, host: device)
        #expect(effects.contains(.decodingChanged))
        #expect(space.cells.command.contains([.io, .memory, .busMaster]))
        #expect(!device.writes.isEmpty)
        #expect(device.readConfig(Reg.command, width: .word) == 0x0507)
    }

    @Test("MSI is ours: enabling it changes nothing in the device and reports msiChanged")
    func msiIsEmulated() throws {
        var (space, device) = try Self.igb()
        let msi = try #require(space.cells.capability(.msi)).offset
        let effects = space.write(msi + 2, width: .word, value: 1, host: device)
        #expect(effects.contains(.msiChanged))
        #expect(space.cells.msiState?.enabled == true)
        #expect(space.read(msi, width: .dword, host: device) >> 16 & 1 == 1)
        #expect(device.writes.isEmpty)
    }

    @Test("status comes from the device: its interrupt bit shows, the capability list bit is ours")
    func statusMixesDeviceAndEmulatedBits() throws {
        let (space, device) = try Self.igb()
        device.poke(Reg.status, width: 2, value: UInt64(StatusBits.interrupt.rawValue))
        let status = space.read(Reg.status, width: .word, host: device)
        #expect(status & UInt32(StatusBits.interrupt.rawValue) != 0)
        #expect(status & UInt32(StatusBits.capabilityList.rawValue) != 0)
    }

    @Test("on the root bus the function is a Root Complex Integrated Endpoint without a link, as QEMU presents it")
    func rootComplexIntegrated() throws {
        try require(RealLspci.isInstalled, RealLspci.missing)
        let (space, device) = try Self.igb(position: .rootComplexIntegrated)
        let output = try RealLspci.decode([("00:03.0", Array(space.merged(host: device).bytes))], arguments: ["-vvv"])
        #expect(output.contains("Express (v2) Root Complex Integrated Endpoint"))
        #expect(!output.contains("LnkCap"))
    }

    @Test("behind a conventional bridge the PCI Express capability is hidden; MSI-X still follows PM and MSI")
    func conventionalBus() throws {
        let (space, device) = try Self.igb(position: .conventionalBus)
        let kinds = HostCapabilities.walk(Array(space.merged(host: device).bytes.prefix(256))).map(\.kind)
        #expect(kinds == [.standard(CapabilityID.powerManagement), .msi, .msix])
    }

    @Test("a device-specific read-only quirk keeps those bits in the device as they are")
    func readOnlyQuirk() throws {
        let quirk = VFIOQuirk(vendorID: 0x8086, deviceID: 0x10C9, action: .readOnly(offset: 0xA8, width: 2, mask: 0x00E0))
        var (space, device) = try Self.igb(quirks: [quirk])
        let before = device.readConfig(0xA8, width: .word)
        _ = space.write(0xA8, width: .word, value: 0xFFFF, host: device)
        let after = device.readConfig(0xA8, width: .word)
        #expect(after & 0x00E0 == before & 0x00E0)
        #expect(after & 0xFF1F == 0xFF1F)
    }
}

@Suite("hostile config writes to an assigned igb")
struct HostileConfigWriteTests {
    @Test("20,000 random writes: BARs, ROM, MSI, MSI-X and the hidden SR-IOV capability never reach the device")
    func randomWrites() throws {
        var (space, device) = try VirtualConfigSpaceTests.igb()
        let host = try QEMUFixtures.config("igb")
        let sriov = try #require(HostCapabilities.walk(host).first { $0.kind == .extended(ExtendedCapabilityID.sriov) })
        let msi = try #require(space.cells.capability(.msi)), msix = try #require(space.cells.capability(.msix))
        // BARs, ROM BAR, capability pointer, interrupt line and pin are ours (0x28-0x2F, CardBus CIS
        // and subsystem IDs, are the device's read-only registers: writes may pass).
        let guarded = [0x10..<0x28, 0x30..<0x35, 0x3C..<0x3E, msi.offset..<(msi.offset + msi.length), msix.offset..<(msix.offset + msix.length),
                       sriov.offset..<(sriov.offset + sriov.span)]
        var random = SplitMix64(state: 13)
        for _ in 0..<20_000 {
            let width = [AccessWidth.byte, .word, .dword].randomElement(using: &random)!
            let offset = Int.random(in: 0..<(4096 / width.bytes), using: &random) * width.bytes
            _ = space.write(offset, width: width, value: UInt32.random(in: 0...UInt32.max, using: &random), host: device)
            _ = space.read(Int.random(in: 0..<1024, using: &random) * 4, width: .dword, host: device)
        }
        for write in device.writes {
            let bytes = write.offset..<(write.offset + write.width.bytes)
            #expect(!guarded.contains { $0.overlaps(bytes) }, "a write at 0x\(String(write.offset, radix: 16)) reached the device")
        }
        // Whatever the guest wrote, the BARs still decode only their own sizes' address bits.
        #expect(space.read(0x10, width: .dword, host: device) & 0x1_FFFF == 0)
        #expect(space.read(0x18, width: .dword, host: device) & 0x1F == 1)
    }
}

@Suite("host capability chains")
struct HostCapabilitiesTests {
    @Test("igb's chains as lspci lists them")
    func igbChains() throws {
        let caps = HostCapabilities.walk(try QEMUFixtures.config("igb"))
        #expect(caps.map(\.offset) == [0x40, 0x50, 0x70, 0xA0, 0x100, 0x150, 0x160])
        #expect(caps.last?.kind == .extended(ExtendedCapabilityID.sriov))
    }

    @Test("a chain that loops ends instead of hanging")
    func loopingChain() {
        var bytes = [UInt8](repeating: 0, count: 4096)
        bytes[Reg.status] = UInt8(StatusBits.capabilityList.rawValue)
        bytes[Reg.capabilitiesPointer] = 0x40
        bytes[0x40] = 0x01; bytes[0x41] = 0x50
        bytes[0x50] = 0x05; bytes[0x51] = 0x40   // back to 0x40
        LittleEndian.store(0x1_0001 | 0x100 << 20, into: &bytes, at: 0x100, count: 4)  // points at itself
        let caps = HostCapabilities.walk(bytes)
        #expect(caps.map(\.offset) == [0x40, 0x50, 0x100])
    }
}

@Suite("VFIO quirk table (DeviceTables/vfio-quirks.txt)")
struct VFIOQuirkTableTests {
    @Test("the built-in table hides SR-IOV of every device")
    func builtIn() throws {
        let table = try VFIOQuirkTable.builtIn()
        #expect(table.quirks(vendorID: 0x1234, deviceID: 0x5678).contains {
            $0.action == .hide(.extended(ExtendedCapabilityID.sriov))
        })
    }

    @Test("rules match their device only; malformed lines name their line")
    func parsing() throws {
        let table = try VFIOQuirkTable(parsing: "# c\n\n10de 1db6 hide-capability 0x09  # vendor cap\n* * read-only 0x40 4 0xff\n")
        #expect(table.quirks(vendorID: 0x10DE, deviceID: 0x1DB6).count == 2)
        #expect(table.quirks(vendorID: 0x10DE, deviceID: 0x1DB7).count == 1)
        #expect(throws: VFIOQuirkTableError(line: 2, reason: "'10d' is not 4 hex digits or *")) {
            try VFIOQuirkTable(parsing: "\n10d * hide-capability 9")
        }
        #expect(throws: VFIOQuirkTableError.self) { try VFIOQuirkTable(parsing: "* * read-only 0x41 2 0xffff") }
        #expect(throws: VFIOQuirkTableError.self) { try VFIOQuirkTable(parsing: "* * read-only 0x40 1 0x1ff") }
        #expect(throws: VFIOQuirkTableError.self) { try VFIOQuirkTable(parsing: "* * unhide 3") }
    }
}
