import Foundation
import Testing
import HostDevices
import PCI
import TestRequirements
import VMMBase
@testable import Control

/// A small q35-like machine after firmware enumeration: host bridge, LPC/ISA bridge, a
/// PCI-PCI bridge with its windows programmed and an endpoint behind it.
enum LspciFixture {
    static func address(_ bus: UInt8, _ device: UInt8, _ function: UInt8) -> PCIAddress {
        PCIAddress(bus: bus, device: device, function: function)!
    }

    static func hostBridge() -> ConfigSpace {
        var cs = ConfigSpace(layout: .endpoint, express: true)
        cs.setIdentity(PCIIdentity(vendorID: 0x8086, deviceID: 0x29C0, classCode: 0x060000,
                                   subsystemVendorID: 0x1AF4, subsystemID: 0x1100))
        return cs
    }

    static func isaBridge() -> ConfigSpace {
        var cs = ConfigSpace(layout: .endpoint, express: false)
        cs.setIdentity(PCIIdentity(vendorID: 0x8086, deviceID: 0x2918, revision: 0x02, classCode: 0x060100,
                                   subsystemVendorID: 0x1AF4, subsystemID: 0x1100))
        cs.setMultiFunction(true)
        cs.write(Reg.command, width: .word, value: 0x0007)
        return cs
    }

    static func pciBridge() throws -> ConfigSpace {
        var cs = ConfigSpace(layout: .bridge, express: false)
        cs.setIdentity(PCIIdentity(vendorID: 0x1B36, deviceID: 0x0001, classCode: 0x060400))
        try cs.defineBAR(0, BARDescriptor(.memory32(prefetchable: false), size: 256))
        let slotID = try cs.addCapability(id: 0x04, length: 4)
        cs.set(slotID + 2, width: 2, value: 0x0022)  // 2 slots, first in chassis, chassis 0
        let msi = try cs.addCapability(id: CapabilityID.msi, length: 24)
        cs.set(msi + 2, width: 2, value: 0x0180)  // 64-bit, per-vector masking
        try cs.addCapability(id: CapabilityID.hotPlug, length: 8)
        let ssvid = try cs.addCapability(id: CapabilityID.bridgeSubsystemVendor, length: 8)
        cs.set(ssvid + 4, width: 4, value: 0x1100_1AF4)
        let pm = try cs.addCapability(id: CapabilityID.powerManagement, length: 8)
        cs.set(pm + 2, width: 2, value: 0x0003)
        cs.setInterruptPin(1)
        // What firmware programs: bus numbers, windows, then decoding.
        cs.write(Reg.interruptLine, width: .byte, value: 10)
        cs.write(ConfigSpace.barOffset(0), width: .dword, value: 0xFEA0_0000)
        cs.write(Reg.primaryBus, width: .byte, value: 0)
        cs.write(Reg.secondaryBus, width: .byte, value: 1)
        cs.write(Reg.subordinateBus, width: .byte, value: 1)
        cs.write(Reg.ioBase, width: .byte, value: 0x10)
        cs.write(Reg.ioLimit, width: .byte, value: 0x10)
        cs.write(Reg.memoryBase, width: .word, value: 0xFE80)
        cs.write(Reg.memoryLimit, width: .word, value: 0xFE90)
        cs.write(Reg.prefetchBase, width: .word, value: 0x0000)
        cs.write(Reg.prefetchLimit, width: .word, value: 0x0010)
        cs.write(Reg.prefetchBaseUpper, width: .dword, value: 0x8)
        cs.write(Reg.prefetchLimitUpper, width: .dword, value: 0x8)
        cs.write(Reg.bridgeControl, width: .word, value: 0x0003)
        cs.write(Reg.command, width: .word, value: 0x0107)
        return cs
    }

