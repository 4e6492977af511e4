import AddressSpace
import Chipset
import PCI
import Synchronization
import Testing
import VMMBase

final class EffectLog: ConfigEffectSink {
    let entries = Mutex<[(ConfigWriteEffects, PCIAddress)]>([])
    func apply(_ effects: ConfigWriteEffects, from function: any PCIFunction, at address: PCIAddress) {
        entries.withLock { $0.append((effects, address)) }
    }
}

/// Bus 0 with a test endpoint at 00:02.0, a bridge at 00:03.0 and an endpoint behind it,
/// reachable only through CF8/CFC port I/O as a guest reaches it.
struct PortRig {
    let root: PCIRootComplex
    let ports: FlatView
    let bridge: PCIBridge
    let log = EffectLog()

    init() throws {
        let bus = PCIBus(name: "pcie.0")
        root = PCIRootComplex(rootBus: bus, effectSink: log)
        try bus.attach(PCITestDevice(name: "t0", multiFunction: true), at: 2 << 3)
        try bus.attach(PCITestDevice(name: "t0f3"), at: 2 << 3 | 3)
        try bus.attach(PCITestDevice(name: "lonely"), at: 4 << 3 | 1)  // no function 0
        bridge = try PCIBridge(name: "br")
        try bus.attach(bridge, at: 3 << 3)
        try bridge.secondary.attach(PCITestDevice(name: "behind"), at: 0)
        let address = ConfigAddressPort()
        var io = Region.container("io", size: 1 << 16)
        io.add(.leaf("cf8", size: 4, handler: address), at: 0xCF8)
        io.add(.leaf("cfc", size: 4, handler: ConfigDataPort(address: address, root: root)), at: 0xCFC)
        ports = FlatView(rendering: io)
    }

    func select(bus: UInt8, devfn: UInt8, offset: Int, enable: Bool = true) {
        ports.write(at: 0xCF8, width: .dword,
                    value: (enable ? 0x8000_0000 : 0) | UInt64(bus) << 16 | UInt64(devfn) << 8 | UInt64(offset))
    }

    func read(bus: UInt8, devfn: UInt8, offset: Int, width: AccessWidth = .dword) -> UInt64 {
        select(bus: bus, devfn: devfn, offset: offset & 0xFC)
        return ports.read(at: 0xCFC + UInt64(offset & 3), width: width)
    }
}

@Suite struct ConfigAccessTests {
    @Test func dataPortReadsEveryWidthAndOffset() throws {
        let rig = try PortRig()
        #expect(rig.read(bus: 0, devfn: 2 << 3, offset: 0) == 0x0005_1B36)
        #expect(rig.read(bus: 0, devfn: 2 << 3, offset: 0, width: .word) == 0x1B36)
        #expect(rig.read(bus: 0, devfn: 2 << 3, offset: 2, width: .word) == 0x0005)
        #expect(rig.read(bus: 0, devfn: 2 << 3, offset: 1, width: .byte) == 0x1B)
        #expect(rig.read(bus: 0, devfn: 2 << 3, offset: 3, width: .byte) == 0x00)
        #expect(rig.read(bus: 0, devfn: 2 << 3, offset: 0x0B, width: .byte) == 0x00)
        #expect(rig.read(bus: 0, devfn: 2 << 3, offset: 0x0A, width: .byte) == 0xFF)
    }

    @Test func addressLatchedOnlyByDwordWrites() throws {
        let rig = try PortRig()
        rig.select(bus: 0, devfn: 2 << 3, offset: 0)
        rig.ports.write(at: 0xCF8, width: .byte, value: 0x08)    // ignored
        rig.ports.write(at: 0xCFA, width: .word, value: 0x0001)  // ignored
        #expect(rig.ports.read(at: 0xCF8, width: .dword) == 0x8000_1000)
        #expect(rig.ports.read(at: 0xCFC, width: .dword) == 0x0005_1B36)
        // Reserved low bits read back as zero.
        rig.ports.write(at: 0xCF8, width: .dword, value: 0x8000_1003)
        #expect(rig.ports.read(at: 0xCF8, width: .dword) == 0x8000_1000)
    }

    @Test func disabledAddressReadsAllOnesAndDropsWrites() throws {
        let rig = try PortRig()
        rig.select(bus: 0, devfn: 2 << 3, offset: 0x3C, enable: false)
        #expect(rig.ports.read(at: 0xCFC, width: .dword) == 0xFFFF_FFFF)
        rig.ports.write(at: 0xCFC, width: .byte, value: 0x0A)
        #expect(rig.read(bus: 0, devfn: 2 << 3, offset: 0x3C, width: .byte) == 0)
    }

    @Test func absentFunctionsReadAllOnes() throws {
        let rig = try PortRig()
        #expect(rig.read(bus: 0, devfn: 5 << 3, offset: 0) == 0xFFFF_FFFF)
        // Function 1 of slot 4 exists but function 0 does not: invisible.
        #expect(rig.read(bus: 0, devfn: 4 << 3 | 1, offset: 0) == 0xFFFF_FFFF)
        // Function 3 of a multi-function device is visible.
        #expect(rig.read(bus: 0, devfn: 2 << 3 | 3, offset: 0) == 0x0005_1B36)
        // Bus 7 is behind no bridge.
        #expect(rig.read(bus: 7, devfn: 0, offset: 0) == 0xFFFF_FFFF)
    }

