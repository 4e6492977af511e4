import Foundation
import HostNetwork
import HostOS
import Testing
import TestRequirements

/// virtio-net-pci over a real tap, driven through qtest with no vCPU, as QEMU's
/// virtio-net qtest drives QEMU: Switchyard runs inside a network namespace the test makes,
/// its tap's far side is read and written with a packet socket there (the kernel's view),
/// and every byte is checked against the frame the "guest" or the "wire" sent.
@Suite(.serialized, .requires(TestNetworkNamespace.available, TestNetworkNamespace.unavailable))
struct VirtioNetTapTests {
    static let nicSlot = 3

    /// An Ethernet frame with the IEEE local experimental EtherType 0x88B5 and a marker.
    static func frame(marker: UInt8, payload: Int = 60, to destination: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]) -> [UInt8] {
        destination + [0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0xB5] + (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ Int(marker)) }
    }

    static func isFrame(_ bytes: [UInt8], marker: UInt8) -> Bool {
        bytes.count > 14 && bytes[12] == 0x88 && bytes[13] == 0xB5 && bytes[14] == marker
    }

    /// Switchyard in the namespace with one virtio-net-pci on tap `sytap0`, its driver set up
    /// (receive, transmit and control queues) and a packet socket on the tap's far side.
    final class Rig {
        let namespace: TestNetworkNamespace
        let session: QTestSession
        let driver: VirtioNetDriver
        let peer: PacketSocket
        let features: UInt64
        /// Where the VMM's standard error (its guest-error lines) goes.
        let stderrPath = FileManager.default.temporaryDirectory.appendingPathComponent("vnet-\(UUID().uuidString).err").path

        /// The control queue's index: 2 without MQ, 2 * pairs with it (5.1.2).
        let controlQueue: Int

        /// - Parameter macvtapLower: instead of a tap, a macvtap (bridge mode) on one end of a
        ///   veth pair made in the namespace with iproute2; the packet socket is on the other end.
        init(features: UInt64 = VirtioNetDriver.version1 | VirtioNetDriver.mac | VirtioNetDriver.status
                                | VirtioNetDriver.mergeable | VirtioNetDriver.controlQueue | VirtioNetDriver.controlRX,
             netdev: String = "", device: String = "", pairs: Int = 1, macvtapLower: Bool = false) throws {
            namespace = try TestNetworkNamespace()
            let peerInterface: String
            let netdevSpec: String
            if macvtapLower {
                try namespace.ip("link", "add", "syva", "type", "veth", "peer", "name", "syvb")
                try namespace.ip("link", "set", "syva", "up")
                try namespace.ip("link", "set", "syvb", "up")
                peerInterface = "syvb"
                netdevSpec = "macvtap,id=n0,link=syva,mode=bridge" + netdev
            } else {
                peerInterface = "sytap0"
                netdevSpec = "tap,id=n0,ifname=sytap0,script=no,downscript=no" + netdev
            }
            session = try QTestSession("/usr/sbin/ip", ["netns", "exec", namespace.name, switchyardBinary,
                                                        "-machine", "q35", "-accel", "qtest", "-m", "256M",
                                                        "-netdev", netdevSpec,
                                                        "-device", "virtio-net-pci,netdev=n0,id=nic0,addr=0x\(nicSlot)" + device],
                                   monitor: .qmp(negotiated: true), name: "vnet", stderrPath: stderrPath)
            if !macvtapLower { try namespace.ip("link", "set", "sytap0", "up") }
            let name = namespace.name
            peer = try NetworkNamespace.run(in: name) { Result { () throws(SystemError) in try PacketSocket(interfaceName: peerInterface) } }.get()
            driver = try VirtioNetDriver(session.qtest, device: VirtioNetTapTests.nicSlot)
            // ACCESS_PLATFORM (33) when offered: a driver must accept it (6.1).
            self.features = features | (try driver.deviceFeatures() & 1 << 33)
            controlQueue = features & VirtioNetDriver.multiQueue != 0 ? 2 * pairs : 2
            guard try driver.negotiate(self.features) & 0x8 != 0 else { throw TestFailure("FEATURES_OK refused") }
            for queue in 0...controlQueue { try driver.setUpQueue(queue) }
            try driver.setStatus(0xF)
        }

        /// Sends a control command (class, command, data) and returns the device's ack byte.
        func control(_ commandClass: UInt8, _ command: UInt8, _ data: [UInt8], slot: Int = 0) throws -> UInt8? {
            let buffer = VirtioNetDriver.buffer(controlQueue, slot)
            try driver.writeBytes(buffer, [commandClass, command] + data)
            try driver.writeBytes(buffer + 0x100, [0xEE])
            try driver.setDescriptor(controlQueue, slot, address: buffer, length: UInt32(2 + data.count), flags: 1, next: UInt16(slot + 1))
            try driver.setDescriptor(controlQueue, slot + 1, address: buffer + 0x100, length: 1, flags: 2)
            let before = try driver.usedIndex(controlQueue)
            try driver.makeAvailable(controlQueue, slot)
            try driver.kick(controlQueue)
            guard try driver.waitForUsed(controlQueue, before &+ 1) else { return nil }
            return try driver.readBytes(buffer + 0x100, 1).first
        }

        /// Sends `frame` behind an all-zero 12-byte header from `queue`'s slot `slot`.
        func transmit(_ frame: [UInt8], slot: Int = 0, split: Bool = false, queue: Int = 1) throws {
            let header = [UInt8](repeating: 0, count: 12)
            let buffer = VirtioNetDriver.buffer(queue, slot)
            if split {
                // Header and frame in two descriptors, as Linux sends them without ANY_LAYOUT.
                try driver.writeBytes(buffer, header)
                try driver.writeBytes(buffer + 0x8000, frame)
                try driver.setDescriptor(queue, slot, address: buffer, length: 12, flags: 1, next: UInt16(slot + 1))
                try driver.setDescriptor(queue, slot + 1, address: buffer + 0x8000, length: UInt32(frame.count), flags: 0)
            } else {
                try driver.writeBytes(buffer, header + frame)
                try driver.setDescriptor(queue, slot, address: buffer, length: UInt32(12 + frame.count), flags: 0)
            }
            try driver.makeAvailable(queue, slot)
            try driver.kick(queue)
        }

        /// Offers `count` receive buffers of `size` bytes each.
        func offerReceiveBuffers(_ count: Int, size: UInt32, from first: Int = 0) throws {
            for slot in first..<first + count {
                try driver.setDescriptor(0, slot, address: VirtioNetDriver.buffer(0, slot), length: size, flags: 2)
                try driver.makeAvailable(0, slot)
            }
            try driver.kick(0)
        }

        func stop() {
            session.stop()
            try? FileManager.default.removeItem(atPath: stderrPath)
        }

        /// What the VMM wrote to standard error so far.
        var standardError: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
    }

    @Test(.timeLimit(.minutes(2))) func configReportsTheDefaultMACAndLinkUp() throws {
        let rig = try Rig()
        defer { rig.stop() }
        // 5.1.4: mac[6] then le16 status (VIRTIO_NET_S_LINK_UP = 1); QEMU's first default MAC.
        #expect(try rig.driver.readBytes(rig.driver.deviceConfig, 6) == [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        #expect(try rig.driver.read("w", rig.driver.deviceConfig + 6) & 1 == 1)
        #expect(try rig.driver.status == 0xF)
    }

    @Test(.timeLimit(.minutes(2))) func framesTheGuestSendsAppearOnThePeerByteForByte() throws {
        let rig = try Rig()
        defer { rig.stop() }
        let small = Self.frame(marker: 0x11)
        try rig.transmit(small)
        #expect(try rig.peer.receive(timeoutMilliseconds: 3000) { Self.isFrame($0, marker: 0x11) } == small)
        let large = Self.frame(marker: 0x22, payload: 1500 - 2)
        try rig.transmit(large, slot: 2, split: true)
        #expect(try rig.peer.receive(timeoutMilliseconds: 3000) { Self.isFrame($0, marker: 0x22) } == large)
        #expect(try rig.driver.waitForUsed(1, 2))
        #expect(try rig.driver.usedElement(1, 0) == (id: 0, length: 0))
        #expect(try rig.driver.usedElement(1, 1) == (id: 2, length: 0))
    }

    /// vhost=on where /dev/vhost-net cannot be opened (this host has no vhost_net module): a
    /// line names the error and the fix, and the userspace datapath carries the frames; over a
    /// tap and over a macvtap (vhost-net serves both kinds of queue).
    @Test(.timeLimit(.minutes(2)), arguments: [false, true])
    func vhostOnWithoutVhostNetSaysSoAndFramesStillPass(macvtap: Bool) throws {
        try require(access("/dev/vhost-net", F_OK) != 0, "this host has /dev/vhost-net: the rig's virtio-net covers vhost=on there")
        let rig = try Rig(netdev: ",vhost=on", macvtapLower: macvtap)
        defer { rig.stop() }
        let frame = Self.frame(marker: 0x5C)
        try rig.transmit(frame)
        #expect(try rig.peer.receive(timeoutMilliseconds: 3000) { Self.isFrame($0, marker: 0x5C) } == frame)
        #expect(rig.standardError.contains("-netdev \(macvtap ? "macvtap" : "tap"),id=n0: vhost=on: /dev/vhost-net:"))
        #expect(rig.standardError.contains("(modprobe vhost_net); using the userspace datapath"))
    }

    /// The vnet header is read from the frame's bytes wherever the descriptors split it: with
    /// only its first byte in the first descriptor, a GSO type of 2 (no GSO type, 5.1.6) in the
    /// second is still seen (a guest-error line; the frame is dropped), and an all-zero header
    /// split the same way passes.
    @Test(.timeLimit(.minutes(2))) func aHeaderSplitAcrossDescriptorsIsCheckedWhole() throws {
        let rig = try Rig()
        defer { rig.stop() }
        func send(_ header: [UInt8], _ frame: [UInt8], slot: Int) throws {
            let buffer = VirtioNetDriver.buffer(1, slot)
            try rig.driver.writeBytes(buffer, Array(header[..<1]))
            try rig.driver.writeBytes(buffer + 0x8000, Array(header[1...]) + frame)
            try rig.driver.setDescriptor(1, slot, address: buffer, length: 1, flags: 1, next: UInt16(slot + 1))
            try rig.driver.setDescriptor(1, slot + 1, address: buffer + 0x8000, length: UInt32(11 + frame.count), flags: 0)
            try rig.driver.makeAvailable(1, slot)
            try rig.driver.kick(1)
        }
        var bad = [UInt8](repeating: 0, count: 12)
        bad[1] = 2
        try send(bad, Self.frame(marker: 0x33), slot: 0)
        try send([UInt8](repeating: 0, count: 12), Self.frame(marker: 0x44), slot: 2)
        // Sent first, the dropped frame would have arrived first.
        let first = try rig.peer.receive(timeoutMilliseconds: 3000) { Self.isFrame($0, marker: 0x33) || Self.isFrame($0, marker: 0x44) }
        #expect(first == Self.frame(marker: 0x44))
        #expect(try rig.driver.waitForUsed(1, 2))
        #expect(rig.standardError.contains("gso_type 2"), "no guest-error line for the bad header: \(rig.standardError)")
    }

    @Test(.timeLimit(.minutes(2))) func framesFromThePeerArriveInTheReceiveQueueWithAVnetHeader() throws {
        let rig = try Rig()
        defer { rig.stop() }
        try rig.offerReceiveBuffers(4, size: 2048)
        let inbound = Self.frame(marker: 0x33)
        try rig.peer.send(inbound)
        #expect(try rig.driver.waitForUsed(0, 1))
        let element = try rig.driver.usedElement(0, 0)
        #expect(element == (id: 0, length: UInt32(12 + inbound.count)))
        let bytes = try rig.driver.readBytes(VirtioNetDriver.buffer(0, 0), 12 + inbound.count)
        // 5.1.6.4: flags 0, GSO_NONE, hdr_len/gso_size/csum fields 0, num_buffers 1.
        #expect(Array(bytes[0..<10]) == [UInt8](repeating: 0, count: 10))
        #expect(bytes[10] == 1 && bytes[11] == 0)
        #expect(Array(bytes[12...]) == inbound)
    }

    /// A receive buffer whose pieces split the header (10 bytes, then 3: num_buffers is in the
    /// second piece) and the Ethernet header (the 3-byte piece holds its first byte, then 2 KiB):
    /// the frame lands byte for byte across the pieces, num_buffers is 1, and the broadcast frame
    /// passes the filter read across them.
    @Test(.timeLimit(.minutes(2))) func aReceivedFrameIsSpreadOverTheBuffersPieces() throws {
        let rig = try Rig()
        defer { rig.stop() }
        let base = VirtioNetDriver.buffer(0, 0)
        let pieces: [(address: UInt64, length: UInt32)] = [(base, 10), (base + 0x4000, 3), (base + 0x8000, 2048)]
        for (i, piece) in pieces.enumerated() {
            try rig.driver.writeBytes(piece.address, [UInt8](repeating: 0xEE, count: Int(piece.length)))
            try rig.driver.setDescriptor(0, i, address: piece.address, length: piece.length,
                                         flags: i < pieces.count - 1 ? 3 : 2, next: UInt16(i + 1))
        }
        try rig.driver.makeAvailable(0, 0)
        try rig.driver.kick(0)
        let inbound = Self.frame(marker: 0x5A)
        try rig.peer.send(inbound)
        #expect(try rig.driver.waitForUsed(0, 1))
        #expect(try rig.driver.usedElement(0, 0) == (id: 0, length: UInt32(12 + inbound.count)))
        let written = try rig.driver.readBytes(pieces[0].address, 10) + rig.driver.readBytes(pieces[1].address, 3)
            + rig.driver.readBytes(pieces[2].address, 12 + inbound.count - 13)
        // 5.1.6.4: the header (num_buffers 1 at bytes 10-11), then the frame.
        #expect(Array(written[0..<10]) == [UInt8](repeating: 0, count: 10))
        #expect(written[10] == 1 && written[11] == 0, "num_buffers \(written[10]) \(written[11])")
        #expect(Array(written[12...]) == inbound)
        // Nothing past the frame was touched.
        #expect(try rig.driver.readBytes(pieces[2].address + UInt64(12 + inbound.count - 13), 4) == [0xEE, 0xEE, 0xEE, 0xEE])
    }

    /// -netdev macvtap,link=,mode=bridge: Switchyard makes the link through libnl; the NIC takes
    /// the link's MAC (macvtap delivers by it), which iproute2 reports independently; frames
    /// cross to the veth peer both ways; the link is gone after the VMM quits.
    @Test(.timeLimit(.minutes(2))) func overAMacvtapFramesCrossBothWaysAndTheLinkGoesAtExit() throws {
        let rig = try Rig(macvtapLower: true)
        let links = try rig.namespace.ip("-o", "-d", "link", "show", "type", "macvtap")
        #expect(links.contains("macvtap mode bridge"), "\(links)")
        let mac = try rig.driver.readBytes(rig.driver.deviceConfig, 6)
        let macText = mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
        #expect(links.contains("link/ether \(macText)"), "the NIC's MAC \(macText) is not the macvtap's: \(links)")
        let outbound = Self.frame(marker: 0x55)
        try rig.transmit(outbound)
        #expect(try rig.peer.receive(timeoutMilliseconds: 3000) { Self.isFrame($0, marker: 0x55) } == outbound)
        try rig.offerReceiveBuffers(4, size: 2048)
        let inbound = Self.frame(marker: 0x66, to: mac)
        try rig.peer.send(inbound)
        #expect(try rig.driver.waitForUsed(0, 1))
        #expect(Array(try rig.driver.readBytes(VirtioNetDriver.buffer(0, 0), 12 + inbound.count)[12...]) == inbound)
        rig.stop()
        let after = try rig.namespace.ip("-o", "link", "show", "type", "macvtap")
        #expect(after.isEmpty, "the macvtap outlived the VMM: \(after)")
    }

    @Test(.timeLimit(.minutes(2))) func aFrameLargerThanOneBufferSpansMergeableBuffers() throws {
        let rig = try Rig()
        defer { rig.stop() }
        try rig.offerReceiveBuffers(8, size: 1024)
        let inbound = Self.frame(marker: 0x44, payload: 1500)
        try rig.peer.send(inbound)
        #expect(try rig.driver.waitForUsed(0, 2))
        let first = try rig.driver.usedElement(0, 0), second = try rig.driver.usedElement(0, 1)
        #expect(first == (id: 0, length: 1024))
        #expect(second == (id: 1, length: UInt32(12 + inbound.count - 1024)))
        let head = try rig.driver.readBytes(VirtioNetDriver.buffer(0, 0), 1024)
        let tail = try rig.driver.readBytes(VirtioNetDriver.buffer(0, 1), Int(second.length))
        #expect(head[10] == 2 && head[11] == 0)  // num_buffers
        #expect(Array(head[12...]) + tail == inbound)
    }

    @Test(.timeLimit(.minutes(2))) func setLinkDownDropsFramesAndRaisesAConfigChange() throws {
        let rig = try Rig()
        defer { rig.stop() }
        _ = try rig.driver.read("b", rig.driver.isr)  // clear
        #expect(try rig.session.qmp!.execute("set_link", "{\"name\": \"nic0\", \"up\": false}") == "{\"return\": {}}")
        #expect(try rig.driver.read("w", rig.driver.deviceConfig + 6) & 1 == 0)
        // 4.1.4.5: ISR bit 1, a configuration change.
        #expect(try rig.driver.read("b", rig.driver.isr) & 2 == 2)
        try rig.transmit(Self.frame(marker: 0x55))
        #expect(try rig.driver.waitForUsed(1, 1))
        #expect(try rig.peer.receive(timeoutMilliseconds: 500) { Self.isFrame($0, marker: 0x55) } == nil)

        #expect(try rig.session.qmp!.execute("set_link", "{\"name\": \"n0\", \"up\": true}") == "{\"return\": {}}")
        #expect(try rig.driver.read("w", rig.driver.deviceConfig + 6) & 1 == 1)
        let after = Self.frame(marker: 0x66)
        try rig.transmit(after, slot: 1)
        #expect(try rig.peer.receive(timeoutMilliseconds: 3000) { Self.isFrame($0, marker: 0x66) } == after)
        #expect(try rig.session.qmp!.execute("set_link", "{\"name\": \"nope\", \"up\": true}").contains("Device 'nope' not found"))
    }

    @Test(.timeLimit(.minutes(2))) func hostileDescriptorsSetNeedsResetAndTheVMMLives() throws {
        let rig = try Rig()
        defer { rig.stop() }
        // A chain that loops on itself (NEXT to its own index).
        try rig.driver.setDescriptor(1, 0, address: VirtioNetDriver.buffer(1, 0), length: 64, flags: 1, next: 0)
        try rig.driver.makeAvailable(1, 0)
        try rig.driver.kick(1)
        var status: UInt8 = 0
        for _ in 0..<200 where status & 0x40 == 0 {
            status = try rig.driver.status
            usleep(10_000)
        }
        #expect(status & 0x40 == 0x40)  // DEVICE_NEEDS_RESET (2.1)
        #expect(try rig.session.qmp!.execute("query-status").contains("\"status\""))

        // After a reset the device works again; then a buffer outside guest RAM.
        #expect(try rig.driver.negotiate(rig.features) & 0x8 != 0)
        for queue in 0...rig.controlQueue { try rig.driver.setUpQueue(queue) }
        try rig.driver.setStatus(0xF)
        let frame = Self.frame(marker: 0x77)
        try rig.transmit(frame)
        #expect(try rig.peer.receive(timeoutMilliseconds: 3000) { Self.isFrame($0, marker: 0x77) } == frame)
        try rig.driver.setDescriptor(1, 1, address: 0xFFFF_FFF0_0000_0000, length: 100, flags: 0)
        try rig.driver.makeAvailable(1, 1)
        try rig.driver.kick(1)
        status = 0
        for _ in 0..<200 where status & 0x40 == 0 {
            status = try rig.driver.status
            usleep(10_000)
        }
        #expect(status & 0x40 == 0x40)
        // A transmit header shorter than 12 bytes, after another reset.
        #expect(try rig.driver.negotiate(rig.features) & 0x8 != 0)
        for queue in 0...rig.controlQueue { try rig.driver.setUpQueue(queue) }
        try rig.driver.setStatus(0xF)
        try rig.driver.setDescriptor(1, 0, address: VirtioNetDriver.buffer(1, 0), length: 6, flags: 0)
        try rig.driver.makeAvailable(1, 0)
        try rig.driver.kick(1)
        status = 0
        for _ in 0..<200 where status & 0x40 == 0 {
            status = try rig.driver.status
            usleep(10_000)
        }
        #expect(status & 0x40 == 0x40)
        #expect(try rig.session.qmp!.execute("query-status").contains("\"status\""))
    }

    @Test(.timeLimit(.minutes(2))) func multiQueueTakesPairsFromTheControlQueueAndSendsOnTheSecondPair() throws {
        let rig = try Rig(features: VirtioNetDriver.version1 | VirtioNetDriver.mac | VirtioNetDriver.status | VirtioNetDriver.mergeable
                                    | VirtioNetDriver.controlQueue | VirtioNetDriver.multiQueue,
                          netdev: ",queues=2", device: ",mq=on,vectors=6", pairs: 2)
        defer { rig.stop() }
        // 5.1.4: max_virtqueue_pairs at offset 8; the kernel's view of the tap: two queues.
        #expect(try rig.driver.read("w", rig.driver.deviceConfig + 8) == 2)
        // Until the driver sets more pairs it uses one (5.1.6.5.5), and the tap's second queue is
        // detached: iproute2 counts one queue and one disabled (QEMU detaches it the same way).
        func tapQueues() throws -> String { try rig.namespace.ip("-d", "link", "show", "sytap0") }
        func eventually(_ wanted: String) throws -> Bool {
            for _ in 0..<100 where !(try tapQueues().contains(wanted)) { usleep(10_000) }
            return try tapQueues().contains(wanted)
        }
        #expect(try eventually("multi_queue numqueues 1 numdisabled 1"), "\((try? tapQueues()) ?? "")")
        // VIRTIO_NET_CTRL_MQ (4) VQ_PAIRS_SET (0): 3 pairs is past the maximum, 2 is fine.
        #expect(try rig.control(4, 0, [3, 0]) == 1)
        #expect(try rig.control(4, 0, [2, 0], slot: 2) == 0)
        #expect(try eventually("multi_queue numqueues 2 numdisabled 0"), "\((try? tapQueues()) ?? "")")
        let frame = Self.frame(marker: 0x88)
        try rig.transmit(frame, queue: 3)
        #expect(try rig.peer.receive(timeoutMilliseconds: 3000) { Self.isFrame($0, marker: 0x88) } == frame)
    }

    @Test(.timeLimit(.minutes(2))) func receiveModeFromTheControlQueueFiltersUnicast() throws {
        let rig = try Rig(device: ",mac=52:54:00:ab:cd:ef")
        defer { rig.stop() }
        #expect(try rig.driver.readBytes(rig.driver.deviceConfig, 6) == [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF])
        // VIRTIO_NET_CTRL_RX (0) PROMISC (0) off: only our MAC, broadcast and listed multicast pass.
        #expect(try rig.control(0, 0, [0]) == 0)
        try rig.offerReceiveBuffers(4, size: 2048)
        try rig.peer.send(Self.frame(marker: 0x91, to: [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]))
        let mine = Self.frame(marker: 0x92, to: [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF])
        try rig.peer.send(mine)
        #expect(try rig.driver.waitForUsed(0, 1))
        usleep(200_000)
        #expect(try rig.driver.usedIndex(0) == 1)
        #expect(try rig.driver.readBytes(VirtioNetDriver.buffer(0, 0) + 12, mine.count) == mine)
    }

    @Test(.timeLimit(.minutes(2))) func behindARootPortItIsAnExpressEndpointAndHotPlugsWithItsOwnNetdev() throws {
        let namespace = try TestNetworkNamespace()
        let session = try QTestSession("/usr/sbin/ip", ["netns", "exec", namespace.name, switchyardBinary,
                                                        "-machine", "q35", "-accel", "qtest",
                                                        "-device", "pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2",
                                                        "-device", "pcie-root-port,id=rp2,chassis=1,slot=2,addr=0x4",
                                                        "-netdev", "tap,id=n0,ifname=sytap0,script=no,downscript=no",
                                                        "-netdev", "tap,id=n1,ifname=sytap1,script=no,downscript=no",
                                                        "-device", "virtio-net-pci,netdev=n0,bus=rp1,id=nic0"],
                                       monitor: .qmp(negotiated: true), name: "vnet-hp")
        defer { session.stop() }
        // Behind rp1 (bus 1 once numbered) it is 1af4:1041 with PCI Express (0x10), MSI-X (0x11)
        // and virtio's vendor-specific (0x09) capabilities.
        try session.qtest.configWrite(device: 2, offset: 0x18, width: "l", value: 0x0001_0100)
        #expect(try VirtioNetDriver.value(try session.qtest.configRead(bus: 1, device: 0, offset: 0)) == 0x1041_1AF4)
        var pointer = Int(try VirtioNetDriver.value(try session.qtest.configRead(bus: 1, device: 0, offset: 0x34)) & 0xFF)
        var ids: [UInt64] = []
        while pointer != 0 && ids.count < 16 {
            let header = try VirtioNetDriver.value(try session.qtest.configRead(bus: 1, device: 0, offset: pointer))
            ids.append(header & 0xFF)
            pointer = Int(header >> 8 & 0xFC)
        }
        #expect(ids.contains(0x10) && ids.contains(0x11) && ids.contains(0x09), "capabilities \(ids)")
        // A netdev serves one NIC (QEMU's rule); a free one hot-plugs into rp2.
        let qmp = session.qmp!
        #expect(try qmp.execute("device_add", "{\"driver\": \"virtio-net-pci\", \"netdev\": \"n0\", \"bus\": \"rp2\"}").contains("it's in use"))
        #expect(try qmp.execute("device_add", "{\"driver\": \"virtio-net-pci\", \"netdev\": \"n1\", \"bus\": \"rp2\", \"id\": \"nic1\"}") == "{\"return\": {}}")
        #expect(try qmp.execute("set_link", "{\"name\": \"nic1\", \"up\": false}") == "{\"return\": {}}")
        // Unplugged, its netdev is free again (QEMU frees a deleted NIC's peer): a new NIC takes it.
        #expect(try qmp.execute("device_del", "{\"id\": \"nic1\", \"x-surprise\": true}") == "{\"return\": {}}")
        #expect(try qmp.execute("device_add", "{\"driver\": \"virtio-net-pci\", \"netdev\": \"n1\", \"bus\": \"rp2\", \"id\": \"nic2\"}") == "{\"return\": {}}")
        #expect(try qmp.execute("device_del", "{\"id\": \"nic0\", \"x-surprise\": true}") == "{\"return\": {}}")
        // A refused device_add leaves no claim behind either.
        #expect(try qmp.execute("device_add", "{\"driver\": \"virtio-net-pci\", \"netdev\": \"n0\", \"bus\": \"rp1\", \"id\": \"nic3\", \"vectors\": \"0\"}").contains("vectors"))
        #expect(try qmp.execute("device_add", "{\"driver\": \"virtio-net-pci\", \"netdev\": \"n0\", \"bus\": \"rp1\", \"id\": \"nic4\"}") == "{\"return\": {}}")
    }
}
