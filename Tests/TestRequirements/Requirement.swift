// What a test needs from outside the package (a tool, /dev/kvm, a kernel image, a kernel
// capability). Where it is missing the test is skipped visibly; under CI (CI=true, where
// scripts/setup.sh has installed everything) a missing requirement fails the test instead.
// The static release build has no Testing module; this target is for test targets only.
#if canImport(Testing)
import Foundation
import Testing

/// True when the run is CI's (`.ci/run` sets CI=true): nothing may be skipped there.
public let runningUnderCI = ProcessInfo.processInfo.environment["CI"] == "true"

/// `.requires(condition, "what is missing and how to get it")`: a test or suite trait.
public struct Requirement: TestTrait, SuiteTrait, TestScoping {
    let isMet: @Sendable () -> Bool
    let missing: String

    public var isRecursive: Bool { true }

    /// Checked once per test (not per argument of a parameterized test), never for a suite itself.
    public func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        test.isSuite || testCase != nil ? nil : self
    }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        if isMet() {
            try await function()
            return
        }
        try skip(test.name, missing)
    }
}

extension Trait where Self == Requirement {
    public static func requires(_ condition: @autoclosure @escaping @Sendable () -> Bool, _ missing: String) -> Self {
        Requirement(isMet: condition, missing: missing)
    }
}

/// Inside a test body: the value, or a visible skip (a failure under CI) naming what is missing.
public func required<T>(_ value: T?, _ missing: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> T {
    if let value { return value }
    try skip(Test.current?.name ?? "test", missing, sourceLocation: sourceLocation)
}

/// Inside a test body: continue only if `condition` holds; otherwise a visible skip (a failure under CI).
public func require(_ condition: Bool, _ missing: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    if !condition { try skip(Test.current?.name ?? "test", missing, sourceLocation: sourceLocation) }
}

private struct MissingUnderCI: Error, CustomStringConvertible {
    let description: String
}

private func skip(_ name: String, _ missing: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Never {
    if runningUnderCI {
        Issue.record("CI=true, where everything is installed, but \(name) is missing: \(missing)", sourceLocation: sourceLocation)
        throw MissingUnderCI(description: missing)
    }
    // Swift Testing prints a cancelled test but not a cancelled parameterized test; say it once here.
    print("➜ Test \(name) skipped: \(missing)")
    try Test.cancel("skipped: \(missing)", sourceLocation: sourceLocation)
}
#endif
