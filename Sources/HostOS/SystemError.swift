import CLinux
import Glibc

/// An errno value with names for the codes this project meets.
public struct Errno: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current errno.
    public static var current: Errno { Errno(rawValue: Glibc.errno) }

    public static let notPermitted = Errno(rawValue: EPERM)
    public static let noSuchFileOrDirectory = Errno(rawValue: ENOENT)
    public static let interrupted = Errno(rawValue: EINTR)
    public static let ioError = Errno(rawValue: EIO)
    public static let badFileDescriptor = Errno(rawValue: EBADF)
    public static let wouldBlock = Errno(rawValue: EAGAIN)
    public static let noMemory = Errno(rawValue: ENOMEM)
    public static let permissionDenied = Errno(rawValue: EACCES)
    public static let badAddress = Errno(rawValue: EFAULT)
    public static let busy = Errno(rawValue: EBUSY)
    public static let fileExists = Errno(rawValue: EEXIST)
    public static let noDevice = Errno(rawValue: ENODEV)
    public static let notDirectory = Errno(rawValue: ENOTDIR)
    public static let isDirectory = Errno(rawValue: EISDIR)
    public static let invalidArgument = Errno(rawValue: EINVAL)
    public static let noSpace = Errno(rawValue: ENOSPC)
    public static let inappropriateIOControl = Errno(rawValue: ENOTTY)
    public static let outOfRange = Errno(rawValue: ERANGE)
    public static let notSupported = Errno(rawValue: EOPNOTSUPP)
    public static let noSuchDevice = Errno(rawValue: ENXIO)
    public static let argumentListTooLong = Errno(rawValue: E2BIG)
    public static let messageTooLong = Errno(rawValue: EMSGSIZE)

    /// strerror text, e.g. "No such file or directory".
    public var message: String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 128) { buffer in
            sy_strerror(rawValue, buffer.baseAddress!, buffer.count)
            return String(cString: buffer.baseAddress!)
        }
    }

    public var description: String { "\(message) (errno \(rawValue))" }
}

/// A failed system call: the errno it left, the operation's name and what it acted on.
///
/// `description` reads like `open(/nonexistent): No such file or directory (errno 2)`.
public struct SystemError: Error, Hashable, Sendable, CustomStringConvertible {
    public var errno: Errno
    /// The call that failed, e.g. "open", "ioctl", "mmap".
    public var operation: String
    /// What it acted on: a path, an fd, an ioctl request.
    public var context: String?

    public init(_ errno: Errno, operation: String, context: String? = nil) {
        self.errno = errno
        self.operation = operation
        self.context = context
    }

    /// Captures the calling thread's errno. Call it right after the failing call.
    public static func current(_ operation: String, _ context: String? = nil) -> SystemError {
        SystemError(.current, operation: operation, context: context)
    }

    public var description: String {
        let subject = context.map { "(\($0))" } ?? ""
        return "\(operation)\(subject): \(errno)"
    }
}

// MARK: - Call helpers (internal)

/// Runs `body` until it does not fail with EINTR (when `retryOnInterrupt`), turning -1 into a
/// `SystemError` that carries errno.
@inline(__always)
func valueOrError<I: FixedWidthInteger>(
    _ operation: String, _ context: @autoclosure () -> String? = nil,
    retryOnInterrupt: Bool = true, _ body: () -> I
) throws(SystemError) -> I {
    while true {
        let result = body()
        if result != -1 { return result }
        let e = Errno.current
        if retryOnInterrupt && e == .interrupted { continue }
        throw SystemError(e, operation: operation, context: context())
    }
}

@inline(__always)
func nothingOrError<I: FixedWidthInteger>(
    _ operation: String, _ context: @autoclosure () -> String? = nil,
    retryOnInterrupt: Bool = true, _ body: () -> I
) throws(SystemError) {
    _ = try valueOrError(operation, context(), retryOnInterrupt: retryOnInterrupt, body)
}
