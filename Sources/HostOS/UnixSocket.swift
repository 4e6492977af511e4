import CLinux
import Glibc

/// Unix-domain stream sockets: listen, accept, connect, and the socket-only calls on an owned fd
/// (send without SIGPIPE, shutdown). Every fd is close-on-exec.
public enum UnixSocket {
    /// The longest path a `sockaddr_un` holds (without its NUL).
    public static let maximumPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    /// A listening socket bound to `path`. With `replacingExisting`, a file already at `path`
    /// is removed first (as QEMU's `server=on` does); otherwise binding fails with EADDRINUSE.
    public static func listen(path: String, backlog: Int32 = 16,
                              replacingExisting: Bool = false) throws(SystemError) -> FileDescriptor {
        let fd = try stream()
        if replacingExisting { _ = unlink(path) }
        try withAddress(path) { (address, length) throws(SystemError) in
            try nothingOrError("bind", path) { bind(fd.rawValue, address, length) }
        }
        try nothingOrError("listen", path) { Glibc.listen(fd.rawValue, backlog) }
        return fd
    }

    /// A socket connected to the listener at `path`.
    public static func connect(path: String) throws(SystemError) -> FileDescriptor {
        let fd = try stream()
        try withAddress(path) { (address, length) throws(SystemError) in
            try nothingOrError("connect", path) { Glibc.connect(fd.rawValue, address, length) }
        }
        return fd
    }

    /// Waits for and accepts one connection. Fails (EINVAL) once the listener is shut down.
    public static func accept(_ listener: borrowing FileDescriptor) throws(SystemError) -> FileDescriptor {
        let raw = listener.rawValue
        let fd = try valueOrError("accept4", "fd \(raw)") { sy_accept4(raw, Int32(SOCK_CLOEXEC.rawValue)) }
        return FileDescriptor(adopting: fd)
    }

    /// A connected pair (socketpair(2)), for tests and in-process clients.
    public static func pair() throws(SystemError) -> FileDescriptor.Pipe {
        var fds: (Int32, Int32) = (-1, -1)
        try withUnsafeMutableBytes(of: &fds) { (raw) throws(SystemError) in
            let p = raw.baseAddress!.assumingMemoryBound(to: Int32.self)
            try nothingOrError("socketpair") {
                socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, p)
            }
        }
        return FileDescriptor.Pipe(readEnd: FileDescriptor(adopting: fds.0), writeEnd: FileDescriptor(adopting: fds.1))
    }

    /// Removes a socket file (a listener's path once it is closed). Missing files are fine.
    public static func removeFile(_ path: String) {
        _ = unlink(path)
    }

    private static func stream() throws(SystemError) -> FileDescriptor {
        let fd = try valueOrError("socket") {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        return FileDescriptor(adopting: fd)
    }

    private static func withAddress(
        _ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) throws(SystemError) -> Void
    ) throws(SystemError) {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= maximumPathLength, !bytes.contains(0) else {
            throw SystemError(Errno(rawValue: ENAMETOOLONG), operation: "sockaddr_un",
                              context: "path of \(bytes.count) bytes (1-\(maximumPathLength) allowed): \(path)")
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        try withUnsafePointer(to: &address) { (p) throws(SystemError) in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) in
                try body(sa, length)
            }
        }
    }
}

extension FileDescriptor {
    public enum ShutdownDirection: Sendable {
        case read, write, both
    }

    /// send(2) with MSG_NOSIGNAL: a peer that went away gives EPIPE instead of killing the
    /// process with SIGPIPE. Returns the bytes sent (possibly short).
    public borrowing func send(_ buffer: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        let fd = rawValue
        return try valueOrError("send", "fd \(fd)") {
            Glibc.send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL))
        }
    }

    /// Sends all of `bytes` on a socket, looping over short sends.
    public borrowing func sendAll(_ bytes: [UInt8]) throws(SystemError) {
        var done = 0
        while done < bytes.count {
            let n = try bytes.withUnsafeBytes { raw in
                Result { () throws(SystemError) in try send(UnsafeRawBufferPointer(rebasing: raw[done...])) }
            }.get()
            if n == 0 { throw SystemError(.ioError, operation: "send", context: "fd \(rawValue): sent 0 bytes") }
            done += n
        }
    }

    /// shutdown(2): wakes a thread blocked in read or accept on this socket.
    public borrowing func shutdown(_ direction: ShutdownDirection = .both) throws(SystemError) {
        let fd = rawValue
        let how: Int32 = switch direction {
        case .read: Int32(SHUT_RD)
        case .write: Int32(SHUT_WR)
        case .both: Int32(SHUT_RDWR)
        }
        try nothingOrError("shutdown", "fd \(fd)") { Glibc.shutdown(fd, how) }
    }
}
