import Chipset
import Machine
import PCI
import Synchronization
import Testing
import VMMBase

/// SR-IOV and ARI played as Linux's pci_iov plays them (drivers/pci/iov.c: ARI Forwarding on
/// the port, ARI Capable Hierarchy, System Page Size, VF BARs, NumVFs, then VF Enable with VF
/// MSE), through ECAM config cycles and MMIO only. Expected values come from the PCIe Base
/// spec (7.3.1: only device 0 below a downstream port without ARI Forwarding) and SR-IOV 1.1
/// (capability layout; VF routing ID = PF + First VF Offset + n * Stride; VF n's BAR at
/// aperture + n * per-VF size; VF header: Vendor/Device FFFFh, BARs and Memory Space RO 0).
@Suite(.serialized) struct SRIOVMachineTests {
    static let ecamBase = Q35Layout.standard.ecamBase
    // SR-IOV register offsets (SR-IOV 1.1, 3.3), spelled here from the spec, not the code.
    static let control = 0x08, initialVFs = 0x0C, totalVFs = 0x0E, numVFs = 0x10, firstVFOffset = 0x14
    static let vfStride = 0x16, vfDeviceID = 0x1A, supportedPageSizes = 0x1C, systemPageSize = 0x20, vfBAR0 = 0x24
    static let vfEnable: UInt32 = 1 << 0, vfMSE: UInt32 = 1 << 3, ariCapableHierarchy: UInt32 = 1 << 4

    static func configuration(_ devices: [String]) throws -> MachineConfiguration {
        MachineConfiguration(devices: try devices.map { try DeviceSpec(parsing: $0) })
    }

    struct Rig {
        let machine: Machine
        let ecam: ECAMConfigCycles
        let port: PCIAddress
        let bus: UInt8
        let memoryWindow: AddressRange
        let sriov: Int
        let portExpress: Int

        init(maxVFs: Int = 12, extra: [String] = []) throws {
            machine = try Machine(SRIOVMachineTests.configuration(
                ["pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2", "pci-testdev,id=pf,bus=rp1,sriov_max_vfs=\(maxVFs)"] + extra))
            let report = try machine.runFirmware()
            ecam = ECAMConfigCycles(machine, base: SRIOVMachineTests.ecamBase)
            let rp = try #require(report.functions.first { $0.address.shortDescription == "00:02.0" })
            port = rp.address
            bus = try #require(rp.busNumbers).secondary
            memoryWindow = try #require(rp.windows[.memory])
            sriov = try #require(Self.extendedCapability(0x0010, ecam: ecam, bus: bus, devfn: 0))
            portExpress = try #require(Self.standardCapability(0x10, ecam: ecam, bus: 0, devfn: rp.address.devfn))
        }

        /// Walks the extended capability list from 0x100 as software does.
        static func extendedCapability(_ id: UInt32, ecam: ECAMConfigCycles, bus: UInt8, devfn: UInt8) -> Int? {
            var offset = 0x100
            for _ in 0..<64 where offset >= 0x100 {
                let header = ecam.read(bus: bus, devfn: devfn, offset: offset, width: .dword)
                if header & 0xFFFF == id { return offset }
                offset = Int(header >> 20)
            }
            return nil
        }

        static func standardCapability(_ id: UInt32, ecam: ECAMConfigCycles, bus: UInt8, devfn: UInt8) -> Int? {
            var offset = Int(ecam.read(bus: bus, devfn: devfn, offset: 0x34, width: .byte))
            for _ in 0..<48 where offset != 0 {
                if ecam.read(bus: bus, devfn: devfn, offset: offset, width: .byte) == id { return offset }
                offset = Int(ecam.read(bus: bus, devfn: devfn, offset: offset + 1, width: .byte))
            }
            return nil
        }

        func pf(_ offset: Int, _ width: AccessWidth = .word) -> UInt32 { ecam.read(bus: bus, devfn: 0, offset: offset, width: width) }
        func setPF(_ offset: Int, _ width: AccessWidth = .word, _ value: UInt32) { ecam.write(bus: bus, devfn: 0, offset: offset, width: width, value: value) }
        func read(_ devfn: UInt8, _ offset: Int, _ width: AccessWidth = .dword) -> UInt32 { ecam.read(bus: bus, devfn: devfn, offset: offset, width: width) }

        /// Device Control 2 bit 5 of the root port, as pci_enable_ari sets it.
        func setARIForwarding(_ on: Bool) {
            let offset = portExpress + 0x28
            let value = ecam.read(bus: 0, devfn: port.devfn, offset: offset, width: .word)
            ecam.write(bus: 0, devfn: port.devfn, offset: offset, width: .word, value: on ? value | 1 << 5 : value & ~(1 << 5))
        }

