import GuestMemory
import Interrupts
import PCI
import Synchronization
import Testing
import VMMBase
@testable import Virtio

/// Guest RAM for a test: 1 MiB at guest-physical 0, owned by this object.
final class TestRAM: @unchecked Sendable {
    static let size = 1 << 20
    let bytes: UnsafeMutableRawBufferPointer
    let memory: GuestMemory

    init() throws {
        bytes = .allocate(byteCount: Self.size, alignment: 4096)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
        memory = try GuestMemory(regions: [GuestMemoryRegion(guestBase: GuestAddress(0), host: bytes, owner: Box())])
    }

    private final class Box {}
    deinit { bytes.deallocate() }

    func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) { try! memory.store(value, at: GuestAddress(address)) }
    func load<T: FixedWidthInteger>(_: T.Type = T.self, at address: UInt64) -> T { try! memory.load(T.self, at: GuestAddress(address)) }
    func read(_ address: UInt64, _ count: Int) -> [UInt8] { try! memory.read(at: GuestAddress(address), count: count) }
}

/// What the function sent: MSI messages (through its DMA port, as on the bus) and INTx levels.
final class InterruptLog: PCIInterruptOutput, @unchecked Sendable {
    private let lock = Mutex<([MSIMessage], [Bool])>(([], []))
    var port: BusMasterPort?

    func signal(_ message: MSIMessage) {
        lock.withLock { $0.0.append(message) }
        port?.deliver(message)
    }
    func setINTx(_ asserted: Bool) { lock.withLock { $0.1.append(asserted) } }
    var messages: [MSIMessage] { lock.withLock { $0.0 } }
    var intx: [Bool] { lock.withLock { $0.1 } }
}

/// The driver's side of one virtio-pci function, written from the virtio 1.2 spec's layouts
/// (numbers spelled out here, not taken from the code under test): it programs common config
/// through BAR 4 as Linux's virtio_pci_modern does, builds split rings in RAM and reads the
/// used ring back.
final class VirtioDriverHarness {
    let ram: TestRAM
    let function: VirtioPCIFunction
    let interrupts = InterruptLog()
    let sink = RecordingSink()
    let port: BusMasterPort

    // Ring placement in guest RAM for queue 0.
    let descriptors: UInt64 = 0x1_0000
    let available: UInt64 = 0x2_0000
    let used: UInt64 = 0x3_0000
    let buffers: UInt64 = 0x4_0000
    var queueSize: UInt16 = 8
    private(set) var availableIndex: UInt16 = 0

    init(device: any VirtioDevice, express: Bool = true, accessPlatform: Bool = true,
         vectors: Int? = nil, messageRouting: (any MessageVectorRouting)? = nil) throws {
        ram = try TestRAM()
        function = VirtioPCIFunction(name: "vdev", device: device, express: express, accessPlatform: accessPlatform,
                                     vectors: vectors, messageRouting: messageRouting)
        port = BusMasterPort(function: function, path: DMARequesterPath(devfn: 0x18, hops: []), memory: ram.memory,
                             translation: IdentityDMATranslation(), interrupts: sink)
        interrupts.port = port
        function.connect(dma: port)
        function.connect(interrupts: interrupts)
        setCommand(memory: true, busMaster: true)
    }

    deinit {
        // The port and the function hold each other until the port is disconnected.
        port.disconnect(pause: {})
    }

    func setCommand(memory: Bool, busMaster: Bool) {
        _ = function.configWrite(0x04, width: .word, value: (memory ? 2 : 0) | (busMaster ? 4 : 0))
    }

    // Common configuration (4.1.4.3), BAR 4 offset 0.
    func common(_ offset: UInt64, _ width: AccessWidth) -> UInt64 { function.barRead(4, offset: offset, width: width) }
    func setCommon(_ offset: UInt64, _ width: AccessWidth, _ value: UInt64) { function.barWrite(4, offset: offset, width: width, value: value) }
    var status: UInt8 { UInt8(common(0x14, .byte)) }
    func readISR() -> UInt8 { UInt8(function.barRead(4, offset: 0x1000, width: .byte)) }

    /// device_feature words 0 and 1.
    var offeredFeatures: UInt64 {
        setCommon(0x00, .dword, 0)
        let low = common(0x04, .dword)
        setCommon(0x00, .dword, 1)
        return low | common(0x04, .dword) << 32
    }

    /// MSI-X enabled with vector v at address 0xFEE00000 | v << 12, data 0x40 + v, unmasked.
    func enableMSIX() {
        let cap = msixCapability
        for v in 0..<2 {
            function.barWrite(1, offset: UInt64(v * 16), width: .dword, value: 0xFEE0_0000 | UInt64(v) << 12)
            function.barWrite(1, offset: UInt64(v * 16 + 4), width: .dword, value: 0)
            function.barWrite(1, offset: UInt64(v * 16 + 8), width: .dword, value: 0x40 + UInt64(v))
            function.barWrite(1, offset: UInt64(v * 16 + 12), width: .dword, value: 0)
        }
        _ = function.configWrite(cap + 2, width: .word, value: 0x8000)
    }

