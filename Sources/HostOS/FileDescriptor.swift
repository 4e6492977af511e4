import CLinux
import Glibc

/// An owned file descriptor. Exactly one value owns an fd: it is closed when the owner is
/// destroyed (`deinit`), explicitly with `close()`, or released with `take()`.
///
/// Reads and writes retry on EINTR. Thread safety: the operations are single system calls on
/// the fd; concurrent reads and writes from several threads are as safe as the kernel makes them.
public struct FileDescriptor: ~Copyable, Sendable {
    private let fd: Int32

    /// Takes ownership of `rawValue`, which must be an open fd no one else will close.
    public init(adopting rawValue: Int32) {
        precondition(rawValue >= 0, "FileDescriptor(adopting:) needs an open fd")
        self.fd = rawValue
    }

    deinit { _ = Glibc.close(fd) }

    /// The raw number, for calls that need it. Valid while this value is alive.
    public var rawValue: Int32 { fd }

    /// Releases ownership: the caller now must close the returned fd.
    public consuming func take() -> Int32 {
        let fd = self.fd
        discard self
        return fd
    }

    /// Closes the fd, reporting an error. The fd is gone either way (Linux never leaves it open
    /// after close fails, so close is not retried on EINTR).
    public consuming func close() throws(SystemError) {
        let fd = self.fd
        discard self
        if Glibc.close(fd) == -1 { throw SystemError.current("close", "fd \(fd)") }
    }

    // MARK: Opening

    public enum AccessMode: Int32, Sendable {
        case readOnly, writeOnly, readWrite
        var flag: Int32 {
            switch self {
            case .readOnly: O_RDONLY
            case .writeOnly: O_WRONLY
            case .readWrite: O_RDWR
            }
        }
    }

    public struct OpenOptions: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let create = OpenOptions(rawValue: O_CREAT)
        public static let exclusive = OpenOptions(rawValue: O_EXCL)
        public static let truncate = OpenOptions(rawValue: O_TRUNC)
        public static let append = OpenOptions(rawValue: O_APPEND)
        public static let nonBlocking = OpenOptions(rawValue: O_NONBLOCK)
        public static let closeOnExec = OpenOptions(rawValue: O_CLOEXEC)
        public static let directory = OpenOptions(rawValue: O_DIRECTORY)
        public static let noFollow = OpenOptions(rawValue: O_NOFOLLOW)
    }

    /// open(2). `permissions` applies when `.create` is given. Close-on-exec by default.
    public static func open(
        _ path: String, _ access: AccessMode, options: OpenOptions = [.closeOnExec],
        permissions: mode_t = 0o600
    ) throws(SystemError) -> FileDescriptor {
        let flags = access.flag | options.rawValue
        let fd = try valueOrError("open", path) { Glibc.open(path, flags, permissions) }
        return FileDescriptor(adopting: fd)
    }

    /// A pipe's two ends, each owned. Frozen so callers can take the two ends apart.
    @frozen
    public struct Pipe: ~Copyable, Sendable {
        public var readEnd: FileDescriptor
        public var writeEnd: FileDescriptor
    }

    /// pipe2(2) with O_CLOEXEC, plus O_NONBLOCK when asked.
    public static func pipe(nonBlocking: Bool = false) throws(SystemError) -> Pipe {
        var fds: (Int32, Int32) = (-1, -1)
        let flags = O_CLOEXEC | (nonBlocking ? O_NONBLOCK : 0)
        try withUnsafeMutableBytes(of: &fds) { (raw) throws(SystemError) in
            let p = raw.baseAddress!.assumingMemoryBound(to: Int32.self)
            try nothingOrError("pipe2") { sy_pipe2(p, flags) }
        }
        return Pipe(readEnd: FileDescriptor(adopting: fds.0), writeEnd: FileDescriptor(adopting: fds.1))
    }

    /// dup(2) with close-on-exec: a second owner of the same open file description.
    public borrowing func duplicate() throws(SystemError) -> FileDescriptor {
        let fd = self.fd
        let new = try valueOrError("fcntl(F_DUPFD_CLOEXEC)", "fd \(fd)") { fcntl(fd, F_DUPFD_CLOEXEC, 0) }
        return FileDescriptor(adopting: new)
    }

    // MARK: I/O

    /// read(2): returns the number of bytes read, 0 at end of file.
    public borrowing func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        let fd = self.fd
        return try valueOrError("read", "fd \(fd)") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// pread(2) at `offset`.
    public borrowing func read(fromAbsoluteOffset offset: Int64,
                               into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        let fd = self.fd
        return try valueOrError("pread", "fd \(fd) offset \(offset)") {
            pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
        }
    }

    /// write(2): returns the number of bytes written (possibly short).
    public borrowing func write(_ buffer: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        let fd = self.fd
        return try valueOrError("write", "fd \(fd)") { Glibc.write(fd, buffer.baseAddress, buffer.count) }
    }

    /// pwrite(2) at `offset`.
    public borrowing func write(toAbsoluteOffset offset: Int64,
                                _ buffer: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        let fd = self.fd
        return try valueOrError("pwrite", "fd \(fd) offset \(offset)") {
            pwrite(fd, buffer.baseAddress, buffer.count, off_t(offset))
        }
    }

    /// Writes all of `bytes`, looping over short writes.
    public borrowing func writeAll(_ bytes: some Sequence<UInt8>) throws(SystemError) {
        let array = Array(bytes)
        var done = 0
        while done < array.count {
            let n = try array.withUnsafeBytes { raw in
                Result { () throws(SystemError) in try write(UnsafeRawBufferPointer(rebasing: raw[done...])) }
            }.get()
            if n == 0 { throw SystemError(.ioError, operation: "write", context: "fd \(fd): wrote 0 bytes") }
            done += n
        }
    }

    /// Reads until end of file (for small files such as sysfs attributes), at most `limit` bytes.
    public borrowing func readToEnd(limit: Int = 1 << 20) throws(SystemError) -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while result.count < limit {
            let n = try chunk.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) in try read(into: raw) }
            }.get()
            if n == 0 { break }
            result.append(contentsOf: chunk[..<n])
        }
        return result.count > limit ? Array(result[..<limit]) : result
    }

    /// The file's size from fstat(2).
    public borrowing func size() throws(SystemError) -> Int64 {
        let fd = self.fd
        var st = stat()
        try nothingOrError("fstat", "fd \(fd)") { fstat(fd, &st) }
        return Int64(st.st_size)
    }

    /// ftruncate(2).
    public borrowing func truncate(to size: Int64) throws(SystemError) {
        let fd = self.fd
        try nothingOrError("ftruncate", "fd \(fd)") { ftruncate(fd, off_t(size)) }
    }

    /// Sets or clears O_NONBLOCK.
    public borrowing func setNonBlocking(_ on: Bool) throws(SystemError) {
        let fd = self.fd
        let flags = try valueOrError("fcntl(F_GETFL)", "fd \(fd)") { fcntl(fd, F_GETFL) }
        let new = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        try nothingOrError("fcntl(F_SETFL)", "fd \(fd)") { fcntl(fd, F_SETFL, new) }
    }
}
