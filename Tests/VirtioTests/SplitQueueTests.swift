import Glibc
import GuestMemory
import Interrupts
import PCI
import Testing
import VMMBase
@testable import Virtio

/// The split virtqueue against the rules of virtio 1.2 section 2.7, driven as a driver drives
/// it: rings in guest RAM, kicks through the notify area, results read from the used ring.
@Suite(.serialized) struct SplitQueueTests {
    static let needsReset: UInt8 = 0x40  // 2.1: DEVICE_NEEDS_RESET

    @Test func entropyFillsAWritableBufferAndInterruptsOnTheQueueVector() throws {
        let h = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"))
        #expect(h.initialize() == 0xF)
        h.writeDescriptor(0, address: h.buffers, length: 64, flags: 2)  // VIRTQ_DESC_F_WRITE
        h.makeAvailable(0)
        h.kick()
        #expect(h.usedIndex == 1)
        #expect(h.usedElement(0) == (id: 0, length: 64))
        #expect(h.ram.read(h.buffers, 64).contains { $0 != 0 })
        // Queue vector 1 as programmed in the MSI-X table (address 0xFEE01000, data 0x41).
        #expect(h.interrupts.messages == [MSIMessage(address: 0xFEE0_1000, data: 0x41)])
        #expect(h.sink.events.contains(.msi(MSIMessage(address: 0xFEE0_1000, data: 0x41))))
    }

