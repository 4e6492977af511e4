import VMMBase
import Foundation
import Glibc
import HostNetwork
import HostOS
import Testing
import TestRequirements

/// macvtap links made through libnl in a throw-away network namespace, checked with iproute2 and
/// with frames on the wire: a veth pair, the macvtap on one end, an AF_PACKET socket on the other.
@Suite(.serialized, .requires(NamespaceFixture.available, NamespaceFixture.unavailable))
struct MacvtapLinkTests {
    /// How the test reaches the queue's character device.
    enum NodeSource: String, Sendable { case devtmpfs, privateMknod }

    struct Case: Sendable, CustomTestStringConvertible {
        var mode: MacvtapMode
        var vnetHeaderSize: Int
        var nodes: NodeSource
        var mac: String? = nil
        var testDescription: String { "\(mode), \(vnetHeaderSize)-byte vnet header, node from \(nodes)\(mac.map { ", mac=\($0)" } ?? "")" }
    }

    static let cases: [Case] = [
        Case(mode: .bridge, vnetHeaderSize: 10, nodes: .devtmpfs),
        Case(mode: .vepa, vnetHeaderSize: 12, nodes: .privateMknod, mac: "52:54:00:5a:00:01"),
        Case(mode: .private, vnetHeaderSize: 10, nodes: .privateMknod),
        Case(mode: .passthru, vnetHeaderSize: 12, nodes: .devtmpfs),
    ]

    /// An experimental EtherType (IEEE 802 local experimental 1), so stray IPv6 traffic is ignored.
    static let etherType: [UInt8] = [0x88, 0xb5]

    /// _IOW('T', 216, int) from <linux/if_tun.h>.
    static let setVnetHeaderSize: UInt = 0x4004_54d8

