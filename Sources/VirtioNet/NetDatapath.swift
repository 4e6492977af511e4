import Glibc
import HostNetwork
import HostOS
import Synchronization
import Virtio
import VMMBase

/// One activation's queue work on its own I/O thread: transmit (guest buffers → writev to
/// the backend queue, vnet header passed through), receive (readv from the backend straight
/// into guest buffers, several per frame with mergeable buffers) and the control queue.
/// A kick (a queue's kick eventfd signalled by KVM, or a trapped notify write) or a readable
/// backend fd wakes the thread; only it touches the queues.
final class NetDatapath: Sendable {
    let device: String
    let negotiated: VirtioNetFeatures
    let queues: [VirtQueue?]
    let pairs: Int
    let controlIndex: Int?
    let backend: [any PacketQueue]
    let interrupts: any VirtioInterruptSignaller
    /// The queues' kick eventfds this thread answers (epoll data `kickTag + queue`).
    let kicks: VirtioQueueKicks
    /// The device's control state and link, which this thread reads and the control queue changes.
    let shared: SharedNetState
    /// With vhost=on: the data queues are the kernel's, this thread serves the control queue
    /// and turns vhost's call eventfds into queue interrupts.
    let vhost: VhostNetSession?

    private let handles: Handles
    private let pendingKicks = Mutex<Set<Int>>([])
    private let stopping = Atomic<Bool>(false)
    private let thread = Mutex<HostThread?>(nil)
    /// The I/O thread's pthread id: a kick it answers itself needs no wake-up.
    private let ioThread = Atomic<UInt>(0)
    private static let kickTag: UInt64 = 1 << 32
    /// Epoll data of vhost's call eventfds (`callTag + queue`).
    private static let callTag: UInt64 = 1 << 33
    /// Receive-side state only the I/O thread uses (a Mutex for Sendable's sake).
    private let worker: Mutex<Worker>

    /// Bytes a control command may carry (two full MAC tables fit many times over).
    static let controlCommandLimit = 64 * 1024
    /// Used buffers between interrupt checks in a long batch.
    static let interruptBatch = 64

    private final class Handles: Sendable {
        let epoll: Epoll
        let wake: EventFD
        init() throws(SystemError) {
            epoll = try Epoll()
            wake = try EventFD()
        }
    }

    private struct Worker {
        /// Backend queues not polled until the driver adds receive buffers.
        var parked: [Bool]
        /// Reused by every transmitted frame: its iovecs, and the used entries of the chains
        /// sent since the used ring was last updated (so the steady state allocates nothing
        /// per frame).
        var transmitVectors: [iovec] = []
        var transmitted: [UsedElement] = []
        var receiving = ReceiveBuffers()
    }

    /// Receive chains popped in the current burst and not yet filled (mergeable buffers take
    /// enough for the largest frame before each readv), their iovecs contiguous in chain
    /// order, and the used entries of the frames delivered since the used ring was last
    /// updated. The iovecs are lent for one burst: what is left unfilled at its end goes back
    /// to the ring (`VirtQueue.undoPop`) and is popped again by the next.
    private struct ReceiveBuffers {
        var chains: [LentChain] = []
        var vectors: [iovec] = []
        var used: [UsedElement] = []
        /// Writable bytes in `chains`.
        var bytes = 0

        mutating func add(_ chain: LentChain) {
            chains.append(chain)
            bytes += chain.writableLength
        }

        /// The first `count` chains were filled: they and their iovecs leave.
        mutating func removeFirst(_ count: Int) {
            guard count < chains.count else {
                forgetUnfilled()
                return
            }
            var filledVectors = 0
            for chain in chains[..<count] {
                filledVectors += chain.vectorCount
                bytes -= chain.writableLength
            }
            vectors.removeFirst(filledVectors)
            chains.removeFirst(count)
        }

        /// Forgets the unfilled chains (capacity kept).
        mutating func forgetUnfilled() {
            chains.removeAll(keepingCapacity: true)
            vectors.removeAll(keepingCapacity: true)
            bytes = 0
        }
    }

