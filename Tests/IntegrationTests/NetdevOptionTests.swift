import Control
import Testing
import TestRequirements

/// `-netdev` as QEMU 10 parses it: the options both refuse, with QEMU's words in ours.
struct NetdevOptionTests {
    static let refused = [
        "tap,id=n0,foo=1", "tap", "bogus,id=n0", "tap,id=n0,fd=3,queues=2", "tap,id=n0,vhost=maybe",
        "tap,id=n0,ifname=t0,fd=3",
    ]

    @Test(.requires(QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 (QEMU 10) is not installed"),
          arguments: refused)
    func refusedAsQEMURefusesIt(_ option: String) throws {
        let qemu = try run(QTestDifferentialTests.qemu!, ["-M", "q35", "-accel", "tcg", "-S", "-display", "none", "-netdev", option])
        #expect(qemu.status != 0)
        let prefix = "qemu-system-x86_64: -netdev \(option): "
        let line = try #require(qemu.err.split(separator: "\n").first { $0.hasPrefix(prefix) })
        let qemuReason = String(line.dropFirst(prefix.count))
        #expect(throws: InvocationError.self) { try QEMUInvocation.parse(["-netdev", option]) }
        do {
            _ = try QEMUInvocation.parse(["-netdev", option])
        } catch {
            #expect(error.description.hasPrefix("-netdev \(option): "), "\(error)")
            #expect(error.description.contains(qemuReason), "QEMU: \(qemuReason); Switchyard: \(error)")
        }
    }

    @Test func acceptedTapOptionsBecomeNetdevValues() throws {
        let invocation = try QEMUInvocation.parse(["-netdev", "tap,id=n0,ifname=sy0,queues=4,vhost=off,script=no,downscript=no",
                                                   "-netdev", "type=tap,id=n1,fds=5:6"])
        #expect(invocation.machine.netdevs.map(\.id) == ["n0", "n1"])
        #expect(invocation.machine.netdevs[0].properties["queues"] == "4")
        #expect(throws: InvocationError.self) { try QEMUInvocation.parse(["-netdev", "tap,id=n0", "-netdev", "tap,id=n0"]) }
        #expect(throws: InvocationError.self) { try QEMUInvocation.parse(["-netdev", "tap,id=n0,script=/etc/qemu-ifup"]) }
        #expect(throws: InvocationError.self) { try QEMUInvocation.parse(["-netdev", "tap,id=n0,queues=0"]) }
    }

    static let refusedDevices = ["virtio-net-pci,netdev=n9", "virtio-net-pci,mac=zz", "virtio-net-pci,mq=maybe", "virtio-net-pci,foo=1"]

    /// The same -device refusals from both VMMs (QEMU's reason inside ours).
    @Test(.requires(QTestDifferentialTests.qemu != nil, "qemu-system-x86_64 (QEMU 10) is not installed"),
          arguments: refusedDevices)
    func virtioNetDeviceRefusedAsQEMURefusesIt(_ device: String) throws {
        let qemu = try run(QTestDifferentialTests.qemu!, ["-M", "q35", "-accel", "tcg", "-S", "-display", "none", "-device", device])
        let ours = try run(switchyardBinary, ["-machine", "q35", "-accel", "qtest", "-device", device])
        #expect(qemu.status != 0 && ours.status != 0)
        let prefix = "qemu-system-x86_64: -device \(device): "
        let line = try #require(qemu.err.split(separator: "\n").first { $0.hasPrefix(prefix) })
        #expect(ours.err.contains(line.dropFirst(prefix.count)), "QEMU: \(line); Switchyard: \(ours.err)")
    }
}
