import CLinux
import Glibc

/// `switchyard sandbox-probe KIND CALL`: locks the process down as a session does, starts one
/// thread of KIND, and has it make CALL. A call KIND's list forbids ends the process with the
/// sandbox's report and SIGSYS; an allowed one (or any, without the sandbox) returns a line
/// with its result. Shows on a given host that the filters load and trap.
public enum SandboxProbe {
    public enum Call: String, Sendable, CaseIterable {
        /// execve of a path that does not exist: ENOENT when it runs at all.
        case execve
        /// A new TCP socket: no list has socket(2).
        case socket
        /// ioctl(-1, KVM_RUN): EBADF where the call is allowed (vCPU threads only).
        case kvmRun = "ioctl-kvm-run"
        /// getpid: allowed everywhere.
        case getpid
        /// open(2) of /etc/passwd for reading: no thread kind is granted it (EACCES under
        /// Landlock; a kind whose list lacks openat traps).
        case openUngranted = "open-etc-passwd"
        /// open(2) of the -kernel file for reading: granted to the kinds that reboot.
        case openKernel = "open-kernel"
    }

    /// Runs `call` on a new thread of `kind` under `policy` (nil: no sandbox) and returns what
    /// the call returned.
    /// - Parameter kernel: the file `open-kernel` opens (the invocation's -kernel).
    /// - Parameter kind: nil makes the call on the calling (main) thread after lock-down.
    public static func run(_ call: Call, on kind: SandboxThreadKind?, policy: SandboxPolicy?, kernel: String? = nil) throws -> String {
        if let policy {
            try Sandbox.arm(policy)
            try Sandbox.lockDown()
        }
        guard let kind else { return "sandbox-probe: \(call.rawValue) on the main thread returned \(perform(call, kernel: kernel))" }
        let outcome = Outcome()
        let thread = try HostThread(kind: kind, name: "sandbox-probe") { outcome.text = perform(call, kernel: kernel) }
        thread.join()
        return "sandbox-probe: \(call.rawValue) on a \(kind.rawValue) thread returned \(outcome.text)"
    }

    private static func perform(_ call: Call, kernel: String?) -> String {
        let rc: Int
        switch call {
        case .execve:
            let path = "/nonexistent/switchyard-sandbox-probe"
            rc = path.withCString { p in
                var argv: [UnsafeMutablePointer<CChar>?] = [strdup(p), nil]
                defer { free(argv[0]) }
                return Int(Glibc.execve(p, &argv, environ))
            }
        case .socket:
            rc = Int(Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0))
            if rc >= 0 { Glibc.close(Int32(rc)) }
        case .kvmRun:
            rc = Int(sy_ioctl_int(-1, sy_kvm_run(), 0))
        case .getpid:
            rc = Int(Glibc.getpid())
        case .openUngranted, .openKernel:
            let path = call == .openKernel ? kernel ?? "/nonexistent/no-kernel-given" : "/etc/passwd"
            rc = Int(Glibc.open(path, O_RDONLY | O_CLOEXEC))
            if rc >= 0 { Glibc.close(Int32(rc)) }
        }
        return rc < 0 ? "-1 (\(Errno.current))" : "\(rc)"
    }

    // Written by the probe thread before join() returns, read after.
    private final class Outcome: @unchecked Sendable {
        var text = ""
    }
}
