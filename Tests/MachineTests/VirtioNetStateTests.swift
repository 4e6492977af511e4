import Foundation
import HostNetwork
import HostOS
import TestRequirements
import Testing
import VMMBase
@testable import Machine

/// virtio-net's own state through a machine snapshot: a NIC set up as Linux's driver sets it
/// up (features, rings, control-queue commands written into guest memory, offsets from the
/// virtio 1.2 spec spelled out here) is snapshotted, the state sent through JSON and restored
/// into a machine built again on a fresh tap. Oracles: the frames the kernel hands each tap
/// (sent by a packet socket on its far side) that reach the guest's receive queues, judged by
/// the spec's filtering rules (5.1.6.5.1-2, 5.1.6.5.3) and compared between the two NICs;
/// a frame sent on the second pair's transmit queue arriving at the peer (MQ's pairs in use);
/// the config space MAC read through BAR 4.
@Suite(.serialized, .requires(TestNetworkNamespace.available, TestNetworkNamespace.unavailable))
struct VirtioNetStateTests {
    static let devfn: UInt8 = 5 << 3
    static let bar: UInt64 = 0xC000_0000
    static let queueCount = 5  // rx0 tx0 rx1 tx1 control (5.1.2, MQ with 2 pairs)
    static let controlQueue = 4
    static let queueSize: UInt16 = 16
    static let configuredMAC: [UInt8] = [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF]
    static let newMAC: [UInt8] = [0x52, 0x54, 0x00, 0x11, 0x22, 0x33]

    // Feature bits (5.1.3, 6): MAC, STATUS, CTRL_VQ, CTRL_RX, CTRL_VLAN, MQ, CTRL_MAC_ADDR, VERSION_1.
    static let features: UInt64 = 1 << 5 | 1 << 16 | 1 << 17 | 1 << 18 | 1 << 19 | 1 << 22 | 1 << 23 | 1 << 32

    static func descriptors(_ queue: Int) -> UInt64 { 0x1_0000 + UInt64(queue) * 0x4000 }
    static func available(_ queue: Int) -> UInt64 { descriptors(queue) + 0x1000 }
    static func used(_ queue: Int) -> UInt64 { descriptors(queue) + 0x2000 }
    static func buffer(_ queue: Int, _ slot: Int) -> UInt64 { 0x10_0000 + UInt64(queue) * 0x2_0000 + UInt64(slot) * 0x1000 }
    /// Rings and buffers: what migration would carry of guest RAM.
    static let ramInUse: Range<UInt64> = 0x1_0000..<0x20_0000

    /// One machine with virtio-net-pci (2 queue pairs) on tap `tap` inside `namespace`, and a
    /// packet socket on the tap's far side.
    final class NIC {
        let machine: Machine
        let peer: PacketSocket
        var availableIndex = [UInt16](repeating: 0, count: VirtioNetStateTests.queueCount)

        init(namespace: TestNetworkNamespace, tap: String) throws {
            machine = try NetworkNamespace.run(in: namespace.name) {
                Result { () throws -> Machine in
                    var configuration = MachineConfiguration(memorySize: 16 << 20, devices: [
                        try DeviceSpec(parsing: "virtio-net-pci,netdev=n0,id=nic0,addr=5,mq=on,vectors=6,mac=52:54:00:ab:cd:ef"),
                    ])
                    configuration.netdevs = [try NetdevSpec(parsing: "tap,id=n0,ifname=\(tap),queues=2,script=no,downscript=no")]
                    return try Machine(configuration)
                }
            }.get()
            try namespace.ip("link", "set", tap, "up")
            peer = try NetworkNamespace.run(in: namespace.name) {
                Result { () throws(SystemError) in try PacketSocket(interfaceName: tap) }
            }.get()
        }

        func setCommon(_ offset: UInt64, _ width: AccessWidth, _ value: UInt64) {
            machine.mmioWrite(VirtioNetStateTests.bar + offset, width: width, value: value)
        }
        var status: UInt64 { machine.mmioRead(VirtioNetStateTests.bar + 0x14, width: .byte) }
        func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws { try machine.guestMemory.store(value, at: GuestAddress(address)) }
        func load<T: FixedWidthInteger>(_: T.Type, at address: UInt64) throws -> T { try machine.guestMemory.load(T.self, at: GuestAddress(address)) }

