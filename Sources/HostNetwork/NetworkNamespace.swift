import CLinux
import Glibc
import HostOS
import Synchronization

/// Work done inside a named network namespace (`ip netns add NAME` makes /run/netns/NAME).
///
/// setns(2) moves only the calling thread, so the work runs on a thread of its own that enters
/// the namespace and ends with it. What that work creates (a tap, a socket) stays in the
/// namespace, and its fds work from any thread afterwards.
public enum NetworkNamespace {
    /// The bind-mount iproute2 keeps for namespace `name`.
    public static func path(of name: String) -> String { "/run/netns/" + name }

    /// Runs `body` on a new thread inside namespace `name` and returns its result.
    public static func run<T: Sendable>(in name: String, _ body: @escaping @Sendable () -> T) throws(SystemError) -> T {
        let handle = try FileDescriptor.open(path(of: name), .readOnly)
        let raw = handle.rawValue
        let result = Mutex<Result<T, SystemError>?>(nil)
        let thread = try HostThread(name: "netns") {
            guard sy_setns(raw, sy_clone_newnet()) == 0 else {
                let error = SystemError.current("setns", path(of: name))
                result.withLock { $0 = .failure(error) }
                return
            }
            let value = body()
            result.withLock { $0 = .success(value) }
        }
        thread.join()
        _ = handle
        return try result.withLock { $0 }!.get()
    }
}
