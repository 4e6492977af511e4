import CSeccomp
import Glibc
import Synchronization

public struct SandboxError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// `-sandbox on[,spawn=deny]`: what the filters allow beyond the lists.
public struct SandboxPolicy: Sendable, Hashable {
    /// spawn=allow (QEMU's default): fork and process clones run; execve never does.
    public var allowsSpawning: Bool
    /// The files each kind may still open (Landlock, where the kernel has it); nil: only the
    /// system-call lists apply.
    public var fileAccess: SandboxFileAccess?

    public init(allowsSpawning: Bool = true, fileAccess: SandboxFileAccess? = nil) {
        self.allowsSpawning = allowsSpawning
        self.fileAccess = fileAccess
    }

    /// A kind's list, or the base every thread gets at lock-down (nil).
    public func allowList(for kind: SandboxThreadKind?) -> SandboxAllowList {
        let list = kind.map(SandboxAllowLists.list(for:)) ?? SandboxAllowLists.base
        return allowsSpawning ? list.union(SandboxAllowList([SandboxAllowLists.spawning])) : list
    }
}

/// The seccomp sandbox (libseccomp). Set-up runs unfiltered; `lockDown()` then gives every
/// thread the base filter (TSYNC), and each thread Switchyard starts confines itself further
/// to its kind's list (`confineCurrentThread`): filters stack, the strictest wins. A call no
/// filter allows traps; the SIGSYS reporter names it and the process dies of SIGSYS.
public enum Sandbox {
    enum Stage: Sendable, Equatable {
        case off
        /// Lock-down is coming: a thread that confines itself waits for it (TSYNC requires
        /// that no thread has a filter of its own yet).
        case armed(SandboxPolicy)
        case lockedDown(SandboxPolicy)
    }

    private static let stage = Mutex(Stage.off)
    /// Each kind's Landlock ruleset, made at `arm` (nil: no file-access narrowing).
    private static let fileRulesets = Mutex<LandlockRulesets?>(nil)

    /// Prepares the sandbox: the reporter is installed, and threads started from now on wait
    /// for `lockDown()` before they run their loops.
    public static func arm(_ policy: SandboxPolicy) throws(SandboxError) {
        do {
            try ThreadSpawner.start()
        } catch {
            throw SandboxError("\(error)")
        }
        let rc = sy_seccomp_install_reporter()
        guard rc == 0 else { throw SandboxError("cannot install the SIGSYS reporter: \(Errno(rawValue: -rc))") }
        if let access = policy.fileAccess {
            switch LandlockRulesets.version() {
            case .success(let abi):
                let rulesets = try LandlockRulesets(access, abi: abi)
                fileRulesets.withLock { $0 = rulesets }
            case .failure(let reason):
                let line = "switchyard: sandbox: file opens are not narrowed to the granted paths: \(reason); the system-call lists still apply\n"
                _ = line.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
            }
        }
        stage.withLock { $0 = .armed(policy) }
    }

    /// Ends set-up: every thread gets the base filter, and the calling thread (the main one,
    /// which waits for the end and tears down) its own Landlock ruleset (every kind's grants and
    /// the teardown's): threads it starts from now on begin inside that ruleset, and every
    /// thread already running takes it too (`RunningThreads.confine`).
    public static func lockDown() throws(SandboxError) {
        try stage.withLock { (stage) throws(SandboxError) in
            guard case .armed(let policy) = stage else { return }
            do throws(SandboxError) {
                if let rulesets = fileRulesets.withLock({ $0 }) {
                    // The threads already running first: listing them reads /proc, which the
                    // main thread's own ruleset no longer allows.
                    try RunningThreads.confine(to: rulesets.mainThread)
                    try rulesets.confine(nil)
                }
                try load(policy.allowList(for: nil), allThreads: true)
            } catch {
                stage = .off
                throw error
            }
            stage = .lockedDown(policy)
        }
    }

    /// True once `lockDown()` has run.
    public static var isLockedDown: Bool {
        if case .lockedDown = stage.withLock({ $0 }) { return true }
        return false
    }

    /// Confines the calling thread to `kind`'s list (after lock-down; waits for it while the
    /// sandbox is armed; nothing when it is off). A thread that cannot be confined does not
    /// run unconfined: the process reports it and ends.
    public static func confineCurrentThread(to kind: SandboxThreadKind) {
        while true {
            switch stage.withLock({ $0 }) {
            case .off:
                return
            case .armed:
                usleep(1000)
            case .lockedDown(let policy):
                sy_seccomp_set_thread_kind(kindNames[kind])
                do {
                    // Landlock first: its call is in the base list every thread already has.
                    try fileRulesets.withLock { $0 }?.confine(kind)
                    try load(policy.allowList(for: kind), allThreads: false)
                } catch {
                    let line = "switchyard: sandbox: cannot confine a \(kind.rawValue) thread: \(error)\n"
                    _ = line.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
                    _exit(1)
                }
                return
            }
        }
    }

    /// The kinds' names as C strings that live forever, for the SIGSYS reporter.
    nonisolated(unsafe) private static let kindNames: [SandboxThreadKind: UnsafePointer<CChar>] =
        Dictionary(uniqueKeysWithValues: SandboxThreadKind.allCases.map { ($0, UnsafePointer(strdup($0.rawValue)!)) })

    /// Compiles `list` into a trapping filter and loads it into this thread (or every thread).
    static func load(_ list: SandboxAllowList, allThreads: Bool) throws(SandboxError) {
        guard let filter = sy_seccomp_new_trapping_filter() else { throw SandboxError("libseccomp cannot allocate a filter") }
        defer { sy_seccomp_release(filter) }
        for rule in list.rules {
            let number = try syscallNumber(rule.name)
            let rc: Int32
            switch rule.action {
            case .allow: rc = sy_seccomp_allow(filter, number)
            case .allowIf(let argument, let mask, let value):
                rc = sy_seccomp_allow_masked(filter, number, UInt32(argument), mask, value)
            case .allowIfAll(let tests):
                let arguments = tests.map { UInt32($0.argument) }, masks = tests.map(\.mask), values = tests.map(\.value)
                rc = sy_seccomp_allow_all_masked(filter, number, UInt32(tests.count), arguments, masks, values)
            case .fail(let error): rc = sy_seccomp_fail_with(filter, number, error)
            }
            guard rc == 0 else { throw SandboxError("libseccomp refused the rule for \(rule.name): \(Errno(rawValue: -rc))") }
        }
        let rc = sy_seccomp_load(filter, allThreads ? 1 : 0)
        guard rc == 0 else {
            throw SandboxError("cannot load the seccomp filter\(allThreads ? " into every thread" : ""): \(Errno(rawValue: -rc)) (a kernel without CONFIG_SECCOMP_FILTER? -sandbox off runs without it)")
        }
    }

    /// The number libseccomp knows `name` by on this architecture.
    public static func syscallNumber(_ name: String) throws(SandboxError) -> Int32 {
        let number = sy_seccomp_syscall_number(name)
        guard number >= 0 else { throw SandboxError("no system call named \(name) on this architecture") }
        return number
    }
}
