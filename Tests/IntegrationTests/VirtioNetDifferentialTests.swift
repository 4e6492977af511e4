import Foundation
import Testing
import TestRequirements

/// QEMU 10's virtio-net-pci on a tap as the oracle for what the device offers: the same
/// qtest driver reads the device feature bits and the config space of both VMMs, each with
/// a tap of its own in a namespace of the test's.
@Suite(.serialized, .requires(TestNetworkNamespace.available, TestNetworkNamespace.unavailable))
struct VirtioNetDifferentialTests {
    /// Device bits QEMU offers over a vnet-header tap that Switchyard does not (yet):
    /// CTRL_GUEST_OFFLOADS (2), GUEST_UFO (10), HOST_UFO (14), and the USO/hash bits above 50.
    static let notImplemented: UInt64 = 1 << 2 | 1 << 10 | 1 << 14

    struct Observation {
        let features: UInt64
        let config: [UInt8]
    }

    static func observe(_ binary: String, accelerator: [String], namespace: TestNetworkNamespace, tap: String) throws -> Observation {
        let session = try QTestSession("/usr/sbin/ip", ["netns", "exec", namespace.name, binary, "-machine", "q35"] + accelerator
                                        + ["-m", "256M", "-display", "none",
                                           "-netdev", "tap,id=n0,ifname=\(tap),script=no,downscript=no",
                                           "-device", "virtio-net-pci,netdev=n0,addr=0x3"], name: "vnet-diff")
        defer { session.stop() }
        let driver = try VirtioNetDriver(session.qtest, device: 3)
        return Observation(features: try driver.deviceFeatures(), config: try driver.readBytes(driver.deviceConfig, 8))
    }

    @Test(.requires(QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 (QEMU 10) is not installed"), .timeLimit(.minutes(2)))
    func offeredFeaturesAndConfigMatchQEMU() throws {
        let namespace = try TestNetworkNamespace()
        let qemu = try Self.observe(QTestDifferentialTests.qemu!, accelerator: ["-accel", "tcg", "-S"], namespace: namespace, tap: "qtap0")
        let ours = try Self.observe(switchyardBinary, accelerator: ["-accel", "qtest"], namespace: namespace, tap: "sytap0")
        let deviceBits: UInt64 = 0x00FF_FFFF
        // Every device bit we offer, QEMU offers too; what QEMU has beyond is listed.
        #expect(ours.features & deviceBits & ~qemu.features == 0, "ours 0x\(String(ours.features, radix: 16)) QEMU 0x\(String(qemu.features, radix: 16))")
        #expect(qemu.features & deviceBits & ~ours.features & ~Self.notImplemented == 0,
                "QEMU offers 0x\(String(qemu.features & deviceBits & ~ours.features, radix: 16)) we do not")
        #expect(ours.features & (1 << 32) != 0 && qemu.features & (1 << 32) != 0)  // VERSION_1
        // mac (QEMU's first default) and status (link up): byte for byte.
        #expect(ours.config == qemu.config)
    }
}
