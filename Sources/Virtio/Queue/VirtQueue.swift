import Glibc
import PCI
import Synchronization
import VMMBase

/// Where a split virtqueue lives, as the driver programmed it (common config queue_*).
public struct VirtQueueAddresses: Hashable, Sendable, Codable {
    /// queue_desc, queue_driver (available ring), queue_device (used ring): bus addresses.
    public var descriptorTable: UInt64
    public var driverArea: UInt64
    public var deviceArea: UInt64

    public init(descriptorTable: UInt64, driverArea: UInt64, deviceArea: UInt64) {
        self.descriptorTable = descriptorTable
        self.driverArea = driverArea
        self.deviceArea = deviceArea
    }
}

/// One split virtqueue (virtio 1.2, 2.7) from the device side, over the function's DMA port.
///
/// Every value read from guest memory is read once and checked: indices against the queue
/// size, chains against the queue size (loops), lengths with overflow-checked arithmetic,
/// descriptor order and indirect-table rules. A violation marks the whole device NEEDS_RESET
/// through the transport (one rate-limited guest-error line); from then on the queue serves
/// nothing. The VMM never traps on guest input.
///
/// A device uses a queue from one thread at a time; the lock makes it safe regardless.
public final class VirtQueue: Sendable {
    public let index: Int
    public let size: UInt16
    public let addresses: VirtQueueAddresses
    let port: any DMAPort
    private let interrupts: any VirtioInterruptSignaller
    let eventIndex: Bool
    let indirect: Bool
    /// VIRTIO_F_RING_PACKED was negotiated: the ring is packed (2.8), else split (2.7).
    public let packed: Bool
    private let broken = Atomic<Bool>(false)
    /// The thread-specific key of burst views, copied from the one all queues share (read on
    /// every ring word: a copy spares the lazy global's check).
    private let ringViewKey = VirtQueue.sharedRingViewKey

    struct Cursor: Hashable, Sendable, Codable {
        /// The next available-ring slot the device reads (free-running 16-bit).
        var nextAvailable: UInt16 = 0
        /// The next used-ring slot the device writes (free-running 16-bit).
        var nextUsed: UInt16 = 0
        /// used->idx when the driver was last interrupted (EVENT_IDX's "old"); nil before the
        /// first decision, which always interrupts (as QEMU's: no old index to compare yet).
        var usedAtLastSignal: UInt16?
        /// Whether the device wants kicks (VRING_USED_F_NO_NOTIFY / avail_event upkeep).
        var notificationsEnabled = true
        /// avail->idx as last read: the entries before it are taken without reading it again
        /// (the driver only moves it forward). Not device state: snapshots and comparisons
        /// leave it out, and a restored cursor reads the index afresh.
        var lastAvailableIndex: UInt16?
        /// A packed ring's wrap counters (2.8.1), both 1 at start; a packed ring's positions
        /// (`nextAvailable`, `nextUsed`) are ring slots, 0..<size. Unused by split rings.
        var availableWrap = true
        var usedWrap = true

        init() {}

        private enum CodingKeys: String, CodingKey {
            case nextAvailable, nextUsed, usedAtLastSignal, notificationsEnabled, availableWrap, usedWrap
        }

        /// Snapshots taken before packed rings existed have no wrap counters: 1, as at start.
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            nextAvailable = try c.decode(UInt16.self, forKey: .nextAvailable)
            nextUsed = try c.decode(UInt16.self, forKey: .nextUsed)
            usedAtLastSignal = try c.decodeIfPresent(UInt16.self, forKey: .usedAtLastSignal)
            notificationsEnabled = try c.decode(Bool.self, forKey: .notificationsEnabled)
            availableWrap = try c.decodeIfPresent(Bool.self, forKey: .availableWrap) ?? true
            usedWrap = try c.decodeIfPresent(Bool.self, forKey: .usedWrap) ?? true
        }

