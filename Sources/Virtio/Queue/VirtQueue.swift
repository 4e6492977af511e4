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
    private let eventIndex: Bool
    private let indirect: Bool
    private let broken = Atomic<Bool>(false)

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

        private enum CodingKeys: String, CodingKey {
            case nextAvailable, nextUsed, usedAtLastSignal, notificationsEnabled
        }

        static func == (a: Cursor, b: Cursor) -> Bool {
            (a.nextAvailable, a.nextUsed, a.usedAtLastSignal, a.notificationsEnabled)
                == (b.nextAvailable, b.nextUsed, b.usedAtLastSignal, b.notificationsEnabled)
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(nextAvailable)
            hasher.combine(nextUsed)
            hasher.combine(usedAtLastSignal)
            hasher.combine(notificationsEnabled)
        }
    }
    let cursor = Mutex(Cursor())

    /// - Parameters:
    ///   - size: a power of two, 1...32768 (the transport checks the driver's value).
    ///   - features: the negotiated features (INDIRECT_DESC, EVENT_IDX are honoured).
    public init(index: Int, size: UInt16, addresses: VirtQueueAddresses, features: VirtioFeatures,
                port: any DMAPort, interrupts: any VirtioInterruptSignaller) {
        precondition(size > 0 && size & (size - 1) == 0 && size <= 32768, "queue size is checked by the transport")
        self.index = index
        self.size = size
        self.addresses = addresses
        self.port = port
        self.interrupts = interrupts
        eventIndex = features.contains(.eventIndex)
        indirect = features.contains(.indirectDescriptors)
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
                let outer = pthread_getspecific(Self.ringViewKey)
                pthread_setspecific(Self.ringViewKey, held)
                defer { pthread_setspecific(Self.ringViewKey, outer) }
                return try body()
            }
        }
    }

    /// A burst's view of the ring: its parts in host memory, for the burst's thread only (a
    /// thread-specific pointer to the burst's stack, so it cannot outlive the burst).
    private struct RingView {
        let queue: ObjectIdentifier
        let descriptorTable: UnsafeMutableRawPointer
        let availableRing: UnsafeMutableRawPointer
        let usedRing: UnsafeMutableRawPointer
    }

    private static let ringViewKey: pthread_key_t = {
        var key = pthread_key_t()
        let status = pthread_key_create(&key, nil)
        precondition(status == 0, "pthread_key_create: \(status)")
        return key
    }()

    /// This queue's view, when this thread is in one of its bursts.
    private var heldView: UnsafePointer<RingView>? {
        guard let raw = pthread_getspecific(Self.ringViewKey) else { return nil }
        let view = UnsafePointer(raw.assumingMemoryBound(to: RingView.self))
        return view.pointee.queue == ObjectIdentifier(self) ? view : nil
    }

    /// The ring's parts through the port (with the checks of the accesses they replace: the
    /// used ring as a write), or nil when one is not a single host range, or refused: then
    /// each access goes through the port and reports its own error.
    private func lookUpRingView() -> RingView? {
        typealias L = SplitRing
        guard let table = try? singleHostRange(at: addresses.descriptorTable, length: L.descriptorTableBytes(size: size), write: false),
              let available = try? singleHostRange(at: addresses.driverArea, length: L.availableBytes(size: size), write: false),
              let used = try? singleHostRange(at: addresses.deviceArea, length: L.usedBytes(size: size), write: true) else { return nil }
        return RingView(queue: ObjectIdentifier(self), descriptorTable: table, availableRing: available, usedRing: used)
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
        typealias L = SplitRing
        func host(_ part: String, _ address: UInt64, _ length: UInt64, write: Bool) throws(VirtioActivationError) -> UInt64 {
            let start: UnsafeMutableRawPointer?
            switch Result(catching: { () throws(DMAError) in try singleHostRange(at: address, length: length, write: write) }) {
            case .success(let lent): start = lent
            case .failure(let error): throw VirtioActivationError("queue \(index): its \(part) at 0x\(String(address, radix: 16)): \(error)")
            }
            guard let start else {
                throw VirtioActivationError("queue \(index): its \(part) at 0x\(String(address, radix: 16)) spans several host mappings")
            }
            return UInt64(UInt(bitPattern: start))
        }
        return HostRings(descriptorTable: try host("descriptor table", addresses.descriptorTable, L.descriptorTableBytes(size: size), write: false),
                         availableRing: try host("available ring", addresses.driverArea, L.availableBytes(size: size), write: false),
                         usedRing: try host("used ring", addresses.deviceArea, L.usedBytes(size: size), write: true))
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
        try take { head throws(VirtQueueError) in try readChain(head: head) }
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
            return try take { head throws(VirtQueueError) in
                let lengths = try walkChain(head: head) { buffer, isWritable throws(VirtQueueError) in
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
                }
                return LentChain(head: head, readableLength: lengths.readable, writableLength: lengths.writable,
                                 vectorCount: vectors.count - start)
            }
        } catch {
            vectors.removeSubrange(start...)
            throw error
        }
    }

    /// Takes the next available entry and hands its head to `read` (which walks the chain);
    /// the cursor moves on only when it succeeds.
    private func take<Chain>(_ read: (UInt16) throws(VirtQueueError) -> Chain) throws(VirtQueueError) -> Chain? {
        guard !isBroken else { throw .deviceNeedsReset }
        do {
            return try cursor.withLock { c throws(VirtQueueError) -> Chain? in
                if c.lastAvailableIndex.map({ $0 == c.nextAvailable }) ?? true {
                    let availableIndex: UInt16 = try loadAvailable(offset: SplitRing.availableIndex)
                    guard availableIndex &- c.nextAvailable <= size else {
                        throw .availableIndexJump(from: c.nextAvailable, to: availableIndex, size: size)
                    }
                    c.lastAvailableIndex = availableIndex
                    guard availableIndex != c.nextAvailable else { return nil }
                }
                // The ring entry and descriptors are read after the index (the driver wrote them first).
                atomicMemoryFence(ordering: .acquiring)
                let slot = UInt64(c.nextAvailable & (size - 1))
                let head: UInt16 = try loadAvailable(offset: SplitRing.availableRing + 2 * slot)
                let chain = try read(head)
                c.nextAvailable &+= 1
                if eventIndex && c.notificationsEnabled {
                    // Kick me when the next entry after this one arrives (2.7.10).
                    try storeUsed(c.nextAvailable, offset: SplitRing.availableEventOffset(size: size))
                }
                return chain
            }
        } catch {
            throw fail(error)
        }
    }

    private func readChain(head: UInt16) throws(VirtQueueError) -> DescriptorChain {
        var readable = GuestBuffers(), writable = GuestBuffers()
        let lengths = try walkChain(head: head) { buffer, isWritable throws(VirtQueueError) in
            try checkReachable(buffer, write: isWritable)
            if isWritable { writable.append(buffer) } else { readable.append(buffer) }
        }
        return DescriptorChain(head: head, readable: readable, writable: writable,
                               readableLength: lengths.readable, writableLength: lengths.writable, queue: self)
    }

    /// Walks the chain from `head`: direct descriptors, then at most one indirect table
    /// (which must end the direct part), no more than `size` descriptors in all, readable
    /// buffers before writable ones, no buffer wrapping the address space, each direction's
    /// total within 32 bits. Hands every buffer to `take` in chain order; returns the totals.
    private func walkChain(head: UInt16, _ take: (GuestBuffer, _ isWritable: Bool) throws(VirtQueueError) -> Void)
        throws(VirtQueueError) -> (readable: Int, writable: Int) {
        var readableLength: UInt64 = 0, writableLength: UInt64 = 0
        var visited = 0, sawWritable = false
        let limit = Int(size)

        func add(_ d: SplitDescriptor) throws(VirtQueueError) {
            visited += 1
            guard visited <= limit else { throw .chainTooLong(limit: limit) }
            guard d.length == 0 || d.address <= UInt64.max - UInt64(d.length - 1) else {
                throw .bufferOverflow(address: d.address, length: d.length)
            }
            if d.isWritable {
                writableLength += UInt64(d.length)
                guard writableLength <= UInt64(UInt32.max) else { throw .bufferOverflow(address: d.address, length: d.length) }
            } else {
                guard !sawWritable else { throw .readableAfterWritable(index: UInt16(visited - 1)) }
                readableLength += UInt64(d.length)
                guard readableLength <= UInt64(UInt32.max) else { throw .bufferOverflow(address: d.address, length: d.length) }
            }
            sawWritable = sawWritable || d.isWritable
            try take(GuestBuffer(address: d.address, length: d.length), d.isWritable)
        }

        var index = head
        while true {
            let d = try descriptor(index, tableAddress: addresses.descriptorTable, tableSize: Int(size))
            if d.isIndirect {
                guard indirect else { throw .badIndirectDescriptor("INDIRECT_DESC was not negotiated") }
                guard !d.hasNext else { throw .badIndirectDescriptor("INDIRECT together with NEXT") }
                try walkIndirect(d, add)
                break
            }
            try add(d)
            guard d.hasNext else { break }
            index = d.next
        }
        return (Int(readableLength), Int(writableLength))
    }

    /// A buffer past guest RAM (or refused by the IOMMU) fails the chain now, not when the
    /// device gets round to it. Ports that cannot lend memory check at access time instead.
    private func checkReachable(_ buffer: GuestBuffer, write: Bool) throws(VirtQueueError) {
        guard buffer.length > 0 else { return }
        do {
            try port.forEachHostSegment(at: buffer.address, length: UInt64(buffer.length), write: write) { _ in }
        } catch {
            guard error == .hostAccessUnavailable else { throw .dma(error) }
        }
    }

    private func walkIndirect(_ table: SplitDescriptor, _ add: (SplitDescriptor) throws(VirtQueueError) -> Void) throws(VirtQueueError) {
        guard table.length > 0, table.length % UInt32(SplitRing.descriptorSize) == 0 else {
            throw .badIndirectDescriptor("table of \(table.length) bytes is not a non-zero multiple of 16")
        }
        let count = Int(table.length) / SplitRing.descriptorSize
        // A table longer than the queue cannot be a legal chain: refuse before reading it.
        guard count <= Int(size) else { throw .chainTooLong(limit: Int(size)) }
        guard table.address <= UInt64.max - UInt64(table.length - 1) else {
            throw .bufferOverflow(address: table.address, length: table.length)
        }
        var index: UInt16 = 0
        while true {
            let d = try descriptor(index, tableAddress: table.address, tableSize: count)
            guard !d.isIndirect else { throw .badIndirectDescriptor("an indirect table inside an indirect table") }
            try add(d)
            guard d.hasNext else { return }
            index = d.next
        }
    }

    private func descriptor(_ index: UInt16, tableAddress: UInt64, tableSize: Int) throws(VirtQueueError) -> SplitDescriptor {
        guard Int(index) < tableSize else { throw .descriptorIndexOutOfRange(index: index, tableSize: tableSize) }
        let (address, overflow) = tableAddress.addingReportingOverflow(UInt64(index) * UInt64(SplitRing.descriptorSize))
        guard !overflow else { throw .bufferOverflow(address: tableAddress, length: UInt32(SplitRing.descriptorSize)) }
        if tableAddress == addresses.descriptorTable, let view = heldView {
            // index < tableSize == size: inside the part the view holds.
            return SplitDescriptor(bytes: UnsafeRawBufferPointer(start: view.pointee.descriptorTable + Int(index) * SplitRing.descriptorSize,
                                                                 count: SplitRing.descriptorSize))
        }
        var raw = (UInt64(0), UInt64(0))
        do {
            try withUnsafeMutableBytes(of: &raw) { (bytes) throws(DMAError) in try port.read(at: address, into: bytes) }
        } catch {
            throw .dma(error)
        }
        return withUnsafeBytes(of: raw) { SplitDescriptor(bytes: $0) }
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

    /// Puts several chains in the used ring and publishes them with one used->idx store, so
    /// the driver sees all or none (virtio-net's mergeable receive buffers need that).
    public func complete(_ batch: [(chain: DescriptorChain, written: Int)]) throws(VirtQueueError) {
        try batch.withUnsafeBufferPointer { b in Result { () throws(VirtQueueError) in try complete(b) } }.get()
    }

    /// The batch in place (a caller's reused buffer, or one chain on the stack).
    public func complete(_ batch: UnsafeBufferPointer<(chain: DescriptorChain, written: Int)>) throws(VirtQueueError) {
        for (chain, written) in batch {
            precondition(chain.queue === self, "a chain goes back to its own queue")
            precondition(written >= 0 && written <= chain.writableLength, "the device wrote more than the chain holds")
        }
        try publish(batch.count) { UsedElement(head: batch[$0].chain.head, written: UInt32(batch[$0].written)) }
    }

    /// Used entries of chains popped with `popLending` (each `written` no more than its
    /// writable length), published with one used->idx store as above.
    public func complete(_ used: UnsafeBufferPointer<UsedElement>) throws(VirtQueueError) {
        for element in used { precondition(element.head < size, "a used entry names a descriptor of this queue") }
        try publish(used.count) { used[$0] }
    }

    /// Writes `count` used elements (`element(i)` for i in 0..<count) after the last, then the
    /// used index that publishes them all.
    private func publish(_ count: Int, _ element: (Int) -> UsedElement) throws(VirtQueueError) {
        guard !isBroken else { throw .deviceNeedsReset }
        guard count > 0 else { return }
        do {
            try cursor.withLock { c throws(VirtQueueError) in
                var next = c.nextUsed
                for i in 0..<count {
                    let used = element(i)
                    let slot = SplitRing.usedRing + SplitRing.usedElementSize * UInt64(next & (size - 1))
                    // virtq_used_elem { le32 id; le32 len; } as one 8-byte little-endian store.
                    try storeUsed(UInt64(used.written) << 32 | UInt64(used.head), offset: slot)
                    next &+= 1
                }
                // The elements are visible before the index that publishes them.
                atomicMemoryFence(ordering: .releasing)
                try storeUsed(next, offset: SplitRing.usedIndex)
                c.nextUsed = next
            }
        } catch {
            throw fail(error)
        }
    }

    /// Gives back the last `count` chains popped and not completed, in reverse order of
    /// popping: they will be popped again (a device that took buffers it cannot use yet).
    public func undoPop(_ count: Int = 1) {
        precondition(count >= 0 && count <= Int(size), "undo of more chains than a queue holds")
        cursor.withLock { $0.nextAvailable &-= UInt16(count) }
    }

    /// Interrupts the driver when it asked to hear about the used entries added since the
    /// last interrupt (EVENT_IDX's used_event, else avail->flags NO_INTERRUPT). Returns
    /// whether it did.
    @discardableResult
    public func interruptIfNeeded() throws(VirtQueueError) -> Bool {
        guard !isBroken else { throw .deviceNeedsReset }
        let needed: Bool
        do {
            needed = try cursor.withLock { c throws(VirtQueueError) -> Bool in
                // The used index store is ordered before the driver's suppression word read.
                atomicMemoryFence(ordering: .sequentiallyConsistent)
                let new = c.nextUsed
                guard c.usedAtLastSignal != new, new != 0 || c.usedAtLastSignal != nil else { return false }
                let needed: Bool
                if eventIndex {
                    let event: UInt16 = try loadAvailable(offset: SplitRing.usedEventOffset(size: size))
                    needed = c.usedAtLastSignal.map { SplitRing.needsEvent(event: event, new: new, old: $0) } ?? true
                } else {
                    let flags: UInt16 = try loadAvailable(offset: SplitRing.availableFlags)
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
                if eventIndex {
                    guard enabled else { return false }
                    try storeUsed(c.nextAvailable, offset: SplitRing.availableEventOffset(size: size))
                } else {
                    try storeUsed(enabled ? 0 : SplitRing.usedNoNotify, offset: SplitRing.usedFlags)
                    guard enabled else { return false }
                }
                // Re-read avail->idx after publishing the request, so a racing addition is seen.
                atomicMemoryFence(ordering: .sequentiallyConsistent)
                let available: UInt16 = try loadAvailable(offset: SplitRing.availableIndex)
                return available != c.nextAvailable
            }
        } catch {
            throw fail(error)
        }
    }

    // MARK: Ring words

    /// A word of the available ring (driver area) at `offset`, one of SplitRing's offsets for
    /// this queue's size (so inside the part).
    private func loadAvailable<T: FixedWidthInteger>(offset: UInt64) throws(VirtQueueError) -> T {
        if let view = heldView {
            return T(littleEndian: view.pointee.availableRing.loadUnaligned(fromByteOffset: Int(offset), as: T.self))
        }
        return try load(at: addresses.driverArea, offset: offset)
    }

    /// A word of the used ring (device area) at `offset`, one of SplitRing's offsets.
    private func storeUsed<T: FixedWidthInteger>(_ value: T, offset: UInt64) throws(VirtQueueError) {
        if let view = heldView {
            view.pointee.usedRing.storeBytes(of: value.littleEndian, toByteOffset: Int(offset), as: T.self)
            return
        }
        try store(value, at: addresses.deviceArea, offset: offset)
    }

    private func load<T: FixedWidthInteger>(at base: UInt64, offset: UInt64) throws(VirtQueueError) -> T {
        let (address, overflow) = base.addingReportingOverflow(offset)
        guard !overflow else { throw .bufferOverflow(address: base, length: UInt32(truncatingIfNeeded: offset)) }
        var value = T.zero
        do {
            try withUnsafeMutableBytes(of: &value) { (raw) throws(DMAError) in try port.read(at: address, into: raw) }
        } catch {
            throw .dma(error)
        }
        return T(littleEndian: value)
    }

    private func store<T: FixedWidthInteger>(_ value: T, at base: UInt64, offset: UInt64) throws(VirtQueueError) {
        let (address, overflow) = base.addingReportingOverflow(offset)
        guard !overflow else { throw .bufferOverflow(address: base, length: UInt32(truncatingIfNeeded: offset)) }
        var le = value.littleEndian
        do {
            try withUnsafeBytes(of: &le) { (raw) throws(DMAError) in try port.write(at: address, from: raw) }
        } catch {
            throw .dma(error)
        }
    }
}