    static func endpoint() throws -> ConfigSpace {
        var cs = ConfigSpace(layout: .endpoint, express: true)
        cs.setIdentity(PCIIdentity(vendorID: 0x1B36, deviceID: 0x0005, revision: 0x01, classCode: 0x00FF00,
                                   subsystemVendorID: 0x1AF4, subsystemID: 0x1100))
        try cs.defineBAR(0, BARDescriptor(.io, size: 256))
        try cs.defineBAR(1, BARDescriptor(.memory32(prefetchable: false), size: 4096))
        try cs.defineBAR(2, BARDescriptor(.memory64(prefetchable: true), size: 16384))
        try cs.defineROM(size: 256 * 1024)
        let pm = try cs.addCapability(id: CapabilityID.powerManagement, length: 8)
        cs.set(pm + 2, width: 2, value: 0x0003)
        let express = try cs.addCapability(id: CapabilityID.pciExpress, length: 0x3C)
        cs.set(express + 2, width: 2, value: 0x0002)  // version 2, endpoint
        let msix = try cs.addCapability(id: CapabilityID.msix, length: 12)
        cs.set(msix + 2, width: 2, value: 0x0003)  // 4 vectors
        cs.set(msix + 4, width: 4, value: 0x0000_0001)  // table in BAR 1
        cs.set(msix + 8, width: 4, value: 0x0000_0801)  // PBA in BAR 1 at 0x800
        try cs.addExtendedCapability(id: ExtendedCapabilityID.aer, version: 2, length: 0x48)
        let dsn = try cs.addExtendedCapability(id: 0x0003, version: 1, length: 12)
        cs.set(dsn + 4, width: 8, value: 0x0123_4567_89AB_CDEF)
        try cs.addExtendedCapability(id: ExtendedCapabilityID.ari, version: 1, length: 8)
        cs.setInterruptPin(1)
        cs.write(Reg.interruptLine, width: .byte, value: 11)
        cs.write(ConfigSpace.barOffset(0), width: .dword, value: 0x1000)
        cs.write(ConfigSpace.barOffset(1), width: .dword, value: 0xFE80_0000)
        cs.write(ConfigSpace.barOffset(2), width: .dword, value: 0x0000_0000)
        cs.write(ConfigSpace.barOffset(3), width: .dword, value: 0x8)
        cs.write(Reg.romType0, width: .dword, value: 0xFE84_0000)  // placed, not enabled
        cs.write(Reg.command, width: .word, value: 0x0007)
        return cs
    }

    static func functions() throws -> [(address: PCIAddress, config: [UInt8])] {
        [
            (address(0, 0, 0), hostBridge().bytes),
            (address(0, 0x1F, 0), isaBridge().bytes),
            (address(0, 3, 0), try pciBridge().bytes),
            (address(1, 0, 0), try endpoint().bytes),
        ]
    }
}

let names = PCINameDatabase()

@Suite("lspci renderer against the real lspci")
struct LspciRendererTests {
    let renderer: LspciRenderer
    let dump: String

    init() throws {
        renderer = LspciRenderer(try LspciFixture.functions(), view: .configDump, names: names)
        dump = renderer.render(LspciOptions(hexDump: 4))
        if let path = ProcessInfo.processInfo.environment["SWITCHYARD_LSPCI_DUMP"] {
            try dump.write(toFile: path, atomically: true, encoding: .utf8)  // for looking at by hand
        }
    }

    @Test("identical output", arguments: [
        ["-n"], ["-nn"], [], ["-t"], ["-tv"], ["-tvnn"], ["-tn"], ["-x"], ["-xxx"], ["-xxxx"], ["-nnxxx"],
        ["-v"], ["-vnn"], ["-vn"], ["-vx"],
    ])
    func matchesRealLspci(_ arguments: [String]) throws {
        let ours = renderer.render(try LspciOptions(arguments: arguments))
        let theirs = try RealLspci.decode(dump: dump, arguments: arguments)
        #expect(!theirs.isEmpty)
        #expect(ours == theirs, "lspci \(arguments.joined(separator: " ")):\n--- ours\n\(ours)--- real\n\(theirs)")
    }

    /// -vv: every line we print must be one lspci prints (capability bodies we do not decode,
    /// such as PCI Express's DevCap/LnkCap, are left out).
    @Test func veryVerboseLinesAreLspcisLines() throws {
        let ours = renderer.render(try LspciOptions(arguments: ["-vv"]))
        let theirs = try RealLspci.decode(dump: dump, arguments: ["-vv"])
        let theirLines = Set(theirs.split(separator: "\n", omittingEmptySubsequences: false))
        let missing = ours.split(separator: "\n", omittingEmptySubsequences: false).filter { !theirLines.contains($0) }
        #expect(missing.isEmpty, "lines lspci -vv does not print: \(missing)\n--- real\n\(theirs)")
    }