        static func == (a: Cursor, b: Cursor) -> Bool {
            (a.nextAvailable, a.nextUsed, a.usedAtLastSignal, a.notificationsEnabled, a.availableWrap, a.usedWrap)
                == (b.nextAvailable, b.nextUsed, b.usedAtLastSignal, b.notificationsEnabled, b.availableWrap, b.usedWrap)
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(nextAvailable)
            hasher.combine(nextUsed)
            hasher.combine(usedAtLastSignal)
            hasher.combine(notificationsEnabled)
            hasher.combine(availableWrap)
            hasher.combine(usedWrap)
        }
    }
    let cursor = Mutex(Cursor())

    /// - Parameters:
    ///   - size: 1...32768, a power of two for a split ring (the transport checks the driver's value).
    ///   - features: the negotiated features (INDIRECT_DESC, EVENT_IDX and RING_PACKED are honoured).
    public init(index: Int, size: UInt16, addresses: VirtQueueAddresses, features: VirtioFeatures,
                port: any DMAPort, interrupts: any VirtioInterruptSignaller) {
        packed = features.contains(.ringPacked)
        precondition(Self.acceptsSize(size, packed: packed), "queue size is checked by the transport")
        self.index = index
        self.size = size
        self.addresses = addresses
        self.port = port
        self.interrupts = interrupts
        eventIndex = features.contains(.eventIndex)
        indirect = features.contains(.indirectDescriptors)
    }

    /// A queue size a driver may set: 1...32768, and a power of two for a split ring (2.7;
    /// a packed ring takes any size, 2.8).
    public static func acceptsSize(_ size: UInt16, packed: Bool) -> Bool {
        size > 0 && size <= 32768 && (packed || size & (size - 1) == 0)
    }

    /// Runs a batch of this queue's work (pops, chain accesses, completions) with the DMA
    /// port's admission checked once (`DMAPort.burst`): the batch must not wait on the host.
    /// The ring's three parts are also looked up once, at the start (as QEMU's vring caches):
    /// where each is one contiguous range of guest RAM, the batch reads and writes the ring
    /// words there instead of through a DMA access each. So a translation changed during a
    /// batch applies to its ring words from the next one, as Bus Master Enable does (an IOMMU
    /// invalidation will have to wait for bursts, as an unplug does).
    @discardableResult
    public func burst<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        try port.burst { () throws(E) -> R in
            guard heldView == nil, var view = lookUpRingView() else { return try body() }
            return try withUnsafeMutablePointer(to: &view) { (held) throws(E) -> R in
                let outer = pthread_getspecific(ringViewKey)
                pthread_setspecific(ringViewKey, held)
                defer { pthread_setspecific(ringViewKey, outer) }
                return try body()
            }
        }
    }

    /// A burst's view of the ring: its parts in host memory, for the burst's thread only (a
    /// thread-specific pointer to the burst's stack, so it cannot outlive the burst).
    struct RingView {
        let queue: ObjectIdentifier
        let descriptors: UnsafeMutableRawPointer
        let driver: UnsafeMutableRawPointer
        let device: UnsafeMutableRawPointer

        func start(of part: RingPart) -> UnsafeMutableRawPointer {
            switch part {
            case .descriptors: descriptors
            case .driver: driver
            case .device: device
            }
        }
    }

    /// The three areas the driver gives (common config queue_desc, queue_driver,
    /// queue_device): a split ring's descriptor table, available ring and used ring; a packed
    /// ring's descriptor ring and its driver and device event suppression structures.
    enum RingPart {
        case descriptors, driver, device
    }

    func base(of part: RingPart) -> UInt64 {
        switch part {
        case .descriptors: addresses.descriptorTable
        case .driver: addresses.driverArea
        case .device: addresses.deviceArea
        }
    }

    /// Each area's bytes, and whether the device writes it (the split used ring; a packed
    /// ring's descriptors, which the device writes back, and its device area).
    func extent(of part: RingPart) -> (length: UInt64, write: Bool) {
        switch (part, packed) {
        case (.descriptors, false): (SplitRing.descriptorTableBytes(size: size), false)
        case (.driver, false): (SplitRing.availableBytes(size: size), false)
        case (.device, false): (SplitRing.usedBytes(size: size), true)
        case (.descriptors, true): (PackedRing.ringBytes(size: size), true)
        case (.driver, true): (PackedRing.eventStructureBytes, false)
        case (.device, true): (PackedRing.eventStructureBytes, true)
        }
    }

    private static let sharedRingViewKey: pthread_key_t = {
        var key = pthread_key_t()
        let status = pthread_key_create(&key, nil)
        precondition(status == 0, "pthread_key_create: \(status)")
        return key
    }()

    /// This queue's view, when this thread is in one of its bursts.
    var heldView: UnsafePointer<RingView>? {
        guard let raw = pthread_getspecific(ringViewKey) else { return nil }
        let view = UnsafePointer(raw.assumingMemoryBound(to: RingView.self))
        return view.pointee.queue == ObjectIdentifier(self) ? view : nil
    }

    /// The ring's parts through the port (with the checks of the accesses they replace: the
    /// parts the device writes as writes), or nil when one is not a single host range, or
    /// refused: then each access goes through the port and reports its own error.
    private func lookUpRingView() -> RingView? {
        func start(_ part: RingPart) -> UnsafeMutableRawPointer? {
            let (length, write) = extent(of: part)
            return (try? singleHostRange(at: base(of: part), length: length, write: write)) ?? nil
        }
        guard let descriptors = start(.descriptors), let driver = start(.driver), let device = start(.device) else { return nil }
        return RingView(queue: ObjectIdentifier(self), descriptors: descriptors, driver: driver, device: device)
    }

    /// The start of `[address, address + length)` in this process, when the port lends it as
    /// one range; nil when it spans several.
    private func singleHostRange(at address: UInt64, length: UInt64, write: Bool) throws(DMAError) -> UnsafeMutableRawPointer? {
        var pieces = 0
        var start: UnsafeMutableRawPointer?
        try port.forEachHostSegment(at: address, length: length, write: write) { segment in
            pieces += 1
            start = segment.baseAddress
        }
        return pieces == 1 ? start : nil
    }

    /// The next available-ring slot the device reads: where a backend that takes the queue
    /// over (vhost) starts.
    public var nextAvailableIndex: UInt16 { cursor.withLock { $0.nextAvailable } }

    /// Where the three parts of the ring are in this process, for a backend that drives the
    /// queue itself (vhost-net): each part must be one contiguous host range, reached through
    /// the queue's DMA port with the checks of the device's own accesses (the used ring as a
    /// write). The port lends guest RAM, which lives as long as the machine.
    public func hostRings() throws(VirtioActivationError) -> HostRings {
        guard !packed else { throw VirtioActivationError("queue \(index) is a packed ring; a backend that drives the queue itself takes split rings only") }
        // Each part with the length and direction of the device's own accesses (`extent`).
        func host(_ name: String, _ part: RingPart) throws(VirtioActivationError) -> UInt64 {
            let address = base(of: part), (length, write) = extent(of: part)
            let start: UnsafeMutableRawPointer?
            switch Result(catching: { () throws(DMAError) in try singleHostRange(at: address, length: length, write: write) }) {
            case .success(let lent): start = lent
            case .failure(let error): throw VirtioActivationError("queue \(index): its \(name) at 0x\(String(address, radix: 16)): \(error)")
            }
            guard let start else {
                throw VirtioActivationError("queue \(index): its \(name) at 0x\(String(address, radix: 16)) spans several host mappings")
            }
            return UInt64(UInt(bitPattern: start))
        }
        return HostRings(descriptorTable: try host("descriptor table", .descriptors), availableRing: try host("available ring", .driver),
                         usedRing: try host("used ring", .device))
    }

    /// Host addresses of a ring's parts (`hostRings`).
    public struct HostRings: Hashable, Sendable {
        public let descriptorTable: UInt64
        public let availableRing: UInt64
        public let usedRing: UInt64
    }

    /// True once the device needs a reset: nothing more is served.
    public var isBroken: Bool { broken.load(ordering: .acquiring) }

    /// The transport stops the queue (NEEDS_RESET elsewhere, or a reset).
    func stop() { broken.store(true, ordering: .releasing) }

    /// Marks the device NEEDS_RESET for `error` and returns it, for `throw queue.fail(...)`.
    func fail(_ error: VirtQueueError) -> VirtQueueError {
        if error != .deviceNeedsReset, !broken.exchange(true, ordering: .acquiringAndReleasing) {
            interrupts.deviceNeedsReset("queue \(index): \(error)")
        }
        return error
    }

    // MARK: Taking requests

    /// The next chain the driver made available, or nil when there is none. Throws (after
    /// marking the device NEEDS_RESET) when the driver broke a rule.
    public func pop() throws(VirtQueueError) -> DescriptorChain? {
        var readable = GuestBuffers(), writable = GuestBuffers()
        return try take { buffer, isWritable throws(VirtQueueError) in
            try checkReachable(buffer, write: isWritable)
            if isWritable { writable.append(buffer) } else { readable.append(buffer) }
        } finish: { walked in
            DescriptorChain(head: walked.id, readable: readable, writable: writable, readableLength: walked.readable,
                            writableLength: walked.writable, slots: walked.slots, queue: self)
        }
    }

    /// The next chain, for I/O straight to or from its host memory: the host memory behind its
    /// buffers in `direction` is appended to `vectors` as iovecs (in chain order, split where
    /// the translation splits), each buffer checked by the DMA port once, as the pop checks
    /// every buffer anyway. The iovecs are valid inside the current burst only (`burst`): a
    /// device that keeps a chain past its burst gives it back with `undoPop` and pops it
    /// again. Nothing is appended when it throws or returns nil.
    public func popLending(_ direction: DescriptorChain.Direction, into vectors: inout [iovec]) throws(VirtQueueError) -> LentChain? {
        let start = vectors.count
        do throws(VirtQueueError) {
            return try take { buffer, isWritable throws(VirtQueueError) in
                guard isWritable == (direction == .writable) else {
                    try checkReachable(buffer, write: isWritable)
                    return
                }
                guard buffer.length > 0 else { return }
                do throws(DMAError) {
                    try port.forEachHostSegment(at: buffer.address, length: UInt64(buffer.length), write: isWritable) { segment in
                        vectors.append(iovec(iov_base: segment.baseAddress, iov_len: segment.count))
                    }
                } catch {
                    throw .dma(error)
                }
            } finish: { walked in
                LentChain(head: walked.id, readableLength: walked.readable, writableLength: walked.writable,
                          vectorCount: vectors.count - start, slots: walked.slots)
            }
        } catch {
            vectors.removeSubrange(start...)
            throw error
        }
    }

    /// What a walk found: the id the used ring gives back (a split chain's head, a packed
    /// chain's buffer id), the ring slots the chain took, and each direction's bytes.
    struct WalkedChain: Sendable {
        var id: UInt16
        var slots: UInt16
        var readable: Int
        var writable: Int
    }

    /// Takes the next available chain: walks it, handing each checked buffer to `sink`, and
    /// makes the result with `finish`; the cursor moves on only when the walk succeeds.
    private func take<Chain>(_ sink: (GuestBuffer, _ isWritable: Bool) throws(VirtQueueError) -> Void,
                             finish: (WalkedChain) -> Chain) throws(VirtQueueError) -> Chain? {
        guard !isBroken else { throw .deviceNeedsReset }
        do {
            let walked = try cursor.withLock { c throws(VirtQueueError) -> WalkedChain? in
                packed ? try takePacked(&c, sink) : try takeSplit(&c, sink)
            }
            return walked.map(finish)
        } catch {
            throw fail(error)
        }
    }

    private func takeSplit(_ c: inout Cursor, _ sink: (GuestBuffer, Bool) throws(VirtQueueError) -> Void) throws(VirtQueueError) -> WalkedChain? {
        if c.lastAvailableIndex.map({ $0 == c.nextAvailable }) ?? true {
            let availableIndex: UInt16 = try load(.driver, offset: SplitRing.availableIndex)
            guard availableIndex &- c.nextAvailable <= size else {
                throw .availableIndexJump(from: c.nextAvailable, to: availableIndex, size: size)
            }
            c.lastAvailableIndex = availableIndex
            guard availableIndex != c.nextAvailable else { return nil }
        }
        // The ring entry and descriptors are read after the index (the driver wrote them first).
        atomicMemoryFence(ordering: .acquiring)
        let slot = UInt64(c.nextAvailable & (size - 1))
        let head: UInt16 = try load(.driver, offset: SplitRing.availableRing + 2 * slot)
        let lengths = try walkSplitChain(head: head, sink)
        c.nextAvailable &+= 1
        if eventIndex && c.notificationsEnabled {
            // Kick me when the next entry after this one arrives (2.7.10).
            try store(c.nextAvailable, .device, offset: SplitRing.availableEventOffset(size: size))
        }
        return WalkedChain(id: head, slots: 1, readable: lengths.readable, writable: lengths.writable)
    }

    /// The rules every chain follows whatever the ring: no more than the queue size in
    /// descriptors, no buffer wrapping the address space, readable buffers before writable
    /// ones, each direction's total within 32 bits (a used length is 32 bits).
    struct ChainRules {
        let limit: Int
        var visited = 0
        var readable: UInt64 = 0
        var writable: UInt64 = 0
        var sawWritable = false

        init(limit: Int) { self.limit = limit }

        /// Checks one more descriptor's buffer and counts it.
        mutating func admit(address: UInt64, length: UInt32, isWritable: Bool) throws(VirtQueueError) -> GuestBuffer {
            visited += 1
            guard visited <= limit else { throw .chainTooLong(limit: limit) }
            guard length == 0 || address <= UInt64.max - UInt64(length - 1) else {
                throw .bufferOverflow(address: address, length: length)
            }
            if isWritable {
                writable += UInt64(length)
                guard writable <= UInt64(UInt32.max) else { throw .bufferOverflow(address: address, length: length) }
            } else {
                guard !sawWritable else { throw .readableAfterWritable(index: UInt16(truncatingIfNeeded: visited - 1)) }
                readable += UInt64(length)
                guard readable <= UInt64(UInt32.max) else { throw .bufferOverflow(address: address, length: length) }
            }
            sawWritable = sawWritable || isWritable
            return GuestBuffer(address: address, length: length)
        }
    }

    /// Walks a split chain from `head`: direct descriptors, then at most one indirect table
    /// (which must end the direct part), under `ChainRules`. Hands every buffer to `sink` in
    /// chain order; returns the totals.
    private func walkSplitChain(head: UInt16, _ sink: (GuestBuffer, _ isWritable: Bool) throws(VirtQueueError) -> Void)
        throws(VirtQueueError) -> (readable: Int, writable: Int) {
        var rules = ChainRules(limit: Int(size))
        func add(_ d: SplitDescriptor) throws(VirtQueueError) {
            try sink(try rules.admit(address: d.address, length: d.length, isWritable: d.isWritable), d.isWritable)
        }
        var index = head
        while true {
            let d = try splitDescriptor(index, tableAddress: addresses.descriptorTable, tableSize: Int(size))
            if d.isIndirect {
                guard indirect else { throw .badIndirectDescriptor("INDIRECT_DESC was not negotiated") }
                guard !d.hasNext else { throw .badIndirectDescriptor("INDIRECT together with NEXT") }
                try walkSplitIndirect(d, add)
                break
            }
            try add(d)
            guard d.hasNext else { break }
            index = d.next
        }
        return (Int(rules.readable), Int(rules.writable))
    }

    /// A buffer past guest RAM (or refused by the IOMMU) fails the chain now, not when the
    /// device gets round to it. Ports that cannot lend memory check at access time instead.
    func checkReachable(_ buffer: GuestBuffer, write: Bool) throws(VirtQueueError) {
        guard buffer.length > 0 else { return }
        do {
            try port.forEachHostSegment(at: buffer.address, length: UInt64(buffer.length), write: write) { _ in }
        } catch {
            guard error == .hostAccessUnavailable else { throw .dma(error) }
        }
    }

    /// An indirect table's count of 16-byte descriptors, after its checks (both rings' tables
    /// are 16-byte descriptors): a non-zero multiple of 16 bytes, no longer than the queue
    /// (no legal chain is: refused before reading it), not wrapping the address space.
    func indirectTableCount(address: UInt64, length: UInt32) throws(VirtQueueError) -> Int {
        guard length > 0, length % 16 == 0 else {
            throw .badIndirectDescriptor("table of \(length) bytes is not a non-zero multiple of 16")
        }
        let count = Int(length) / 16
        guard count <= Int(size) else { throw .chainTooLong(limit: Int(size)) }
        guard address <= UInt64.max - UInt64(length - 1) else { throw .bufferOverflow(address: address, length: length) }
        return count
    }

    private func walkSplitIndirect(_ table: SplitDescriptor, _ add: (SplitDescriptor) throws(VirtQueueError) -> Void) throws(VirtQueueError) {
        let count = try indirectTableCount(address: table.address, length: table.length)
        var index: UInt16 = 0
        while true {
            let d = try splitDescriptor(index, tableAddress: table.address, tableSize: count)
            guard !d.isIndirect else { throw .badIndirectDescriptor("an indirect table inside an indirect table") }
            try add(d)
            guard d.hasNext else { return }
            index = d.next
        }
    }

    private func splitDescriptor(_ index: UInt16, tableAddress: UInt64, tableSize: Int) throws(VirtQueueError) -> SplitDescriptor {
        try descriptorBytes(index, tableAddress: tableAddress, tableSize: tableSize) { SplitDescriptor(bytes: $0) }
    }

    /// Descriptor `index` of the table at `tableAddress` (the ring's own, read through the
    /// burst's view when there is one, or an indirect table), decoded by `decode`.
    func descriptorBytes<D>(_ index: UInt16, tableAddress: UInt64, tableSize: Int,
                            _ decode: (UnsafeRawBufferPointer) -> D) throws(VirtQueueError) -> D {
        guard Int(index) < tableSize else { throw .descriptorIndexOutOfRange(index: index, tableSize: tableSize) }
        let (address, overflow) = tableAddress.addingReportingOverflow(UInt64(index) * 16)
        guard !overflow else { throw .bufferOverflow(address: tableAddress, length: 16) }
        if tableAddress == addresses.descriptorTable, let view = heldView {
            // index < tableSize == size: inside the part the view holds.
            return decode(UnsafeRawBufferPointer(start: view.pointee.descriptors + Int(index) * 16, count: 16))
        }
        var raw = (UInt64(0), UInt64(0))
        do {
            try withUnsafeMutableBytes(of: &raw) { (bytes) throws(DMAError) in try port.read(at: address, into: bytes) }
        } catch {
            throw .dma(error)
        }
        return withUnsafeBytes(of: raw) { decode($0) }
    }

    // MARK: Returning requests

    /// Puts `chain` in the used ring with `written` bytes written into its writable buffers.
    /// Does not interrupt: call `interruptIfNeeded()` after a batch.
    public func complete(_ chain: DescriptorChain, written: Int) throws(VirtQueueError) {
        try withUnsafeTemporaryAllocation(of: (chain: DescriptorChain, written: Int).self, capacity: 1) { one in
            one.initialize(repeating: (chain, written))
            defer { one.deinitialize() }
            return Result { () throws(VirtQueueError) in try complete(UnsafeBufferPointer(one)) }
        }.get()
    }

    /// Puts several chains in the used ring and publishes them at once, so the driver sees
    /// all or none (virtio-net's mergeable receive buffers need that).
    public func complete(_ batch: [(chain: DescriptorChain, written: Int)]) throws(VirtQueueError) {
        try batch.withUnsafeBufferPointer { b in Result { () throws(VirtQueueError) in try complete(b) } }.get()
    }

    /// The batch in place (a caller's reused buffer, or one chain on the stack).
    public func complete(_ batch: UnsafeBufferPointer<(chain: DescriptorChain, written: Int)>) throws(VirtQueueError) {
        for (chain, written) in batch {
            precondition(chain.queue === self, "a chain goes back to its own queue")
            precondition(written >= 0 && written <= chain.writableLength, "the device wrote more than the chain holds")
        }
        try publish(batch.count) { UsedElement(id: batch[$0].chain.head, written: UInt32(batch[$0].written), slots: batch[$0].chain.slots) }
    }

    /// Used entries of chains popped with `popLending` (each `written` no more than its
    /// writable length), published at once as above.
    public func complete(_ used: UnsafeBufferPointer<UsedElement>) throws(VirtQueueError) {
        for element in used { precondition(element.slots >= 1 && element.slots <= size, "a used entry of a chain of this queue") }
        try publish(used.count) { used[$0] }
    }

    /// Writes `count` used elements (`element(i)` for i in 0..<count) after the last, and
    /// publishes them all at once: a split ring's used index stored after them, a packed ring's
    /// first element's flags written last.
    private func publish(_ count: Int, _ element: (Int) -> UsedElement) throws(VirtQueueError) {
        guard !isBroken else { throw .deviceNeedsReset }
        guard count > 0 else { return }
        do {
            try cursor.withLock { c throws(VirtQueueError) in
                if packed {
                    try publishPacked(count, element, &c)
                    return
                }
                var next = c.nextUsed
                for i in 0..<count {
                    let used = element(i)
                    let slot = SplitRing.usedRing + SplitRing.usedElementSize * UInt64(next & (size - 1))
                    // virtq_used_elem { le32 id; le32 len; } as one 8-byte little-endian store.
                    try store(UInt64(used.written) << 32 | UInt64(used.id), .device, offset: slot)
                    next &+= 1
                }
                // The elements are visible before the index that publishes them.
                atomicMemoryFence(ordering: .releasing)
                try store(next, .device, offset: SplitRing.usedIndex)
                c.nextUsed = next
            }
        } catch {
            throw fail(error)
        }
    }

    /// Gives back chains popped and not completed, the last ones popped (in any order): they
    /// will be popped again (a device that took buffers it cannot use yet, or whose lent
    /// bytes expire with a burst).
    /// (A driver that keeps adding entries can make a device hold more chains than the ring
    /// has slots; the arithmetic below takes any count without trapping.)
    public func undoPop(_ chains: some Collection<LentChain>) {
        let slots = chains.reduce(0) { $0 + Int($1.slots) }
        cursor.withLock { c in
            guard packed else {
                c.nextAvailable &-= UInt16(truncatingIfNeeded: chains.count)
                return
            }
            var position = Int(c.nextAvailable) - slots
            while position < 0 {
                position += Int(size)
                c.availableWrap.toggle()
            }
            c.nextAvailable = UInt16(position)
        }
    }

    /// Interrupts the driver when it asked to hear about the used entries added since the
    /// last interrupt (EVENT_IDX's used_event, else avail->flags NO_INTERRUPT; a packed
    /// ring's driver event suppression). Returns whether it did.
    @discardableResult
    public func interruptIfNeeded() throws(VirtQueueError) -> Bool {
        guard !isBroken else { throw .deviceNeedsReset }
        let needed: Bool
        do {
            needed = try cursor.withLock { c throws(VirtQueueError) -> Bool in
                // The used index store is ordered before the driver's suppression word read.
                atomicMemoryFence(ordering: .sequentiallyConsistent)
                if packed { return try packedInterruptNeeded(&c) }
                let new = c.nextUsed
                guard c.usedAtLastSignal != new, new != 0 || c.usedAtLastSignal != nil else { return false }
                let needed: Bool
                if eventIndex {
                    let event: UInt16 = try load(.driver, offset: SplitRing.usedEventOffset(size: size))
                    needed = c.usedAtLastSignal.map { SplitRing.needsEvent(event: event, new: new, old: $0) } ?? true
                } else {
                    let flags: UInt16 = try load(.driver, offset: SplitRing.availableFlags)
                    needed = flags & SplitRing.availableNoInterrupt == 0
                }
                c.usedAtLastSignal = new
                return needed
            }
        } catch {
            throw fail(error)
        }
        if needed { interrupts.signalQueue(index) }
        return needed
    }

    // MARK: Kick suppression

    /// Asks the driver not to kick (while the device polls the ring anyway).
    public func disableNotifications() throws(VirtQueueError) {
        try setNotifications(false)
    }

    /// The device serves this ring for as long as it has buffers and is woken by something
    /// else (a backend's readiness), so a kick after each of the driver's refills is only an
    /// exit. A packed ring starts with the device's events ENABLE: they are turned off. A split
    /// ring is left as it is: its avail_event, moved per pop, already lags behind the refills
    /// and asks for few kicks. `enableNotifications` asks again once the buffers run out.
    public func quietKicksWhileServing() throws(VirtQueueError) {
        if packed { try setNotifications(false) }
    }

    /// Asks for kicks again. Returns true when buffers arrived meanwhile (the device must
    /// pop them: no kick will come for them).
    public func enableNotifications() throws(VirtQueueError) -> Bool {
        try setNotifications(true)
    }

    @discardableResult
    private func setNotifications(_ enabled: Bool) throws(VirtQueueError) -> Bool {
        guard !isBroken else { throw .deviceNeedsReset }
        do {
            return try cursor.withLock { c throws(VirtQueueError) -> Bool in
                c.notificationsEnabled = enabled
                if packed { return try setPackedNotifications(enabled, &c) }
                if eventIndex {
                    guard enabled else { return false }
                    try store(c.nextAvailable, .device, offset: SplitRing.availableEventOffset(size: size))
                } else {
                    try store(enabled ? 0 : SplitRing.usedNoNotify, .device, offset: SplitRing.usedFlags)
                    guard enabled else { return false }
                }
                // Re-read avail->idx after publishing the request, so a racing addition is seen.
                atomicMemoryFence(ordering: .sequentiallyConsistent)
                let available: UInt16 = try load(.driver, offset: SplitRing.availableIndex)
                return available != c.nextAvailable
            }
        } catch {
            throw fail(error)
        }
    }

    // MARK: Ring words

    /// A word of `part` at `offset` (inside the part: one of the layout's offsets for this
    /// queue's size), through the burst's view when there is one.
    func load<T: FixedWidthInteger>(_ part: RingPart, offset: UInt64) throws(VirtQueueError) -> T {
        if let view = heldView {
            return T(littleEndian: view.pointee.start(of: part).loadUnaligned(fromByteOffset: Int(offset), as: T.self))
        }
        let (address, overflow) = base(of: part).addingReportingOverflow(offset)
        guard !overflow else { throw .bufferOverflow(address: base(of: part), length: UInt32(truncatingIfNeeded: offset)) }
        var value = T.zero
        do {
            try withUnsafeMutableBytes(of: &value) { (raw) throws(DMAError) in try port.read(at: address, into: raw) }
        } catch {
            throw .dma(error)
        }
        return T(littleEndian: value)
    }

    /// Stores a word of `part` at `offset`, as `load` reads one.
    func store<T: FixedWidthInteger>(_ value: T, _ part: RingPart, offset: UInt64) throws(VirtQueueError) {
        if let view = heldView {
            view.pointee.start(of: part).storeBytes(of: value.littleEndian, toByteOffset: Int(offset), as: T.self)
            return
        }
        let (address, overflow) = base(of: part).addingReportingOverflow(offset)
        guard !overflow else { throw .bufferOverflow(address: base(of: part), length: UInt32(truncatingIfNeeded: offset)) }
        var le = value.littleEndian
        do {
            try withUnsafeBytes(of: &le) { (raw) throws(DMAError) in try port.write(at: address, from: raw) }
        } catch {
            throw .dma(error)
        }
    }
}