    @Test func otherBusesAreReachedOnlyThroughBridgeBusNumbers() throws {
        let rig = try PortRig()
        // Before the bridge has bus numbers, bus 1 does not exist.
        #expect(rig.read(bus: 1, devfn: 0, offset: 0) == 0xFFFF_FFFF)
        rig.select(bus: 0, devfn: 3 << 3, offset: Reg.primaryBus)
        rig.ports.write(at: 0xCFC, width: .dword, value: 0x0002_0100)  // primary 0, secondary 1, subordinate 2
        #expect(rig.read(bus: 1, devfn: 0, offset: 0) == 0x0005_1B36)
        #expect(rig.read(bus: 2, devfn: 0, offset: 0) == 0xFFFF_FFFF)
        // Renumber: secondary 5. Bus 1 disappears, bus 5 answers.
        rig.select(bus: 0, devfn: 3 << 3, offset: Reg.primaryBus)
        rig.ports.write(at: 0xCFC, width: .dword, value: 0x0005_0500)
        #expect(rig.read(bus: 1, devfn: 0, offset: 0) == 0xFFFF_FFFF)
        #expect(rig.read(bus: 5, devfn: 0, offset: 0) == 0x0005_1B36)
        let effects = rig.log.entries.withLock { $0 }
        #expect(effects.contains { $0.0.contains(.busNumbersChanged) && $0.1 == PCIAddress(bus: 0, device: 3, function: 0) })
    }

    @Test func dataPortWritesReachTheRegisterAtCFCPlusN() throws {
        let rig = try PortRig()
        rig.select(bus: 0, devfn: 2 << 3, offset: 0x3C)
        rig.ports.write(at: 0xCFC, width: .byte, value: 0x0B)
        rig.select(bus: 0, devfn: 2 << 3, offset: 0x0C)
        rig.ports.write(at: 0xCFC, width: .byte, value: 0x10)   // cache line size
        rig.ports.write(at: 0xCFD, width: .byte, value: 0x20)   // latency timer: read-only here
        #expect(rig.read(bus: 0, devfn: 2 << 3, offset: 0x3C, width: .byte) == 0x0B)
        #expect(rig.read(bus: 0, devfn: 2 << 3, offset: 0x0C, width: .word) == 0x0010)
    }

    @Test func accessesRunningPastCFFAreSplit() throws {
        let rig = try PortRig()
        rig.select(bus: 0, devfn: 2 << 3, offset: 0)
        // A dword at 0xCFE covers 0xCFE-0xCFF (device ID) and 0xD00-0xD01 (nothing).
        #expect(rig.ports.read(at: 0xCFE, width: .dword) == 0xFFFF_0005)
    }

    @Test func configWriteEffectsReachTheSink() throws {
        let rig = try PortRig()
        rig.select(bus: 0, devfn: 2 << 3, offset: 0x14)
        rig.ports.write(at: 0xCFC, width: .dword, value: 0xC000_0000)
        rig.select(bus: 0, devfn: 2 << 3, offset: Reg.command)
        rig.ports.write(at: 0xCFC, width: .word, value: 0x2)
        let effects = rig.log.entries.withLock { $0.map(\.0) }
        #expect(effects == [.bar(1), .decodingChanged])
    }

    @Test func offsetsOutsideConfigSpaceReadAllOnesAndAreDropped() throws {
        let rig = try PortRig()
        for offset in [4096, 4097, 1 << 20, -1, Int.max] {
            #expect(rig.root.configRead(bus: 0, devfn: 2 << 3, offset: offset, width: .dword) == 0xFFFF_FFFF)
            rig.root.configWrite(bus: 0, devfn: 2 << 3, offset: offset, width: .dword, value: 0)
        }
        // A dword at 4094 reaches the last two bytes and no further.
        #expect(rig.root.configRead(bus: 0, devfn: 2 << 3, offset: 4094, width: .dword) == 0xFFFF_FFFF)
        #expect(rig.log.entries.withLock { $0.isEmpty })
    }

    @Test func ecamDecodesBusDeviceFunctionAndRegister() throws {
        let rig = try PortRig()
        let ecam = ECAMHandler(root: rig.root)
        #expect(ecam.read(offset: UInt64(2 << 3) << 12, width: .dword) == 0x0005_1B36)
        #expect(ecam.read(offset: UInt64(2 << 3 | 3) << 12 | 2, width: .word) == 0x0005)
        // Extended space of a conventional function reads as absent.
        #expect(ecam.read(offset: UInt64(2 << 3) << 12 | 0x100, width: .dword) == 0xFFFF_FFFF)
        // A qword access is two dwords.
        #expect(ecam.read(offset: UInt64(2 << 3) << 12 | 4, width: .qword) == 0x00FF_0000_0010_0000)  // status has the capability-list bit
        // A misaligned dword crossing into the next function is split.
        let crossing = ecam.read(offset: UInt64(2 << 3 | 2) << 12 | 0xFFE, width: .dword)
        #expect(crossing == 0x1B36_FFFF)
        ecam.write(offset: 1 << 20, width: .dword, value: 0)  // bus 1 absent: dropped
    }
}