    private enum ReceiveOutcome { case drained, needsBuffers }

    init(device: String, negotiated: VirtioNetFeatures, queues: [VirtQueue?], pairs: Int, controlIndex: Int?,
         backend: [any PacketQueue], shared: SharedNetState, interrupts: any VirtioInterruptSignaller,
         kicks: VirtioQueueKicks = .none, vhost: VhostNetSession? = nil) throws(SystemError) {
        self.device = device
        self.negotiated = negotiated
        self.queues = queues
        self.pairs = pairs
        self.controlIndex = controlIndex
        self.backend = backend
        self.interrupts = interrupts
        self.kicks = kicks
        self.shared = shared
        self.vhost = vhost
        handles = try Handles()
        worker = Mutex(Worker(parked: Array(repeating: false, count: backend.count)))
        try handles.epoll.add(handles.wake.rawValue, events: .readable, data: 0)
        if let vhost {
            // The taps and the data queues' kicks are vhost's; its calls without an in-kernel
            // route are this thread's.
            for (index, call) in vhost.relayed.enumerated() {
                try handles.epoll.add(call.event.rawValue, events: .readable, data: Self.callTag + UInt64(index))
            }
        } else {
            for (j, queue) in backend.enumerated() {
                try handles.epoll.add(queue.pollDescriptor, events: .readable, data: UInt64(j + 1))
            }
        }
        for (queue, descriptor) in kicks.descriptors where vhost == nil || queue == controlIndex {
            try handles.epoll.add(descriptor, events: .readable, data: Self.kickTag + UInt64(queue))
        }
        let started = try HostThread(kind: .io, name: "virtio-net") { [self] in run() }
        thread.withLock { $0 = started }
    }

    /// Queue `index` was kicked.
    func kick(_ index: Int) {
        if let vhost, vhost.kicks.indices.contains(index) {
            // A trapped notify write (no KVM ioeventfd caught it): passed on to vhost's eventfd
            // (a saturated counter means vhost is already due to look).
            try? vhost.kicks[index].eventFD.signal()
            return
        }
        pendingKicks.withLock { _ = $0.insert(index) }
        // On the I/O thread (a kick eventfd it answered) the loop takes it before waiting again.
        if pthread_self() != ioThread.load(ordering: .acquiring) { wake() }
    }

    /// Serves every queue once (at DRIVER_OK: buffers made available before it).
    func kickAll() {
        pendingKicks.withLock { $0.formUnion(queues.indices) }
        wake()
    }

    /// The device changed `shared.linkUp`.
    func linkChanged() {
        if negotiated.contains(.status) { interrupts.signalConfigurationChange() }
        wake()
    }

    /// Ends the I/O thread and waits for it (not from the thread itself).
    func stop() {
        stopping.store(true, ordering: .releasing)
        wake()
        thread.withLock { $0 }?.join()
    }

    private func wake() {
        do {
            try handles.wake.signal()
        } catch {
            // The counter is saturated: the thread is already due to wake.
        }
    }

    // MARK: The I/O thread

