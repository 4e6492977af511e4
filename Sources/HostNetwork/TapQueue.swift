import CLinux
import Glibc
import HostOS
import Synchronization

/// One queue of a tap (or macvtap) interface: an owned, nonblocking fd whose every read gives
/// one frame and every write sends one, each behind a virtio-net header (IFF_VNET_HDR).
///
/// Reads and writes are single readv/writev calls, so a device can hand guest buffers straight
/// to the kernel. Safe to use from several threads (one reader, one writer), as the kernel is.
public final class TapQueue: Sendable {
    public let descriptor: FileDescriptor
    /// The interface's name (tap0, macvtap3 ...), as the kernel reports it.
    public let interfaceName: String
    /// TUNGETIFF's flags for this queue (IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, IFF_MULTI_QUEUE ...).
    public let flags: TapFlags
    /// Whether the queue is attached as this process last set it (a queue opens attached).
    private let attached = Mutex(true)

    /// Opens /dev/net/tun and attaches a queue of tap `interfaceName` (created when missing;
    /// an empty name lets the kernel pick tapN), with vnet headers and no packet information;
    /// `multiQueue` adds IFF_MULTI_QUEUE, so opening the same name again adds a queue.
    public static func open(interfaceName: String, multiQueue: Bool,
                            cloneDevice: String = "/dev/net/tun") throws(TapError) -> TapQueue {
        guard interfaceName.utf8.count < Int(sy_ifnamsiz()) else {
            throw .nameTooLong(interfaceName, limit: Int(sy_ifnamsiz()) - 1)
        }
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(cloneDevice, .readWrite, options: [.closeOnExec, .nonBlocking])
        } catch {
            throw .system(error, hint: "is the tun module loaded and \(cloneDevice) there?")
        }
        var requested: TapFlags = [.tap, .noPacketInformation, .vnetHeader]
        if multiQueue { requested.insert(.multiQueue) }
        var name = [CChar](repeating: 0, count: Int(sy_ifnamsiz()))
        let raw = fd.rawValue
        let rc = sy_tun_set_iff(raw, interfaceName, Int16(bitPattern: UInt16(requested.rawValue)), &name)
        if rc != 0 {
            let error = SystemError.current("ioctl(TUNSETIFF)", interfaceName)
            let hint: String = switch error.errno {
            case .notPermitted, .permissionDenied: "creating or attaching a tap needs CAP_NET_ADMIN (or a tap owned by this user)"
            case .invalidArgument: "'\(interfaceName)' exists with other flags (a multi-queue tap needs queues=N on every open, a single-queue one none)"
            case .busy: "tap '\(interfaceName)' is already attached to another process"
            default: "could not attach tap '\(interfaceName)'"
            }
            throw .system(error, hint: hint)
        }
        return try TapQueue(checking: fd)
    }

    /// Adopts an fd opened elsewhere: a tap queue passed with `fd=` or a macvtap's /dev/tapN.
    /// It must be a tap with IFF_VNET_HDR (macvtap queues always are); it is made nonblocking.
    public convenience init(adopting fd: consuming FileDescriptor) throws(TapError) {
        do {
            try fd.setNonBlocking(true)
        } catch {
            throw .system(error, hint: "the fd given is not open")
        }
        try self.init(checking: fd)
    }

    private init(checking fd: consuming FileDescriptor) throws(TapError) {
        let interfaceName: String, flags: TapFlags
        do throws(SystemError) {
            (interfaceName, flags) = try Self.interface(of: fd.rawValue)
        } catch {
            throw .system(error, hint: "the fd is not a tap or macvtap queue")
        }
        guard flags.contains(.tap) else { throw .notATap(interfaceName, missing: "IFF_TAP (it is a tun: no Ethernet frames)") }
        guard flags.contains(.vnetHeader) else {
            throw .notATap(interfaceName, missing: "IFF_VNET_HDR (open it with vnet_hdr=on / IFF_VNET_HDR)")
        }
        self.descriptor = fd
        self.interfaceName = interfaceName
        self.flags = flags
    }

    /// TUNSETVNETHDRSZ: the header in front of each frame (virtio 1.x: 12 bytes, with
    /// num_buffers; legacy without mergeable buffers: 10).
    public func setVnetHeaderSize(_ size: Int) throws(SystemError) {
        var value = Int32(size)
        try ioctl(descriptor, sy_tun_set_vnet_header_size(), &value)
    }

    /// TUNGETVNETHDRSZ.
    public func vnetHeaderSize() throws(SystemError) -> Int {
        var value: Int32 = 0
        try ioctl(descriptor, sy_tun_get_vnet_header_size(), &value)
        return Int(value)
    }

    /// TUNSETOFFLOAD: what the kernel may hand us in a read (partial checksums, GSO frames),
    /// which must be what the guest accepts (its GUEST_CSUM/GUEST_TSO4/6 features).
    public func setOffloads(_ offloads: TapOffloads) throws(SystemError) {
        try ioctl(descriptor, sy_tun_set_offload(), UInt(offloads.rawValue))
    }

    /// TUNSETQUEUE: attaches this queue of a multi-queue tap (or macvtap) or detaches it. The
    /// kernel steers frames only to attached queues, as QEMU has it for queue pairs the guest
    /// does not use.
    /// Setting the state it is in does nothing (the kernel refuses it).
    public func setAttached(_ wanted: Bool) throws(SystemError) {
        try attached.withLock { (current: inout Bool) throws(SystemError) in
            guard current != wanted else { return }
            let flags = Int16(wanted ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE)
            if sy_tun_set_queue(descriptor.rawValue, flags) != 0 {
                throw .current("ioctl(TUNSETQUEUE, \(wanted ? "IFF_ATTACH_QUEUE" : "IFF_DETACH_QUEUE"))", interfaceName)
            }
            current = wanted
        }
    }

    /// Whether this tap queue is attached (TUNGETIFF reports IFF_DETACH_QUEUE on a detached one).
    public func isAttached() throws(SystemError) -> Bool {
        !(try Self.interface(of: descriptor.rawValue).flags.contains(.detachedQueue))
    }

    /// TUNGETIFF: the interface's name and this queue's flags.
    private static func interface(of fd: Int32) throws(SystemError) -> (name: String, flags: TapFlags) {
        var name = [CChar](repeating: 0, count: Int(sy_ifnamsiz()))
        var raw: Int16 = 0
        if sy_tun_get_iff(fd, &name, &raw) != 0 { throw .current("ioctl(TUNGETIFF)", "fd \(fd)") }
        return (String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
                TapFlags(rawValue: UInt32(UInt16(bitPattern: raw))))
    }

    /// Sends one frame (vnet header first) gathered from `buffers`. Returns the bytes
    /// written, or nil when the queue is full (EAGAIN).
    public func writev(_ buffers: UnsafeBufferPointer<iovec>) throws(SystemError) -> Int? {
        let raw = descriptor.rawValue
        while true {
            let n = Glibc.writev(raw, buffers.baseAddress, Int32(buffers.count))
            if n >= 0 { return n }
            let errno = Errno.current
            if errno == .interrupted { continue }
            if errno == .wouldBlock { return nil }
            throw SystemError(errno, operation: "writev", context: interfaceName)
        }
    }

    /// Receives one frame (vnet header first) scattered into `buffers`. Returns its length, or
    /// nil when none is waiting (EAGAIN). A frame longer than the buffers is cut short.
    public func readv(_ buffers: UnsafeBufferPointer<iovec>) throws(SystemError) -> Int? {
        let raw = descriptor.rawValue
        while true {
            let n = Glibc.readv(raw, buffers.baseAddress, Int32(buffers.count))
            if n >= 0 { return n }
            let errno = Errno.current
            if errno == .interrupted { continue }
            if errno == .wouldBlock { return nil }
            throw SystemError(errno, operation: "readv", context: interfaceName)
        }
    }

    /// Sends one frame from contiguous bytes (vnet header included).
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) -> Int? {
        var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        return try withUnsafePointer(to: &vector) { (p) throws(SystemError) in
            try writev(UnsafeBufferPointer(start: p, count: 1))
        }
    }

    /// Receives one frame into contiguous bytes (vnet header included).
    public func read(into bytes: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int? {
        var vector = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
        return try withUnsafePointer(to: &vector) { (p) throws(SystemError) in
            try readv(UnsafeBufferPointer(start: p, count: 1))
        }
    }
}

