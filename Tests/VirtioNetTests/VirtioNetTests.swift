import VMMBase
// Tests of the VirtioNet module's pure parts against the virtio 1.x spec (section 5.1).
import HostNetwork
import Testing
@testable import VirtioNet

struct VirtioNetHeaderTests {
    @Test func fieldsSitAtTheSpecsOffsetsLittleEndian() {
        // struct virtio_net_hdr: u8 flags, u8 gso_type, le16 hdr_len, le16 gso_size,
        // le16 csum_start, le16 csum_offset, le16 num_buffers.
        let header = VirtioNetHeader(flags: 1, gsoType: 4, headerLength: 0x0102, gsoSize: 0x0304,
                                     checksumStart: 0x0506, checksumOffset: 0x0708, bufferCount: 0x090A)
        #expect(header.bytes == [1, 4, 0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07, 0x0A, 0x09])
        #expect(VirtioNetHeader(header.bytes) == header)
        #expect(VirtioNetHeader([1, 2, 3]) == nil)
    }

    @Test func transmitHeadersNeedTheirFeatures() {
        let tso4 = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4, gsoSize: 1448)
        #expect(tso4.transmitViolation([.checksum, .hostTSO4]) == nil)
        #expect(tso4.transmitViolation([.checksum]) != nil)
        #expect(tso4.transmitViolation([.hostTSO4]) != nil)
        #expect(VirtioNetHeader(gsoType: 2).transmitViolation(.offered(multiQueue: true)) != nil)  // 2 is not a GSO type
        #expect(VirtioNetHeader(gsoType: VirtioNetHeader.gsoTCPv6 | VirtioNetHeader.gsoECN).transmitViolation([.hostTSO6]) != nil)
        #expect(VirtioNetHeader().transmitViolation([]) == nil)
    }
}

struct VirtioNetFeatureTests {
    @Test func bitNumbersAreTheSpecs() {
        // 5.1.3: CSUM 0, GUEST_CSUM 1, MAC 5, GUEST_TSO4 7, GUEST_TSO6 8, HOST_TSO4 11,
        // HOST_TSO6 12, MRG_RXBUF 15, STATUS 16, CTRL_VQ 17, CTRL_RX 18, CTRL_VLAN 19,
        // GUEST_ANNOUNCE 21, MQ 22, CTRL_MAC_ADDR 23.
        let expected: [(VirtioNetFeatures, Int)] = [
            (.checksum, 0), (.guestChecksum, 1), (.mac, 5), (.guestTSO4, 7), (.guestTSO6, 8), (.hostTSO4, 11),
            (.hostTSO6, 12), (.mergeableReceiveBuffers, 15), (.status, 16), (.controlQueue, 17),
            (.controlReceiveMode, 18), (.controlVLAN, 19), (.guestAnnounce, 21), (.multiQueue, 22), (.controlMACAddress, 23),
        ]
        for (feature, bit) in expected { #expect(feature.rawValue == 1 << UInt64(bit)) }
        #expect(!VirtioNetFeatures.offered(multiQueue: false).contains(.multiQueue))
        #expect(VirtioNetFeatures.offered(multiQueue: true).contains(.multiQueue))
    }

    @Test func tapOffloadsFollowTheGuestFeatures() {
        #expect(VirtioNetFeatures([.guestTSO4]).tapOffloads == [])
        #expect(VirtioNetFeatures([.guestChecksum]).tapOffloads == [.checksum])
        #expect(VirtioNetFeatures([.guestChecksum, .guestTSO4, .guestTSO6, .guestECN]).tapOffloads == [.checksum, .tso4, .tso6, .tsoECN])
        #expect(VirtioNetFeatures([.hostTSO4, .checksum]).tapOffloads == [])
    }
}

struct VirtioNetConfigTests {
    @Test func layoutIsMacStatusPairs() {
        let config = VirtioNetConfig(mac: MACAddress("52:54:00:12:34:56")!, linkUp: true, announcing: true, maximumPairs: 4)
        #expect(config.bytes == [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x03, 0x00, 0x04, 0x00])
        #expect(config.read(offset: 6, count: 2) == [3, 0])
        #expect(config.read(offset: Int.max, count: 2) == [0, 0])
        #expect(VirtioNetConfig(mac: .qemuDefault(index: 1), linkUp: false).read(offset: 5, count: 3) == [0x57, 0, 0])
    }

    @Test func macAddressesParseAsQEMUWritesThem() {
        #expect(MACAddress("52:54:00:ab:CD:ef")?.bytes == [0x52, 0x54, 0, 0xAB, 0xCD, 0xEF])
        #expect(MACAddress("52-54-00-ab-cd-ef") != nil)
        #expect(MACAddress("52:54:00:ab:cd") == nil)
        #expect(MACAddress("52:54:00:ab:cd:xyz") == nil)
    }
}

struct ControlQueueTests {
    let mac = MACAddress("52:54:00:12:34:56")!
    let all = VirtioNetFeatures.offered(multiQueue: true)

