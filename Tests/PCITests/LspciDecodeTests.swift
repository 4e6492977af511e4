import VMMBase
import TestRequirements
import Testing
import PCI

@Suite("real lspci decodes our capabilities", .requires(Lspci.isInstalled, "pciutils' lspci is not installed (scripts/setup.sh installs it)"))
struct LspciDecodeTests {
    @Test func dumpRoundTripsThroughLspciHexOutput() throws {
        let config = try kitchenSinkRootPort()
        let output = try Lspci.decode([("00:01.0", config)], arguments: ["-xxxx"])
        let rows = output.split(separator: "\n").filter { !$0.hasPrefix("00:01.0") && $0.contains(": ") }
        #expect(rows.count == 256)
        // lspci echoes our bytes back: compare the row holding the PCI Express capability.
        let offset = try #require(config.pciExpressOffset) & ~0xF
        let expected = (offset..<(offset + 16)).map { hex(config.bytes[$0], 2) }.joined(separator: " ")
        #expect(rows.contains { $0 == "\(hex(offset, 2)): \(expected)" })
    }

    @Test func verboseOutputNamesEveryCapability() throws {
        let output = try Lspci.decode([("00:01.0", try kitchenSinkRootPort())], arguments: ["-vvv"])
        for name in ["Power Management version 3", "MSI: Enable- Count=1/4 Maskable+ 64bit+",
                     "Express (v2) Root Port (Slot+)", "MSI-X: Enable- Count=8 Masked-",
                     "Vendor Specific Information: Len=08", "Advanced Error Reporting",
                     "Access Control Services", "Alternative Routing-ID Interpretation (ARI)",
                     "Single Root I/O Virtualization (SR-IOV)", "Vendor Specific Information: ID=1234 Rev=2 Len=010",
                     "SltCap:\tAttnBtn+ PwrCtrl+ MRL- AttnInd+ PwrInd+ HotPlug+ Surprise+",
                     "Slot #7", "LnkCap:\tPort #3, Speed 16GT/s, Width x16",
                     "Initial VFs: 8, Total VFs: 8, Number of VFs: 0", "VF offset: 4, stride: 2, Device ID: 10ed",
                     "ACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+"] {
            #expect(output.contains(name), "lspci -vvv lacks \"\(name)\"")
        }
        #expect(!output.contains("<BAD"), "lspci found a malformed capability")
    }

    @Test func endpointTypeIsDecoded() throws {
        var config = ConfigSpace(layout: .endpoint, express: true)
        config.setIdentity(PCIIdentity(vendorID: 0x8086, deviceID: 0x10ED, revision: 1, classCode: 0x020000,
                                       subsystemVendorID: 0x8086, subsystemID: 1))
        try config.addPCIExpress(PCIExpressOptions(portType: .endpoint, functionLevelReset: true))
        try config.addAER()
        let output = try Lspci.decode([("01:00.0", config)], arguments: ["-vvv"])
        #expect(output.contains("Express (v2) Endpoint"))
        #expect(output.contains("FLReset+"))
        #expect(output.contains("Advanced Error Reporting"))
    }
}