    @Test func guestViewShowsKernelResources() throws {
        var functions = try LspciFixture.functions().map { LspciFunction(address: $0.address, config: $0.config) }
        functions[3].resources = .init(barSizes: [256, 4096, 16384, 0, 0, 0], romSize: 256 * 1024, irq: 11)
        let guest = LspciRenderer(functions: functions, view: .guestKernel, names: names)
        let text = guest.render(LspciOptions(verbosity: 1))
        #expect(text.contains("\tI/O ports at 1000 [size=256]\n"))
        #expect(text.contains("\tMemory at fe800000 (32-bit, non-prefetchable) [size=4K]\n"))
        #expect(text.contains("\tMemory at 800000000 (64-bit, prefetchable) [size=16K]\n"))
        #expect(text.contains("\tExpansion ROM at fe840000 [disabled] [size=256K]\n"))
        // The upper half of the 64-bit BAR is no resource of its own in sysfs.
        #expect(!text.contains("<unassigned>"))
        #expect(text.contains("\tI/O behind bridge: 00001000-00001fff [size=4K] [32-bit]\n"))
        #expect(text.contains("\tPrefetchable memory behind bridge: 0000000800000000-00000008001fffff [size=2M] [64-bit]\n"))
        #expect(text.contains("\tBus: primary=00, secondary=01, subordinate=01, sec-latency=0\n"))
    }

    @Test func conventionalFunctionsShow256Bytes() throws {
        let text = renderer.render(LspciOptions(hexDump: 4))
        let blocks = text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        let lineCounts = blocks.map { $0.split(separator: "\n").count - 1 }
        // host bridge (extended), ISA bridge, PCI bridge (conventional), endpoint (express)
        #expect(lineCounts == [256, 16, 16, 256])
    }
}

@Suite("lspci dump parsing")
struct LspciDumpTests {
    @Test func roundTripsThroughRenderer() throws {
        let functions = try LspciFixture.functions()
        let renderer = LspciRenderer(functions, view: .configDump, names: names)
        for level in [1, 3, 4] {
            let text = renderer.render(LspciOptions(verbosity: level == 3 ? 1 : 0, hexDump: level))
            let parsed = try LspciDump.parse(text)
            #expect(parsed.map(\.address) == functions.map(\.address).sorted())
            for (address, config) in parsed {
                let original = functions.first { $0.address == address }!.config
                let expectedLength = level == 1 ? 64 : level == 3 ? 256
                    : LspciFunction(address: address, config: original).readableSize
                #expect(config == Array(original.prefix(expectedLength)), "\(address) at -\(String(repeating: "x", count: level))")
            }
            // Rendering the parsed dump again gives the same text.
            if level == 4 {
                let again = LspciRenderer(parsed, view: .configDump, names: names)
                #expect(again.render(LspciOptions(hexDump: 4)) == text)
            }
        }
    }

    @Test func parsesDomainsAndIgnoresOtherLines() throws {
        let text = """
            0001:02:03.4 Ethernet controller: Something
            \tSubsystem: whatever
            00: 86 80 00 10
            10: ff

            """
        let parsed = try LspciDump.parse(text)
        #expect(parsed.count == 1)
        #expect(parsed[0].address == PCIAddress(segment: 1, bus: 2, device: 3, function: 4))
        #expect(parsed[0].config.count == 17)
        #expect(parsed[0].config[0...3] == [0x86, 0x80, 0x00, 0x10])
        #expect(parsed[0].config[4] == 0xFF)
    }

    @Test func rejectsMalformedHexLines() {
        #expect(throws: LspciDump.ParseError.malformedLine(number: 2, text: "00: 86 8")) {
            try LspciDump.parse("00:00.0 Host bridge\n00: 86 8\n")
        }
    }
}

@Suite("lspci options")
struct LspciOptionsTests {
    @Test func combinedLettersCountAsLspciCounts() throws {
        let options = try LspciOptions(arguments: ["-tvnn", "-xxx"])
        #expect(options == LspciOptions(numbering: .namesAndNumbers, verbosity: 1, hexDump: 3, tree: true))
        #expect(throws: LspciOptions.ParseError.unsupportedOption("k")) { try LspciOptions(arguments: ["-k"]) }
    }
}