    @Test func indirectTableBuffersAreFilledInOrder() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 24))
        #expect(h.initialize() == 0xF)
        let table = h.buffers + 0x1000
        h.writeDescriptor(0, address: h.buffers, length: 16, flags: 2 | 1, next: 1, table: table)
        h.writeDescriptor(1, address: h.buffers + 0x100, length: 16, flags: 2, table: table)
        h.writeDescriptor(3, address: table, length: 32, flags: 4)  // VIRTQ_DESC_F_INDIRECT
        h.makeAvailable(3)
        h.kick()
        #expect(h.usedElement(0) == (id: 3, length: 24))
        #expect(h.ram.read(h.buffers, 16) == [UInt8](repeating: 0x5A, count: 16))
        #expect(h.ram.read(h.buffers + 0x100, 10) == [UInt8](repeating: 0x5A, count: 8) + [0, 0])
    }

    @Test func eventIndexSuppressesInterruptsUntilUsedEventIsPassed() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 1))
        #expect(h.initialize() == 0xF)
        for i in 0..<4 { h.writeDescriptor(i, address: h.buffers + UInt64(i) * 16, length: 16, flags: 2) }
        h.makeAvailable(0)
        h.kick()
        #expect(h.usedIndex == 1 && h.interrupts.messages.count == 1)
        // 2.7.10: interrupt only when used->idx moves past used_event. Ask after entry 2.
        h.setUsedEvent(2)
        h.makeAvailable(1)
        h.kick()
        #expect(h.usedIndex == 2 && h.interrupts.messages.count == 1)
        // The device asks to be kicked for the next entry (avail_event = next avail index).
        #expect(h.availableEvent == 2)
        h.makeAvailable(2)
        h.kick()
        #expect(h.usedIndex == 3 && h.interrupts.messages.count == 2)
        h.makeAvailable(3)
        h.kick()
        #expect(h.usedIndex == 4 && h.interrupts.messages.count == 2)  // used_event 2 already passed
    }

    @Test func noInterruptFlagIsHonouredWithoutEventIndex() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 1))
        // VERSION_1 and ACCESS_PLATFORM only (bits 32, 33).
        #expect(h.initialize(features: 0x3 << 32) == 0xF)
        h.ram.store(UInt16(1), at: h.available)  // VIRTQ_AVAIL_F_NO_INTERRUPT
        h.writeDescriptor(0, address: h.buffers, length: 16, flags: 2)
        h.makeAvailable(0)
        h.kick()
        #expect(h.usedIndex == 1 && h.interrupts.messages.isEmpty)
        h.ram.store(UInt16(0), at: h.available)
        h.makeAvailable(0)
        h.kick()
        #expect(h.usedIndex == 2 && h.interrupts.messages.count == 1)
    }

    // MARK: Hostile descriptors: NEEDS_RESET, a configuration interrupt, a log line, no crash.

    func expectNeedsReset(_ h: VirtioDriverHarness, _ why: Comment) {
        #expect(h.status & Self.needsReset != 0, why)
        // Configuration vector 0: address 0xFEE00000, data 0x40.
        #expect(h.interrupts.messages.contains(MSIMessage(address: 0xFEE0_0000, data: 0x40)), why)
        #expect(GuestErrorLog.recent.contains { $0.device == "vdev" }, why)
    }

    func hostile(_ build: (VirtioDriverHarness) -> Void) throws -> VirtioDriverHarness {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 4))
        #expect(h.initialize() == 0xF)
        build(h)
        h.kick()
        return h
    }

    @Test func aDescriptorLoopNeedsReset() throws {
        let h = try hostile { h in
            h.writeDescriptor(0, address: h.buffers, length: 16, flags: 2 | 1, next: 1)
            h.writeDescriptor(1, address: h.buffers, length: 16, flags: 2 | 1, next: 0)
            h.makeAvailable(0)
        }
        expectNeedsReset(h, "a loop 0 -> 1 -> 0")
        #expect(h.usedIndex == 0)
        // Later kicks are ignored until a reset; a reset brings the device back.
        h.kick()
        #expect(h.usedIndex == 0)
        h.availableIndexReset()
        #expect(h.initialize() == 0xF)
        h.writeDescriptor(0, address: h.buffers, length: 16, flags: 2)
        h.makeAvailable(0)
        h.kick()
        #expect(h.usedIndex == 1)
    }

    @Test func anIndirectTableLongerThanTheQueueNeedsReset() throws {
        let h = try hostile { h in
            // 9 descriptors in one table for a queue of 8 (2.7.5.3.1).
            let table = h.buffers + 0x1000
            for i in 0..<9 { h.writeDescriptor(i, address: h.buffers, length: 4, flags: 2 | (i < 8 ? 1 : 0), next: UInt16(i + 1), table: table) }
            h.writeDescriptor(0, address: table, length: 9 * 16, flags: 4)
            h.makeAvailable(0)
        }
        expectNeedsReset(h, "chain of 9 in a queue of 8")
    }

    @Test func aBufferPastGuestMemoryNeedsReset() throws {
        let h = try hostile { h in
            h.writeDescriptor(0, address: UInt64(TestRAM.size) - 8, length: 16, flags: 2)
            h.makeAvailable(0)
        }
        expectNeedsReset(h, "16 bytes at the last 8 of RAM")
    }

    @Test func aBufferWrappingPast2To64NeedsReset() throws {
        let h = try hostile { h in
            h.writeDescriptor(0, address: UInt64.max - 3, length: 16, flags: 2)
            h.makeAvailable(0)
        }
        expectNeedsReset(h, "address + length wraps")
    }

    @Test func aReplyIntoReadOnlyBuffersNeedsReset() throws {
        let h = try hostile { h in
            h.writeDescriptor(0, address: h.buffers, length: 16, flags: 0)  // device-readable only
            h.makeAvailable(0)
        }
        expectNeedsReset(h, "the device must write 4 bytes; the chain has none writable")
        #expect(h.ram.read(h.buffers, 16) == [UInt8](repeating: 0, count: 16))
    }

    @Test func aRequestShorterThanTheDeviceNeedsNeedsReset() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 4, requestLength: 8))
        #expect(h.initialize() == 0xF)
        h.writeDescriptor(0, address: h.buffers, length: 4, flags: 1, next: 1)  // 4 readable bytes
        h.writeDescriptor(1, address: h.buffers + 16, length: 16, flags: 2)
        h.makeAvailable(0)
        h.kick()
        expectNeedsReset(h, "an 8-byte request header in 4 bytes")
        #expect(h.usedIndex == 0)
    }

    @Test func aReadableDescriptorAfterAWritableOneNeedsReset() throws {
        let h = try hostile { h in
            h.writeDescriptor(0, address: h.buffers, length: 16, flags: 2 | 1, next: 1)
            h.writeDescriptor(1, address: h.buffers + 16, length: 16, flags: 0)
            h.makeAvailable(0)
        }
        expectNeedsReset(h, "2.7.4.2: writable descriptors come last")
    }

    @Test func aHeadPastTheTableNeedsReset() throws {
        let h = try hostile { h in h.makeAvailable(8) }
        expectNeedsReset(h, "head 8 in a table of 8")
    }

    @Test func anAvailableIndexJumpNeedsReset() throws {
        let h = try hostile { h in h.ram.store(UInt16(9), at: h.available + 2) }
        expectNeedsReset(h, "avail->idx 9 ahead in a queue of 8")
    }

    @Test func indirectWithNextAndNestedIndirectNeedReset() throws {
        let a = try hostile { h in
            h.writeDescriptor(0, address: h.buffers + 0x1000, length: 16, flags: 4 | 1, next: 1)
            h.makeAvailable(0)
        }
        expectNeedsReset(a, "INDIRECT with NEXT")
        let b = try hostile { h in
            let table = h.buffers + 0x1000
            h.writeDescriptor(0, address: table + 0x100, length: 16, flags: 4, table: table)
            h.writeDescriptor(0, address: table, length: 16, flags: 4)
            h.makeAvailable(0)
        }
        expectNeedsReset(b, "an indirect table in an indirect table")
    }

    @Test func busMasterOffStopsDMAAndNeedsReset() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 4))
        #expect(h.initialize() == 0xF)
        h.writeDescriptor(0, address: h.buffers, length: 16, flags: 2)
        h.makeAvailable(0)
        h.setCommand(memory: true, busMaster: false)
        h.kick()
        #expect(h.status & Self.needsReset != 0)
        #expect(h.ram.read(h.buffers, 4) == [0, 0, 0, 0])
        #expect(h.usedIndex == 0)
    }

    // MARK: Host buffers

    @Test func lentBuffersAreTheGuestBytesAndThePortRefusesWhatIsNotRAM() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 0))
        #expect(h.initialize() == 0xF)
        h.writeDescriptor(0, address: h.buffers, length: 8, flags: 2 | 1, next: 1)
        h.writeDescriptor(1, address: h.buffers + 0x800, length: 8, flags: 2)
        h.makeAvailable(0)
        // The datapaths' pop: the chain's guest bytes as iovecs in chain order, appended after
        // what the caller's array holds; given back, the same chain is popped again.
        let lending = h.directQueue(size: 8)
        var vectors = [iovec(iov_base: nil, iov_len: 99)]
        let first = try #require(try lending.popLending(.writable, into: &vectors))
        lending.undoPop([first])
        vectors.removeLast(2)
        let lent = try #require(try lending.popLending(.writable, into: &vectors))
        #expect(lent == first)
        #expect(lent == LentChain(head: 0, readableLength: 0, writableLength: 16, vectorCount: 2, slots: 1))
        #expect(vectors.map(\.iov_len) == [99, 8, 8])
        // Written through the iovecs, the bytes are in the guest's RAM where the descriptors say.
        for (i, vector) in vectors.dropFirst().enumerated() {
            try #require(vector.iov_base).initializeMemory(as: UInt8.self, repeating: UInt8(0xA0 + i), count: vector.iov_len)
        }
        #expect(h.ram.read(h.buffers, 8) == [UInt8](repeating: 0xA0, count: 8))
        #expect(h.ram.read(h.buffers + 0x800, 8) == [UInt8](repeating: 0xA1, count: 8))
        // The port refuses a span outside RAM and the interrupt window, as for any access.
        #expect(throws: DMAError.self) { try h.port.hostSegments(at: UInt64(TestRAM.size) - 4, length: 8, write: true) }
        #expect(throws: DMAError.self) { try h.port.hostSegments(at: 0xFEE0_0000, length: 4, write: false) }
    }

    @Test func aLendingPopLendsOneDirectionAndAppendsNothingWhenItFails() throws {
        let h = try VirtioDriverHarness(device: ReplyDevice(replyLength: 0))
        #expect(h.initialize() == 0xF)
        let queue = h.directQueue(size: 8)
        // A request (readable 12 + 20 bytes) with room for a reply (writable 4 bytes).
        h.writeDescriptor(0, address: h.buffers, length: 12, flags: 1, next: 1)
        h.writeDescriptor(1, address: h.buffers + 0x100, length: 20, flags: 1, next: 2)
        h.writeDescriptor(2, address: h.buffers + 0x800, length: 4, flags: 2)
        h.makeAvailable(0)
        var vectors: [iovec] = []
        let request = try #require(try queue.popLending(.readable, into: &vectors))
        #expect(request == LentChain(head: 0, readableLength: 32, writableLength: 4, vectorCount: 2, slots: 1))
        #expect(vectors.map(\.iov_len) == [12, 20])
        // Published through the used ring as the driver reads it: id and length, then the index.
        try [UsedElement(request, written: 4)].withUnsafeBufferPointer { try queue.complete($0) }
        #expect(h.usedIndex == 1)
        #expect(h.usedElement(0) == (id: 0, length: 4))
        // A chain that breaks a rule halfway (a writable buffer past RAM after a good one)
        // leaves the caller's iovecs as they were and the device NEEDS_RESET.
        h.writeDescriptor(3, address: h.buffers, length: 8, flags: 2 | 1, next: 4)
        h.writeDescriptor(4, address: UInt64(TestRAM.size) - 4, length: 8, flags: 2)
        h.makeAvailable(3)
        vectors = [iovec(iov_base: nil, iov_len: 7)]
        #expect(throws: VirtQueueError.self) { try queue.popLending(.writable, into: &vectors) }
        #expect(vectors.map(\.iov_len) == [7])
        #expect(queue.isBroken)
    }
}

