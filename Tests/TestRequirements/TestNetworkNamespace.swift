#if canImport(Testing)
import Foundation
import Synchronization

/// A network namespace a test creates with iproute2 and removes when it goes away (also when
/// the test fails): named per process and per instance, so parallel runs never meet.
/// IPv6 is off inside, so the kernel's own chatter (router solicitations, MLD) stays out of
/// the frames a test counts.
public final class TestNetworkNamespace: Sendable {
    public let name: String

    private static let counter = Mutex(0)

    /// iproute2, root and /dev/net/tun: what creating namespaces and taps needs.
    public static var available: Bool {
        FileManager.default.isExecutableFile(atPath: ipTool) && getuid() == 0
            && FileManager.default.fileExists(atPath: "/dev/net/tun")
    }
    public static let unavailable = "network namespaces and taps need root, iproute2 (/usr/sbin/ip) and /dev/net/tun"
    static let ipTool = "/usr/sbin/ip"

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public init(prefix: String = "sy") throws {
        let n = Self.counter.withLock { value in
            value += 1
            return value
        }
        name = "\(prefix)\(getpid())n\(n)"
        try Self.run([Self.ipTool, "netns", "add", name])
        do {
            try Self.run([Self.ipTool, "netns", "exec", name, "sysctl", "-q", "-w",
                          "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        } catch {
            _ = try? Self.run([Self.ipTool, "netns", "del", name])
            throw error
        }
    }

    deinit { _ = try? Self.run([Self.ipTool, "netns", "del", name]) }

    /// `ip -n NAME ARGUMENTS...`: its standard output.
    @discardableResult
    public func ip(_ arguments: String...) throws -> String {
        try Self.run([Self.ipTool, "-n", name] + arguments)
    }

    /// `ip netns exec NAME ARGUMENTS...`: runs a program inside the namespace, its standard output.
    @discardableResult
    public func exec(_ arguments: [String]) throws -> String {
        try Self.run([Self.ipTool, "netns", "exec", name] + arguments)
    }

    /// Runs a program to completion; a non-zero exit is a `Failure` with its standard error.
    @discardableResult
    static func run(_ command: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(command.joined(separator: " ")): exit \(process.terminationStatus): \(String(decoding: error, as: UTF8.self))")
        }
        return String(decoding: output, as: UTF8.self)
    }
}
#endif
