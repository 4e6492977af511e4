import HostOS
import KVM
import Synchronization
import TestRequirements
import Testing
import VMMBase

/// QMP `stop` semantics on the host's real KVM: a paused vCPU makes no progress, a resumed one
/// carries on where it was.
@Suite struct PauseTests {
    @Test(.requires(kvmAvailable, noKVM))
    func aPausedVCPUMakesNoProgressAndResumes() throws {
        // mov dx, 0x510; loop: inc al; out dx, al; jmp loop
        let (vm, vcpu) = try makeRealModeGuest([0xBA, 0x10, 0x05, 0xFE, 0xC0, 0xEE, 0xEB, 0xFB])
        let counter = PortCounter()
        let runner = try VCPURunner(vcpus: [vcpu], handler: counter)
        try runner.start()
        defer {
            runner.requestStop()
            _ = runner.join()
            withExtendedLifetime(vm) {}
        }
        try waitUntil { counter.count > 100 }
        #expect(runner.pause())
        #expect(runner.isPaused)
        let atPause = counter.count
        HostClock.sleep(milliseconds: 100)
        #expect(counter.count == atPause, "the vCPU ran while paused")
        // The guest's own state survived: the values it writes carry on from where they were.
        let lastValue = counter.lastValue
        runner.resume()
        try waitUntil { counter.count > atPause + 100 }
        #expect(counter.firstValue(after: atPause) == UInt8(truncatingIfNeeded: Int(lastValue) + 1))
    }

    private func waitUntil(_ condition: () -> Bool) throws {
        for _ in 0..<2000 where !condition() { HostClock.sleep(milliseconds: 1) }
        try #require(condition())
    }
}

final class PortCounter: VCPUExitHandler {
    private let values = Mutex<[UInt8]>([])
    var count: Int { values.withLock { $0.count } }
    var lastValue: UInt8 { values.withLock { $0.last ?? 0 } }
    func firstValue(after index: Int) -> UInt8? { values.withLock { $0.count > index ? $0[index] : nil } }
    func portRead(_ port: UInt16, width: AccessWidth) -> UInt64 { width.allOnes }
    func portWrite(_ port: UInt16, width: AccessWidth, value: UInt64) {
        values.withLock { $0.append(UInt8(truncatingIfNeeded: value)) }
    }
    func mmioRead(_ address: UInt64, width: AccessWidth) -> UInt64 { width.allOnes }
    func mmioWrite(_ address: UInt64, width: AccessWidth, value: UInt64) {}
}
