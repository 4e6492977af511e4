import Glibc
import PCI
import RoutingTwins
import HostNetwork
import HostOS
import Synchronization
import Testing
import VMMBase
@testable import Virtio
import VirtioNet

/// A tap stand-in: vhost only needs its fd; the I/O thread still sets its vnet header size.
final class StubTap: PacketQueue, @unchecked Sendable {
    let event: SharedEventFD
    private let configured = Mutex<[Int]>([])
    init() throws { event = try SharedEventFD() }
    var pollDescriptor: Int32 { event.rawValue }
    func configure(headerSize: Int, offloads: TapOffloads) throws(SystemError) { configured.withLock { $0.append(headerSize) } }
    func writev(_ buffers: UnsafeBufferPointer<iovec>) throws(SystemError) -> Int? { 0 }
    /// Frames the "host" sent that nobody read yet; the eventfd is readable while there are any.
    private let waiting = Mutex<Int>(0)
    func send(frames: Int) {
        waiting.withLock { $0 += frames }
        try? event.eventFD.signal()
    }
    var framesWaiting: Int { waiting.withLock { $0 } }
    /// Takes a 60-byte frame, if one waits.
    func readv(_ buffers: UnsafeBufferPointer<iovec>) throws(SystemError) -> Int? {
        waiting.withLock { count in
            guard count > 0 else { return nil }
            count -= 1
            if count == 0 { _ = try? event.eventFD.consume() }
            return 12 + 60
        }
    }
    private let attachment = Mutex<[Bool]>([])
    func setAttached(_ attached: Bool) throws(SystemError) { attachment.withLock { $0.append(attached) } }
    /// Every setAttached, in order.
    var attachments: [Bool] { attachment.withLock { $0 } }
    var headerSizes: [Int] { configured.withLock { $0 } }
}

/// virtio-net with vhost=on against the vhost-net twin (this host has no /dev/vhost-net; the
/// rig's virtio-net runs the kernel's): what the device hands the kernel is checked against
/// the virtio 1.2 layouts the driver side wrote, not against the code's own numbers.
@Suite(.serialized) struct VhostNetTwinTests {
    // Feature bits (virtio 1.2): MRG_RXBUF 15, EVENT_IDX 29, VERSION_1 32.
    static let mergeable: UInt64 = 1 << 15, eventIndex: UInt64 = 1 << 29, version1: UInt64 = 1 << 32
    // Rings of queues 0 (receive) and 1 (transmit), 8 entries each.
    static let rings: [(descriptors: UInt64, available: UInt64, used: UInt64)] = [
        (0x1_0000, 0x2_0000, 0x3_0000), (0x5_0000, 0x6_0000, 0x7_0000),
    ]

    struct Setup {
        let harness: VirtioDriverHarness
        let twin: VhostNetTwin
        let tap: StubTap
        /// With `secondQueue`: the tap's second queue.
        let secondTap: StubTap?
    }

