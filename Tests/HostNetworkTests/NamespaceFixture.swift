import Foundation
import Glibc
import HostOS
import Synchronization
import TestRequirements

/// A throw-away network namespace made with iproute2 (`ip netns add`), removed by `remove()`
/// (which also deletes every link in it). Work that must happen inside it (opening sockets,
/// mounting a sysfs that shows its links) runs on a thread that has done setns into it.
final class NamespaceFixture {
    let name: String
    /// A sysfs mounted from inside the namespace, so its class/net lists the namespace's links.
    let sysfs: String
    let scratch: String
    private var mounted = false

    static var available: Bool {
        getuid() == 0 && (FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/usr/bin/ip"))
    }
    static let unavailable = "needs root and iproute2's ip (Debian package iproute2) with network namespaces"

    private static let counter = Atomic<Int>(0)

    init() throws {
        name = "sytest\(getpid())-\(Self.counter.add(1, ordering: .relaxed).oldValue)"
        scratch = NSTemporaryDirectory() + name
        sysfs = scratch + "/sys"
        try FileManager.default.createDirectory(atPath: sysfs, withIntermediateDirectories: true)
        try Self.run(["ip", "netns", "add", name])
        let sysfs = self.sysfs
        try inside { () throws in
            if mount("none", sysfs, "sysfs", 0, nil) != 0 { throw SystemError.current("mount sysfs", sysfs) }
        }
        mounted = true
    }

    func remove() {
        if mounted { _ = umount2(sysfs, Int32(MNT_DETACH)) }
        mounted = false
        _ = try? Self.run(["ip", "netns", "del", name])
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// Runs `arguments` inside the namespace (`ip netns exec`), returning its standard output.
    @discardableResult
    func run(_ arguments: [String]) throws -> String {
        try Self.run(["ip", "netns", "exec", name] + arguments)
    }

    /// Runs `body` on a fresh thread that has entered the namespace.
    func inside<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        let path = "/run/netns/\(name)"
        let thread = try HostThread(name: "netns") {
            let outcome = Result { () throws -> T in
                let fd = try FileDescriptor.open(path, .readOnly)
                if enterNamespace(fd.rawValue, NamespaceFixture.cloneNewNet) != 0 { throw SystemError.current("setns", path) }
                return try body()
            }
            result.withLock { $0 = outcome }
        }
        thread.join()
        return try result.withLock { $0! }.get()
    }

    /// CLONE_NEWNET from <linux/sched.h>.
    private static let cloneNewNet: Int32 = 0x4000_0000

    /// A NETLINK_ROUTE socket in the namespace (unbound, for RouteSocket(adopting:)).
    func routeSocketDescriptor() throws -> FileDescriptor {
        FileDescriptor(adopting: try inside { () throws -> Int32 in
            let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0 /* NETLINK_ROUTE */)
            if fd < 0 { throw SystemError.current("socket(AF_NETLINK)") }
            return fd
        })
    }

    /// The link's MAC address as the namespace's sysfs gives it.
    func address(of link: String) throws -> String {
        try String(contentsOfFile: "\(sysfs)/class/net/\(link)/address", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    struct CommandFailed: Error, CustomStringConvertible { let description: String }

    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandFailed(description: "\(arguments.joined(separator: " ")) failed (\(process.terminationStatus)): \(errorText)")
        }
        return text
    }
}

/// setns(2), which Glibc's Swift module hides (it is a _GNU_SOURCE declaration).
private let enterNamespace: @convention(c) (Int32, Int32) -> Int32 = {
    unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns")!, to: (@convention(c) (Int32, Int32) -> Int32).self)
}()

/// An AF_PACKET socket bound to one link of a namespace: sees every frame on that link and sends
/// raw frames out of it.
struct PeerSocket: ~Copyable {
    let fd: FileDescriptor

    init(link: String, in namespace: NamespaceFixture) throws {
        fd = FileDescriptor(adopting: try namespace.inside { () throws -> Int32 in
            let protocolAll = UInt16(3 /* ETH_P_ALL */).bigEndian
            let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(protocolAll))
            if fd < 0 { throw SystemError.current("socket(AF_PACKET)") }
            // struct sockaddr_ll (<linux/if_packet.h>): family, protocol, ifindex; the rest zero.
            var address = [UInt8](repeating: 0, count: 20)
            withUnsafeBytes(of: UInt16(AF_PACKET)) { address.replaceSubrange(0..<2, with: $0) }
            withUnsafeBytes(of: protocolAll) { address.replaceSubrange(2..<4, with: $0) }
            withUnsafeBytes(of: Int32(if_nametoindex(link))) { address.replaceSubrange(4..<8, with: $0) }
            let status = address.withUnsafeBytes {
                bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            if status != 0 { let error = SystemError.current("bind(AF_PACKET)", link); Glibc.close(fd); throw error }
            return fd
        })
    }

    func send(_ frame: [UInt8]) throws {
        _ = try fd.write(frame.withUnsafeBytes { $0 })
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
