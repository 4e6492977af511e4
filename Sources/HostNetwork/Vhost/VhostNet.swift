import CLinux
import Glibc
import HostOS
import Synchronization

/// One stretch of guest RAM as vhost reads it: guest-physical address, length, and where it is
/// mapped in this process (struct vhost_memory_region).
public struct VhostMemoryRegion: Hashable, Sendable {
    public let guestAddress: UInt64
    public let size: UInt64
    public let hostAddress: UInt64

    public init(guestAddress: UInt64, size: UInt64, hostAddress: UInt64) {
        self.guestAddress = guestAddress
        self.size = size
        self.hostAddress = hostAddress
    }
}

/// A virtqueue as vhost drives it: its size, the index to start from, where its three parts
/// live in this process, and the eventfds for the guest's kicks and for vhost's interrupts.
public struct VhostVring: Hashable, Sendable {
    public let size: UInt16
    public let base: UInt16
    public let descriptorTable: UInt64
    public let availableRing: UInt64
    public let usedRing: UInt64
    public let kick: Int32
    public let call: Int32

    public init(size: UInt16, base: UInt16, descriptorTable: UInt64, availableRing: UInt64, usedRing: UInt64,
                kick: Int32, call: Int32) {
        self.size = size
        self.base = base
        self.descriptorTable = descriptorTable
        self.availableRing = availableRing
        self.usedRing = usedRing
        self.kick = kick
        self.call = call
    }
}

/// The vhost-net kernel seam: one /dev/vhost-net instance, which serves one queue pair (vring 0
/// receives, vring 1 transmits) over a tap or macvtap fd. This host has no vhost-net, so the
/// device model is tested against `VhostNetTwin`; the real one runs in the rig.
public protocol VhostNetIO: AnyObject, Sendable {
    /// What the kernel offers (VHOST_GET_FEATURES, read when it was opened).
    var features: UInt64 { get }
    func setFeatures(_ features: UInt64) throws(SystemError)
    func setMemoryTable(_ regions: [VhostMemoryRegion]) throws(SystemError)
    /// Size, start index, addresses, kick and call eventfds of vring `index`.
    func setVring(_ index: Int, _ vring: VhostVring) throws(SystemError)
    /// The tap (or macvtap) fd vring `index` moves packets through; -1 detaches it (stops it).
    func setBackend(_ index: Int, descriptor: Int32) throws(SystemError)
    /// Stops vring `index` and returns the next available index it would have read.
    func stopVring(_ index: Int) throws(SystemError) -> UInt16
}

/// Feature bits vhost-net takes part in (the rest are the device model's): MRG_RXBUF (15),
/// INDIRECT_DESC (28), EVENT_IDX (29), VERSION_1 (32). VHOST_NET_F_VIRTIO_NET_HDR (27) stays
/// off: the tap carries the 12-byte header itself. ACCESS_PLATFORM (33) stays off too: without
/// a guest IOMMU addresses are guest-physical, and with it vhost would wait for IOTLB entries.
public enum VhostNetFeatures {
    public static let ring: UInt64 = 1 << 15 | 1 << 28 | 1 << 29 | 1 << 32
    public static let accessPlatform: UInt64 = 1 << 33
    /// Transport features a driver may negotiate that vhost-net cannot serve (ring layouts
    /// other than split, ring reset...): any of these means the userspace datapath.
    public static let unsupportedTransport: UInt64 = 1 << 34 | 1 << 40

    /// What to hand vhost for `negotiated`, or nil when it cannot serve them.
    public static func forKernel(negotiated: UInt64, offered: UInt64) -> UInt64? {
        guard negotiated & unsupportedTransport == 0 else { return nil }
        let wanted = negotiated & ring
        guard wanted & ~offered == 0, wanted & (1 << 32) != 0 else { return nil }
        return wanted
    }
}

/// /dev/vhost-net, opened and owned (VHOST_SET_OWNER) at set-up, before the sandbox.
public final class VhostNetDevice: VhostNetIO {
    private let descriptor: Mutex<FileDescriptor>
    public let features: UInt64

    public init(path: String = "/dev/vhost-net") throws(SystemError) {
        let fd = try FileDescriptor.open(path, .readWrite)
        try ioctl(fd, sy_vhost_set_owner())
        var offered: UInt64 = 0
        try ioctl(fd, sy_vhost_get_features(), &offered)
        features = offered
        descriptor = Mutex(fd)
    }

    private func control(_ body: (borrowing FileDescriptor) throws(SystemError) -> Void) throws(SystemError) {
        try descriptor.withLock { (fd: inout FileDescriptor) throws(SystemError) in try body(fd) }
    }

    public func setFeatures(_ features: UInt64) throws(SystemError) {
        var value = features
        try control { (fd) throws(SystemError) in try ioctl(fd, sy_vhost_set_features(), &value) }
    }