struct NoInterrupts: VirtioInterruptSignaller {
    func signalQueue(_ index: Int) {}
    func signalConfigurationChange() {}
    func deviceNeedsReset(_ reason: String) {}
}

extension VirtioDriverHarness {
    /// A queue of this harness's rings and port driven directly, not through the transport.
    func directQueue(size: UInt16, features: VirtioFeatures = [.version1],
                     interrupts: any VirtioInterruptSignaller = NoInterrupts()) -> VirtQueue {
        VirtQueue(index: 0, size: size, addresses: VirtQueueAddresses(descriptorTable: descriptors, driverArea: available, deviceArea: used),
                  features: features, port: port, interrupts: interrupts)
    }

    /// A new driver instance starts its available index from 0 again.
    func availableIndexReset() {
        ram.store(UInt16(0), at: available + 2)
        resetAvailableIndex()
    }
}

/// A translation that puts bus pages 0x40000 and 0x41000 at guest pages 0x60000 and 0x50000
/// (reversed, so a bus-contiguous buffer is two host pieces) and refuses everything else.
struct SwappedPagesTranslation: DMATranslation {
    func translate(_ address: UInt64, length: UInt64, write: Bool, requester: RequesterID) -> Result<UInt64, TranslationFault> {
        switch address & ~0xFFF {
        case 0x4_0000: .success(0x6_0000 | address & 0xFFF)
        case 0x4_1000: .success(0x5_0000 | address & 0xFFF)
        default: .failure(TranslationFault(.notPresent, address: address, isWrite: write))
        }
    }
    var granule: UInt64 { 4096 }
}

