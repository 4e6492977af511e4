import Glibc
import HostNetwork
import HostOS
import Testing
import TestRequirements

/// A tap in a namespace of the test's own, with the kernel's view of it (iproute2, a packet
/// socket on the interface) as the oracle.
@Suite(.serialized, .requires(TestNetworkNamespace.available, TestNetworkNamespace.unavailable))
struct TapQueueTests {
    /// An Ethernet frame with the IEEE local experimental EtherType 0x88B5 and a marker, so
    /// a reader can tell it from anything else on the wire.
    static func frame(marker: UInt8, payload: Int = 60) -> [UInt8] {
        let header: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x88, 0xB5]
        return header + (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(marker)) }
    }

    static func isTestFrame(_ bytes: [UInt8], marker: UInt8) -> Bool {
        bytes.count > 14 && bytes[12] == 0x88 && bytes[13] == 0xB5 && bytes[14] == marker
    }

    /// The virtio-net header of a plain frame (virtio 1.x, 5.1.6): 12 bytes, all zero
    /// (no checksum to complete, GSO_NONE; num_buffers is the device's to fill).
    static let plainHeader = [UInt8](repeating: 0, count: 12)

    @Test func openCreatesAVnetHeaderTapThatIproute2Reports() throws {
        let namespace = try TestNetworkNamespace()
        let tap = try NetworkNamespace.run(in: namespace.name) { Result { () throws(TapError) in try TapQueue.open(interfaceName: "sytap0", multiQueue: false) } }.get()
        #expect(tap.interfaceName == "sytap0")
        #expect(tap.flags.isSuperset(of: [.tap, .noPacketInformation, .vnetHeader]))
        let details = try namespace.ip("-d", "link", "show", "sytap0")
        #expect(details.contains("tun type tap pi off vnet_hdr on"), "\(details)")
        try tap.setVnetHeaderSize(12)
        #expect(try tap.vnetHeaderSize() == 12)
    }

    @Test func multiQueueOpensAddQueuesToOneInterface() throws {
        let namespace = try TestNetworkNamespace()
        let queues = try NetworkNamespace.run(in: namespace.name) {
            Result { () throws(TapError) in
                [try TapQueue.open(interfaceName: "sytap0", multiQueue: true), try TapQueue.open(interfaceName: "sytap0", multiQueue: true)]
            }
        }.get()
        #expect(queues.allSatisfy { $0.flags.contains(.multiQueue) })
        let details = try namespace.ip("-d", "link", "show", "sytap0")
        #expect(details.contains("multi_queue numqueues 2"), "\(details)")
    }

    /// TUNSETQUEUE: a detached queue leaves the set the kernel steers frames to (iproute2 counts
    /// it as disabled, TUNGETIFF reports IFF_DETACH_QUEUE), and joins it again when attached;
    /// asking for the state a queue is in changes nothing (the kernel would refuse it).
    @Test func aQueueDetachesAndAttachesAgain() throws {
        let namespace = try TestNetworkNamespace()
        let queues = try NetworkNamespace.run(in: namespace.name) {
            Result { () throws(TapError) in
                [try TapQueue.open(interfaceName: "sytap0", multiQueue: true), try TapQueue.open(interfaceName: "sytap0", multiQueue: true)]
            }
        }.get()
        try queues[1].setAttached(false)
        try queues[1].setAttached(false)
        #expect(try !queues[1].isAttached() && queues[0].isAttached())
        #expect(try namespace.ip("-d", "link", "show", "sytap0").contains("multi_queue numqueues 1 numdisabled 1"))
        try queues[1].setAttached(true)
        try queues[0].setAttached(true)
        #expect(try queues[1].isAttached())
        #expect(try namespace.ip("-d", "link", "show", "sytap0").contains("multi_queue numqueues 2 numdisabled 0"))
    }

    @Test func framesCrossTheTapByteForByteBothWays() throws {
        let namespace = try TestNetworkNamespace()
        let tap = try NetworkNamespace.run(in: namespace.name) { Result { () throws(TapError) in try TapQueue.open(interfaceName: "sytap0", multiQueue: false) } }.get()
        // Up first: a packet socket bound to a down interface starts with ENETDOWN pending.
        try namespace.ip("link", "set", "sytap0", "up")
        let peer = try NetworkNamespace.run(in: namespace.name) { Result { () throws(SystemError) in try PacketSocket(interfaceName: "sytap0") } }.get()
        try tap.setVnetHeaderSize(12)

        // Out of the VMM: header + frame written to the tap reach the interface as the frame.
        let outbound = Self.frame(marker: 0xA1, payload: 1486)
        let written = try (Self.plainHeader + outbound).withUnsafeBytes { try tap.write($0) }
        #expect(written == 12 + outbound.count)
        let seen = try peer.receive(timeoutMilliseconds: 2000) { Self.isTestFrame($0, marker: 0xA1) }
        #expect(seen == outbound)

        // Into the VMM: a frame the interface sends comes out of the tap behind a header.
        let inbound = Self.frame(marker: 0xB2)
        try peer.send(inbound)
        var buffer = [UInt8](repeating: 0xEE, count: 2048)
        var received: [UInt8]?
        for _ in 0..<200 {
            if let n = try buffer.withUnsafeMutableBytes({ try tap.read(into: $0) }) {
                let bytes = Array(buffer[..<n])
                if Self.isTestFrame(Array(bytes.dropFirst(12)), marker: 0xB2) { received = bytes; break }
            } else {
                HostClock.sleep(milliseconds: 10)
            }
        }
        let got = try #require(received)
        // flags, gso_type, hdr_len, gso_size, csum_start, csum_offset: all 0 for a plain frame.
        #expect(Array(got[0..<10]) == [UInt8](repeating: 0, count: 10))
        #expect(Array(got.dropFirst(12)) == inbound)
    }

    @Test func adoptingAnFdKeepsTheInterfaceAndRefusesNonTaps() throws {
        let namespace = try TestNetworkNamespace()
        let tap = try NetworkNamespace.run(in: namespace.name) { Result { () throws(TapError) in try TapQueue.open(interfaceName: "sytap0", multiQueue: false) } }.get()
        let adopted = try TapQueue(adopting: try tap.descriptor.duplicate())
        #expect(adopted.interfaceName == "sytap0")
        #expect(adopted.flags.contains(.vnetHeader))

        #expect(throws: TapError.self) { try TapQueue(adopting: try FileDescriptor.open("/dev/null", .readWrite)) }
    }

    @Test func offloadsTheKernelKnowsAreAcceptedOthersRefused() throws {
        let namespace = try TestNetworkNamespace()
        let tap = try NetworkNamespace.run(in: namespace.name) { Result { () throws(TapError) in try TapQueue.open(interfaceName: "sytap0", multiQueue: false) } }.get()
        try tap.setOffloads([.checksum, .tso4, .tso6, .tsoECN])
        try tap.setOffloads([])
        // TSO without checksum offload is refused by the kernel (tun's set_offload).
        #expect(throws: SystemError.self) { try tap.setOffloads([.tso4]) }
    }

    @Test func tooLongNamesAreRefusedBeforeTheKernel() {
        #expect(throws: TapError.nameTooLong("a-very-long-tap-name", limit: 15)) {
            try TapQueue.open(interfaceName: "a-very-long-tap-name", multiQueue: false)
        }
    }
}
