import KVM
import Synchronization
import TestRequirements
import Testing
import VMMBase

/// A CF8/CFC pair per loop iteration, on the host's real KVM (real mode): with 0xCF8
/// coalesced, each pair costs one exit to user space instead of two, and every CFC access
/// still sees the CONFIG_ADDRESS written just before it.
@Suite struct CoalescedWriteTests {
    static let iterations = 200
    static let noCoalescedPIO = "this host's KVM has no coalesced PIO (KVM_CAP_COALESCED_PIO, Linux 4.20+)"

    /// mov cx, N; loop: mov dx, 0xCF8; movzx eax, cx; shl eax, 8; or eax, 0x80000000;
    /// out dx, eax; mov dx, 0xCFC; in eax, dx; dec cx; jnz loop; hlt
    static var program: [UInt8] {
        let n = UInt16(iterations)
        return [0xB9, UInt8(n & 0xFF), UInt8(n >> 8),
                0xBA, 0xF8, 0x0C,
                0x66, 0x0F, 0xB7, 0xC1,
                0x66, 0xC1, 0xE0, 0x08,
                0x66, 0x0D, 0x00, 0x00, 0x00, 0x80,
                0x66, 0xEF,
                0xBA, 0xFC, 0x0C,
                0x66, 0xED,
                0x49,
                0x75, 0xE5,
                0xF4]
    }

    /// CONFIG_ADDRESS as each CFC read found it.
    static var expectedAddresses: [UInt32] {
        (1...iterations).reversed().map { 0x8000_0000 | UInt32($0) << 8 }
    }

    @Test(.requires(kvmAvailable, noKVM))
    func coalescedConfigAddressHalvesTheExits() throws {
        let (vm, vcpu) = try makeRealModeGuest(Self.program)
        try require(vm.coalescedPortWriteRingPage != nil, Self.noCoalescedPIO)
        try vm.coalescePortWrites(port: 0xCF8, size: 4)
        let ring = try #require(vcpu.coalescedWriteRing())
        let platform = ConfigAddressLatch()
        let runner = try VCPURunner(vcpus: [vcpu], handler: platform, options: .init(coalescedWrites: ring))
        try runner.start()
        let finished = runner.waitUntilFinished(timeoutMilliseconds: 10_000)
        if !finished { runner.requestStop() }
        let reasons = runner.join()
        #expect(finished && reasons == [.halted])
        #expect(platform.addressesSeenByCFC == Self.expectedAddresses)
        // One exit per pair (the CFC read); the CF8 writes came through the ring.
        #expect(runner.exitCounts.portIO == UInt64(Self.iterations))
        #expect(ring.replayed == UInt64(Self.iterations))
    }

    /// A reset request (byte 0x06 to 0xCF9, inside the coalesced zone) followed by a tight loop
    /// that never exits: the flusher still delivers it within milliseconds.
    @Test(.requires(kvmAvailable, noKVM))
    func aCoalescedWriteThatNoExitFollowsStillArrives() async throws {
        // mov al, 6; mov dx, 0xCF9; out dx, al; jmp $
        let (vm, vcpu) = try makeRealModeGuest([0xB0, 0x06, 0xBA, 0xF9, 0x0C, 0xEE, 0xEB, 0xFE])
        try require(vm.coalescedPortWriteRingPage != nil, Self.noCoalescedPIO)
        try vm.coalescePortWrites(port: 0xCF8, size: 4)
        let ring = try #require(vcpu.coalescedWriteRing())
        let platform = ConfigAddressLatch()
        let runner = try VCPURunner(vcpus: [vcpu], handler: platform, options: .init(coalescedWrites: ring))
        try runner.start()
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(2)
        while platform.resetWrites.isEmpty && clock.now < deadline { try? await Task.sleep(for: .milliseconds(1)) }
        runner.requestStop()
        _ = runner.join()
        #expect(platform.resetWrites == [0x06])
        #expect(runner.exitCounts.portIO == 0)
    }

    @Test(.requires(kvmAvailable, noKVM))
    func withoutCoalescingEachPairExitsTwice() throws {
        let (vm, vcpu) = try makeRealModeGuest(Self.program)
        let platform = ConfigAddressLatch()
        let runner = try VCPURunner(vcpus: [vcpu], handler: platform)
        try runner.start()
        let finished = runner.waitUntilFinished(timeoutMilliseconds: 10_000)
        if !finished { runner.requestStop() }
        _ = runner.join()
        withExtendedLifetime(vm) {}
        #expect(platform.addressesSeenByCFC == Self.expectedAddresses)
        #expect(runner.exitCounts.portIO == UInt64(2 * Self.iterations))
    }
}

/// CONFIG_ADDRESS latched on dword writes to 0xCF8; each 0xCFC read records it.
final class ConfigAddressLatch: VCPUExitHandler {
    private struct State {
        var address: UInt32 = 0
        var seen: [UInt32] = []
        var reset: [UInt8] = []
    }
    private let state = Mutex(State())
    var addressesSeenByCFC: [UInt32] { state.withLock { $0.seen } }
    var resetWrites: [UInt8] { state.withLock { $0.reset } }

    func portRead(_ port: UInt16, width: AccessWidth) -> UInt64 {
        state.withLock { s in
            if port == 0xCFC { s.seen.append(s.address) }
            return width.allOnes
        }
    }
    func portWrite(_ port: UInt16, width: AccessWidth, value: UInt64) {
        if port == 0xCF8 && width == .dword { state.withLock { $0.address = UInt32(truncatingIfNeeded: value) } }
        if port == 0xCF9 && width == .byte { state.withLock { $0.reset.append(UInt8(truncatingIfNeeded: value)) } }
    }
    func mmioRead(_ address: UInt64, width: AccessWidth) -> UInt64 { width.allOnes }
    func mmioWrite(_ address: UInt64, width: AccessWidth, value: UInt64) {}
}