@Suite struct HostBufferTranslationTests {
    @Test func aBufferAcrossTwoTranslatedPagesIsTwoHostPiecesInBusOrder() throws {
        let ram = try TestRAM()
        let function = VirtioPCIFunction(name: "vdev", device: VirtioEntropyDevice(name: "rng"), express: true)
        let port = BusMasterPort(function: function, path: DMARequesterPath(devfn: 0x18, hops: []), memory: ram.memory,
                                 translation: SwappedPagesTranslation(), interrupts: RecordingSink())
        _ = function.configWrite(0x04, width: .word, value: 6)
        // 0x800 bytes before and after the bus page boundary 0x41000.
        let segments = try port.hostSegments(at: 0x4_0800, length: 0x1000, write: true)
        #expect(segments.buffers.map(\.count) == [0x800, 0x800])
        segments.buffers[0].initializeMemory(as: UInt8.self, repeating: 0x11)
        segments.buffers[1].initializeMemory(as: UInt8.self, repeating: 0x22)
        #expect(ram.read(0x6_0800, 0x800) == [UInt8](repeating: 0x11, count: 0x800))
        #expect(ram.read(0x5_0000, 0x800) == [UInt8](repeating: 0x22, count: 0x800))
        // A page the translation refuses fails the whole span, as a read or write would.
        #expect(throws: DMAError.memory(.translationFault(TranslationFault(.notPresent, address: 0x4_2000, isWrite: true)))) {
            try port.hostSegments(at: 0x4_1800, length: 0x1000, write: true)
        }
    }

    /// The per-I/O loan (no array): the same host bytes and the same refusals as any access.
    @Test func eachHostSegmentIsLentInBusOrderAfterTheChecksOfAnyAccess() throws {
        let ram = try TestRAM()
        let function = VirtioPCIFunction(name: "vdev", device: VirtioEntropyDevice(name: "rng"), express: true)
        let port = BusMasterPort(function: function, path: DMARequesterPath(devfn: 0x18, hops: []), memory: ram.memory,
                                 translation: SwappedPagesTranslation(), interrupts: RecordingSink())
        _ = function.configWrite(0x04, width: .word, value: 6)
        func lend(_ address: UInt64, _ length: UInt64, fill: UInt8) throws(DMAError) -> [Int] {
            var counts: [Int] = []
            try port.forEachHostSegment(at: address, length: length, write: true) { segment in
                segment.initializeMemory(as: UInt8.self, repeating: fill)
                counts.append(segment.count)
            }
            return counts
        }
        // Inside one bus page: one segment, at the guest page the translation names.
        #expect(try lend(0x4_0100, 0x100, fill: 0x33) == [0x100])
        #expect(ram.read(0x6_0100, 0x100) == [UInt8](repeating: 0x33, count: 0x100))
        // Across the boundary: two, in bus order.
        #expect(try lend(0x4_0F00, 0x200, fill: 0x44) == [0x100, 0x100])
        #expect(ram.read(0x6_0F00, 0x100) == [UInt8](repeating: 0x44, count: 0x100))
        #expect(ram.read(0x5_0000, 0x100) == [UInt8](repeating: 0x44, count: 0x100))
        #expect(try lend(0x4_0000, 0, fill: 0) == [])
        #expect(throws: DMAError.memory(.translationFault(TranslationFault(.notPresent, address: 0x4_2000, isWrite: true)))) {
            try lend(0x4_2000, 8, fill: 0)
        }
        #expect(throws: DMAError.interruptWindow(address: 0xFEE0_0000, length: 4, isWrite: true)) {
            try lend(0xFEE0_0000, 4, fill: 0)
        }
        #expect(throws: DMAError.memory(.addressOverflow(address: UInt64.max - 3, length: 8))) {
            try lend(UInt64.max - 3, 8, fill: 0)
        }
        // Bus Master Enable cleared: the very next loan is refused.
        _ = function.configWrite(0x04, width: .word, value: 2)
        #expect(throws: DMAError.busMasterDisabled(function: "vdev")) { try lend(0x4_0100, 8, fill: 0) }
    }
}
