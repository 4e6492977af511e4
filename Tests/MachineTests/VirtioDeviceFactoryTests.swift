import Machine
import PCI
import Testing
import Virtio

/// virtio-rng-pci as QEMU 10 places it (its config space read under qtest): modern-only
/// 1af4:1044 with a PCI Express capability behind a root port; without one on pcie.0 as
/// -non-transitional; the transitional device QEMU makes on pcie.0 is refused with the fix.
@Suite struct VirtioDeviceFactoryTests {
    func machine(_ devices: [String]) throws -> Machine {
        try Machine(MachineConfiguration(devices: devices.map(DeviceSpec.init(parsing:))))
    }

    @Test func expressBehindARootPortConventionalOnTheRootBus() throws {
        let m = try machine(["pcie-root-port,id=rp1,chassis=1,slot=1", "virtio-rng-pci,id=rng,bus=rp1",
                             "virtio-rng-pci-non-transitional,id=plain,addr=5"])
        let behindPort = try #require(m.device(id: "rng")).function.configSnapshot()
        let onRoot = try #require(m.device(id: "plain")).function.configSnapshot()
        #expect(behindPort.read(0, width: .dword) == 0x1044_1AF4 && onRoot.read(0, width: .dword) == 0x1044_1AF4)
        #expect(behindPort.pciExpressOffset == 0x40)
        #expect(onRoot.pciExpressOffset == nil)
        #expect(onRoot.read(0x34, width: .byte) == 0x98)  // QEMU's MSI-X capability heads the list
    }

    @Test func theTransitionalDeviceIsRefusedWithItsFixes() throws {
        #expect {
            try machine(["virtio-rng-pci,id=rng"])
        } throws: { error in
            "\(error)".contains("disable-legacy=on") && "\(error)".contains("virtio-rng-pci-non-transitional")
        }
        #expect(throws: Never.self) { try machine(["virtio-rng-pci,id=rng,disable-legacy=on"]) }
        #expect(throws: MachineConfigurationError.self) { try machine(["virtio-rng-pci-non-transitional,iommu_platform=maybe"]) }
    }

    /// packed=on offers VIRTIO_F_RING_PACKED (bit 34: feature word 1 reads VERSION_1 | RING_PACKED,
    /// 0x5, as QEMU 10's virtio-rng-pci,packed=on does); a bad value gets QEMU's words.
    @Test func packedRingsOnRequestInQEMUsSpelling() throws {
        let m = try machine(["pcie-root-port,id=rp1,chassis=1,slot=1", "virtio-rng-pci,id=rng,bus=rp1,packed=on",
                             "virtio-rng-pci-non-transitional,id=plain,addr=5,packed=off"])
        func featureWord1(_ id: String) throws -> UInt64 {
            let function = try #require(m.device(id: id)?.function as? VirtioPCIFunction)
            function.barWrite(4, offset: 0, width: .dword, value: 1)
            return function.barRead(4, offset: 4, width: .dword)
        }
        #expect(try featureWord1("rng") == 0x5)
        #expect(try featureWord1("plain") == 0x1)
        #expect {
            try machine(["virtio-rng-pci-non-transitional,packed=maybe"])
        } throws: { error in
            "\(error)".contains("Parameter 'packed' expects 'on' or 'off'")
        }
    }
}
