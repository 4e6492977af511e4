import Foundation
import TestRequirements
import Testing

/// `-device vfio-pci` errors in QEMU's words: the same bad options are given to QEMU 10 and to
/// `switchyard lspci`, and each first error line must say what QEMU's says.
@Suite("vfio-pci options are checked as QEMU 10 checks them",
       .requires(QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 is not installed (scripts/setup.sh installs QEMU 10)"))
struct VFIOPCIOptionTests {
    static let badDevices = [
        "vfio-pci",
        "vfio-pci,host=zz",
        "vfio-pci,host=0000:01:00.0,rombar=x",
        "vfio-pci,host=0000:01:00.0,x-no-mmap=maybe",
        "vfio-pci,host=0000:01:00.0,foo=1",
        "vfio-pci,host=0000:01:00.0,iommufd=nope",
    ]

    /// QEMU's message without its "qemu-system-x86_64: -device ...: " prefix.
    static func qemuError(_ device: String) throws -> String {
        let qemu = try #require(QTestDifferentialTests.qemu)
        let result = try run(qemu, ["-machine", "q35", "-accel", "tcg", "-S", "-nodefaults", "-display", "none",
                                    "-monitor", "none", "-device", device])
        let first = try #require(result.err.split(separator: "\n").first.map(String.init))
        let prefix = "qemu-system-x86_64: -device \(device): "
        try #require(first.hasPrefix(prefix), "QEMU said: \(first)")
        return String(first.dropFirst(prefix.count))
    }

    @Test("each bad option is refused with QEMU's message", arguments: badDevices)
    func sameMessageAsQEMU(device: String) throws {
        let expected = try Self.qemuError(device)
        let ours = try run(switchyardBinary, ["lspci", "-device", device])
        #expect(ours.status != 0)
        let line = ours.err.split(separator: "\n").first.map(String.init) ?? ""
        #expect(line.hasPrefix("switchyard: " + expected), "QEMU: \(expected); switchyard: \(line)")
    }

    /// `-object iommufd`'s errors against QEMU's, through the QEMU-style invocation.
    @Test("each bad -object is refused with QEMU's message",
          arguments: [["-object", "iommufd"], ["-object", "id=i0"], ["-object", "iommufd,id=i0,foo=1"],
                      ["-object", "iommufd,id=i0", "-object", "iommufd,id=i0"], ["-object", "nosuch,id=i0"]])
    func badObjectsAsQEMU(arguments: [String]) throws {
        let qemu = try #require(QTestDifferentialTests.qemu)
        let theirs = try run(qemu, ["-machine", "q35", "-accel", "tcg", "-S", "-nodefaults", "-display", "none",
                                    "-monitor", "none"] + arguments)
        let expected = try #require(theirs.err.split(separator: "\n").first.map(String.init))
        try #require(expected.hasPrefix("qemu-system-x86_64: -object "), "QEMU said: \(expected)")
        let ours = try run(switchyardBinary, ["-machine", "q35", "-accel", "qtest", "-nodefaults"] + arguments)
        #expect(ours.status != 0)
        let line = ours.err.split(separator: "\n").first.map(String.init) ?? ""
        #expect(line.hasPrefix("switchyard: " + expected.dropFirst("qemu-system-x86_64: ".count)),
                "QEMU: \(expected); switchyard: \(line)")
    }

    /// iommufd= insists on iommufd: on this host (no /dev/iommu) a defined object is refused
    /// with what the kernel needs; QEMU accepts the object and fails opening /dev/iommu.
    @Test func iommufdOnAHostWithoutIt() throws {
        let ours = try run(switchyardBinary, ["-machine", "q35", "-accel", "qtest", "-nodefaults",
                                              "-object", "iommufd,id=i0", "-device", "vfio-pci,host=0000:7f:1f.7,iommufd=i0"])
        #expect(ours.status != 0)
        if !FileManager.default.fileExists(atPath: "/dev/iommu") {
            #expect(ours.err.contains("this host's VFIO has no iommufd") && ours.err.contains("CONFIG_VFIO_DEVICE_CDEV"), "\(ours.err)")
        }
    }

    @Test("a host function that cannot be assigned here is refused, naming it and the fix, as QEMU refuses it")
    func unassignableHostDevice() throws {
        #expect(try Self.qemuError("vfio-pci,host=0000:7f:1f.7").contains("no such host device"))
        let ours = try run(switchyardBinary, ["lspci", "-device", "vfio-pci,host=0000:7f:1f.7"])
        #expect(ours.status != 0)
        // This host has no VFIO at all, which the machine's container finds before the device.
        #expect(ours.err.contains("vfio 0000:7f:1f.7: ")
                && (ours.err.contains("modprobe vfio-pci") || ours.err.contains("no PCI device 0000:7f:1f.7")), "\(ours.err)")
    }
}