    private func run() {
        ioThread.store(pthread_self(), ordering: .releasing)
        // The backend follows the negotiated offloads. Done here, on the I/O thread, whose
        // sandbox list holds these ioctls (DRIVER_OK arrives on a vCPU thread, whose does not).
        for (i, queue) in backend.enumerated() {
            do {
                try queue.configure(headerSize: VirtioNetHeader.size, offloads: negotiated.tapOffloads)
            } catch {
                interrupts.deviceNeedsReset("backend queue \(i) refused the vnet header or offloads: \(error)")
                return
            }
        }
        attachQueues()
        // vhost's vrings have their taps while the link is up (set_link), as this thread last saw it.
        var vhostAttached = shared.linkUp.load(ordering: .acquiring)
        if let vhost {
            do {
                try vhost.start(queues: queues, taps: backend, attached: vhostAttached)
            } catch {
                vhost.stop(device: device)
                interrupts.deviceNeedsReset("\(error)")
                return
            }
            if !vhostAttached { dropFramesWhileDetached(true) }
        }
        defer { vhost?.stop(device: device) }
        var ready = Array(repeating: vhost == nil, count: backend.count)
        while !stopping.load(ordering: .acquiring) {
            let events: [Epoll.Event]
            do {
                events = try handles.epoll.wait(maxEvents: 64)
            } catch {
                GuestErrorLog.report(device: device, kind: "io-thread", "epoll_wait failed: \(error); the device stops")
                return
            }
            for event in events {
                if event.data == 0 {
                    _ = try? handles.wake.consume()
                } else if event.data >= Self.callTag, let vhost {
                    let call = vhost.relayed[Int(event.data - Self.callTag)]
                    if let count = try? call.event.eventFD.consume(), count > 0 { interrupts.signalQueue(call.queue) }
                } else if event.data >= Self.kickTag {
                    // The transport's notify path; for a live queue it comes back as `kick`.
                    kicks.answer(Int(event.data - Self.kickTag))
                } else if Int(event.data) - 1 < ready.count {
                    ready[Int(event.data) - 1] = true
                }
            }
            if stopping.load(ordering: .acquiring) { return }
            if let vhost, shared.linkUp.load(ordering: .acquiring) != vhostAttached {
                vhostAttached.toggle()
                if vhostAttached { dropFramesWhileDetached(false) }
                vhost.attach(vhostAttached, taps: backend, device: device)
                if !vhostAttached { dropFramesWhileDetached(true) }
            }
            if vhost != nil, !vhostAttached {
                // The link is down: what the host sends meanwhile is lost, as on a pulled cable.
                for j in backend.indices where ready[j] {
                    ready[j] = false
                    dropWaitingFrames(backend[j])
                }
            }
            let kicks = pendingKicks.withLock { pending in
                defer { pending.removeAll() }
                return pending
            }
            worker.withLock { w in
                if let controlIndex, kicks.contains(controlIndex) {
                    serveControl()
                    attachQueues()
                }
                guard vhost == nil else { return }
                let (active, filter) = shared.control.withLock { (min(max($0.activePairs, 1), pairs), $0.filter) }
                for pair in 0..<active where kicks.contains(2 * pair + 1) {
                    transmit(pair: pair, vectors: &w.transmitVectors, transmitted: &w.transmitted)
                }
                for j in backend.indices {
                    // A tap queue past the active pairs feeds a receive queue that is.
                    let pair = j % active
                    if w.parked[j] && kicks.contains(2 * pair) {
                        w.parked[j] = false
                        ready[j] = true
                        try? handles.epoll.add(backend[j].pollDescriptor, events: .readable, data: UInt64(j + 1))
                    }
                    guard ready[j], !w.parked[j] else { continue }
                    ready[j] = false
                    if receive(from: backend[j], pair: pair, filter: filter, buffers: &w.receiving) == .needsBuffers {
                        // Until the driver adds buffers: a readable tap would spin the thread.
                        w.parked[j] = true
                        try? handles.epoll.remove(backend[j].pollDescriptor)
                    }
                }
            }
        }
    }

    /// While vhost's vrings have no tap (the link is down), this thread reads the taps and
    /// drops what they hold, as the userspace datapath does with the link down, so frames the
    /// host sent meanwhile are not delivered once the link is up again (QEMU drops them too).
    /// Frames waiting when the link goes down are dropped at once.
    private func dropFramesWhileDetached(_ dropping: Bool) {
        for (j, queue) in backend.enumerated() {
            if dropping {
                try? handles.epoll.add(queue.pollDescriptor, events: .readable, data: UInt64(j + 1))
            } else {
                try? handles.epoll.remove(queue.pollDescriptor)
            }
            dropWaitingFrames(queue)
        }
    }

