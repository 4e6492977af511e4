import Glibc
import Synchronization

/// The name of a link Switchyard creates: `sy<pid>-<n>`, the creating process's id and a
/// per-process serial number, so that a later start can tell links of dead processes (a crash,
/// a SIGKILL) from those of running ones and remove them. At most 15 bytes (IFNAMSIZ - 1): a pid
/// has at most 7 digits (pid_max is at most 2^22), which leaves 5 digits for the serial.
public struct OwnedLinkName: Hashable, Sendable, CustomStringConvertible {
    public static let prefix = "sy"
    public let ownerProcess: pid_t
    public let serial: Int

    public init?(ownerProcess: pid_t, serial: Int) {
        guard ownerProcess > 0, serial >= 0 else { return nil }
        self.ownerProcess = ownerProcess
        self.serial = serial
        guard description.utf8.count <= 15 else { return nil }
    }

    /// Parses a link name made by this type; nil for any other name.
    public init?(parsing name: String) {
        guard name.hasPrefix(Self.prefix) else { return nil }
        let parts = name.dropFirst(Self.prefix.count).split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
              let pid = pid_t(parts[0]), let serial = Int(parts[1]),
              String(pid) == parts[0], String(serial) == parts[1]
        else { return nil }
        self.init(ownerProcess: pid, serial: serial)
    }

    private static let nextSerial = Atomic<Int>(0)

    /// A fresh name owned by the calling process.
    public static func next() -> OwnedLinkName {
        let serial = nextSerial.add(1, ordering: .relaxed).oldValue % 100_000
        return OwnedLinkName(ownerProcess: getpid(), serial: serial)!
    }

    public var description: String { "\(Self.prefix)\(ownerProcess)-\(serial)" }
}

/// Whether a process exists (kill(pid, 0): EPERM means it exists but is not ours).
public func processIsAlive(_ pid: pid_t) -> Bool {
    kill(pid, 0) == 0 || errno == EPERM
}

extension RouteSocket {
    /// Deletes the macvtap links named by `OwnedLinkName` whose owner process is gone, and
    /// returns their names. Links of live processes and every other link are left alone.
    @discardableResult
    public func removeStaleMacvtaps(isAlive: (pid_t) -> Bool = processIsAlive) throws(NetlinkError) -> [String] {
        var removed: [String] = []
        for link in try links() where link.kind == "macvtap" {
            guard let owned = OwnedLinkName(parsing: link.name), !isAlive(owned.ownerProcess) else { continue }
            do {
                try deleteLink(named: link.name)
                removed.append(link.name)
            } catch where error.isNotFound {
                // Another starting process removed it first.
            }
        }
        return removed
    }
}
