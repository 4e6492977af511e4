import PCI
import VMMBase

/// Capability IDs in list order, walked the way a guest does: from 0x34, and from 0x100.
/// Loops are cut off so that a broken list fails a test instead of hanging it.
func standardCapabilityChain(_ config: ConfigSpace) -> [(id: UInt8, offset: Int)] {
    var chain: [(UInt8, Int)] = []
    var next = Int(config.read(Reg.capabilitiesPointer, width: .byte))
    while next != 0 && chain.count < 48 {
        chain.append((UInt8(config.read(next, width: .byte)), next))
        next = Int(config.read(next + 1, width: .byte))
    }
    return chain
}

func extendedCapabilityChain(_ config: ConfigSpace) -> [(id: UInt16, offset: Int)] {
    var chain: [(UInt16, Int)] = []
    var next = Reg.extendedStart
    while next != 0 && chain.count < 64 {
        let header = config.read(next, width: .dword)
        if header != 0 { chain.append((UInt16(header & 0xFFFF), next)) }
        next = Int(header >> 20)
    }
    return chain
}

extension ConfigSpace {
    /// Writes all ones over `length` bytes at `offset`, dword by dword, as a hostile guest would.
    mutating func writeAllOnes(_ offset: Int, length: Int) {
        var o = offset
        while o < offset + length {
            write(o, width: .dword, value: 0xFFFF_FFFF)
            o += 4
        }
    }
}

/// A root port that carries every capability the PCI module can build.
func kitchenSinkRootPort() throws -> ConfigSpace {
    var config = ConfigSpace(layout: .bridge, express: true)
    config.setIdentity(PCIIdentity(vendorID: 0x1B36, deviceID: 0x000C, revision: 0, classCode: 0x060400,
                                   subsystemVendorID: 0, subsystemID: 0))
    try config.defineBAR(0, BARDescriptor(.memory64(prefetchable: false), size: 0x4000))
    try config.addPowerManagement(PowerManagementOptions(pmeStates: [.d0, .d3hot]))
    try config.addMSI(MSIOptions(vectors: 4, is64Bit: true, perVectorMasking: true))
    try config.addPCIExpress(PCIExpressOptions(
        portType: .rootPort, linkSpeed: .gt16, linkWidth: 16, portNumber: 3,
        slot: PCIExpressSlotOptions(physicalSlotNumber: 7, presenceDetected: true), ariForwarding: true))
    try config.addMSIX(MSIXLayout(vectors: 8, tableBAR: 0, tableOffset: 0x0, pbaBAR: 0, pbaOffset: 0x800))
    try config.addVendorSpecific(payload: [0xAA, 0xBB, 0xCC, 0xDD, 0xEE])
    try config.addAER(AEROptions(ecrcGenerationCapable: true, ecrcCheckCapable: true))
    try config.addACS(.isolation)
    try config.addARI(nextFunction: 1)
    try config.addSRIOV(SRIOVOptions(totalVFs: 8, firstVFOffset: 4, vfStride: 2, vfDeviceID: 0x10ED,
                                     vfBARs: [0: BARDescriptor(.memory64(prefetchable: true), size: 0x4000)]))
    try config.addVendorSpecificExtended(vsecID: 0x1234, revision: 2, payload: [1, 2, 3, 4, 5, 6, 7, 8])
    return config
}