    /// With more backend queues than queue pairs in use (a driver without MQ, or one that set
    /// fewer pairs), the extra queues leave the backend, so the host steers frames only to
    /// queues that are served (vhost serves its vrings whatever the driver uses); they join
    /// again when the driver takes more pairs. QEMU detaches them the same way.
    private func attachQueues() {
        guard backend.count > 1 else { return }
        let active = shared.control.withLock { min(max($0.activePairs, 1), pairs) }
        for (j, queue) in backend.enumerated() {
            do {
                try queue.setAttached(j < active)
            } catch {
                GuestErrorLog.report(device: device, kind: "tap-queue", "backend queue \(j): \(error)")
            }
        }
    }

    // MARK: Transmit

    /// How a batch of transmitted chains ended.
    private enum TransmitStep {
        /// The ring has no more chains (or the device needs a reset): all are used.
        case drained
        /// `interruptBatch` chains sent and used; the ring may hold more.
        case more
        /// The host queue had no room for the last chain's frame: its iovecs wait in the
        /// vectors, the chain among those not yet used.
        case hostFull(any PacketQueue)
    }

    /// Sends every available chain, a batch at a time: one DMA admission per batch (see
    /// `DMAPort.burst`), the used ring updated (one used->idx store) and the interrupt decided
    /// at the end of each. A wait for room in a full host queue happens between batches, so an
    /// unplug never waits for the host.
    private func transmit(pair: Int, vectors: inout [iovec], transmitted: inout [UsedElement]) {
        guard let queue = queues[safe: 2 * pair + 1] ?? nil else { return }
        transmitted.removeAll(keepingCapacity: true)
        do {
            // No kicks while the ring is being drained (each is an exit for the guest), as
            // QEMU's transmit bottom half does; asked for again once it is empty.
            try queue.disableNotifications()
            while true {
                let step = try queue.burst { () throws(VirtQueueError) -> TransmitStep in
                    try transmitBatch(from: queue, pair: pair, vectors: &vectors, transmitted: &transmitted)
                }
                switch step {
                case .drained:
                    // Chains added while kicks were off are sent now: no kick will come for them.
                    guard try queue.enableNotifications() else { return }
                    try queue.disableNotifications()
                case .more: continue
                case .hostFull(let backendQueue): resendWhenThereIsRoom(on: backendQueue, vectors: &vectors)
                }
            }
        } catch {
            // The queue has marked the device NEEDS_RESET and logged why.
        }
    }

    private func transmitBatch(from queue: VirtQueue, pair: Int, vectors: inout [iovec],
                               transmitted: inout [UsedElement]) throws(VirtQueueError) -> TransmitStep {
        var sent = 0
        // The frame's bytes are lent once, at the pop: the header is read from them, and they
        // are what writev sends.
        vectors.removeAll(keepingCapacity: true)
        while sent < Self.interruptBatch, let chain = try queue.popLending(.readable, into: &vectors) {
            sent += 1
            guard chain.readableLength >= VirtioNetHeader.size else {
                interrupts.deviceNeedsReset("transmit queue \(2 * pair + 1): a chain of \(chain.readableLength) readable bytes has no \(VirtioNetHeader.size)-byte virtio-net header")
                try? complete(&transmitted, on: queue)
                return .drained
            }
            transmitted.append(UsedElement(chain, written: 0))
            if let problem = vectors.withUnsafeBufferPointer({ Self.header(in: $0) }).transmitViolation(negotiated) {
                GuestErrorLog.report(device: device, kind: "tx-header", "\(problem); frame dropped")
            } else if shared.linkUp.load(ordering: .acquiring), pair < backend.count,
                      !send(vectors, to: backend[pair]) {
                return .hostFull(backend[pair])
            }
            vectors.removeAll(keepingCapacity: true)
        }
        try complete(&transmitted, on: queue)
        try queue.interruptIfNeeded()
        return sent == Self.interruptBatch ? .more : .drained
    }

    /// Returns `chains` to the used ring at once and empties the list (capacity kept).
    private func complete(_ used: inout [UsedElement], on queue: VirtQueue) throws(VirtQueueError) {
        guard !used.isEmpty else { return }
        // Emptied either way: after a failure the queue is broken and will take nothing back.
        defer { used.removeAll(keepingCapacity: true) }
        try used.withUnsafeBufferPointer { u in Result { () throws(VirtQueueError) in try queue.complete(u) } }.get()
    }

