import HostOS
import Testing
@testable import Control

/// -sandbox as issue 15 states it: on by default for -accel kvm (the accelerator that runs
/// guest code), off for qtest unless asked for; spawn=deny withdraws fork (QEMU's meaning).
/// The error texts are checked against QEMU itself in IntegrationTests/SandboxTests.
@Suite struct SandboxOptionTests {
    @Test func onByDefaultOnlyUnderKVM() throws {
        #expect(try QEMUInvocation.parse(["-accel", "kvm"]).sandboxPolicy?.allowsSpawning == true)
        #expect(try QEMUInvocation.parse(["-accel", "qtest"]).sandboxPolicy == nil)
        #expect(try QEMUInvocation.parse(["-accel", "kvm", "-sandbox", "off"]).sandboxPolicy == nil)
        #expect(try QEMUInvocation.parse(["-accel", "qtest", "-sandbox", "on"]).sandboxPolicy != nil)
    }

    @Test func spawnDeny() throws {
        let policy = try QEMUInvocation.parse(["-sandbox", "on,spawn=deny,obsolete=deny,elevateprivileges=deny"]).sandboxPolicy
        #expect(policy?.allowsSpawning == false)
        // spawn= alone leaves the default (QEMU accepts it and keeps the sandbox as it was).
        #expect(try QEMUInvocation.parse(["-accel", "kvm", "-sandbox", "spawn=deny"]).sandboxPolicy?.allowsSpawning == false)
    }

    /// The files granted after lock-down come from the command line: the boot images to the
    /// kinds that reboot, /dev/vfio to control threads, and the directory of each socket this
    /// process serves (where its file is removed at quit), not of one it connects to.
    @Test func fileGrantsFollowTheCommandLine() throws {
        let invocation = try QEMUInvocation.parse(["-accel", "kvm", "-kernel", "/boot/k", "-initrd", "/boot/i",
                                                   "-qmp", "unix:/run/sy/qmp.sock,server=on,wait=off",
                                                   "-serial", "unix:/var/tmp/console.sock"])
        let access = try #require(invocation.sandboxPolicy?.fileAccess)
        #expect(access.grants(for: .vcpu).map(\.path) == ["/boot/k", "/boot/i"])
        #expect(access.grants(for: .io).map(\.path) == ["/boot/k", "/boot/i"])
        #expect(access.grants(for: .control).map(\.path) == ["/boot/k", "/boot/i", "/dev/vfio", "/dev/iommu", "/sys/devices", "/sys/kernel/iommu_groups", "/run/sy"])
        #expect(access.grants(for: .signal).isEmpty)
        #expect(access.grants.first { $0.path == "/run/sy" }?.access == .removeFiles)
        // The main thread holds every kind's grants; teardown adds nothing without a leased VF.
        #expect(access.teardown.isEmpty && access.mainThreadGrants == access.grants)
        let leasing = try QEMUInvocation.parse(["-accel", "kvm", "-netdev", "macvtap,id=n0,pf=eth9,vf=auto",
                                                "-device", "virtio-net-pci,netdev=n0"])
        let teardown = try #require(leasing.sandboxPolicy?.fileAccess).teardown
        #expect(teardown.map(\.path) == ["/sys/bus/pci/drivers", "/run/switchyard/vf"])
        #expect(teardown.map(\.access) == [.readWrite, .removeFiles])
    }

    @Test func allowingWhatNoListHasIsRefused() {
        #expect(throws: InvocationError.self) { try QEMUInvocation.parse(["-sandbox", "on,obsolete=allow"]) }
        #expect(throws: InvocationError.self) { try QEMUInvocation.parse(["-sandbox", "on,elevateprivileges=children"]) }
    }
}
