import Glibc
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
    func readv(_ buffers: UnsafeBufferPointer<iovec>) throws(SystemError) -> Int? { nil }
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
    }

    static func start(twin: VhostNetTwin, features driverFeatures: UInt64) throws -> Setup {
        let features = driverFeatures | 1 << 33
        let tap = try StubTap()
        // The harness's RAM: 1 MiB at guest-physical 0.
        let ramBox = Mutex<UInt64>(0)
        let device = VirtioNetDevice(name: "net0", mac: MACAddress("52:54:00:12:34:56")!, backend: [tap], pairs: 1,
                                     vhost: VhostNetBackend(devices: [twin], memory: {
                                         [VhostMemoryRegion(guestAddress: 0, size: UInt64(TestRAM.size), hostAddress: ramBox.withLock { $0 })]
                                     }))
        // The transport offers ACCESS_PLATFORM (33), which a driver must accept (6.1); vhost is
        // not told (no guest IOMMU: addresses are guest-physical).
        let h = try VirtioDriverHarness(device: device)
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
        return Setup(harness: h, twin: twin, tap: tap)
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
