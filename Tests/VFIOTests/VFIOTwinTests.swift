import Foundation
import HostOS
import TestRequirements
import Testing
import VMMBase
@testable import VFIO

private let qemuInstalled = FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")
private let lspciInstalled = FileManager.default.isExecutableFile(atPath: "/usr/bin/lspci")
private let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Runs a tool, returning its standard output.
private func run(_ tool: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    try #require(process.terminationStatus == 0, "\(tool) \(arguments.joined(separator: " ")) failed")
    return String(decoding: data, as: UTF8.self)
}

/// The twins' identities are QEMU 10's devices (Tests/Oracle/qemu_vfio_twins.py): what the twin
/// derives from them (IDs, BAR kinds, interrupt counts) is checked against real lspci decoding
/// the same dump, and the dumps against a fresh capture from QEMU.
@Suite struct VFIOTwinIdentityTests {
    @Test("live: QEMU 10 still produces the committed twin identities",
          .requires(qemuInstalled, "qemu-system-x86_64 (QEMU 10, scripts/setup.sh) is not installed"),
          .timeLimit(.minutes(1)))
    func liveCapture() throws {
        let out = try FileSystem.makeTemporaryDirectory(prefix: "switchyard-vfio-twins")
        defer { try? FileSystem.removeTree(out) }
        _ = try run("/usr/bin/env", ["python3", repository.appendingPathComponent("Tests/Oracle/qemu_vfio_twins.py").path, out])
        for name in ["qemu10-nvme", "qemu10-igb"] {
            for kind in ["config", "bars"] {
                let file = "\(name).\(kind).txt"
                let live = try String(contentsOfFile: out + "/" + file, encoding: .utf8)
                let committed = try String(contentsOfFile: VFIOTwinIdentity.capturedDirectory + "/" + file, encoding: .utf8)
                #expect(live == committed, "\(file) changed: re-run Tests/Oracle/qemu_vfio_twins.py DeviceTables/vfio-twins")
            }
        }
    }

    /// What `lspci -F DUMP -vv -n` says about the dump: IDs, MSI and MSI-X counts, 64-bit regions.
    struct LspciView {
        var ids = ""
        var msiCount: UInt32 = 0
        var msixCount: UInt32 = 0
        var regions: [Int: String] = [:]
        var hasPin = false