/// TUNSETIFF/TUNGETIFF flags (linux/if_tun.h).
public struct TapFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let tun = TapFlags(rawValue: UInt32(IFF_TUN))
    public static let tap = TapFlags(rawValue: UInt32(IFF_TAP))
    public static let noPacketInformation = TapFlags(rawValue: UInt32(IFF_NO_PI))
    public static let vnetHeader = TapFlags(rawValue: UInt32(IFF_VNET_HDR))
    public static let multiQueue = TapFlags(rawValue: UInt32(IFF_MULTI_QUEUE))
    /// TUNGETIFF reports it on a queue TUNSETQUEUE detached.
    public static let detachedQueue = TapFlags(rawValue: UInt32(IFF_DETACH_QUEUE))
}

/// TUNSETOFFLOAD bits (linux/if_tun.h TUN_F_*).
public struct TapOffloads: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Frames may carry a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM).
    public static let checksum = TapOffloads(rawValue: UInt32(TUN_F_CSUM))
    public static let tso4 = TapOffloads(rawValue: UInt32(TUN_F_TSO4))
    public static let tso6 = TapOffloads(rawValue: UInt32(TUN_F_TSO6))
    public static let tsoECN = TapOffloads(rawValue: UInt32(TUN_F_TSO_ECN))
    public static let ufo = TapOffloads(rawValue: UInt32(TUN_F_UFO))
}

/// Why a tap queue could not be opened or adopted.
public enum TapError: Error, Hashable, Sendable, CustomStringConvertible {
    case system(SystemError, hint: String)
    case nameTooLong(String, limit: Int)
    case notATap(String, missing: String)

    public var description: String {
        switch self {
        case .system(let error, let hint): "\(error): \(hint)"
        case .nameTooLong(let name, let limit): "interface name '\(name)' is longer than \(limit) characters; choose a shorter ifname="
        case .notATap(let name, let missing): "'\(name)' is not usable as a tap queue: it lacks \(missing)"
        }
    }
}
