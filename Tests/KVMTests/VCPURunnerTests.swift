import HostOS
import KVM
import TestRequirements
import Testing
import VMMBase

@Suite(.requires(kvmAvailable, noKVM))
struct VCPURunnerTests {
    @Test func aSpinningGuestIsKickedOutOfKVMRunOnRequest() throws {
        // jmp $ : never exits on its own.
        let (vm, vcpu) = try makeRealModeGuest([0xEB, 0xFE])
        let platform = FakePlatform(functions: [:])
        let runner = try VCPURunner(vcpus: [vcpu], handler: platform)
        try runner.start()
        #expect(!runner.waitUntilFinished(timeoutMilliseconds: 200))
        let clock = ContinuousClock()
        let start = clock.now
        runner.requestStop()
        #expect(runner.waitUntilFinished(timeoutMilliseconds: 3000))
        #expect(clock.now - start < .seconds(2))
        #expect(runner.join() == [.stopRequested])
        withExtendedLifetime(vm) {}
    }

    @Test func aStopRequestedBeforeStartEndsAtOnce() throws {
        let (vm, vcpu) = try makeRealModeGuest([0xEB, 0xFE])
        let runner = try VCPURunner(vcpus: [vcpu], handler: FakePlatform(functions: [:]))
        runner.requestStop()
        try runner.start()
        #expect(runner.waitUntilFinished(timeoutMilliseconds: 3000))
        #expect(runner.join() == [.stopRequested])
        withExtendedLifetime(vm) {}
    }

    @Test func aKickWithoutStopLetsTheGuestContinue() throws {
        // out 0x80, al ; jmp back: exits on every iteration; the kick must not end the run.
        let (vm, vcpu) = try makeRealModeGuest([0xE6, 0x80, 0xEB, 0xFC])
        let runner = try VCPURunner(vcpus: [vcpu], handler: FakePlatform(functions: [:]))
        try runner.start()
        for _ in 0..<20 { runner.kick(0) }
        #expect(!runner.waitUntilFinished(timeoutMilliseconds: 100))
        runner.requestStop()
        #expect(runner.waitUntilFinished(timeoutMilliseconds: 3000))
        #expect(runner.join() == [.stopRequested])
        withExtendedLifetime(vm) {}
    }

    @Test func portIOReachesTheHandlerWithTheGuestsValues() throws {
        // mov al, 0x41 ; out 0x3f8 (via dx) ; mov ax, 0xbeef ; out 0x80, ax ; in al, 0x60 ;
        // out 0x3f8, al (via dx) ; hlt
        let code: [UInt8] = [0xB0, 0x41, 0xBA, 0xF8, 0x03, 0xEE,
                             0xB8, 0xEF, 0xBE, 0xE7, 0x80,
                             0xE4, 0x60, 0xEE, 0xF4]
        let (vm, vcpu) = try makeRealModeGuest(code)
        let platform = FakePlatform(functions: [:])
        let reasons = try runWithWatchdog([vcpu], handler: platform)
        #expect(reasons == [.halted])
        #expect(platform.uartBytes == [0x41, 0xFF])  // the unassigned port 0x60 reads all ones
        #expect(platform.unexpectedAccesses == ["write port 0x80 word = 0xbeef", "read port 0x60 byte"])
        withExtendedLifetime(vm) {}
    }
}

@Suite(.requires(kvmAvailable, noKVM))
struct VCPURunnerWatchdogTests {
    /// Some hosts (this project's CI) hang protected-mode guests inside KVM_RUN; whether the
    /// guest spins or the host hangs it, a stop request must still get the thread out.
    @Test func aProtectedModeGuestCanStillBeStopped() throws {
        let (vm, vcpu) = try makeRealModeGuest([0xEB, 0xFE])  // jmp $ (same bytes in 32-bit code)
        var sregs = try vcpu.specialRegisters()
        sregs.cr0 |= 1
        sregs.cs = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, defaultSize: true, granularity: true)
        for keyPath in [\SpecialRegisters.ds, \.es, \.fs, \.gs, \.ss] {
            sregs[keyPath: keyPath] = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0x3,
                                              defaultSize: true, granularity: true)
        }
        try vcpu.setSpecialRegisters(sregs)
        let reasons = try runWithWatchdog([vcpu], handler: FakePlatform(functions: [:]), timeoutMilliseconds: 300)
        #expect(reasons == nil, "jmp $ cannot stop by itself")
        withExtendedLifetime(vm) {}
    }
}
