/// One line of a seccomp allow-list: a system call by the name libseccomp knows it by, and
/// what the filter does with it.
/// (argument `argument` & `mask`) == `value`.
public struct ArgumentTest: Sendable, Hashable {
    public let argument: Int
    public let mask: UInt64
    public let value: UInt64

    public init(argument: Int, mask: UInt64, equals value: UInt64) {
        self.argument = argument
        self.mask = mask
        self.value = value
    }
}

public struct SyscallRule: Sendable, Hashable {
    public enum Action: Sendable, Hashable {
        /// Runs.
        case allow
        /// Runs when (argument `index` & `mask`) == `value`; rules for one call are alternatives.
        case allowIf(argument: Int, mask: UInt64, equals: UInt64)
        /// Runs when every one of these holds (one rule: its tests are all required).
        case allowIfAll([ArgumentTest])
        /// Fails with this errno without running (a caller that has a fallback takes it).
        case fail(errno: Int32)
    }

    public let name: String
    public let action: Action

    public init(_ name: String, _ action: Action = .allow) {
        self.name = name
        self.action = action
    }

    /// Each call in `names`, unconditionally.
    public static func calls(_ names: String...) -> [SyscallRule] { names.map { SyscallRule($0) } }

    /// ioctl(2) with one of these request numbers (compared on the low 32 bits, the kernel's
    /// `unsigned int cmd`).
    public static func ioctl(_ requests: [UInt]) -> [SyscallRule] {
        requests.map { SyscallRule("ioctl", .allowIf(argument: 1, mask: 0xFFFF_FFFF, equals: UInt64($0) & 0xFFFF_FFFF)) }
    }
}

/// Rules that belong together, with the reason they are there.
public struct SyscallGroup: Sendable, Hashable {
    public let reason: String
    public let rules: [SyscallRule]

    public init(_ reason: String, _ rules: [SyscallRule]) {
        self.reason = reason
        self.rules = rules
    }
}

/// What one kind of thread may do after set-up.
public struct SandboxAllowList: Sendable, Hashable {
    public let groups: [SyscallGroup]

    public init(_ groups: [SyscallGroup]) { self.groups = groups }

    public var rules: [SyscallRule] { groups.flatMap(\.rules) }

    /// Distinct system calls the list lets run (in some form).
    public var allowedCalls: Set<String> {
        Set(rules.filter { if case .fail = $0.action { false } else { true } }.map(\.name))
    }

    /// Every rule of both lists, once.
    public func union(_ other: SandboxAllowList) -> SandboxAllowList {
        var seen = Set(rules)
        var merged = groups
        for group in other.groups {
            let fresh = group.rules.filter { seen.insert($0).inserted }
            if !fresh.isEmpty { merged.append(SyscallGroup(group.reason, fresh)) }
        }
        return SandboxAllowList(merged)
    }
}
