import CLinux
import Glibc
import HostOS

/// An AF_PACKET socket bound to one interface: every Ethernet frame the interface sends or
/// receives, as the kernel sees it. The far side of a tap, seen from the host's stack.
public final class PacketSocket: Sendable {
    public let descriptor: FileDescriptor
    public let interfaceIndex: Int32

    /// Opens a raw packet socket for all protocols on `interfaceName` (in the calling thread's
    /// network namespace), nonblocking. Needs CAP_NET_RAW.
    public init(interfaceName: String) throws(SystemError) {
        let index = if_nametoindex(interfaceName)
        guard index != 0 else { throw SystemError.current("if_nametoindex", interfaceName) }
        let allProtocols = Int32(UInt16(ETH_P_ALL).bigEndian)
        let raw = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), allProtocols)
        guard raw >= 0 else { throw SystemError.current("socket(AF_PACKET)", interfaceName) }
        let fd = FileDescriptor(adopting: raw)
        var address = sockaddr_ll()
        address.sll_family = UInt16(AF_PACKET)
        address.sll_protocol = UInt16(ETH_P_ALL).bigEndian
        address.sll_ifindex = Int32(index)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(raw, $0, socklen_t(MemoryLayout<sockaddr_ll>.size))
            }
        }
        guard rc == 0 else { throw SystemError.current("bind(AF_PACKET)", interfaceName) }
        descriptor = fd
        interfaceIndex = Int32(index)
    }

    /// Sends one frame out of the interface (it reaches the tap's reader).
    public func send(_ frame: [UInt8]) throws(SystemError) {
        let raw = descriptor.rawValue
        let n = frame.withUnsafeBytes { Glibc.send(raw, $0.baseAddress, $0.count, 0) }
        guard n == frame.count else { throw SystemError.current("send(AF_PACKET)", "ifindex \(interfaceIndex)") }
    }

    /// The next frame the interface saw going out (written into the tap by its owner) or
    /// coming in, or nil when none arrives within `timeoutMilliseconds`. Frames `accept`
    /// rejects (a host's own chatter) are skipped.
    public func receive(timeoutMilliseconds: Int32, where accept: ([UInt8]) -> Bool = { _ in true }) throws(SystemError) -> [UInt8]? {
        let raw = descriptor.rawValue
        var buffer = [UInt8](repeating: 0, count: 65_600)
        let deadline = HostClock.monotonicNanoseconds() + UInt64(max(timeoutMilliseconds, 0)) * 1_000_000
        while true {
            let now = HostClock.monotonicNanoseconds()
            guard now < deadline else { return nil }
            var poller = pollfd(fd: raw, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(clamping: (deadline - now) / 1_000_000 + 1))
            if ready < 0 && Errno.current != .interrupted { throw SystemError.current("poll", "packet socket") }
            guard ready > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(raw, $0.baseAddress, $0.count, 0) }
            if n < 0 && Errno.current != .wouldBlock { throw SystemError.current("recv(AF_PACKET)") }
            if n > 0, accept(Array(buffer[..<n])) { return Array(buffer[..<n]) }
        }
    }
}
