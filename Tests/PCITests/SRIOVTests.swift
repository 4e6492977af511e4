import Testing
import PCI
import VMMBase

@Suite struct SRIOVTests {
    private func physicalFunction() throws -> (ConfigSpace, Int) {
        var config = ConfigSpace(layout: .endpoint, express: true)
        let base = try config.addSRIOV(SRIOVOptions(
            totalVFs: 7, firstVFOffset: 0x80, vfStride: 2, vfDeviceID: 0x10ED,
            vfBARs: [0: BARDescriptor(.memory64(prefetchable: true), size: 0x4000),
                     3: BARDescriptor(.memory32(prefetchable: false), size: 0x1000)]))
        return (config, base)
    }

    @Test func vfBARsSizeLikeOrdinaryBARs() throws {
        var (config, base) = try physicalFunction()
        let bar0 = base + SRIOVRegister.vfBAR0
        #expect(config.read(bar0, width: .dword) == 0xC)
        config.writeAllOnes(bar0, length: 24)
        #expect(config.read(bar0, width: .dword) == 0xFFFF_C00C)
        #expect(config.read(bar0 + 4, width: .dword) == 0xFFFF_FFFF)
        #expect(config.read(bar0 + 8, width: .dword) == 0)  // VF BAR 2 absent
        #expect(config.read(bar0 + 12, width: .dword) == 0xFFFF_F000)
        let state = try #require(config.sriovState)
        #expect(state.vfBARs[0] == BARDescriptor(.memory64(prefetchable: true), size: 0x4000))
        #expect(state.vfBARs[3] == BARDescriptor(.memory32(prefetchable: false), size: 0x1000))
        #expect(state.vfBARs.count == 2)
    }

    @Test func enablingVFsDecodesTheirApertures() throws {
        var (config, base) = try physicalFunction()
        let bar0 = base + SRIOVRegister.vfBAR0
        config.write(bar0, width: .dword, value: 0x8000_0000)
        config.write(bar0 + 4, width: .dword, value: 0x1)
        let numVFs = config.write(base + SRIOVRegister.numVFs, width: .word, value: 4)
        #expect(numVFs.contains(.sriovChanged) && numVFs.affectsMappings)
        #expect(config.sriovState?.vfBARRange(0, vf: 0) == nil)  // VFs not enabled yet
        config.write(base + SRIOVRegister.control, width: .word, value: 0xFFFF)
        #expect(config.read(base + SRIOVRegister.control, width: .word) == 0x19)
        let state = try #require(config.sriovState)
        #expect(state.vfEnabled && state.vfMemorySpaceEnabled && state.ariCapableHierarchy)
        #expect(state.activeVFs == 4)
        #expect(state.vfBARRange(0, vf: 3) == AddressRange(base: 0x1_8000_C000, size: 0x4000))
        #expect(state.vfBARRange(0, vf: 4) == nil)
        #expect(state.vfBARRange(3, vf: 0) == nil)  // unprogrammed
        #expect(state.routingIDOffset(ofVF: 3) == 0x86)
    }

    @Test func readOnlyFieldsAndClampedNumVFs() throws {
        var (config, base) = try physicalFunction()
        config.writeAllOnes(base + 4, length: 0x20)
        #expect(config.read(base + SRIOVRegister.initialVFs, width: .dword) == 0x0007_0007)
        #expect(config.read(base + SRIOVRegister.firstVFOffset, width: .dword) == 0x0002_0080)
        #expect(config.read(base + SRIOVRegister.vfDeviceID, width: .word) == 0x10ED)
        #expect(config.read(base + SRIOVRegister.supportedPageSizes, width: .dword) == 0x553)
        #expect(config.read(base + SRIOVRegister.systemPageSize, width: .dword) == 0x553)
        #expect(config.read(base + SRIOVRegister.numVFs, width: .word) == 0xFFFF)
        #expect(config.sriovState?.activeVFs == 7)  // clamped to TotalVFs
        config.write(base + SRIOVRegister.systemPageSize, width: .dword, value: 0x2)
        #expect(config.sriovState?.systemPageSize == 8192)
    }

    @Test func insaneOptionsAreRejected() {
        let cases: [SRIOVOptions] = [
            SRIOVOptions(totalVFs: 0, vfDeviceID: 1),
            SRIOVOptions(totalVFs: 2, initialVFs: 3, vfDeviceID: 1),
            SRIOVOptions(totalVFs: 2, firstVFOffset: 0, vfDeviceID: 1),
            SRIOVOptions(totalVFs: 2, vfStride: 0, vfDeviceID: 1),
            SRIOVOptions(totalVFs: 0xFFFF, firstVFOffset: 2, vfDeviceID: 1),
            SRIOVOptions(totalVFs: 2, vfDeviceID: 1, supportedPageSizes: 0x2),
            SRIOVOptions(totalVFs: 2, vfDeviceID: 1, vfBARs: [0: BARDescriptor(.io, size: 0x100)]),
            SRIOVOptions(totalVFs: 2, vfDeviceID: 1, vfBARs: [5: BARDescriptor(.memory64(prefetchable: false), size: 0x1000)]),
            SRIOVOptions(totalVFs: 2, vfDeviceID: 1, vfBARs: [0: BARDescriptor(.memory64(prefetchable: false), size: 0x1000),
                                                              1: BARDescriptor(.memory32(prefetchable: false), size: 0x1000)]),
            SRIOVOptions(totalVFs: 2, vfDeviceID: 1, vfBARs: [0: BARDescriptor(.memory32(prefetchable: false), size: 0x1800)]),
        ]
        for options in cases {
            var config = ConfigSpace(layout: .endpoint, express: true)
            #expect(throws: ConfigSpaceError.self, "\(options)") { try config.addSRIOV(options) }
        }
    }
}
