import Foundation
import Glibc
import Synchronization
import Testing
@testable import Virtio

/// Packed virtqueues (virtio 1.2, 2.8) driven directly: the driver's side is written here from
/// the spec's layout (pvirtq_desc, the wrap counters in AVAIL/USED, event suppression), the
/// device's is `VirtQueue` over a real DMA port and guest RAM.
@Suite struct PackedQueueTests {
    /// What the queue asked of the transport.
    final class Signals: VirtioInterruptSignaller, Sendable {
        private let state = Mutex<(interrupts: Int, resets: [String])>((0, []))
        func signalQueue(_ index: Int) { state.withLock { $0.interrupts += 1 } }
        func signalConfigurationChange() {}
        func deviceNeedsReset(_ reason: String) { state.withLock { $0.resets.append(reason) } }
        var interrupts: Int { state.withLock { $0.interrupts } }
        var resets: [String] { state.withLock { $0.resets } }
    }

    /// The driver's side of a packed ring of `size` descriptors at the harness's descriptor
    /// area; its driver event suppression structure at `available`, the device's at `used`.
    struct Driver {
        let h: VirtioDriverHarness
        let size: UInt16
        var position: UInt16 = 0
        var wrap = true

        static let next: UInt16 = 1, write: UInt16 = 2, indirect: UInt16 = 4, avail: UInt16 = 1 << 7, used: UInt16 = 1 << 15

        func slot(_ index: UInt16) -> UInt64 { h.descriptors + 16 * UInt64(index) }

        /// Makes a chain available: its descriptors in consecutive slots (NEXT on all but the
        /// last, the id on every one), AVAIL/USED from the wrap counter of each slot, the
        /// first's flags written last. Returns the first slot.
        @discardableResult
        mutating func add(_ buffers: [(address: UInt64, length: UInt32, flags: UInt16)], id: UInt16) -> UInt16 {
            let first = position
            var pending: (UInt64, UInt16)?
            for (i, buffer) in buffers.enumerated() {
                let at = slot(position)
                let flags = buffer.flags | (i < buffers.count - 1 ? Self.next : 0) | (wrap ? Self.avail : Self.used)
                h.ram.store(buffer.address, at: at)
                h.ram.store(buffer.length, at: at + 8)
                h.ram.store(id, at: at + 12)
                if i == 0 { pending = (at + 14, flags) } else { h.ram.store(flags, at: at + 14) }
                position += 1
                if position == size {
                    position = 0
                    wrap.toggle()
                }
            }
            if let (at, flags) = pending { h.ram.store(flags, at: at) }
            return first
        }

        /// A used descriptor as the driver reads it.
        func usedElement(_ index: UInt16) -> (id: UInt16, length: UInt32, flags: UInt16) {
            (h.ram.load(at: slot(index) + 12), h.ram.load(at: slot(index) + 8), h.ram.load(at: slot(index) + 14))
        }

        func setDriverEvents(flags: UInt16, offsetWrap: UInt16 = 0) {
            h.ram.store(offsetWrap, at: h.available)
            h.ram.store(flags, at: h.available + 2)
        }
        var deviceEvents: (offsetWrap: UInt16, flags: UInt16) { (h.ram.load(at: h.used), h.ram.load(at: h.used + 2)) }
    }

    static let packed: VirtioFeatures = [.version1, .ringPacked, .indirectDescriptors, .eventIndex]

    func queue(_ h: VirtioDriverHarness, size: UInt16, features: VirtioFeatures = packed, signals: Signals = Signals()) -> VirtQueue {
        h.directQueue(size: size, features: features, interrupts: signals)
    }

