import HostOS
import Testing
@testable import Control

/// -sandbox as issue 15 states it: on by default for -accel kvm (the accelerator that runs
/// guest code), off for qtest unless asked for; spawn=deny withdraws fork (QEMU's meaning).
/// The error texts are checked against QEMU itself in IntegrationTests/SandboxTests.
@Suite struct SandboxOptionTests {
    @Test func onByDefaultOnlyUnderKVM() throws {
        #expect(try QEMUInvocation.parse(["-accel", "kvm"]).sandboxPolicy == SandboxPolicy(allowsSpawning: true))
        #expect(try QEMUInvocation.parse(["-accel", "qtest"]).sandboxPolicy == nil)
        #expect(try QEMUInvocation.parse(["-accel", "kvm", "-sandbox", "off"]).sandboxPolicy == nil)
        #expect(try QEMUInvocation.parse(["-accel", "qtest", "-sandbox", "on"]).sandboxPolicy != nil)
    }

    @Test func spawnDeny() throws {
        let policy = try QEMUInvocation.parse(["-sandbox", "on,spawn=deny,obsolete=deny,elevateprivileges=deny"]).sandboxPolicy
        #expect(policy == SandboxPolicy(allowsSpawning: false))
        // spawn= alone leaves the default (QEMU accepts it and keeps the sandbox as it was).
        #expect(try QEMUInvocation.parse(["-accel", "kvm", "-sandbox", "spawn=deny"]).sandboxPolicy == SandboxPolicy(allowsSpawning: false))
    }

    @Test func allowingWhatNoListHasIsRefused() {
        #expect(throws: InvocationError.self) { try QEMUInvocation.parse(["-sandbox", "on,obsolete=allow"]) }
        #expect(throws: InvocationError.self) { try QEMUInvocation.parse(["-sandbox", "on,elevateprivileges=children"]) }
    }
}