    var msixCapability: Int {
        var at = Int(function.configRead(0x34, width: .byte))
        while at != 0 {
            if function.configRead(at, width: .byte) == 0x11 { return at }
            at = Int(function.configRead(at + 1, width: .byte))
        }
        return 0
    }

    /// Linux's sequence up to DRIVER_OK: ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queue 0
    /// (size, vector 1, rings, enable), config vector 0, DRIVER_OK.
    @discardableResult
    func initialize(features: UInt64? = nil, queueSize: UInt16 = 8, msix: Bool = true) -> UInt8 {
        self.queueSize = queueSize
        setCommon(0x14, .byte, 0)
        setCommon(0x14, .byte, 1)
        setCommon(0x14, .byte, 3)
        let accept = features ?? offeredFeatures
        setCommon(0x08, .dword, 0)
        setCommon(0x0C, .dword, accept & 0xFFFF_FFFF)
        setCommon(0x08, .dword, 1)
        setCommon(0x0C, .dword, accept >> 32)
        setCommon(0x14, .byte, 0xB)
        guard status & 8 != 0 else { return status }
        if msix {
            enableMSIX()
            setCommon(0x10, .word, 0)
        }
        setCommon(0x16, .word, 0)
        setCommon(0x18, .word, UInt64(queueSize))
        if msix { setCommon(0x1A, .word, 1) }
        setCommon(0x20, .dword, descriptors); setCommon(0x24, .dword, 0)
        setCommon(0x28, .dword, available); setCommon(0x2C, .dword, 0)
        setCommon(0x30, .dword, used); setCommon(0x34, .dword, 0)
        setCommon(0x1C, .word, 1)
        setCommon(0x14, .byte, 0xF)
        return status
    }

    /// Writes descriptor `index` of the table at `table` (struct virtq_desc, 16 bytes).
    func writeDescriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0, table: UInt64? = nil) {
        let at = (table ?? descriptors) + UInt64(index) * 16
        ram.store(address, at: at)
        ram.store(length, at: at + 8)
        ram.store(flags, at: at + 12)
        ram.store(next, at: at + 14)
    }

    /// Puts `head` in the available ring and publishes it (avail->idx), without a kick.
    func makeAvailable(_ head: UInt16) {
        ram.store(head, at: available + 4 + 2 * UInt64(availableIndex % queueSize))
        availableIndex &+= 1
        ram.store(availableIndex, at: available + 2)
    }

    func resetAvailableIndex() { availableIndex = 0 }

    /// The driver writes queue 0's index to its notify address (BAR 4, 0x3000 + 0 * 4).
    func kick(_ queue: Int = 0) { function.barWrite(4, offset: 0x3000 + UInt64(queue) * 4, width: .word, value: UInt64(queue)) }

    var usedIndex: UInt16 { ram.load(at: used + 2) }
    func usedElement(_ slot: Int) -> (id: UInt32, length: UInt32) {
        let at = used + 4 + UInt64(slot % Int(queueSize)) * 8
        return (ram.load(at: at), ram.load(at: at + 4))
    }
    /// used_event lives after the available ring; avail_event after the used ring.
    func setUsedEvent(_ value: UInt16) { ram.store(value, at: available + 4 + 2 * UInt64(queueSize)) }
    var availableEvent: UInt16 { ram.load(at: used + 4 + 8 * UInt64(queueSize)) }
}

/// A device for rule tests: one queue; each request gets a reply of `replyLength` bytes of 0x5A.
final class ReplyDevice: VirtioDevice, @unchecked Sendable {
    let name = "reply"
    let replyLength: Int
    /// Bytes of request the device reads before replying.
    let requestLength: Int
    private let queue = Mutex<VirtQueue?>(nil)
    private let errors = Mutex<[VirtQueueError]>([])
    var deviceType: VirtioDeviceType { VirtioDeviceType(rawValue: 0x3F) }
    var deviceFeatures: VirtioFeatures { [] }
    var queueMaximumSizes: [UInt16] { [8] }

    init(replyLength: Int, requestLength: Int = 0) {
        self.replyLength = replyLength
        self.requestLength = requestLength
    }

    func activate(_ activation: VirtioActivation) throws(VirtioActivationError) { queue.withLock { $0 = activation.queues[0] } }
    func queueNotified(_ index: Int) {
        guard let q = queue.withLock({ $0 }) else { return }
        do {
            while let chain = try q.pop() {
                var request = [UInt8](repeating: 0, count: requestLength)
                try request.withUnsafeMutableBytes { raw in
                    Result { () throws(VirtQueueError) in try chain.read(into: raw) }
                }.get()
                try chain.write([UInt8](repeating: 0x5A, count: replyLength))
                try q.complete(chain, written: replyLength)
            }
            try q.interruptIfNeeded()
        } catch {
            errors.withLock { $0.append(error) }
        }
    }
    func reset() { queue.withLock { $0 = nil } }
    var seenErrors: [VirtQueueError] { errors.withLock { $0 } }
}