    static func start(twin: VhostNetTwin, features driverFeatures: UInt64,
                      messageRouting: (any MessageVectorRouting)? = nil,
                      rings: [(descriptors: UInt64, available: UInt64, used: UInt64)] = rings,
                      secondQueue: VhostNetTwin? = nil) throws -> Setup {
        let features = driverFeatures | 1 << 33
        let tap = try StubTap()
        let secondTap = try secondQueue.map { _ in try StubTap() }
        // The harness's RAM: 1 MiB at guest-physical 0.
        let ramBox = Mutex<UInt64>(0)
        let device = VirtioNetDevice(name: "net0", mac: MACAddress("52:54:00:12:34:56")!, backend: [tap] + [secondTap].compactMap { $0 },
                                     pairs: 1, vhost: VhostNetBackend(devices: [twin] + [secondQueue].compactMap { $0 }, memory: {
                                         [VhostMemoryRegion(guestAddress: 0, size: UInt64(TestRAM.size), hostAddress: ramBox.withLock { $0 })]
                                     }))
        // The transport offers ACCESS_PLATFORM (33), which a driver must accept (6.1); vhost is
        // not told (no guest IOMMU: addresses are guest-physical).
        // QEMU's vector count for one pair: receive, transmit, control, configuration.
        let h = try VirtioDriverHarness(device: device, vectors: 4, messageRouting: messageRouting)
        ramBox.withLock { $0 = UInt64(UInt(bitPattern: h.ram.bytes.baseAddress)) }
        // Linux's order: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK.
        h.setCommon(0x14, .byte, 0); h.setCommon(0x14, .byte, 1); h.setCommon(0x14, .byte, 3)
        h.setCommon(0x08, .dword, 0); h.setCommon(0x0C, .dword, features & 0xFFFF_FFFF)
        h.setCommon(0x08, .dword, 1); h.setCommon(0x0C, .dword, features >> 32)
        h.setCommon(0x14, .byte, 0xB)
        #expect(h.status & 8 != 0, "FEATURES_OK")
        h.enableMSIX()
        h.setCommon(0x10, .word, 0)
        for (queue, ring) in rings.enumerated() {
            h.setCommon(0x16, .word, UInt64(queue))
            h.setCommon(0x18, .word, 8)
            h.setCommon(0x1A, .word, 1)  // both queues on vector 1
            h.setCommon(0x20, .dword, ring.descriptors); h.setCommon(0x24, .dword, 0)
            h.setCommon(0x28, .dword, ring.available); h.setCommon(0x2C, .dword, 0)
            h.setCommon(0x30, .dword, ring.used); h.setCommon(0x34, .dword, 0)
            h.setCommon(0x1C, .word, 1)
        }
        h.setCommon(0x14, .byte, 0xF)
        return Setup(harness: h, twin: twin, tap: tap, secondTap: secondTap)
    }

    static func waitUntil(_ condition: () -> Bool) -> Bool {
        for _ in 0..<400 where !condition() { usleep(5_000) }
        return condition()
    }

    @Test func driverOKHandsBothQueuesToVhostAndResetTakesThemBack() throws {
        let twin = VhostNetTwin()
        let s = try Self.start(twin: twin, features: Self.version1 | Self.mergeable | Self.eventIndex)
        #expect(Self.waitUntil { twin.recorded.backends.count == 2 }, "vhost got both vrings' backend: \(twin.recorded.calls)")
        let r = twin.recorded
        #expect(r.features == Self.version1 | Self.mergeable | Self.eventIndex)
        let base = UInt64(UInt(bitPattern: s.harness.ram.bytes.baseAddress))
        #expect(r.regions == [VhostMemoryRegion(guestAddress: 0, size: UInt64(TestRAM.size), hostAddress: base)])
        for (index, ring) in Self.rings.enumerated() {
            let vring = try #require(r.vrings[index])
            #expect(vring.size == 8 && vring.base == 0)
            #expect(vring.descriptorTable == base + ring.descriptors)
            #expect(vring.availableRing == base + ring.available)
            #expect(vring.usedRing == base + ring.used)
            #expect(r.backends[index] == s.tap.pollDescriptor)
        }
        // The kernel's kicks are the transport's notify eventfds: a kick the guest writes
        // lands in the eventfd vhost was given (no thread of ours reads it).
        let kick = try #require(r.vrings[1]?.kick)
        s.harness.kick(1)
        var counter: UInt64 = 0
        #expect(read(kick, &counter, 8) == 8 && counter == 1)
        // vhost's interrupt request: the call eventfd becomes queue 0's vector (1: 0xFEE01000 / 0x41).
        let call = try #require(r.vrings[0]?.call)
        var one: UInt64 = 1
        #expect(write(call, &one, 8) == 8)
        #expect(Self.waitUntil { s.harness.interrupts.messages.contains { $0.address == 0xFEE0_1000 && $0.data == 0x41 } })
        #expect(s.tap.headerSizes == [12])
        // Reset: both vrings detached from the tap and stopped before the thread ends.
        s.harness.setCommon(0x14, .byte, 0)
        let calls = twin.recorded.calls
        #expect(calls.suffix(4) == ["detach 0", "stop 0", "detach 1", "stop 1"], "\(calls)")
        #expect(twin.recorded.backends.isEmpty)
    }