        /// BAR 4 placed, then Linux's virtio_pci_modern sequence: reset, ACKNOWLEDGE|DRIVER,
        /// the features, FEATURES_OK, every queue (size, rings, enable), DRIVER_OK.
        func initialize() throws {
            let cycles = PortConfigCycles(machine)
            cycles.write(bus: 0, devfn: VirtioNetStateTests.devfn, offset: 0x20, width: .dword, value: UInt32(truncatingIfNeeded: VirtioNetStateTests.bar))
            cycles.write(bus: 0, devfn: VirtioNetStateTests.devfn, offset: 0x24, width: .dword, value: UInt32(VirtioNetStateTests.bar >> 32))
            cycles.write(bus: 0, devfn: VirtioNetStateTests.devfn, offset: 0x04, width: .word, value: 0x0006)
            setCommon(0x14, .byte, 0)
            setCommon(0x14, .byte, 3)
            setCommon(0x08, .dword, 0); setCommon(0x0C, .dword, VirtioNetStateTests.features & 0xFFFF_FFFF)
            setCommon(0x08, .dword, 1); setCommon(0x0C, .dword, VirtioNetStateTests.features >> 32)
            setCommon(0x14, .byte, 0xB)
            try #require(status == 0xB, "FEATURES_OK refused")
            for queue in 0..<VirtioNetStateTests.queueCount {
                setCommon(0x16, .word, UInt64(queue))
                setCommon(0x18, .word, UInt64(VirtioNetStateTests.queueSize))
                setCommon(0x20, .dword, VirtioNetStateTests.descriptors(queue)); setCommon(0x24, .dword, 0)
                setCommon(0x28, .dword, VirtioNetStateTests.available(queue)); setCommon(0x2C, .dword, 0)
                setCommon(0x30, .dword, VirtioNetStateTests.used(queue)); setCommon(0x34, .dword, 0)
                setCommon(0x1C, .word, 1)
            }
            setCommon(0x14, .byte, 0xF)
            try #require(status == 0xF, "DRIVER_OK refused")
        }

        /// struct virtq_desc (2.7.5): addr, len, flags (NEXT 1, WRITE 2), next.
        func setDescriptor(_ queue: Int, _ index: Int, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) throws {
            let at = VirtioNetStateTests.descriptors(queue) + UInt64(index) * 16
            try store(address, at: at)
            try store(length, at: at + 8)
            try store(flags, at: at + 12)
            try store(next, at: at + 14)
        }

        func makeAvailable(_ queue: Int, _ head: Int) throws {
            let ring = VirtioNetStateTests.available(queue)
            try store(UInt16(head), at: ring + 4 + 2 * UInt64(availableIndex[queue] % VirtioNetStateTests.queueSize))
            availableIndex[queue] &+= 1
            try store(availableIndex[queue], at: ring + 2)
        }

        /// A 16-bit write of the queue index to its notify address (BAR 4 + 0x3000 + 4 * queue_notify_off).
        func kick(_ queue: Int) { machine.mmioWrite(VirtioNetStateTests.bar + 0x3000 + 4 * UInt64(queue), width: .word, value: UInt64(queue)) }

        func usedIndex(_ queue: Int) throws -> UInt16 { try load(UInt16.self, at: VirtioNetStateTests.used(queue) + 2) }

