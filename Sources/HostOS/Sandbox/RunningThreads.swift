import CLinux
import CSeccomp
import Glibc

/// The threads of this process other than the caller, by /proc/self/task.
enum RunningThreads {
    /// Their thread ids (an unreadable directory gives none).
    static func others() -> [Int32] {
        let me = sy_gettid()
        let names = (try? FileSystem.listDirectory("/proc/self/task")) ?? []
        return names.compactMap(Int32.init).filter { $0 != me }
    }

    /// Whether thread `id` of this process still runs.
    static func exists(_ id: Int32) -> Bool { FileSystem.exists("/proc/self/task/\(id)") }

    /// Its name (what ps shows), or "?" once it has ended.
    static func name(_ id: Int32) -> String {
        guard let bytes = try? FileSystem.readFile("/proc/self/task/\(id)/comm", limit: 64) else { return "?" }
        return String(decoding: bytes.prefix { $0 != 10 }, as: UTF8.self)
    }

    /// Gives every thread already running the Landlock `ruleset` (Linux confines only the
    /// calling thread, and threads the runtime or Dispatch started during set-up have no kind
    /// that would confine them): each is sent the request (SIGSYS by tgkill, see the C shim)
    /// and answers from its handler. Repeats while new threads appear (one not yet confined
    /// may have started another). A thread that does not answer within `timeout` (one that
    /// blocks SIGSYS) or cannot take the ruleset fails lock-down, naming it.
    static func confine(to ruleset: Int32, timeout: Duration = .seconds(2)) throws(SandboxError) {
        guard sy_seccomp_signals_reach_every_thread() != 0 else {
            let line = "switchyard: sandbox: a ThreadSanitizer build: threads already running at lock-down keep no Landlock ruleset (TSan's own thread cannot take the request)\n"
            _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
            return
        }
        sy_seccomp_set_confining_ruleset(ruleset)
        let process = getpid()
        let deadline = ContinuousClock.now + timeout
        var asked = Set<Int32>()
        while case let fresh = others().filter({ !asked.contains($0) }), !fresh.isEmpty {
            // ESRCH: the thread ended meanwhile, nothing to confine.
            for id in fresh where sy_tgkill(process, id, SIGSYS) == 0 { asked.insert(id) }
            while let waiting = asked.first(where: { sy_seccomp_confined_result($0) == 1 && exists($0) }) {
                guard ContinuousClock.now < deadline else {
                    throw SandboxError("thread \(waiting) (\(name(waiting))) did not take the file-access ruleset within \(timeout) (does it block SIGSYS?); -sandbox off runs without it")
                }
                usleep(1000)
            }
        }
        // 1 (no answer) is a thread that ended before it took the request.
        for id in asked {
            let result = sy_seccomp_confined_result(id)
            guard result < 0 else { continue }
            throw SandboxError("thread \(id) (\(name(id))) could not take the file-access ruleset: \(Errno(rawValue: -result))")
        }
    }
}