        init(_ text: String) throws {
            for line in text.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                if let match = line.firstMatch(of: /^01:00\.0 [0-9a-f]{4}: ([0-9a-f]{4}:[0-9a-f]{4})/) { ids = String(match.1) }
                if let match = line.firstMatch(of: /MSI: Enable. Count=\d+\/(\d+)/) { msiCount = UInt32(match.1)! }
                if let match = line.firstMatch(of: /MSI-X: Enable. Count=(\d+)/) { msixCount = UInt32(match.1)! }
                if line.hasPrefix("Interrupt: pin") { hasPin = true }
                // Only the function's own regions (the SR-IOV capability lists VF BARs indented further).
                if let match = line.firstMatch(of: /^Region (\d): (.*)$/), regions[Int(match.1)!] == nil {
                    regions[Int(match.1)!] = String(match.2)
                }
            }
        }
    }

    @Test("the identity agrees with lspci on IDs, interrupt counts and BAR kinds",
          .requires(lspciInstalled, "lspci (pciutils, scripts/setup.sh) is not installed"),
          arguments: ["qemu10-nvme", "qemu10-igb"])
    func identityMatchesLspci(name: String) throws {
        let identity = try VFIOTwinIdentity.captured(name)
        let lspci = try LspciView(run("/usr/bin/lspci", ["-F", VFIOTwinIdentity.capturedDirectory + "/\(name).config.txt", "-vv", "-n"]))
        #expect(lspci.ids == String(format: "%04x:%04x", identity.vendorID, identity.deviceID))
        #expect(identity.msiCount == lspci.msiCount)
        #expect(identity.msixCount == lspci.msixCount)
        #expect(identity.intxCount == (lspci.hasPin ? 1 : 0))
        // lspci -F has no sizes: it shows a region only when its register is not all zeros
        // (igb's 32-bit BARs 0 and 1 read 0 at reset), and then its kind from the low bits.
        for bar in identity.bars where LittleEndian.load(identity.config, at: 0x10 + 4 * bar.index, count: 4) != 0 {
            let region = try #require(lspci.regions[bar.index], "lspci shows no region \(bar.index) for \(name)")
            switch bar.kind {
            case .io: #expect(region.hasPrefix("I/O ports"))
            case .memory64(let p): #expect(region.contains("64-bit") && region.contains(p ? ", prefetchable" : "non-prefetchable"))
            case .memory32(let p): #expect(region.contains("32-bit") && region.contains(p ? ", prefetchable" : "non-prefetchable"))
            }
        }
    }

    @Test func sizesDecodedFromQEMUsSizingAnswers() throws {
        // The sizes QEMU's sources give: nvme's BAR0 holds registers, doorbells and MSI-X in 16 KiB;
        // igb (82576): 128 KiB registers, 128 KiB flash, 32 bytes of I/O, 16 KiB MSI-X (e1000 datasheet).
        let nvme = try VFIOTwinIdentity.captured("qemu10-nvme")
        #expect(nvme.vendorID == 0x1b36 && nvme.deviceID == 0x0010)
        #expect(nvme.bars == [.init(index: 0, kind: .memory64(prefetchable: false), size: 0x4000)])
        let igb = try VFIOTwinIdentity.captured("qemu10-igb")
        #expect(igb.vendorID == 0x8086 && igb.deviceID == 0x10c9)
        #expect(igb.bars == [.init(index: 0, kind: .memory32(prefetchable: false), size: 0x20000),
                             .init(index: 1, kind: .memory32(prefetchable: false), size: 0x20000),
                             .init(index: 2, kind: .io, size: 0x20),
                             .init(index: 3, kind: .memory64(prefetchable: false), size: 0x4000)])
        #expect(igb.msixTable?.bar == 3 && igb.msixTable?.offset == 0)
    }

    /// Found by the vfio fuzz target: a device whose MSI-X capability sits in the last four
    /// bytes of a 256-byte config space has its Table Offset/BIR word past the end (PCI 3.0,
    /// 6.8.2: the capability is 12 bytes). The twin reads what lies inside (the control word:
    /// 8 vectors here) and reports no table, instead of reading past its bytes.
    @Test func anMSIXCapabilityCutOffByTheEndOfConfigSpaceHasNoTable() throws {
        var config = [UInt8](repeating: 0, count: 256)
        config[0x06] = 0x10  // Status: Capabilities List
        config[0x34] = 0xFC
        config[0xFC] = 0x11  // MSI-X, next 0
        config[0xFE] = 0x07  // Table Size 7: 8 vectors
        let identity = VFIOTwinIdentity(name: "cut-off", config: config,
                                        bars: [.init(index: 0, kind: .memory32(prefetchable: false), size: 0x1000)])
        #expect(identity.msixCount == 8)
        #expect(identity.msixTable == nil)
        let twin = try VFIOTwinDevice(name: "0000:01:00.0", identity: identity, msixTableTrapped: true)
        let bar0 = try twin.regionInfo(0)
        #expect(bar0.size == 0x1000 && bar0.mappableAreas == [VFIOMappableArea(offset: 0, size: 0x1000)])
    }
}

/// A twin host with one device, opened in the order QEMU's hw/vfio opens it.
private struct TwinSetup {
    let kernel: VFIOTwinKernel
    let twin: VFIOTwinDevice
    let container: any VFIOContainerIO
    let group: any VFIOGroupIO
    let device: any VFIODeviceIO

    init(_ name: String = "qemu10-igb", msixTableTrapped: Bool = false,
         configuration: VFIOTwinContainer.Configuration = .init()) throws {
        let address = PCIAddress(bus: 1, device: 0, function: 0)!
        twin = try VFIOTwinDevice(name: "\(address)", identity: try VFIOTwinIdentity.captured(name), msixTableTrapped: msixTableTrapped)
        kernel = VFIOTwinKernel(devices: [.init(address: address, group: 7, device: twin)], containerConfiguration: configuration,
                                log: twin.log)
        container = try kernel.openContainer()
        #expect(try container.apiVersion() == 0)
        #expect(try container.checkExtension(.type1v2))
        group = try kernel.openGroup(try kernel.iommuGroup(of: address))
        #expect(try group.status() == VFIOGroupStatus(viable: true, containerSet: false))
        try group.setContainer(container)
        try container.setIOMMU(.type1v2)
        device = try group.openDevice("\(address)")
    }
}

@Suite struct VFIOTwinDeviceTests {
    @Test func configSpaceAndRegionsAreVFIOPCIs() throws {
        let s = try TwinSetup()
        let info = try s.device.info()
        #expect(info == VFIODeviceInfo(supportsReset: true, isPCI: true, regionCount: 9, irqCount: 5))
        let config = try s.device.regionInfo(VFIOPCIRegion.config)
        #expect(config.size == 4096 && config.offset == 7 << 40 && !config.mappable)
        #expect(try s.device.readLittleEndian(region: config, at: 0, size: 4) == 0x10c9_8086)
        let bar3 = try s.device.regionInfo(3)
        #expect(bar3.size == 0x4000 && bar3.mappable && bar3.msixMappable && bar3.mappableAreas.count == 1)
        #expect(try !s.device.regionInfo(2).mappable)  // I/O BAR
        #expect(try s.device.regionInfo(4).size == 0)  // upper half of BAR3
        // Outside the region: refused before reaching the device.
        #expect(throws: VFIOError.self) { _ = try s.device.read(region: config, at: 4094, count: 4) }
        #expect(s.kernel.log.all.contains(.read(device: "0000:01:00.0", region: 7, offset: 0, count: 4)))
    }