    /// The virtio-net header at the start of a frame's lent bytes (at least its size: checked
    /// against the chain's readable length).
    private static func header(in vectors: UnsafeBufferPointer<iovec>) -> VirtioNetHeader {
        var raw: (UInt64, UInt32) = (0, 0)
        return withUnsafeMutableBytes(of: &raw) { bytes in
            _ = gather(from: vectors, skipping: 0, into: bytes[..<VirtioNetHeader.size])
            return VirtioNetHeader(UnsafeRawBufferPointer(rebasing: bytes[..<VirtioNetHeader.size]))!
        }
    }

    /// Copies the lent bytes after the first `skip` into `destination`, as many as fit; returns
    /// how many were copied.
    private static func gather(from vectors: UnsafeBufferPointer<iovec>, skipping skip: Int, into destination: Slice<UnsafeMutableRawBufferPointer>) -> Int {
        guard let start = destination.base.baseAddress.map({ $0 + destination.startIndex }) else { return 0 }
        var skip = skip, filled = 0
        for vector in vectors where filled < destination.count {
            guard let base = vector.iov_base else { continue }
            let from = min(skip, vector.iov_len)
            skip -= from
            let count = min(vector.iov_len - from, destination.count - filled)
            guard count > 0 else { continue }
            (start + filled).copyMemory(from: base + from, byteCount: count)
            filled += count
        }
        return filled
    }

    /// One writev of a frame's lent bytes (vnet header and frame); false when the host queue
    /// has no room now (the iovecs stay for `resendWhenThereIsRoom`).
    private func send(_ vectors: [iovec], to backendQueue: any PacketQueue) -> Bool {
        let outcome = vectors.withUnsafeBufferPointer { p in
            Result { () throws(SystemError) -> Int? in try backendQueue.writev(p) }
        }
        if case .success(.none) = outcome { return false }
        if case .failure(let error) = outcome {
            GuestErrorLog.report(device: device, kind: "tx-write", "the host refused a frame: \(error)")
        }
        return true
    }

    /// The host queue was full: gives it a moment, then one more writev of the waiting frame
    /// (its bytes were lent by the port in the batch that took the chain) before it is dropped.
    private func resendWhenThereIsRoom(on backendQueue: any PacketQueue, vectors: inout [iovec]) {
        var poller = pollfd(fd: backendQueue.pollDescriptor, events: Int16(POLLOUT), revents: 0)
        _ = poll(&poller, 1, 100)
        if !send(vectors, to: backendQueue) {
            GuestErrorLog.report(device: device, kind: "tx-full", "the host queue stayed full; frame dropped")
        }
        vectors.removeAll(keepingCapacity: true)
    }

    // MARK: Receive

    /// How a batch of received frames ended.
    private enum ReceiveStep {
        /// `interruptBatch` frames taken; more may wait.
        case more
        /// The link went down: waiting frames are to be dropped (outside the batch).
        case linkDown
        case stopped(ReceiveOutcome)
    }

    /// Delivers waiting frames, a batch at a time under one DMA admission (`DMAPort.burst`);
    /// readv does not block, so a batch never waits on the host.
    private func receive(from backendQueue: any PacketQueue, pair: Int, filter: ReceiveFilter,
                         buffers: inout ReceiveBuffers) -> ReceiveOutcome {
        guard let queue = queues[safe: 2 * pair] ?? nil else { return .needsBuffers }
        // The tap's readiness wakes this thread, not the driver's refills: no kicks while the
        // ring has buffers; asked for again once they run out (below), as QEMU's receive does.
        _ = try? queue.quietKicksWhileServing()
        var delivered = 0
        defer { if delivered > 0 { _ = try? queue.interruptIfNeeded() } }
        while true {
            let step = queue.burst {
                receiveBatch(from: backendQueue, into: queue, pair: pair, filter: filter, buffers: &buffers, delivered: &delivered)
            }
            switch step {
            case .more:
                _ = try? queue.interruptIfNeeded()
                continue
            case .linkDown:
                dropWaitingFrames(backendQueue)
                return .drained
            case .stopped(let outcome): return outcome
            }
        }
    }