    @Test func chainsWrapAndUsedDescriptorsSkipTheirChainsSlots() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 0))
        var driver = Driver(h: h, size: 5)  // any size goes for a packed ring
        let q = queue(h, size: 5)
        driver.add([(h.buffers, 8, 0), (h.buffers + 0x100, 16, Driver.write)], id: 3)  // slots 0-1
        driver.add([(h.buffers + 0x200, 4, Driver.write)], id: 1)                       // slot 2
        var vectors: [iovec] = []
        let a = try #require(try q.popLending(.writable, into: &vectors))
        let b = try #require(try q.popLending(.writable, into: &vectors))
        #expect(a == LentChain(head: 3, readableLength: 8, writableLength: 16, vectorCount: 1, slots: 2))
        #expect(b == LentChain(head: 1, readableLength: 0, writableLength: 4, vectorCount: 1, slots: 1))
        #expect(try q.popLending(.writable, into: &vectors) == nil)
        // Used out of order in one batch: B's descriptor at slot 0, A's at 1 (B took one slot).
        try [UsedElement(b, written: 4), UsedElement(a, written: 16)].withUnsafeBufferPointer { try q.complete($0) }
        #expect(driver.usedElement(0) == (1, 4, Driver.avail | Driver.used | Driver.write))
        #expect(driver.usedElement(1) == (3, 16, Driver.avail | Driver.used | Driver.write))
        // Across the ring's end: C in slots 3-4, D in slot 0 with the wrap counter 0.
        driver.add([(h.buffers + 0x300, 8, Driver.write), (h.buffers + 0x400, 8, Driver.write)], id: 4)
        driver.add([(h.buffers + 0x500, 2, Driver.write)], id: 2)
        let c = try #require(try q.popLending(.writable, into: &vectors))
        let d = try #require(try q.popLending(.writable, into: &vectors))
        #expect((c.head, c.slots, c.writableLength, d.head, d.slots) == (4, 2, 16, 2, 1))
        // A's used descriptor ended at slot 3: C's goes there, D's after C's two slots, at 0, wrap 0.
        try [UsedElement(c, written: 0), UsedElement(d, written: 2)].withUnsafeBufferPointer { try q.complete($0) }
        #expect(driver.usedElement(3) == (4, 0, Driver.avail | Driver.used))
        #expect(driver.usedElement(0) == (2, 2, Driver.write))
    }

    @Test func chainsGivenBackArePoppedAgainAcrossTheWrap() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 0))
        var driver = Driver(h: h, size: 3)
        let q = queue(h, size: 3)
        driver.add([(h.buffers, 8, Driver.write), (h.buffers + 0x100, 8, Driver.write)], id: 0)  // slots 0-1
        var vectors: [iovec] = []
        let first = try #require(try q.popLending(.writable, into: &vectors))
        try [UsedElement(first, written: 8)].withUnsafeBufferPointer { try q.complete($0) }
        driver.add([(h.buffers + 0x200, 8, Driver.write), (h.buffers + 0x300, 8, Driver.write)], id: 1)  // slots 2, 0 (wrap 0)
        let wrapped = try #require(try q.popLending(.writable, into: &vectors))
        #expect(wrapped == LentChain(head: 1, readableLength: 0, writableLength: 16, vectorCount: 2, slots: 2))
        q.undoPop([wrapped])
        let again = try #require(try q.popLending(.writable, into: &vectors))
        #expect(again == wrapped)
        #expect(vectors.suffix(2).map { $0.iov_base } == vectors.dropLast(2).suffix(2).map { $0.iov_base })
    }

    @Test func indirectTablesAndTheDriversMistakes() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 0))
        // An indirect table: a readable and a writable descriptor; only WRITE counts there.
        let table = h.buffers + 0x1000
        h.ram.store(h.buffers, at: table); h.ram.store(UInt32(12), at: table + 8); h.ram.store(UInt16(0x1 | 0x4), at: table + 14)
        h.ram.store(h.buffers + 0x100, at: table + 16); h.ram.store(UInt32(20), at: table + 24); h.ram.store(Driver.write, at: table + 30)
        var driver = Driver(h: h, size: 4)
        let q = queue(h, size: 4)
        driver.add([(table, 32, Driver.indirect)], id: 9)
        let chain = try #require(try q.pop())
        #expect((chain.head, chain.readableLength, chain.writableLength, chain.slots) == (9, 12, 20, 1))

        // Each of these is the driver's error: NEEDS_RESET, the VMM lives.
        let mistakes: [(String, VirtioFeatures, [(address: UInt64, length: UInt32, flags: UInt16)])] = [
            ("INDIRECT without INDIRECT_DESC", [.version1, .ringPacked], [(table, 32, Driver.indirect)]),
            ("INDIRECT in a chain", Self.packed, [(h.buffers, 8, 0), (table, 32, Driver.indirect)]),
            ("a table of 20 bytes", Self.packed, [(table, 20, Driver.indirect)]),
            ("readable after writable", Self.packed, [(h.buffers, 8, Driver.write), (h.buffers + 8, 8, 0)]),
            ("a buffer past RAM", Self.packed, [(UInt64(TestRAM.size) - 4, 8, Driver.write)]),
            ("a chain longer than the ring", Self.packed, Array(repeating: (h.buffers, 8, Driver.write), count: 4)),
        ]
        for (what, features, buffers) in mistakes {
            let signals = Signals()
            let q = queue(h, size: 4, features: features, signals: signals)
            var driver = Driver(h: h, size: 4)
            driver.add(buffers, id: 0)
            if buffers.count == 4 {
                // Four descriptors fill the ring; the last one's NEXT leads back to the first.
                h.ram.store(Driver.next | Driver.write | Driver.avail, at: driver.slot(3) + 14)
            }
            var vectors: [iovec] = []
            #expect(throws: VirtQueueError.self, "\(what)") { try q.popLending(.writable, into: &vectors) }
            #expect(vectors.isEmpty, "\(what)")
            #expect(signals.resets.count == 1, "\(what): \(signals.resets)")
        }
    }

    @Test func eventSuppressionBothWays() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 0))
        var driver = Driver(h: h, size: 8)
        let signals = Signals()
        let q = queue(h, size: 8, signals: signals)
        func useOne() throws {
            driver.add([(h.buffers, 8, Driver.write)], id: 0)
            var vectors: [iovec] = []
            let chain = try #require(try q.popLending(.writable, into: &vectors))
            try [UsedElement(chain, written: 8)].withUnsafeBufferPointer { try q.complete($0) }
        }
        // Driver events: ENABLE interrupts, DISABLE does not, DESC when the used position passes
        // the descriptor named (position 4, wrap 1).
        driver.setDriverEvents(flags: 0)
        try useOne()
        #expect(try q.interruptIfNeeded() && signals.interrupts == 1)
        driver.setDriverEvents(flags: 1)
        try useOne()
        #expect(try !q.interruptIfNeeded())
        driver.setDriverEvents(flags: 2, offsetWrap: 4 | 0x8000)
        try useOne()  // used position 3
        #expect(try !q.interruptIfNeeded())
        try useOne()
        try useOne()  // used position 5: descriptor 4 was used
        #expect(try q.interruptIfNeeded())
        #expect(try !q.interruptIfNeeded(), "nothing new used")
        // Device events: DISABLE, then (EVENT_IDX) DESC at the device's position, wrap 1; with
        // a descriptor already there, enabling says so.
        try q.disableNotifications()
        #expect(driver.deviceEvents.flags == 1)
        #expect(try !q.enableNotifications())
        #expect(driver.deviceEvents == (5 | 0x8000, 2))
        driver.add([(h.buffers, 8, Driver.write)], id: 0)
        #expect(try q.enableNotifications())
        #expect(signals.resets.isEmpty)
    }

    /// A snapshot carries a packed ring's wrap counters (the position alone is ambiguous after a
    /// wrap): a queue restored from it (as the transport restores one) takes the next chain
    /// where the original would, and a snapshot from before packed rings (no counters) means
    /// both at 1, as a queue starts.
    @Test func aRestoredPackedRingContinuesAfterTheWrap() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 0))
        var driver = Driver(h: h, size: 3)
        let original = queue(h, size: 3)
        var vectors: [iovec] = []
        for id: UInt16 in 0..<4 {  // the fourth is at slot 0 again, wrap counter 0
            driver.add([(h.buffers, 8, Driver.write)], id: id)
            let chain = try #require(try original.popLending(.writable, into: &vectors))
            try [UsedElement(chain, written: 8)].withUnsafeBufferPointer { try original.complete($0) }
        }
        let saved = try JSONDecoder().decode(VirtQueue.Cursor.self, from: JSONEncoder().encode(original.cursor.withLock { $0 }))
        #expect(saved == original.cursor.withLock { $0 })
        #expect((saved.nextAvailable, saved.availableWrap, saved.nextUsed, saved.usedWrap) == (1, false, 1, false))
        let restored = queue(h, size: 3)
        restored.cursor.withLock { $0 = saved }
        driver.add([(h.buffers + 0x100, 8, Driver.write)], id: 9)
        #expect(try restored.popLending(.writable, into: &vectors)?.head == 9)

        let old = #"{"nextAvailable": 2, "nextUsed": 2, "notificationsEnabled": true}"#
        let decoded = try JSONDecoder().decode(VirtQueue.Cursor.self, from: Data(old.utf8))
        #expect(decoded.availableWrap && decoded.usedWrap && decoded.nextAvailable == 2)
    }
}