    @Test func aTrappedMSIXTableIsLeftOutOfTheMappableAreas() throws {
        let s = try TwinSetup(msixTableTrapped: true)
        // igb's table is at BAR3 offset 0 (10 entries): its page is left out, the PBA page stays.
        let bar3 = try s.device.regionInfo(3)
        #expect(bar3.mappableAreas == [VFIOMappableArea(offset: 0x1000, size: 0x3000)])
        #expect(!bar3.msixMappable)
        #expect(throws: VFIOError.self) { _ = try s.device.map(atDeviceOffset: bar3.offset, size: 0x1000, protection: .readWrite) }
    }

    @Test func aMappedBARAndPreadPwriteSeeTheSameBytes() throws {
        let s = try TwinSetup()
        let bar0 = try s.device.regionInfo(0)
        let mapping = try s.device.map(region: bar0, area: bar0.mappableAreas[0])
        mapping.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(0xdead_beef).littleEndian, toByteOffset: 0x10, as: UInt32.self) }
        #expect(try s.device.readLittleEndian(region: bar0, at: 0x10, size: 4) == 0xdead_beef)
        try s.device.writeLittleEndian(region: bar0, at: 0x20, size: 8, 0x0123_4567_89ab_cdef)
        #expect(mapping.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0x20, as: UInt64.self) } == 0x0123_4567_89ab_cdef)
        #expect(s.kernel.log.all.contains(.map(device: "0000:01:00.0", region: 0, offset: 0, size: 0x20000)))
    }

    @Test func msixTriggersSignalTheAssignedEventfds() throws {
        let s = try TwinSetup()
        let msix = try s.device.irqInfo(VFIOPCIIRQ.msix)
        #expect(msix.count == 10 && msix.eventfd && msix.noResize)
        let a = try EventFD(), b = try EventFD()
        let request = VFIOIRQRequest(index: VFIOPCIIRQ.msix, start: 0, .trigger(eventfds: [a.rawValue, nil, b.rawValue]))
        try s.device.setIRQs(request)
        #expect(s.twin.raise(index: VFIOPCIIRQ.msix, vector: 2))
        #expect(!s.twin.raise(index: VFIOPCIIRQ.msix, vector: 1))
        #expect(try b.consume() == 1 && a.consume() == nil)
        // More vectors than the table has: refused as vfio-pci refuses it.
        #expect(throws: VFIOError.self) {
            try s.device.setIRQs(VFIOIRQRequest(index: VFIOPCIIRQ.msix, start: 9, .trigger(eventfds: [1, 2])))
        }
        try s.device.setIRQs(VFIOIRQRequest(index: VFIOPCIIRQ.msix, .disable))
        #expect(!s.twin.raise(index: VFIOPCIIRQ.msix, vector: 2))
        #expect(s.kernel.log.all.contains(.setIRQs(device: "0000:01:00.0", request)))
    }

    @Test func intxIsAutomaskedUntilUnmaskedOrResampled() throws {
        let s = try TwinSetup()
        let trigger = try EventFD(), resample = try EventFD()
        try s.device.setIRQs(VFIOIRQRequest(index: VFIOPCIIRQ.intx, .trigger(eventfds: [trigger.rawValue])))
        try s.device.setIRQs(VFIOIRQRequest(index: VFIOPCIIRQ.intx, .unmaskOnEventfd(resample.rawValue)))
        #expect(s.twin.raise(index: VFIOPCIIRQ.intx))
        #expect(s.twin.intxMasked)
        #expect(!s.twin.raise(index: VFIOPCIIRQ.intx))  // pending while masked
        #expect(try trigger.consume() == 1)
        try resample.signal()  // the guest's EOI through KVM's resampler
        s.twin.serviceResample()
        #expect(try trigger.consume() == 1)  // the pending one is delivered on unmask
        #expect(throws: VFIOError.self) {  // mask is for INTx only
            try s.device.setIRQs(VFIOIRQRequest(index: VFIOPCIIRQ.msi, .mask(count: 1)))
        }
    }

    @Test func resetRestoresConfigSpaceAndHotResetNeedsEveryGroup() throws {
        let s = try TwinSetup()
        let config = try s.device.regionInfo(VFIOPCIRegion.config)
        try s.device.writeLittleEndian(region: config, at: 4, size: 2, 0x0006)
        #expect(try s.device.readLittleEndian(region: config, at: 4, size: 2) == 0x0006)
        try s.device.reset()
        #expect(try s.device.readLittleEndian(region: config, at: 4, size: 2) == 0)
        #expect(s.kernel.log.all.contains(.reset(device: "0000:01:00.0")))
    }
}