    /// Up to `interruptBatch` frames, each read straight into the lent bytes of the chains it
    /// fills (one readv), its header's num_buffers stored there too; the chains it used go back
    /// to the used ring together at the end of the batch, and those popped but not filled go
    /// back to the available ring (their bytes were lent for this burst only).
    private func receiveBatch(from backendQueue: any PacketQueue, into queue: VirtQueue, pair: Int,
                              filter: ReceiveFilter, buffers: inout ReceiveBuffers, delivered: inout Int) -> ReceiveStep {
        let mergeable = negotiated.contains(.mergeableReceiveBuffers)
        let needed = negotiated.largestReceivedFrame
        // Every way out publishes the frames delivered so far first.
        func finish(_ step: ReceiveStep) -> ReceiveStep {
            queue.undoPop(buffers.chains)
            buffers.forgetUnfilled()
            guard !buffers.used.isEmpty else { return step }
            do {
                try complete(&buffers.used, on: queue)
            } catch {
                // The queue has marked the device NEEDS_RESET and logged why.
                return .stopped(.needsBuffers)
            }
            return step
        }
        // The queue is broken: nothing to give back.
        func fail() -> ReceiveStep {
            buffers.forgetUnfilled()
            return finish(.stopped(.needsBuffers))
        }
        func short() -> Bool { buffers.chains.isEmpty || (mergeable && buffers.bytes < needed) }
        var taken = 0
        while taken < Self.interruptBatch {
            guard shared.linkUp.load(ordering: .acquiring) else { return finish(.linkDown) }
            do {
                while short() {
                    guard let chain = try queue.popLending(.writable, into: &buffers.vectors) else { break }
                    guard chain.readableLength == 0, chain.writableLength >= VirtioNetHeader.size else {
                        interrupts.deviceNeedsReset("receive queue \(2 * pair): a buffer with \(chain.readableLength) readable and \(chain.writableLength) writable bytes cannot take a \(VirtioNetHeader.size)-byte header and frame")
                        return fail()
                    }
                    buffers.add(chain)
                }
                if short() {
                    // Ask for a kick; buffers that arrived meanwhile are taken at once.
                    if try queue.enableNotifications() { continue }
                    return finish(.stopped(.needsBuffers))
                }
            } catch {
                return fail()
            }
            let offered = mergeable ? buffers.chains.count : 1
            let offeredVectors = mergeable ? buffers.vectors.count : buffers.chains[0].vectorCount
            let outcome = buffers.vectors.withUnsafeBufferPointer { p in
                Result { () throws(SystemError) -> Int? in try backendQueue.readv(UnsafeBufferPointer(rebasing: p[..<offeredVectors])) }
            }
            let length: Int
            switch outcome {
            case .success(let n?): length = n
            case .success(nil): return finish(.stopped(.drained))
            case .failure(let error):
                GuestErrorLog.report(device: device, kind: "rx-read", "reading the host queue failed: \(error)")
                return finish(.stopped(.drained))
            }
            taken += 1
            let accepted = buffers.vectors.withUnsafeBufferPointer { frame in
                // A runt, or a frame the driver's filters refuse: its buffers stay for the next.
                guard length >= VirtioNetHeader.size + 14,
                      Self.withEthernetHeader(in: frame, length: length, { filter.accepts($0) }) else { return 0 }
                var remaining = length, used = 0
                for chain in buffers.chains[..<offered] where remaining > 0 {
                    remaining -= min(remaining, chain.writableLength)
                    used += 1
                }
                Self.storeNumberOfBuffers(UInt16(truncatingIfNeeded: used), in: frame)
                return used
            }
            guard accepted > 0 else { continue }
            var remaining = length
            for chain in buffers.chains[..<accepted] {
                let part = min(remaining, chain.writableLength)
                buffers.used.append(UsedElement(chain, written: UInt32(part)))
                remaining -= part
            }
            buffers.removeFirst(accepted)
            delivered += 1
        }
        return finish(.more)
    }