@Suite("PCI names from libpci")
struct PCINameDatabaseTests {
    @Test func fallbacksMatchLspci() {
        #expect(names.vendorAndDevice(vendor: 0x8086, device: 0x29C0).hasPrefix("Intel Corporation"))
        #expect(names.vendorAndDevice(vendor: 0x8086, device: 0xFFFE) == "Intel Corporation Device fffe")
        #expect(names.vendorAndDevice(vendor: 0x8086, device: 0x29C0, numbering: .numbers) == "8086:29c0")
        #expect(names.className(0x0600, numbering: .namesAndNumbers) == "Host bridge [0600]")
        #expect(names.programmingInterface(classCode: 0x0C03, progIf: 0x30) == "XHCI")
    }
}

/// A deeper topology for the tree: nested bridges, a bridge with an empty secondary bus,
/// multi-function devices and a root bus with no bridge above it (as a PCI expander's).
@Suite("lspci tree on nested topologies")
struct LspciTreeTests {
    static func bridge(_ secondary: UInt8, _ subordinate: UInt8, primary: UInt8) -> [UInt8] {
        var cs = ConfigSpace(layout: .bridge, express: false)
        cs.setIdentity(PCIIdentity(vendorID: 0x1B36, deviceID: 0x0001, classCode: 0x060400))
        cs.write(Reg.primaryBus, width: .byte, value: UInt32(primary))
        cs.write(Reg.secondaryBus, width: .byte, value: UInt32(secondary))
        cs.write(Reg.subordinateBus, width: .byte, value: UInt32(subordinate))
        return cs.bytes
    }

    static func device(_ vendor: UInt16, _ device: UInt16, _ classCode: UInt32) -> [UInt8] {
        var cs = ConfigSpace(layout: .endpoint, express: false)
        cs.setIdentity(PCIIdentity(vendorID: vendor, deviceID: device, classCode: classCode))
        return cs.bytes
    }

    static let functions: [(address: PCIAddress, config: [UInt8])] = {
        let a = LspciFixture.address
        return [
            (a(0, 0, 0), device(0x8086, 0x29C0, 0x060000)),
            (a(0, 1, 0), bridge(1, 3, primary: 0)),
            (a(0, 2, 0), device(0x1AF4, 0x1041, 0x020000)),
            (a(0, 3, 0), bridge(4, 4, primary: 0)),
            (a(0, 0x1F, 0), device(0x8086, 0x2918, 0x060100)),
            (a(0, 0x1F, 2), device(0x8086, 0x2922, 0x010601)),
            (a(0, 0x1F, 3), device(0x8086, 0x2930, 0x0C0500)),
            (a(1, 0, 0), bridge(2, 2, primary: 1)),
            (a(1, 1, 0), bridge(3, 3, primary: 1)),
            (a(1, 2, 0), device(0x1AF4, 0x1042, 0x010000)),
            (a(2, 0, 0), device(0x1AF4, 0x1041, 0x020000)),
            (a(2, 1, 0), device(0x1234, 0xABCD, 0xFF0000)),
            (a(3, 0, 0), device(0x1AF4, 0x1048, 0x010000)),
            (a(0x10, 0, 0), device(0x1AF4, 0x1041, 0x020000)),
        ]
    }()

    @Test("tree identical to lspci -F", arguments: [["-t"], ["-tv"], ["-tvnn"], ["-tn"]])
    func matchesRealLspci(_ arguments: [String]) throws {
        let renderer = LspciRenderer(Self.functions, view: .configDump, names: names)
        let dump = renderer.render(LspciOptions(hexDump: 3))
        let ours = renderer.render(try LspciOptions(arguments: arguments))
        let theirs = try RealLspci.decode(dump: dump, arguments: arguments)
        #expect(ours == theirs, "--- ours\n\(ours)--- real\n\(theirs)")
    }

    /// In the guest, lspci knows each device's parent bridge from sysfs, so nesting follows
    /// the hardware: bus 2 hangs under 01:00.0, bus 3 under 01:01.0.
    @Test func guestViewNestsByParent() {
        let renderer = LspciRenderer(Self.functions, view: .guestKernel, names: names)
        let expected = """
            -+-[0000:00]-+-00.0
             |           +-01.0-[01-03]--+-00.0-[02]--+-00.0
             |           |               |            \\-01.0
             |           |               +-01.0-[03]----00.0
             |           |               \\-02.0
             |           +-02.0
             |           +-03.0-[04]--
             |           +-1f.0
             |           +-1f.2
             |           \\-1f.3
             \\-[0000:10]---00.0

            """
        #expect(renderer.render(LspciOptions(tree: true)) == expected)
    }
}