    func state() -> ControlState { ControlState(filter: ReceiveFilter(mac: mac, filtersVLANs: true), maximumPairs: 4) }

    static func frame(to destination: [UInt8], vlan: UInt16? = nil) -> [UInt8] {
        let tag: [UInt8] = vlan.map { [0x81, 0x00, UInt8($0 >> 8), UInt8(truncatingIfNeeded: $0)] } ?? []
        return destination + [2, 0, 0, 0, 0, 1] + tag + [0x08, 0x00] + [UInt8](repeating: 0, count: 46)
    }

    @Test func receiveModeAndMacTablesDecideWhatIsDelivered() {
        var s = state()
        let other: [UInt8] = [2, 0, 0, 0, 0, 9], multicast: [UInt8] = [0x01, 0x00, 0x5E, 0, 0, 1]
        #expect(s.filter.accepts(Self.frame(to: other)))  // promiscuous after reset
        #expect(s.apply(ControlCommand(commandClass: 0, command: 0, data: [0]), negotiated: all).ack == ControlCommand.ok)
        #expect(!s.filter.accepts(Self.frame(to: other)))
        #expect(s.filter.accepts(Self.frame(to: mac.bytes)))
        #expect(s.filter.accepts(Self.frame(to: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])))
        #expect(!s.filter.accepts(Self.frame(to: multicast)))
        // MAC_TABLE_SET: one unicast entry, one multicast entry.
        let tables: [UInt8] = [1, 0, 0, 0] + other + [1, 0, 0, 0] + multicast
        #expect(s.apply(ControlCommand(commandClass: 1, command: 0, data: tables), negotiated: all).ack == ControlCommand.ok)
        #expect(s.filter.accepts(Self.frame(to: other)))
        #expect(s.filter.accepts(Self.frame(to: multicast)))
        // NOBCAST (CTRL_RX_EXTRA).
        #expect(s.apply(ControlCommand(commandClass: 0, command: 5, data: [1]), negotiated: all).ack == ControlCommand.ok)
        #expect(!s.filter.accepts(Self.frame(to: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])))
        // A table whose count runs past its data is refused and changes nothing.
        let before = s
        let (ack, problem) = s.apply(ControlCommand(commandClass: 1, command: 0, data: [0xFF, 0xFF, 0xFF, 0xFF]), negotiated: all)
        #expect(ack == ControlCommand.error && problem != nil && s == before)
    }

    @Test func vlanFilterDropsTagsNotAdded() {
        var s = state()
        #expect(!s.filter.accepts(Self.frame(to: mac.bytes, vlan: 100)))
        #expect(s.apply(ControlCommand(commandClass: 2, command: 0, data: [100, 0]), negotiated: all).ack == ControlCommand.ok)
        #expect(s.filter.accepts(Self.frame(to: mac.bytes, vlan: 100)))
        #expect(s.filter.accepts(Self.frame(to: mac.bytes)))  // untagged frames pass
        #expect(s.apply(ControlCommand(commandClass: 2, command: 0, data: [0x00, 0x10]), negotiated: all).ack == ControlCommand.error)
        #expect(s.apply(ControlCommand(commandClass: 2, command: 1, data: [100, 0]), negotiated: all).ack == ControlCommand.ok)
        #expect(!s.filter.accepts(Self.frame(to: mac.bytes, vlan: 100)))
    }

    @Test func queuePairsAnnounceAndMacAddressSet() {
        var s = state()
        #expect(s.apply(ControlCommand(commandClass: 4, command: 0, data: [3, 0]), negotiated: all).ack == ControlCommand.ok)
        #expect(s.activePairs == 3)
        #expect(s.apply(ControlCommand(commandClass: 4, command: 0, data: [5, 0]), negotiated: all).ack == ControlCommand.error)
        #expect(s.apply(ControlCommand(commandClass: 4, command: 0, data: [0, 0]), negotiated: all).ack == ControlCommand.error)
        #expect(s.apply(ControlCommand(commandClass: 4, command: 0, data: [2, 0]), negotiated: .offered(multiQueue: false)).ack == ControlCommand.error)
        s.announcing = true
        #expect(s.apply(ControlCommand(commandClass: 3, command: 0), negotiated: all).ack == ControlCommand.ok)
        #expect(!s.announcing)
        #expect(s.apply(ControlCommand(commandClass: 1, command: 1, data: [2, 1, 1, 1, 1, 1]), negotiated: all).ack == ControlCommand.ok)
        #expect(s.filter.mac.bytes == [2, 1, 1, 1, 1, 1])
        #expect(s.apply(ControlCommand(commandClass: 9, command: 0), negotiated: all).ack == ControlCommand.error)
        #expect(ControlCommand(readable: [1]) == nil)
    }
}
