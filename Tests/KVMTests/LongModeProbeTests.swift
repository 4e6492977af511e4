import KVM
import TestRequirements
import Testing

@Suite struct LongModeProbeTests {
    /// KVM accepts the probe's long-mode state and the vCPU comes back one way or the other:
    /// through the loop and the marker (fast or slow), or after the watchdog's kick. `.failed`
    /// would mean a broken set-up (rejected segments, paging, a wrong port write).
    @Test(.requires(kvmAvailable, noKVM))
    func probeEntersLongModeAndReturns() {
        let outcome = LongModeProbe.run(timeoutMilliseconds: 10_000)
        switch outcome {
        case .runs, .tooSlow, .hangs: break
        case .unavailable, .failed: Issue.record("\(outcome)")
        }
        print("kvm-probe on this host: \(outcome)")
    }

    /// The speed limit decides between `.runs` and `.tooSlow`: with no time allowed at all,
    /// any host that finishes the loop is too slow.
    @Test(.requires(kvmAvailable, noKVM))
    func aZeroSpeedLimitReportsTooSlow() {
        let outcome = LongModeProbe.run(timeoutMilliseconds: 10_000, speedLimitMicroseconds: 0)
        switch outcome {
        case .tooSlow(let us, let limit): #expect(us > 0 && limit == 0)
        case .hangs: break  // a host that never finishes
        default: Issue.record("\(outcome)")
        }
        #expect(!outcome.runs64BitGuests)
    }

    @Test func missingDeviceIsUnavailable() {
        let outcome = LongModeProbe.run(kvmPath: "/nonexistent/kvm")
        guard case .unavailable(let error) = outcome else { Issue.record("\(outcome)"); return }
        #expect("\(error)".contains("/nonexistent/kvm") || "\(error)".contains("No such file"))
    }
}