    /// With in-kernel routes (the machine's KVM irqfds under `-accel kvm`), vhost's call
    /// eventfds are the queues' vector eventfds, and the vectors' routes follow the MSI-X table
    /// the driver writes (PCI Local Bus 3.0, 6.8.2: entry = address, upper address, data,
    /// control with bit 0 the mask).
    @Test func inKernelRoutesTakeVhostsInterruptsAndFollowTheTable() throws {
        let twin = VhostNetTwin()
        let routing = RecordingMessageVectorRouting()
        let s = try Self.start(twin: twin, features: Self.version1 | Self.mergeable | Self.eventIndex, messageRouting: routing)
        #expect(Self.waitUntil { twin.recorded.backends.count == 2 }, "\(twin.recorded.calls)")
        let vectors = try #require(routing.lastVectors)
        #expect(vectors.fds.count == 4)
        // Both queues are on vector 1: vhost signals its eventfd, and KVM (here: nobody) raises it.
        #expect(twin.recorded.vrings[0]?.call == vectors.fds[1].rawValue)
        #expect(twin.recorded.vrings[1]?.call == vectors.fds[1].rawValue)
        // The routes carry what the driver programmed: 0xFEE0_0000 | v << 12, data 0x40 + v,
        // unmasked; vectors 2 and 3 were never written and stay masked (their reset state).
        let latest = vectors.latest
        #expect(latest[0]?.message == MSIMessage(address: 0xFEE0_0000, data: 0x40) && latest[0]?.masked == false)
        #expect(latest[1]?.message == MSIMessage(address: 0xFEE0_1000, data: 0x41) && latest[1]?.masked == false)
        #expect(latest[2]?.masked == true && latest[3]?.masked == true)
        // A signal on the vector's eventfd is not this process's to relay.
        var one: UInt64 = 1
        #expect(write(vectors.fds[1].rawValue, &one, 8) == 8)
        usleep(50_000)
        #expect(!s.harness.interrupts.messages.contains { $0.address == 0xFEE0_1000 })
        // The driver masks vector 1 (control dword, bit 0): its route holds signals.
        s.harness.function.barWrite(1, offset: 16 + 12, width: .dword, value: 1)
        #expect(vectors.latest[1]?.masked == true)
        // Function mask (Message Control bit 14) masks every vector; clearing it unmasks 0.
        let cap = s.harness.msixCapability
        _ = s.harness.function.configWrite(cap + 2, width: .word, value: 0xC000)
        #expect(vectors.latest[0]?.masked == true)
        _ = s.harness.function.configWrite(cap + 2, width: .word, value: 0x8000)
        #expect(vectors.latest[0]?.masked == false)
        // Unplug: vhost lets go of the rings, then the vectors are released.
        s.harness.function.unrealize()
        #expect(twin.recorded.calls.suffix(4) == ["detach 0", "stop 0", "detach 1", "stop 1"])
        #expect(vectors.released)
    }

