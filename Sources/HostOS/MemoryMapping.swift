import CLinux
import Glibc

/// An owned mmap(2) mapping, unmapped when the owner is destroyed. Guest RAM lives in one.
///
/// The bytes are reached inside `withUnsafeMutableBytes`; to hand the memory to something that
/// outlives a closure (guest memory regions, KVM), wrap the mapping in a `SharedMapping`, whose
/// lifetime then bounds the pointer's validity.
public struct MemoryMapping: ~Copyable, @unchecked Sendable {
    private let base: UnsafeMutableRawPointer
    /// Length in bytes (as requested; the kernel rounds the mapping up to pages).
    public let count: Int

    public struct Protection: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let read = Protection(rawValue: PROT_READ)
        public static let write = Protection(rawValue: PROT_WRITE)
        public static let execute = Protection(rawValue: PROT_EXEC)
        public static let readWrite: Protection = [.read, .write]
    }

    public enum Sharing: Sendable {
        /// MAP_SHARED: writes reach the file / are seen by other mappers.
        case shared
        /// MAP_PRIVATE: copy-on-write.
        case `private`
    }

    public struct Options: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// MAP_NORESERVE: do not reserve swap (guest RAM is touched lazily).
        public static let noReserve = Options(rawValue: MAP_NORESERVE)
        /// MAP_POPULATE: prefault the pages now.
        public static let populate = Options(rawValue: MAP_POPULATE)
        /// MAP_HUGETLB: back with huge pages (fails unless the host has them reserved).
        public static let hugeTLB = Options(rawValue: MAP_HUGETLB)
    }

    /// An anonymous mapping of `count` zero-filled bytes.
    public static func anonymous(
        count: Int, protection: Protection = .readWrite, sharing: Sharing = .private,
        options: Options = [.noReserve]
    ) throws(SystemError) -> MemoryMapping {
        let flags = MAP_ANONYMOUS | sharing.flag | options.rawValue
        return try MemoryMapping(count: count, protection: protection, flags: flags, fd: -1, offset: 0)
    }

    /// An anonymous mapping of `count` zero-filled bytes whose first byte is a multiple of
    /// `alignment` (a power of two, at least a page). Guest RAM is aligned to 2 MiB so that the
    /// host can back it with transparent huge pages and KVM can map those as huge pages: that
    /// needs the host address and the guest-physical address to agree modulo 2 MiB.
    public static func anonymous(
        count: Int, alignedTo alignment: Int, protection: Protection = .readWrite,
        sharing: Sharing = .private, options: Options = [.noReserve]
    ) throws(SystemError) -> MemoryMapping {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard count > 0, alignment >= page, alignment & (alignment - 1) == 0 else {
            throw SystemError(.invalidArgument, operation: "mmap",
                              context: "length \(count), alignment \(alignment): want a positive length and a power-of-two alignment of at least a page")
        }
        // Map enough to hold an aligned run of `count` bytes, then give back both ends.
        let (rounded, o1) = count.addingReportingOverflow(page - 1)
        let length = rounded & ~(page - 1)
        let (padded, o2) = length.addingReportingOverflow(alignment)
        guard !o1, !o2 else {
            throw SystemError(.invalidArgument, operation: "mmap", context: "length \(count) too large")
        }
        let flags = MAP_ANONYMOUS | sharing.flag | options.rawValue
        guard let p = mmap(nil, padded, protection.rawValue, flags, -1, 0), p != MAP_FAILED else {
            throw SystemError.current("mmap", "length \(padded)")
        }
        let start = UInt(bitPattern: p)
        let head = Int((UInt(alignment) - start % UInt(alignment)) % UInt(alignment))
        let tail = padded - head - length
        if head > 0 { _ = munmap(p, head) }
        if tail > 0 { _ = munmap(p + head + length, tail) }
        return MemoryMapping(base: p + head, count: count)
    }

    private init(base: UnsafeMutableRawPointer, count: Int) {
        self.base = base
        self.count = count
    }

    /// A mapping of `count` bytes of `fd` from `offset` (page-aligned), e.g. a VFIO BAR.
    public init(
        mapping fd: borrowing FileDescriptor, offset: Int64 = 0, count: Int,
        protection: Protection = .readWrite, sharing: Sharing = .shared, options: Options = []
    ) throws(SystemError) {
        try self.init(count: count, protection: protection, flags: sharing.flag | options.rawValue,
                      fd: fd.rawValue, offset: offset)
    }

    private init(count: Int, protection: Protection, flags: Int32, fd: Int32, offset: Int64) throws(SystemError) {
        guard count > 0 else {
            throw SystemError(.invalidArgument, operation: "mmap", context: "zero length")
        }
        let context = "fd \(fd), offset \(offset), length \(count)"
        guard let p = mmap(nil, count, protection.rawValue, flags, fd, off_t(offset)),
              p != MAP_FAILED
        else { throw SystemError.current("mmap", context) }
        self.base = p
        self.count = count
    }

    deinit { _ = munmap(base, count) }

    /// Unmaps now, reporting an error. The mapping is gone either way.
    public consuming func unmap() throws(SystemError) {
        let (base, count) = (self.base, self.count)
        discard self
        if munmap(base, count) == -1 { throw SystemError.current("munmap", "length \(count)") }
    }

    /// The host address of the first byte (for KVM_SET_USER_MEMORY_REGION and VFIO DMA maps).
    public var hostAddress: UInt { UInt(bitPattern: base) }

    public borrowing func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: base, count: count))
    }

    public borrowing func withUnsafeBytes<R, E: Error>(
        _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    public enum Advice: Sendable {
        case normal, dontNeed, dontFork, doFork, mergeable, hugePage, noHugePage
        var raw: Int32 {
            switch self {
            case .normal: MADV_NORMAL
            case .dontNeed: MADV_DONTNEED
            case .dontFork: MADV_DONTFORK
            case .doFork: MADV_DOFORK
            case .mergeable: MADV_MERGEABLE
            case .hugePage: MADV_HUGEPAGE
            case .noHugePage: MADV_NOHUGEPAGE
            }
        }
    }

    /// madvise(2) over the whole mapping (e.g. `.dontFork` for DMA-mapped guest RAM).
    public borrowing func advise(_ advice: Advice) throws(SystemError) {
        let (base, count) = (self.base, self.count)
        try nothingOrError("madvise", "length \(count)") { madvise(base, count, advice.raw) }
    }

    /// mprotect(2) over the whole mapping.
    public borrowing func protect(_ protection: Protection) throws(SystemError) {
        let (base, count) = (self.base, self.count)
        try nothingOrError("mprotect", "length \(count)") { mprotect(base, count, protection.rawValue) }
    }
}

extension MemoryMapping.Sharing {
    var flag: Int32 { self == .shared ? MAP_SHARED : MAP_PRIVATE }
}

/// A mapping owned by a reference: the pointer in `bytes` stays valid while this object lives.
/// This is how guest RAM is handed to `GuestMemory` (as the region's owner) and to KVM.
///
/// Sendable because the mapping itself is immutable; the bytes are shared memory that several
/// threads (and the guest) read and write without Swift-level synchronization.
public final class SharedMapping: @unchecked Sendable {
    public let mapping: MemoryMapping
    public let bytes: UnsafeMutableRawBufferPointer

    public init(_ mapping: consuming MemoryMapping) {
        let bytes = mapping.withUnsafeMutableBytes { $0 }
        self.mapping = mapping
        self.bytes = bytes
    }

    public var hostAddress: UInt { mapping.hostAddress }
    public var count: Int { mapping.count }
}