        /// The VF aperture: the upper half of the port's memory window (the PF's BARs are below).
        var aperture: UInt64 { memoryWindow.base + memoryWindow.size! / 2 }

        /// sriov_enable: page size, VF BAR 0, NumVFs, then VF Enable + VF MSE (+ ARI Capable Hierarchy).
        func enable(_ count: Int, pageSizeBit: UInt32 = 1) {
            setARIForwarding(true)
            setPF(sriov + SRIOVMachineTests.control, .word, SRIOVMachineTests.ariCapableHierarchy)
            setPF(sriov + SRIOVMachineTests.systemPageSize, .dword, pageSizeBit)
            setPF(sriov + SRIOVMachineTests.vfBAR0, .dword, UInt32(aperture))
            setPF(sriov + SRIOVMachineTests.numVFs, .word, UInt32(count))
            setPF(sriov + SRIOVMachineTests.control, .word,
                  SRIOVMachineTests.vfEnable | SRIOVMachineTests.vfMSE | SRIOVMachineTests.ariCapableHierarchy)
        }

        /// A function answers: its class/revision dword is not all-ones (a VF's Vendor/Device ID is).
        func answers(_ devfn: UInt8) -> Bool { read(devfn, 0x08) != 0xFFFF_FFFF }
    }

    @Test func linkBelowAPortAnswersOnlyDeviceZeroWithoutARIForwarding() throws {
        let rig = try Rig(extra: ["pci-testdev,id=second,bus=rp1,addr=0x1"])
        #expect(rig.read(0, 0x00) == 0x0005_1B36)
        #expect(rig.read(1 << 3, 0x00) == 0xFFFF_FFFF, "device 1 on a link must master-abort")
        #expect(rig.read(3 << 3, 0x00) == 0xFFFF_FFFF)
        // With ARI Forwarding, device and function form one 8-bit function number: routing ID 8 answers.
        rig.setARIForwarding(true)
        #expect(rig.read(1 << 3, 0x00) == 0x0005_1B36)
        rig.setARIForwarding(false)
        #expect(rig.read(1 << 3, 0x00) == 0xFFFF_FFFF)
    }

    @Test func capabilityAdvertisesWhatTheDeviceDocuments() throws {
        let rig = try Rig(maxVFs: 12)
        #expect(rig.pf(rig.sriov + Self.initialVFs) == 12 && rig.pf(rig.sriov + Self.totalVFs) == 12)
        #expect(rig.pf(rig.sriov + Self.firstVFOffset) == 1 && rig.pf(rig.sriov + Self.vfStride) == 1)
        #expect(rig.pf(rig.sriov + Self.vfDeviceID) == 0x1005)
        #expect(rig.pf(rig.sriov + Self.supportedPageSizes, .dword) == 0x553)
        #expect(rig.pf(rig.sriov + Self.systemPageSize, .dword) == 1)
        #expect(Rig.extendedCapability(0x000E, ecam: rig.ecam, bus: rig.bus, devfn: 0) != nil, "PF has ARI")
        // VF BAR 0 sizes as a 4 KiB 32-bit memory BAR; VF BARs 1-5 are absent.
        rig.setPF(rig.sriov + Self.vfBAR0, .dword, 0xFFFF_FFFF)
        #expect(rig.pf(rig.sriov + Self.vfBAR0, .dword) == 0xFFFF_F000)
        rig.setPF(rig.sriov + Self.vfBAR0 + 4, .dword, 0xFFFF_FFFF)
        #expect(rig.pf(rig.sriov + Self.vfBAR0 + 4, .dword) == 0)
        // A 64 KiB system page makes each VF's share a page (SR-IOV 3.3.14).
        rig.setPF(rig.sriov + Self.systemPageSize, .dword, 1 << 4)
        rig.setPF(rig.sriov + Self.vfBAR0, .dword, 0xFFFF_FFFF)
        #expect(rig.pf(rig.sriov + Self.vfBAR0, .dword) == 0xFFFF_0000)
    }