    /// QMP set_link off: the driver sees the link down (config STATUS) and vhost moves nothing
    /// (its vrings lose their tap); on, they get it back. QEMU stops vhost while the link is down.
    @Test func setLinkOffDetachesVhostsTapsAndOnGivesThemBack() throws {
        let twin = VhostNetTwin()
        let s = try Self.start(twin: twin, features: Self.version1 | Self.mergeable | Self.eventIndex)
        #expect(Self.waitUntil { twin.recorded.backends.count == 2 })
        let nic = try #require(s.harness.function.device as? VirtioNetDevice)
        // Frames waiting in the tap when the link goes down, and frames sent while it is down,
        // are dropped (a pulled cable; QEMU drops them too), not kept for vhost.
        s.tap.send(frames: 2)
        nic.setLink(up: false)
        #expect(Self.waitUntil { twin.recorded.backends.isEmpty }, "\(twin.recorded.calls)")
        #expect(twin.recorded.calls.suffix(2).sorted() == ["detach 0", "detach 1"])
        #expect(Self.waitUntil { s.tap.framesWaiting == 0 }, "\(s.tap.framesWaiting) frames left in the tap")
        s.tap.send(frames: 3)
        #expect(Self.waitUntil { s.tap.framesWaiting == 0 }, "\(s.tap.framesWaiting) frames left in the tap")
        nic.setLink(up: true)
        #expect(Self.waitUntil { twin.recorded.backends.count == 2 }, "\(twin.recorded.calls)")
        #expect(twin.recorded.backends[0] == s.tap.pollDescriptor && twin.recorded.backends[1] == s.tap.pollDescriptor)
        // With the link up the tap is vhost's again: the VMM reads nothing from it.
        s.tap.send(frames: 1)
        usleep(100_000)
        #expect(s.tap.framesWaiting == 1)
        s.harness.setCommon(0x14, .byte, 0)
    }

    /// A ring the driver placed past guest RAM (the harness has 1 MiB) is refused before vhost
    /// gets anything of the queue: the device needs a reset (status bit 0x40), the VMM lives.
    @Test func aRingOutsideGuestRAMNeedsResetAndVhostGetsNoVring() throws {
        let twin = VhostNetTwin()
        var rings = Self.rings
        rings[1].used = 0x10_0000 - 8  // 6 + 8 * 8 bytes from here cross the end of RAM
        let s = try Self.start(twin: twin, features: Self.version1 | Self.mergeable | Self.eventIndex, rings: rings)
        #expect(Self.waitUntil { s.harness.status & 0x40 != 0 }, "status \(s.harness.status)")
        #expect(twin.recorded.vrings[1] == nil && twin.recorded.backends.isEmpty, "\(twin.recorded.calls)")
        s.harness.setCommon(0x14, .byte, 0)
    }

    /// A driver with one queue pair over a two-queue tap (a NIC without mq=on, QEMU's default):
    /// the first vhost instance serves the pair, the second gets nothing, and the tap's second
    /// queue is detached, so the host steers no frames where nobody reads them.
    @Test func onePairOverTwoTapQueuesServesTheFirstAndDetachesTheSecond() throws {
        let twin = VhostNetTwin(), spare = VhostNetTwin()
        let s = try Self.start(twin: twin, features: Self.version1 | Self.mergeable | Self.eventIndex, secondQueue: spare)
        #expect(Self.waitUntil { twin.recorded.backends.count == 2 }, "\(twin.recorded.calls)")
        #expect(spare.recorded.calls.isEmpty, "\(spare.recorded.calls)")
        let second = try #require(s.secondTap)
        #expect(second.attachments == [false] && s.tap.attachments == [true])
        s.harness.setCommon(0x14, .byte, 0)
    }

    @Test func featuresVhostLacksKeepTheUserspaceDatapath() throws {
        // A kernel without EVENT_IDX (bit 29) and a driver that took it: vhost is not used.
        let twin = VhostNetTwin(features: Self.version1 | Self.mergeable | 1 << 28)
        let s = try Self.start(twin: twin, features: Self.version1 | Self.mergeable | Self.eventIndex)
        #expect(Self.waitUntil { s.tap.headerSizes == [12] })
        usleep(50_000)
        #expect(twin.recorded.calls.isEmpty, "\(twin.recorded.calls)")
        s.harness.setCommon(0x14, .byte, 0)
    }
}