    @Test(arguments: cases)
    func framesCrossTheMacvtapBothWays(_ testCase: Case) throws {
        let namespace = try NamespaceFixture()
        defer { namespace.remove() }
        try namespace.run(["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"])
        try namespace.run(["ip", "link", "set", "va", "up"])
        try namespace.run(["ip", "link", "set", "vb", "up"])

        let emptyDev = namespace.scratch + "/no-dev"
        try FileManager.default.createDirectory(atPath: emptyDev, withIntermediateDirectories: true)
        let environment = HostNetworkEnvironment(
            sysfs: namespace.sysfs, devDirectory: testCase.nodes == .devtmpfs ? "/dev" : emptyDev,
            runDirectory: namespace.scratch + "/run")
        var properties = ["id": "n0", "link": "va", "mode": testCase.mode.rawValue, "queues": "2"]
        properties["mac"] = testCase.mac
        let options = try MacvtapNetdevOptions(properties: properties)
        let backend = try MacvtapBackend(options: options, socket: try RouteSocket(adopting: namespace.routeSocketDescriptor()),
                                         environment: environment)

        // iproute2, not libnl, reports what the kernel made.
        let shown = try namespace.run(["ip", "-d", "-o", "link", "show", backend.linkName])
        #expect(shown.contains("\(backend.linkName)@va:"), "\(shown)")
        #expect(shown.contains("macvtap mode \(testCase.mode) "), "\(shown)")
        #expect(shown.contains("link/ether \(backend.address) "), "\(shown)")
        if let mac = testCase.mac { #expect(shown.contains("link/ether \(mac) "), "\(shown)") }
        #expect(shown.contains(",UP"), "\(shown)")
        if testCase.nodes == .privateMknod {
            #expect(try FileManager.default.contentsOfDirectory(atPath: environment.runDirectory + "/dev").isEmpty)
        }

        guard let queue = backend.takeQueue(), let secondQueue = backend.takeQueue() else {
            Issue.record("queues=2 gave fewer than two queues")
            return
        }
        var thirdQueue = false
        if backend.takeQueue() != nil { thirdQueue = true }
        #expect(!thirdQueue)
        if testCase.vnetHeaderSize != 10 {
            var size = Int32(testCase.vnetHeaderSize)
            try ioctl(queue, Self.setVnetHeaderSize, &size)
            try ioctl(secondQueue, Self.setVnetHeaderSize, &size)
        }

        let peer = try namespace.packetSocket(on: "vb")
        let peerAddress = try #require(MACAddress(try namespace.address(of: "vb")))
        let payload = Array("switchyard \(testCase.mode) \(getpid())".utf8) + [UInt8](repeating: 0x5a, count: 40)

        // Out: a frame written with a zeroed vnet header (no checksum offload, no GSO) leaves va unchanged.
        let outgoing = peerAddress.bytes + backend.address.bytes + Self.etherType + payload
        _ = try queue.write((Array(repeating: 0, count: testCase.vnetHeaderSize) + outgoing).withUnsafeBytes { $0 })
        let seen = readMatching([peer.descriptor.rawValue], timeout: 3) { $0.count >= 14 && Array($0[12..<14]) == Self.etherType }
        #expect(seen.map { Array($0.prefix(outgoing.count)) } == outgoing)

        // In: a frame to the macvtap's address is read from a queue after a vnet header.
        let incoming = backend.address.bytes + peerAddress.bytes + Self.etherType + payload.reversed()
        try peer.send(incoming)
        let header = testCase.vnetHeaderSize
        let received = readMatching([queue.rawValue, secondQueue.rawValue], timeout: 3) {
            $0.count > header + 14 && Array($0[(header + 12)..<(header + 14)]) == Self.etherType
        }
        let frame = try #require(received, "no frame arrived on either queue")
        #expect(Array(frame.dropFirst(header).prefix(incoming.count)) == incoming)
        #expect(frame[1] == 0, "gso_type of a frame from the wire is VIRTIO_NET_HDR_GSO_NONE")

        try backend.close()
        #expect(throws: NamespaceFixture.CommandFailed.self) { try namespace.run(["ip", "link", "show", backend.linkName]) }
    }

    @Test func anExistingMacvtapIsUsedAndLeftInPlace() throws {
        let namespace = try NamespaceFixture()
        defer { namespace.remove() }
        try namespace.run(["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"])
        try namespace.run(["ip", "link", "add", "link", "va", "name", "mvt0", "type", "macvtap", "mode", "vepa"])
        let address = try namespace.address(of: "mvt0")
        let backend = try MacvtapBackend(options: try MacvtapNetdevOptions(properties: ["id": "n0", "ifname": "mvt0"]),
                                         socket: try RouteSocket(adopting: namespace.routeSocketDescriptor()),
                                         environment: HostNetworkEnvironment(sysfs: namespace.sysfs, runDirectory: namespace.scratch + "/run"))
        #expect(backend.address.description == address)
        let dev = try String(contentsOfFile: "\(namespace.sysfs)/class/net/mvt0/macvtap/\(backend.characterDevice.name)/dev", encoding: .utf8)
        #expect(dev == "\(backend.characterDevice.major):\(backend.characterDevice.minor)\n")
        var gotQueue = false
        if backend.takeQueue() != nil { gotQueue = true }
        #expect(gotQueue)
        try backend.close()
        #expect(try namespace.run(["ip", "-d", "-o", "link", "show", "mvt0"]).contains("macvtap mode vepa"))
    }

    @Test func unusableLinksAreRefusedWithTheFix() throws {
        let namespace = try NamespaceFixture()
        defer { namespace.remove() }
        try namespace.run(["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"])
        let environment = HostNetworkEnvironment(sysfs: namespace.sysfs, runDirectory: namespace.scratch + "/run")
        let missing = #expect(throws: HostNetworkError.self) {
            _ = try MacvtapBackend(options: try MacvtapNetdevOptions(properties: ["id": "n0", "link": "nosuch0"]),
                                   socket: try RouteSocket(adopting: namespace.routeSocketDescriptor()), environment: environment)
        }
        #expect(missing?.description == "network interface 'nosuch0' does not exist: pick one that `ip link show` lists")
        let notMacvtap = #expect(throws: HostNetworkError.self) {
            _ = try MacvtapBackend(options: try MacvtapNetdevOptions(properties: ["id": "n0", "ifname": "vb"]),
                                   socket: try RouteSocket(adopting: namespace.routeSocketDescriptor()), environment: environment)
        }
        #expect(notMacvtap?.description.hasPrefix("'vb' is not a usable macvtap link (it is a veth link)") == true)
    }

    /// A process that made an owned link and was killed leaves it behind; the next start deletes
    /// it, and leaves a live process's link and links of other names alone.
    @Test func linksOfDeadProcessesAreRemovedAtTheNextStart() throws {
        let namespace = try NamespaceFixture()
        defer { namespace.remove() }
        try namespace.run(["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"])
        // The child names the link after its own pid, as OwnedLinkName does, then dies by SIGKILL.
        #expect(throws: NamespaceFixture.CommandFailed.self) {
            try namespace.run(["sh", "-c", "ip link add link va name sy$$-3 type macvtap && kill -KILL $$"])
        }
        let before = try namespace.run(["ip", "-o", "link", "show", "type", "macvtap"])
        let stale = try #require(before.split(separator: " ").map(String.init).first { $0.hasPrefix("sy") }?
            .split(separator: "@").first.map(String.init))
        let staleOwner = try #require(OwnedLinkName(parsing: stale)).ownerProcess
        #expect(kill(staleOwner, 0) == -1 && errno == ESRCH)
        let live = "sy\(getpid())-99999"
        try namespace.run(["ip", "link", "add", "link", "va", "name", live, "type", "macvtap"])
        try namespace.run(["ip", "link", "add", "link", "va", "name", "sy-other", "type", "macvtap"])

        let backend = try MacvtapBackend(options: try MacvtapNetdevOptions(properties: ["id": "n0", "link": "vb"]),
                                         socket: try RouteSocket(adopting: namespace.routeSocketDescriptor()),
                                         environment: HostNetworkEnvironment(sysfs: namespace.sysfs, runDirectory: namespace.scratch + "/run"))
        let after = try namespace.run(["ip", "-o", "link", "show", "type", "macvtap"])
        #expect(!after.contains("\(stale)@"))
        #expect(after.contains("\(live)@va"))
        #expect(after.contains("sy-other@va"))
        #expect(after.contains("\(backend.linkName)@vb"))
        try backend.close()
    }
}
