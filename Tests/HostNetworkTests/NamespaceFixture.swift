import Foundation
import Glibc
import HostNetwork
import HostOS
import TestRequirements

/// A throw-away network namespace (TestRequirements' `TestNetworkNamespace`, deleted with every
/// link in it when the fixture goes away) with a sysfs mounted from inside it, so that its
/// class/net lists the namespace's links, and a scratch directory; `remove()` unmounts and
/// deletes those two. Work that must happen inside (opening sockets) runs through HostNetwork's
/// `NetworkNamespace`.
final class NamespaceFixture {
    let namespace: TestNetworkNamespace
    var name: String { namespace.name }
    /// A sysfs mounted from inside the namespace, so its class/net lists the namespace's links.
    let sysfs: String
    let scratch: String
    private var mounted = false

    static var available: Bool { TestNetworkNamespace.available }
    static let unavailable = TestNetworkNamespace.unavailable
    typealias CommandFailed = TestNetworkNamespace.Failure

    init() throws {
        namespace = try TestNetworkNamespace(prefix: "sytest")
        scratch = NSTemporaryDirectory() + namespace.name
        sysfs = scratch + "/sys"
        try FileManager.default.createDirectory(atPath: sysfs, withIntermediateDirectories: true)
        let sysfs = self.sysfs
        try inside { () throws in
            if mount("none", sysfs, "sysfs", 0, nil) != 0 { throw SystemError.current("mount sysfs", sysfs) }
        }
        mounted = true
    }

    func remove() {
        if mounted { _ = umount2(sysfs, Int32(MNT_DETACH)) }
        mounted = false
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// Runs `arguments` inside the namespace (`ip netns exec`), returning its standard output.
    @discardableResult
    func run(_ arguments: [String]) throws -> String { try namespace.exec(arguments) }

    /// Runs `body` on a fresh thread that has entered the namespace.
    func inside<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        try NetworkNamespace.run(in: name) { Result { try body() } }.get()
    }

    /// A NETLINK_ROUTE socket in the namespace (unbound, for RouteSocket(adopting:)).
    func routeSocketDescriptor() throws -> FileDescriptor {
        FileDescriptor(adopting: try inside { () throws -> Int32 in
            let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0 /* NETLINK_ROUTE */)
            if fd < 0 { throw SystemError.current("socket(AF_NETLINK)") }
            return fd
        })
    }

    /// An AF_PACKET socket on `link` inside the namespace: every frame on that link.
    func packetSocket(on link: String) throws -> PacketSocket {
        try inside { () throws in try PacketSocket(interfaceName: link) }
    }

    /// The link's MAC address as the namespace's sysfs gives it.
    func address(of link: String) throws -> String {
        try String(contentsOfFile: "\(sysfs)/class/net/\(link)/address", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Reads from whichever of `descriptors` has data until a read satisfies `matches` or `timeout`
/// seconds pass; nil then.
func readMatching(_ descriptors: [Int32], timeout: Double, _ matches: ([UInt8]) -> Bool) -> [UInt8]? {
    let deadline = Date().addingTimeInterval(timeout)
    var buffer = [UInt8](repeating: 0, count: 65536)
    while Date() < deadline {
        var entries = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        if poll(&entries, nfds_t(entries.count), Int32(max(1, deadline.timeIntervalSinceNow * 1000))) <= 0 { continue }
        for entry in entries where entry.revents & Int16(POLLIN) != 0 {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(entry.fd, $0.baseAddress, $0.count) }
            if n > 0, matches(Array(buffer[..<n])) { return Array(buffer[..<n]) }
        }
    }
    return nil
}
