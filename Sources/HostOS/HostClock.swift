import Glibc

/// The host's clocks, in nanoseconds.
public enum HostClock {
    /// CLOCK_MONOTONIC: never jumps; for intervals and device timers.
    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// CLOCK_REALTIME: wall-clock time since the epoch; for the guest's RTC.
    public static func realtimeNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
    }

    /// Sleeps the calling thread (nanosleep, resumed after signals).
    public static func sleep(milliseconds: Int) {
        var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

extension FileDescriptor {
    /// An owned duplicate of an fd this process does not own (standard output, say), so the
    /// original stays open whatever happens to the copy.
    public static func duplicating(_ rawValue: Int32) throws(SystemError) -> FileDescriptor {
        let new = fcntl(rawValue, F_DUPFD_CLOEXEC, 0)
        guard new >= 0 else { throw SystemError.current("fcntl(F_DUPFD_CLOEXEC)", "fd \(rawValue)") }
        return FileDescriptor(adopting: new)
    }
}
