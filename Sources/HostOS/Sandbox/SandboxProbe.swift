import CLinux
import Glibc
import Synchronization

/// `switchyard sandbox-probe WHERE CALL`: locks the process down as a session does and has a
/// thread make CALL. A call the thread's list forbids ends the process with the sandbox's
/// report and SIGSYS; an allowed one (or any, without the sandbox) returns a line with its
/// result. Shows on a given host that the filters load and trap.
public enum SandboxProbe {
    /// The thread that makes the call.
    public enum Site: Sendable, Hashable {
        /// A new thread of this kind, started after lock-down.
        case thread(SandboxThreadKind)
        /// The main thread itself, after lock-down.
        case main
        /// A thread of no kind started before lock-down (as the runtime's and Dispatch's first
        /// workers are), making the call after it: it has the base list, which TSYNC gave it,
        /// and the main thread's Landlock ruleset, which lock-down asked it to take.
        case early

        /// `main`, `early` or a kind's name.
        public init?(_ name: String) {
            switch name {
            case "main": self = .main
            case "early": self = .early
            default:
                guard let kind = SandboxThreadKind(rawValue: name) else { return nil }
                self = .thread(kind)
            }
        }

        public static let names = SandboxThreadKind.allCases.map(\.rawValue) + ["main", "early"]

        var description: String {
            switch self {
            case .thread(let kind): "on a \(kind.rawValue) thread"
            case .main: "on the main thread"
            case .early: "on a thread started before lock-down"
            }
        }
    }

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
        /// tgkill of the parent process with signal 0 (a permission check, nothing delivered):
        /// no list lets a thread signal another process.
        case signalParent = "signal-parent"
        /// tgkill of the calling thread with signal 0, as pthread_kill does: allowed everywhere.
        case signalSelf = "signal-self"
    }

    /// Makes `call` at `site` under `policy` (nil: no sandbox) and returns what the call returned.
    /// - Parameter kernel: the file `open-kernel` opens (the invocation's -kernel).
    public static func run(_ call: Call, at site: Site, policy: SandboxPolicy?, kernel: String? = nil) throws -> String {
        let outcome = Outcome()
        // Read before lock-down: no list has getppid.
        let parent = getppid()
        let perform: @Sendable () -> String = { Self.perform(call, kernel: kernel, parent: parent) }
        var early: HostThread?
        if site == .early {
            // Started unsandboxed; it makes the call once lock-down has ended set-up.
            early = try HostThread(name: "sandbox-early") {
                while !outcome.lockedDown.load(ordering: .acquiring) { usleep(1000) }
                outcome.text = perform()
            }
        }
        if let policy {
            try Sandbox.arm(policy)
            try Sandbox.lockDown()
        }
        switch site {
        case .main:
            outcome.text = perform()
        case .early:
            outcome.lockedDown.store(true, ordering: .releasing)
            early?.join()
        case .thread(let kind):
            let thread = try HostThread(kind: kind, name: "sandbox-probe") { outcome.text = perform() }
            thread.join()
        }
        return "sandbox-probe: \(call.rawValue) \(site.description) returned \(outcome.text)"
    }

    private static func perform(_ call: Call, kernel: String?, parent: pid_t) -> String {
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
        case .signalParent:
            rc = Int(sy_tgkill(parent, parent, 0))
        case .signalSelf:
            rc = Int(sy_tgkill(Glibc.getpid(), sy_gettid(), 0))
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
        /// Set once lock-down has run (for the early thread).
        let lockedDown = Atomic<Bool>(false)
    }
}
