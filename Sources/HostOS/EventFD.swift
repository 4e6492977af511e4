import CLinux
import Glibc

/// An owned eventfd(2): a 64-bit counter the kernel can signal (irqfd) or that signals the
/// kernel (ioeventfd), and that epoll can wait on.
public struct EventFD: ~Copyable, Sendable {
    public let descriptor: FileDescriptor

    public struct Options: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let closeOnExec = Options(rawValue: Int32(EFD_CLOEXEC))
        public static let nonBlocking = Options(rawValue: Int32(EFD_NONBLOCK))
        /// Each read takes 1 from the counter instead of all of it.
        public static let semaphore = Options(rawValue: Int32(EFD_SEMAPHORE))
    }

    public init(initialValue: UInt32 = 0, options: Options = [.closeOnExec, .nonBlocking]) throws(SystemError) {
        let fd = try valueOrError("eventfd") { eventfd(initialValue, options.rawValue) }
        descriptor = FileDescriptor(adopting: fd)
    }

    /// Adopts an fd that is known to be an eventfd.
    public init(adopting descriptor: consuming FileDescriptor) {
        self.descriptor = descriptor
    }

    public var rawValue: Int32 { descriptor.rawValue }

    /// Adds `value` to the counter (wakes waiters). EAGAIN (counter would overflow on a
    /// non-blocking eventfd) is reported as an error.
    public borrowing func signal(_ value: UInt64 = 1) throws(SystemError) {
        var v = value
        let n = try withUnsafeBytes(of: &v) { (raw) throws(SystemError) in try descriptor.write(raw) }
        if n != 8 { throw SystemError(.ioError, operation: "eventfd write", context: "short write \(n)") }
    }

    /// Reads and resets the counter (or takes 1 in semaphore mode). Returns nil when the
    /// counter is zero on a non-blocking eventfd; blocks otherwise.
    public borrowing func consume() throws(SystemError) -> UInt64? {
        var v: UInt64 = 0
        do throws(SystemError) {
            let n = try withUnsafeMutableBytes(of: &v) { (raw) throws(SystemError) in try descriptor.read(into: raw) }
            if n != 8 { throw SystemError(.ioError, operation: "eventfd read", context: "short read \(n)") }
            return v
        } catch where error.errno == .wouldBlock {
            return nil
        }
    }

    /// Gives up the eventfd as a plain owned fd.
    public consuming func take() -> FileDescriptor { descriptor }
}

/// An eventfd with more than one holder (a device and the thread that waits on it, a vector's
/// notifier and KVM's irqfd registration): closed when the last holder lets go.
public final class SharedEventFD: Sendable {
    public let eventFD: EventFD

    public init(options: EventFD.Options = [.closeOnExec, .nonBlocking]) throws(SystemError) {
        eventFD = try EventFD(options: options)
    }

    public var rawValue: Int32 { eventFD.rawValue }
}