    @Test func vfsAnswerAtTheirRoutingIDsOnlyWhileEnabled() throws {
        let rig = try Rig(maxVFs: 12)
        for devfn in UInt8(1)...14 { #expect(!rig.answers(devfn), "nothing at function \(devfn) before VF Enable") }
        rig.enable(10)
        let pfClass = rig.pf(0x08, .dword)
        for n in 0..<10 {
            let devfn = UInt8(1 + n)  // PF function 0 + First VF Offset 1 + n * Stride 1
            #expect(rig.read(devfn, 0x00) == 0xFFFF_FFFF, "VF Vendor/Device ID read FFFFh")
            #expect(rig.read(devfn, 0x08) == pfClass)
            #expect(rig.read(devfn, 0x0C) & 0x007F_0000 == 0, "type 0 header")
            for bar in 0..<6 {
                rig.ecam.write(bus: rig.bus, devfn: devfn, offset: 0x10 + 4 * bar, width: .dword, value: 0xFFFF_FFFF)
                #expect(rig.read(devfn, 0x10 + 4 * bar) == 0, "VF BAR\(bar) is RO zero")
            }
            rig.ecam.write(bus: rig.bus, devfn: devfn, offset: 0x04, width: .word, value: 0x0007)
            #expect(rig.read(devfn, 0x04, .word) == 0x0004, "only Bus Master is the VF's own")
            #expect(Rig.standardCapability(0x10, ecam: rig.ecam, bus: rig.bus, devfn: devfn) != nil, "VF has a PCIe capability")
        }
        for devfn in UInt8(11)...14 { #expect(!rig.answers(devfn), "only NumVFs VFs exist") }

        // VF n's BAR 0 is aperture + n * 4 KiB, and reaches the function at VF n's routing ID.
        for n in 0..<10 {
            rig.machine.mmioWrite(rig.aperture + UInt64(n) * 0x1000 + 0x10, width: .dword, value: 0xA000 + UInt64(n))
        }
        for n in 0..<10 {
            let vf = try #require(rig.machine.rootComplex.function(bus: rig.bus, devfn: UInt8(1 + n)))
            #expect(vf.barRead(0, offset: 0x10, width: .dword) == 0xA000 + UInt64(n))
            #expect(rig.machine.mmioRead(rig.aperture + UInt64(n) * 0x1000 + 0x10, width: .dword) == 0xA000 + UInt64(n))
        }
        // VF MSE off: the apertures stop decoding, the VFs stay.
        rig.setPF(rig.sriov + Self.control, .word, Self.vfEnable | Self.ariCapableHierarchy)
        #expect(rig.machine.mmioRead(rig.aperture + 0x10, width: .dword) != 0xA000)
        #expect(rig.answers(1))

        // Without ARI Forwarding only functions 0-7 are reachable on the link.
        rig.setARIForwarding(false)
        #expect(rig.answers(7) && !rig.answers(8) && !rig.answers(10))
        rig.setARIForwarding(true)
        #expect(rig.answers(8) && rig.answers(10))

        // VF Enable off: every VF and its BARs are gone; re-enabling brings fresh VFs.
        rig.setPF(rig.sriov + Self.control, .word, Self.ariCapableHierarchy)
        for devfn in UInt8(1)...10 { #expect(!rig.answers(devfn)) }
        #expect(rig.machine.reachableFunctions().filter { $0.address.bus == rig.bus }.count == 1)
        rig.enable(3)
        #expect(rig.answers(3) && !rig.answers(4))
        #expect(rig.machine.mmioRead(rig.aperture + 2 * 0x1000 + 0x10, width: .dword) == 0, "a re-enabled VF starts from reset")
        #expect(rig.machine.reachableFunctions().filter { $0.address.bus == rig.bus }.count == 4)
    }

    /// VFs implement Function Level Reset (SR-IOV 1.1): Initiate FLR (Device Control bit 15)
    /// returns one VF to its reset state and leaves the others alone.
    @Test func functionLevelResetOfOneVF() throws {
        let rig = try Rig(maxVFs: 2)
        rig.enable(2)
        let express = try #require(Rig.standardCapability(0x10, ecam: rig.ecam, bus: rig.bus, devfn: 1))
        #expect(rig.read(1, express + 4) & (1 << 28) != 0, "Device Capabilities: FLR capable")
        for devfn in UInt8(1)...2 {
            rig.ecam.write(bus: rig.bus, devfn: devfn, offset: 0x04, width: .word, value: 0x0004)
            rig.machine.mmioWrite(rig.aperture + UInt64(devfn - 1) * 0x1000, width: .dword, value: 0x77)
        }
        rig.ecam.write(bus: rig.bus, devfn: 1, offset: express + 8, width: .word, value: 1 << 15)
        #expect(rig.read(1, 0x04, .word) == 0 && rig.machine.mmioRead(rig.aperture, width: .dword) == 0)
        #expect(rig.read(2, 0x04, .word) == 0x0004 && rig.machine.mmioRead(rig.aperture + 0x1000, width: .dword) == 0x77)
    }

    @Test func largerSystemPageSpacesVFBARsAPageApart() throws {
        let rig = try Rig(maxVFs: 4)
        rig.enable(4, pageSizeBit: 1 << 4)  // 64 KiB
        for n in 0..<4 { rig.machine.mmioWrite(rig.aperture + UInt64(n) << 16, width: .dword, value: 0xB0 + UInt64(n)) }
        for n in 0..<4 {
            let vf = try #require(rig.machine.rootComplex.function(bus: rig.bus, devfn: UInt8(1 + n)))
            #expect(vf.barRead(0, offset: 0, width: .dword) == 0xB0 + UInt64(n))
        }
    }

    @Test func hotUnplugOfThePFTakesItsVFs() throws {
        let rig = try Rig(maxVFs: 8)
        rig.enable(8)
        #expect(rig.answers(8))
        rig.machine.mmioWrite(rig.aperture + 7 * 0x1000, width: .dword, value: 0x5A5A)
        #expect(rig.machine.mmioRead(rig.aperture + 7 * 0x1000, width: .dword) == 0x5A5A)
        let deleted = Mutex<[String?]>([])
        _ = rig.machine.addEventListener { event in
            if case .deviceDeleted(let id, _) = event { deleted.withLock { $0.append(id) } }
        }
        try rig.machine.unplug(id: "pf", mode: .surprise)
        #expect(deleted.withLock { $0 } == ["pf"])
        for devfn in UInt8(0)...8 { #expect(rig.read(devfn, 0x00) == 0xFFFF_FFFF) }
        #expect(rig.machine.mmioRead(rig.aperture + 7 * 0x1000, width: .dword) != 0x5A5A, "VF 8's BAR left with it")
        #expect(rig.machine.reachableFunctions().allSatisfy { $0.address.bus != rig.bus })
    }

    @Test func vfsPastTheBusOrOnAttachedFunctionsAreRefusedWithAGuestError() throws {
        let lines = Mutex<[String]>([])
        GuestErrorLog.setSink { line in lines.withLock { $0.append(line) } }
        defer { GuestErrorLog.setSink(nil) }
        // A PF at 00:1e.0 (devfn 240) on the root bus: VF n at devfn 240 + n, so VF 8 lands on
        // the LPC at 1f.0, VF 15 is at 1f.7 and VFs 16-20 would need the next bus number.
        let machine = try Machine(Self.configuration(["pci-testdev,id=pf0,addr=0x1e,sriov_max_vfs=20"]))
        try machine.runFirmware()
        let ecam = ECAMConfigCycles(machine, base: Self.ecamBase)
        let sriov = try #require(Rig.extendedCapability(0x0010, ecam: ecam, bus: 0, devfn: 0x1E << 3))
        ecam.write(bus: 0, devfn: 0x1E << 3, offset: sriov + Self.numVFs, width: AccessWidth.word, value: 20)
        ecam.write(bus: 0, devfn: 0x1E << 3, offset: sriov + Self.control, width: AccessWidth.word, value: Self.vfEnable)
        #expect(ecam.read(bus: 0, devfn: 0x1E << 3 | 1, offset: 0x08, width: .dword) != 0xFFFF_FFFF, "VF 1 at 1e.1")
        #expect(ecam.read(bus: 0, devfn: 0x1F << 3, offset: 0x00, width: .dword) == 0x2918_8086, "the LPC keeps 1f.0")
        #expect(ecam.read(bus: 0, devfn: 0x1F << 3 | 7, offset: 0x08, width: .dword) != 0xFFFF_FFFF, "VF 15 at 1f.7")
        let text = lines.withLock { $0 }.joined(separator: "\n")
        #expect(text.contains("VF 8 would sit at 00:1f.0, where lpc is"))
        #expect(text.contains("VFs 16-20 would sit on the bus after 00"))
    }

    @Test(arguments: [("sriov_max_vfs=0", "from 1 to 255"), ("sriov_max_vfs=256", "from 1 to 255"),
                      ("sriov_max_vfs=many", "from 1 to 255"), ("sriov_max_vfs=4,express=off", "drop express=off")])
    func badSRIOVPropertiesNameTheFix(_ properties: String, _ fix: String) throws {
        #expect {
            try Machine(Self.configuration(["pci-testdev,id=pf,\(properties)"]))
        } throws: { error in
            "\(error)".contains("sriov_max_vfs") && "\(error)".contains(fix)
        }
    }
}