    public func setMemoryTable(_ regions: [VhostMemoryRegion]) throws(SystemError) {
        // struct vhost_memory: nregions, padding, then the regions (32 bytes each).
        var table = [UInt64](repeating: 0, count: 1 + 4 * regions.count)
        table[0] = UInt64(regions.count)
        for (i, region) in regions.enumerated() {
            table[1 + 4 * i] = region.guestAddress
            table[2 + 4 * i] = region.size
            table[3 + 4 * i] = region.hostAddress
        }
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 * table.count, alignment: 8)
        defer { bytes.deallocate() }
        table.withUnsafeBytes { bytes.copyMemory(from: $0) }
        try control { (fd) throws(SystemError) in _ = try ioctl(fd, sy_vhost_set_mem_table(), bytes.baseAddress) }
    }

    public func setVring(_ index: Int, _ vring: VhostVring) throws(SystemError) {
        let number = UInt32(index)
        var size = vhost_vring_state(index: number, num: UInt32(vring.size))
        var base = vhost_vring_state(index: number, num: UInt32(vring.base))
        var addresses = vhost_vring_addr(index: number, flags: 0, desc_user_addr: vring.descriptorTable,
                                         used_user_addr: vring.usedRing, avail_user_addr: vring.availableRing,
                                         log_guest_addr: 0)
        var kick = vhost_vring_file(index: number, fd: vring.kick)
        var call = vhost_vring_file(index: number, fd: vring.call)
        try control { (fd) throws(SystemError) in
            try ioctl(fd, sy_vhost_set_vring_num(), &size)
            try ioctl(fd, sy_vhost_set_vring_base(), &base)
            try ioctl(fd, sy_vhost_set_vring_addr(), &addresses)
            try ioctl(fd, sy_vhost_set_vring_kick(), &kick)
            try ioctl(fd, sy_vhost_set_vring_call(), &call)
        }
    }

    public func setBackend(_ index: Int, descriptor backend: Int32) throws(SystemError) {
        var file = vhost_vring_file(index: UInt32(index), fd: backend)
        try control { (fd) throws(SystemError) in try ioctl(fd, sy_vhost_net_set_backend(), &file) }
    }

    public func stopVring(_ index: Int) throws(SystemError) -> UInt16 {
        var state = vhost_vring_state(index: UInt32(index), num: 0)
        try control { (fd) throws(SystemError) in try ioctl(fd, sy_vhost_get_vring_base(), &state) }
        return UInt16(truncatingIfNeeded: state.num)
    }
}

/// A recording stand-in for /dev/vhost-net (this host has none): it keeps what it was told, as
/// the kernel would need it, and refuses what the kernel refuses that the device model could
/// get wrong (a vring set up before the memory table, a backend before its vring).
public final class VhostNetTwin: VhostNetIO {
    public struct State: Sendable {
        public var features: UInt64?
        public var regions: [VhostMemoryRegion] = []
        public var vrings: [Int: VhostVring] = [:]
        public var backends: [Int: Int32] = [:]
        public var calls: [String] = []
    }
    public let features: UInt64
    private let state = Mutex(State())

    public init(features: UInt64 = VhostNetFeatures.ring | VhostNetFeatures.accessPlatform) {
        self.features = features
    }

    public var recorded: State { state.withLock { $0 } }

    public func setFeatures(_ features: UInt64) throws(SystemError) {
        // vhost_net_set_features: EOPNOTSUPP for a bit it does not offer.
        guard features & ~self.features == 0 else { throw SystemError(Errno(rawValue: EOPNOTSUPP), operation: "VHOST_SET_FEATURES") }
        state.withLock { $0.features = features; $0.calls.append("features") }
    }

    public func setMemoryTable(_ regions: [VhostMemoryRegion]) throws(SystemError) {
        state.withLock { $0.regions = regions; $0.calls.append("mem-table") }
    }

    public func setVring(_ index: Int, _ vring: VhostVring) throws(SystemError) {
        try state.withLock { (s: inout State) throws(SystemError) in
            guard (0...1).contains(index) else { throw SystemError(Errno(rawValue: ENOBUFS), operation: "VHOST_SET_VRING_NUM") }
            // vhost_vring_set_addr checks the rings against the memory table (EFAULT).
            let lengths = [(vring.descriptorTable, 16 * UInt64(vring.size)), (vring.availableRing, 6 + 2 * UInt64(vring.size)),
                           (vring.usedRing, 6 + 8 * UInt64(vring.size))]
            for (address, length) in lengths where !s.regions.contains(where: {
                address >= $0.hostAddress && address - $0.hostAddress < $0.size && length <= $0.size - (address - $0.hostAddress)
            }) {
                throw SystemError(Errno(rawValue: EFAULT), operation: "VHOST_SET_VRING_ADDR")
            }
            s.vrings[index] = vring
            s.calls.append("vring \(index)")
        }
    }

    public func setBackend(_ index: Int, descriptor: Int32) throws(SystemError) {
        try state.withLock { (s: inout State) throws(SystemError) in
            guard descriptor < 0 || s.vrings[index] != nil else { throw SystemError(Errno(rawValue: EFAULT), operation: "VHOST_NET_SET_BACKEND") }
            if descriptor < 0 { s.backends[index] = nil } else { s.backends[index] = descriptor }
            s.calls.append(descriptor < 0 ? "detach \(index)" : "backend \(index)")
        }
    }

    public func stopVring(_ index: Int) throws(SystemError) -> UInt16 {
        state.withLock { s in
            s.calls.append("stop \(index)")
            return s.vrings[index]?.base ?? 0
        }
    }
}