        func waitForUsed(_ queues: [Int], total: Int, seconds: Double = 3) throws -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if try queues.reduce(0, { $0 + Int(try usedIndex($1)) }) >= total { return true }
                usleep(2000)
            }
            return false
        }

        /// A control command (5.1.6.5): class, command, data readable; one ack byte writable.
        /// Returns the ack once the device used the chain.
        func control(_ commandClass: UInt8, _ command: UInt8, _ data: [UInt8]) throws -> UInt8? {
            let queue = VirtioNetStateTests.controlQueue
            let slot = Int(availableIndex[queue])
            let address = VirtioNetStateTests.buffer(queue, slot)
            try machine.guestMemory.write(at: GuestAddress(address), bytes: [commandClass, command] + data)
            try machine.guestMemory.write(at: GuestAddress(address + 0x800), bytes: [0xEE])
            try setDescriptor(queue, 2 * slot, address: address, length: UInt32(2 + data.count), flags: 1, next: UInt16(2 * slot + 1))
            try setDescriptor(queue, 2 * slot + 1, address: address + 0x800, length: 1, flags: 2)
            let before = try usedIndex(queue)
            try makeAvailable(queue, 2 * slot)
            kick(queue)
            guard try waitForUsed([queue], total: Int(before) + 1) else { return nil }
            return try machine.guestMemory.read(at: GuestAddress(address + 0x800), count: 1).first
        }

        /// `count` device-writable 2 KiB buffers on receive queues 0 and 2 (both pairs').
        func offerReceiveBuffers(_ count: Int) throws {
            for queue in [0, 2] {
                for slot in 0..<count {
                    try setDescriptor(queue, slot, address: VirtioNetStateTests.buffer(queue, slot), length: 2048, flags: 2)
                    try makeAvailable(queue, slot)
                }
                kick(queue)
            }
        }

        /// The markers (source MAC's last byte) of the frames each receive queue got, in order.
        func delivered() throws -> [Int: [UInt8]] {
            var out: [Int: [UInt8]] = [:]
            for queue in [0, 2] {
                var markers: [UInt8] = []
                for i in 0..<Int(try usedIndex(queue)) {
                    let id = try load(UInt32.self, at: VirtioNetStateTests.used(queue) + 4 + UInt64(i) * 8)
                    let frame = try machine.guestMemory.read(at: GuestAddress(VirtioNetStateTests.buffer(queue, Int(id)) + 12), count: 14)
                    if frame[6..<11].elementsEqual(VirtioNetStateTests.source.prefix(5)) { markers.append(frame[11]) }
                }
                out[queue] = markers
            }
            return out
        }

        /// Sends `frame` behind an all-zero virtio-net header (5.1.6) on transmit queue `queue`.
        func transmit(_ frame: [UInt8], queue: Int) throws {
            let slot = Int(availableIndex[queue])
            let address = VirtioNetStateTests.buffer(queue, slot)
            try machine.guestMemory.write(at: GuestAddress(address), bytes: [UInt8](repeating: 0, count: 12) + frame)
            try setDescriptor(queue, slot, address: address, length: UInt32(12 + frame.count), flags: 0)
            try makeAvailable(queue, slot)
            kick(queue)
        }

        var configMAC: [UInt8] { (0..<6).map { UInt8(machine.mmioRead(VirtioNetStateTests.bar + 0x2000 + UInt64($0), width: .byte)) } }
    }

    static let source: [UInt8] = [0x02, 0x5E, 0x00, 0x00, 0x00]

    /// Frame `marker` to `destination`, 802.1Q-tagged with `vlan` when given, EtherType 0x88B5.
    static func frame(_ marker: UInt8, to destination: [UInt8], vlan: UInt16? = nil) -> [UInt8] {
        let tag: [UInt8] = vlan.map { [0x81, 0x00, UInt8($0 >> 8), UInt8(truncatingIfNeeded: $0)] } ?? []
        return destination + source + [marker] + tag + [0x88, 0xB5] + [UInt8](repeating: marker, count: 46)
    }

    static let tableUnicast: [[UInt8]] = [[0x02, 0xAA, 0, 0, 0, 1], [0x02, 0xAA, 0, 0, 0, 2]]
    static let tableMulticast: [UInt8] = [0x01, 0x00, 0x5E, 0x00, 0x00, 0x01]

    /// The frames fed to both NICs and, by the spec's rules for the state set below, whether
    /// each reaches the driver (promiscuous off: own MAC, listed unicast, listed multicast
    /// and broadcast pass; a tagged frame only with its VLAN added).
    static let probes: [(frame: [UInt8], passes: Bool)] = [
        (frame(1, to: newMAC), true),
        (frame(2, to: configuredMAC), false),  // the MAC before MAC_ADDR_SET
        (frame(3, to: tableUnicast[1]), true),
        (frame(4, to: [0x02, 0x99, 0, 0, 0, 9]), false),
        (frame(5, to: tableMulticast), true),
        (frame(6, to: [0x01, 0x00, 0x5E, 0x00, 0x00, 0x02]), false),
        (frame(7, to: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), true),
        (frame(8, to: newMAC, vlan: 5), true),
        (frame(9, to: newMAC, vlan: 6), false),
    ]

    /// Receive buffers offered, every probe sent; what each receive queue got.
    static func feed(_ nic: NIC) throws -> [Int: [UInt8]] {
        try nic.offerReceiveBuffers(12)
        for probe in probes { try nic.peer.send(probe.frame) }
        _ = try nic.waitForUsed([0, 2], total: probes.filter(\.passes).count)
        usleep(300_000)  // a frame that should not pass has had its chance
        return try nic.delivered()
    }

    @Test(.timeLimit(.minutes(1)))
    func aRestoredNICFiltersAndSteersAsTheOriginal() throws {
        let namespace = try TestNetworkNamespace()
        let original = try NIC(namespace: namespace, tap: "systate0")
        try original.initialize()
        #expect(original.configMAC == Self.configuredMAC)
        // VIRTIO_NET_CTRL_MAC (1) ADDR_SET (1); CTRL_RX (0) PROMISC (0) off, ALLMULTI (1) off;
        // MAC TABLE_SET (1, 0): le32 count + entries, unicast then multicast; CTRL_VLAN (2) ADD
        // (0) le16 5; CTRL_MQ (4) VQ_PAIRS_SET (0) le16 2. Each acked VIRTIO_NET_OK (0).
        let table = [2, 0, 0, 0] + Self.tableUnicast.flatMap { $0 } + [1, 0, 0, 0] + Self.tableMulticast
        for (commandClass, command, data) in [(UInt8(1), UInt8(1), Self.newMAC), (0, 0, [0]), (0, 1, [0]),
                                              (1, 0, table), (2, 0, [5, 0]), (4, 0, [2, 0])] as [(UInt8, UInt8, [UInt8])] {
            #expect(try original.control(commandClass, command, data) == 0, "class \(commandClass) command \(command)")
        }
        #expect(original.configMAC == Self.newMAC)

        let state = try JSONDecoder().decode(MachineDeviceState.self, from: try JSONEncoder().encode(try original.machine.snapshotDevices()))
        let restored = try NIC(namespace: namespace, tap: "systate1")
        let ram = try original.machine.guestMemory.read(at: GuestAddress(Self.ramInUse.lowerBound), count: Self.ramInUse.count)
        try restored.machine.guestMemory.write(at: GuestAddress(Self.ramInUse.lowerBound), bytes: ram)
        restored.availableIndex = original.availableIndex  // the driver's own count, in its memory
        try restored.machine.restoreDevices(state)
        #expect(restored.status == 0xF)
        #expect(restored.configMAC == Self.newMAC)

        let expected = Self.probes.filter(\.passes).map { $0.frame[11] }
        let before = try Self.feed(original), after = try Self.feed(restored)
        #expect(before.values.flatMap { $0 }.sorted() == expected, "the original NIC: \(before)")
        #expect(after == before, "restored \(after), original \(before)")

        // Pair 1's transmit queue (3) sends only with two pairs in use.
        for (nic, marker) in [(original, UInt8(0x41)), (restored, 0x42)] {
            let outbound = Self.frame(marker, to: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
            try nic.transmit(outbound, queue: 3)
            #expect(try nic.peer.receive(timeoutMilliseconds: 3000) { $0.count > 14 && $0[11] == marker && $0[6] == 0x02 } == outbound)
        }
        // A reset returns the MAC to the configured one (QEMU's virtio_net_reset).
        try restored.initialize()
        #expect(restored.configMAC == Self.configuredMAC)
    }
}
