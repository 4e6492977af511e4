import Glibc
import HostOS

/// Who uses a VF: a running Switchyard process and its netdev.
public struct VirtualFunctionUser: Hashable, Sendable, CustomStringConvertible {
    public var pid: Int32
    public var netdevID: String
    public var pf: String
    public var vf: Int
    public var vfAddress: String

    public var description: String { "switchyard pid \(pid) (netdev \(netdevID))" }

    var record: String { "pid=\(pid)\nnetdev=\(netdevID)\npf=\(pf)\nvf=\(vf)\naddress=\(vfAddress)\n" }

    init(pid: Int32, netdevID: String, pf: String, vf: Int, vfAddress: String) {
        (self.pid, self.netdevID, self.pf, self.vf, self.vfAddress) = (pid, netdevID, pf, vf, vfAddress)
    }

    init?(record: String) {
        var fields: [Substring: Substring] = [:]
        for line in record.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            fields[line[..<equals]] = line[line.index(after: equals)...]
        }
        guard let pid = fields["pid"].flatMap({ Int32($0) }), let vf = fields["vf"].flatMap({ Int($0) }),
              let netdev = fields["netdev"], let pf = fields["pf"], let address = fields["address"] else { return nil }
        self.init(pid: pid, netdevID: String(netdev), pf: String(pf), vf: vf, vfAddress: String(address))
    }
}

/// A VF held by this process: an exclusive flock on `RUN/vf/<VF PCI address>`, which the kernel
/// drops when the process dies, so a crash never leaves a VF reserved. The file says who holds it.
public struct VirtualFunctionReservation: ~Copyable, Sendable {
    let file: FileDescriptor
    let path: String
    public let user: VirtualFunctionUser

    /// Removes the file, then drops the lock (closing the fd).
    public consuming func release() {
        _ = unlink(path)
    }
}

/// The reservation files under `RUN/vf`: taking one, and listing who holds which (for
/// `switchyard host list`).
public enum VirtualFunctionRegistry {
    static func path(of vfAddress: String, runDirectory: String) -> String {
        "\(runDirectory)/vf/\(vfAddress)"
    }

    /// Reserves the VF for `user`, or returns nil when another holder has it.
    public static func reserve(_ user: VirtualFunctionUser, runDirectory: String) throws(HostNetworkError) -> VirtualFunctionReservation? {
        let path = path(of: user.vfAddress, runDirectory: runDirectory)
        do throws(SystemError) {
            try FileSystem.makeDirectories("\(runDirectory)/vf", permissions: 0o755)
            // A holder that releases unlinks the file first; retry when the locked file is no
            // longer the one at the path, so two processes never hold "the same" VF.
            for _ in 0..<8 {
                let file = try FileDescriptor.open(path, .readWrite, options: [.create, .closeOnExec], permissions: 0o644)
                if flock(file.rawValue, LOCK_EX | LOCK_NB) != 0 {
                    if errno == EWOULDBLOCK { return nil }
                    throw SystemError.current("flock", path)
                }
                var opened = stat(), current = stat()
                guard fstat(file.rawValue, &opened) == 0, stat(path, &current) == 0,
                      opened.st_ino == current.st_ino, opened.st_dev == current.st_dev else { continue }
                try file.truncate(to: 0)
                try file.writeAll(user.record.utf8)
                return VirtualFunctionReservation(file: file, path: path, user: user)
            }
            throw SystemError(.busy, operation: "flock", context: path)
        } catch {
            throw .system(error)
        }
    }

    /// Who holds the VF at `vfAddress`, nil when no live process does.
    public static func holder(of vfAddress: String, runDirectory: String) -> VirtualFunctionUser? {
        holder(atPath: path(of: vfAddress, runDirectory: runDirectory))
    }

    /// Every VF reservation held by a running process, ordered by PF and VF index. This is what
    /// `switchyard host list` shows as "in use by".
    public static func activeUsers(runDirectory: String = "/run/switchyard") -> [VirtualFunctionUser] {
        let entries = (try? FileSystem.listDirectory("\(runDirectory)/vf")) ?? []
        return entries.compactMap { holder(atPath: "\(runDirectory)/vf/\($0)") }
            .sorted { ($0.pf, $0.vf) < ($1.pf, $1.vf) }
    }

    private static func holder(atPath path: String) -> VirtualFunctionUser? {
        guard let file = try? FileDescriptor.open(path, .readOnly) else { return nil }
        // A shared lock succeeds only when no one holds the exclusive one: the file is stale.
        if flock(file.rawValue, LOCK_SH | LOCK_NB) == 0 { return nil }
        guard let bytes = try? file.readToEnd(limit: 4096) else { return nil }
        return VirtualFunctionUser(record: String(decoding: bytes, as: UTF8.self))
    }
}