@Suite struct VFIOTwinContainerTests {
    @Test func type1v2RulesForMapsAndUnmaps() throws {
        let s = try TwinSetup()
        let info = try s.container.iommuInfo()
        #expect(info.minimumPageSize == 4096 && info.iovaRanges.count == 2)
        try s.container.mapDMA(VFIODMAMapping(iova: 0, size: 0x10_0000, hostAddress: 0x7f00_0000_0000))
        try s.container.mapDMA(VFIODMAMapping(iova: 0x10_0000, size: 0x10_0000, hostAddress: 0x7f00_0010_0000))
        // Overlap: EEXIST. Misaligned: EINVAL. The interrupt window: outside the IOVA ranges.
        #expect(throws: VFIOError.self) { try s.container.mapDMA(VFIODMAMapping(iova: 0x8_0000, size: 0x1000, hostAddress: 0x1000)) }
        #expect(throws: VFIOError.self) { try s.container.mapDMA(VFIODMAMapping(iova: 0x30_0800, size: 0x1000, hostAddress: 0x1000)) }
        do {
            try s.container.mapDMA(VFIODMAMapping(iova: 0xfee0_0000, size: 0x1000, hostAddress: 0x1000))
            Issue.record("mapped the interrupt window")
        } catch { #expect(error.reason == .iovaOutOfRange(iova: 0xfee0_0000, size: 0x1000)) }
        // v2: cutting a mapping in half is refused; whole mappings go.
        #expect(throws: VFIOError.self) { _ = try s.container.unmapDMA(iova: 0, size: 0x8_0000) }
        #expect(try s.container.unmapDMA(iova: 0, size: 0x20_0000) == 0x20_0000)
        #expect((s.container as! VFIOTwinContainer).mappings.isEmpty)
    }

    @Test func theDMAEntryLimitFailsWithTheFix() throws {
        var configuration = VFIOTwinContainer.Configuration()
        configuration.dmaEntryLimit = 1
        let s = try TwinSetup(configuration: configuration)
        try s.container.mapDMA(VFIODMAMapping(iova: 0, size: 0x1000, hostAddress: 0x1000))
        #expect(try s.container.iommuInfo().dmaMappingsAvailable == 0)
        do {
            try s.container.mapDMA(VFIODMAMapping(iova: 0x1000, size: 0x1000, hostAddress: 0x2000))
            Issue.record("mapped past the limit")
        } catch {
            #expect(error.errno == .noSpace)
            #expect(error.description.contains("dma_entry_limit"))
        }
    }

    @Test func withoutInterruptRemappingType1RefusesAndSaysHowToBoot() throws {
        var configuration = VFIOTwinContainer.Configuration()
        configuration.interruptRemapping = false
        do {
            _ = try TwinSetup(configuration: configuration)
            Issue.record("type1 accepted a group without interrupt remapping")
        } catch let error as VFIOError {
            #expect(error.reason == .noInterruptRemapping(group: 7) && error.errno == .notPermitted)
            #expect(error.description.contains("intel_iommu=on") && error.description.contains("allow_unsafe_interrupts"))
        }
    }

    @Test func aGroupWithADeviceOnAHostDriverIsNotViableAndNamesIt() throws {
        let identity = try VFIOTwinIdentity.captured("qemu10-nvme")
        let a = PCIAddress(bus: 2, device: 0, function: 0)!, b = PCIAddress(bus: 2, device: 0, function: 1)!
        let kernel = VFIOTwinKernel(devices: [
            .init(address: a, group: 3, device: try VFIOTwinDevice(name: "\(a)", identity: identity)),
            .init(address: b, group: 3, device: try VFIOTwinDevice(name: "\(b)", identity: identity), viable: false),
        ])
        let group = try kernel.openGroup(3)
        do {
            try group.setContainer(try kernel.openContainer())
            Issue.record("a non-viable group joined a container")
        } catch {
            #expect(error.reason == .groupNotViable(group: 3, offenders: ["0000:02:00.1 (host driver)"]))
            #expect(error.description.contains("bind every device of group 3 to vfio-pci: switchyard host bind BDF --group"))
        }
    }
}