    /// Runs `body` on the Ethernet header of a received frame (up to 18 bytes after the vnet
    /// header: addresses, type, a VLAN tag) in its lent bytes, copied out where it is split.
    private static func withEthernetHeader(in vectors: UnsafeBufferPointer<iovec>, length: Int,
                                           _ body: (Slice<UnsafeRawBufferPointer>) -> Bool) -> Bool {
        let wanted = min(length - VirtioNetHeader.size, 18)
        if let first = vectors.first, let base = first.iov_base, first.iov_len >= VirtioNetHeader.size + wanted {
            // Nearly always: the header lies in the first buffer, read where it is.
            return body(UnsafeRawBufferPointer(start: base + VirtioNetHeader.size, count: wanted)[...])
        }
        var raw: (UInt64, UInt64, UInt16) = (0, 0, 0)
        return withUnsafeMutableBytes(of: &raw) { bytes in
            let filled = gather(from: vectors, skipping: VirtioNetHeader.size, into: bytes[..<wanted])
            return body(UnsafeRawBufferPointer(bytes)[..<filled])
        }
    }

    /// The header's num_buffers (little-endian, bytes 10-11), stored in the frame's lent bytes
    /// (the chain was checked to hold the whole header).
    private static func storeNumberOfBuffers(_ count: UInt16, in vectors: UnsafeBufferPointer<iovec>) {
        if let first = vectors.first, first.iov_len >= 12, let base = first.iov_base {
            base.storeBytes(of: count.littleEndian, toByteOffset: 10, as: UInt16.self)
            return
        }
        var position = 0
        for vector in vectors {
            guard let base = vector.iov_base else { continue }
            for byteIndex in 10..<12 where (position..<position + vector.iov_len).contains(byteIndex) {
                base.storeBytes(of: UInt8(truncatingIfNeeded: count >> (8 * UInt16(byteIndex - 10))),
                                toByteOffset: byteIndex - position, as: UInt8.self)
            }
            position += vector.iov_len
            if position >= 12 { return }
        }
    }

    /// While the link is down, waiting frames are read and dropped (a pulled cable).
    private func dropWaitingFrames(_ backendQueue: any PacketQueue) {
        var scratch = [UInt8](repeating: 0, count: 65_600)
        while true {
            let n = scratch.withUnsafeMutableBytes { raw -> Int? in
                var vector = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
                return withUnsafePointer(to: &vector) { try? backendQueue.readv(UnsafeBufferPointer(start: $0, count: 1)) } ?? nil
            }
            if n == nil { return }
        }
    }

    // MARK: Control

    private func serveControl() {
        guard let controlIndex, let queue = queues[safe: controlIndex] ?? nil else { return }
        do {
            while let chain = try queue.pop() {
                guard chain.readableLength >= 2, chain.writableLength >= 1 else {
                    interrupts.deviceNeedsReset("control queue: a command needs 2 readable bytes (class, command) and 1 writable byte (ack); got \(chain.readableLength) and \(chain.writableLength)")
                    return
                }
                var ack = ControlCommand.error
                if chain.readableLength <= Self.controlCommandLimit, let command = ControlCommand(readable: try chain.readAll()) {
                    // Applied whole under the lock: a snapshot sees a command's effect entirely or not at all.
                    let (result, problem) = shared.control.withLock { $0.apply(command, negotiated: negotiated) }
                    ack = result
                    if let problem { GuestErrorLog.report(device: device, kind: "control", problem) }
                } else {
                    GuestErrorLog.report(device: device, kind: "control", "a command of \(chain.readableLength) bytes is over the \(Self.controlCommandLimit)-byte limit")
                }
                try chain.write([ack])
                try queue.complete(chain, written: 1)
            }
            try queue.interruptIfNeeded()
        } catch {
            // The queue has marked the device NEEDS_RESET and logged why.
        }
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
