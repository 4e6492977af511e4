import VMMBase
import CNetlink
import Glibc
import HostOS

/// An owned libnl socket on NETLINK_ROUTE: link lookup, macvtap links and SR-IOV VF settings.
///
/// The socket belongs to the network namespace it was created in; `init(adopting:)` takes a
/// NETLINK_ROUTE socket opened elsewhere (in another namespace, or before a sandbox locks down).
/// Unchecked Sendable: exactly one value owns the libnl socket (it is not copyable), so it is used
/// by one thread at a time.
public struct RouteSocket: ~Copyable, @unchecked Sendable {
    let handle: OpaquePointer

    /// A socket connected to NETLINK_ROUTE in the caller's network namespace.
    public init() throws(NetlinkError) {
        guard let socket = nl_socket_alloc() else {
            throw NetlinkError(code: NLE_NOMEM, operation: "nl_socket_alloc")
        }
        let status = nl_connect(socket, NETLINK_ROUTE)
        if status < 0 {
            nl_socket_free(socket)
            throw NetlinkError(code: status, operation: "nl_connect", context: "NETLINK_ROUTE")
        }
        handle = socket
    }

    /// Takes over an open, unbound AF_NETLINK/NETLINK_ROUTE socket (libnl closes it from now on).
    public init(adopting socketDescriptor: consuming FileDescriptor) throws(NetlinkError) {
        guard let socket = nl_socket_alloc() else {
            throw NetlinkError(code: NLE_NOMEM, operation: "nl_socket_alloc")
        }
        let raw = socketDescriptor.take()
        let status = nl_socket_set_fd(socket, NETLINK_ROUTE, raw)
        if status < 0 {
            nl_socket_free(socket)
            _ = Glibc.close(raw)
            throw NetlinkError(code: status, operation: "nl_socket_set_fd", context: "fd \(raw)")
        }
        handle = socket
    }

    deinit { nl_socket_free(handle) }

    // MARK: Lookup

    /// The link called `name`; a `NetlinkError` with `isNotFound` when there is none.
    public func link(named name: String) throws(NetlinkError) -> LinkInfo {
        try withKernelLink(index: 0, name: name) { LinkInfo(copying: $0) }
    }

    /// The link with interface index `index`.
    public func link(index: Int32) throws(NetlinkError) -> LinkInfo {
        try withKernelLink(index: index, name: nil) { LinkInfo(copying: $0) }
    }

    /// Every link in the socket's namespace.
    public func links() throws(NetlinkError) -> [LinkInfo] {
        var cache: OpaquePointer?
        try checkNetlink(rtnl_link_alloc_cache(handle, AF_UNSPEC, &cache), "rtnl_link_alloc_cache")
        defer { nl_cache_free(cache) }
        var result: [LinkInfo] = []
        var object = nl_cache_get_first(cache)
        while let current = object {
            result.append(LinkInfo(copying: current))
            object = nl_cache_get_next(current)
        }
        return result
    }

    /// Runs `body` on libnl's fresh copy of one link (by index, or by name when index is 0).
    func withKernelLink<T>(index: Int32, name: String?,
                           _ body: (OpaquePointer) throws(NetlinkError) -> T) throws(NetlinkError) -> T {
        var link: OpaquePointer?
        try checkNetlink(rtnl_link_get_kernel(handle, index, name, &link), "rtnl_link_get_kernel",
                         name ?? "index \(index)")
        guard let link else { throw NetlinkError(code: NLE_OBJ_NOTFOUND, operation: "rtnl_link_get_kernel", context: name) }
        defer { rtnl_link_put(link) }
        return try body(link)
    }

    // MARK: Changes

    /// Creates a macvtap link `name` on the lower link `lowerIndex`, up, in `mode`, with `address`
    /// (the kernel picks a random one when nil). Fails with `isAlreadyExisting` if the name is taken.
    public func addMacvtap(name: String, lowerIndex: Int32, mode: MacvtapMode,
                           address: MACAddress? = nil) throws(NetlinkError) {
        guard let link = rtnl_link_macvtap_alloc() else {
            throw NetlinkError(code: NLE_NOMEM, operation: "rtnl_link_macvtap_alloc")
        }
        defer { rtnl_link_put(link) }
        rtnl_link_set_name(link, name)
        rtnl_link_set_link(link, lowerIndex)
        rtnl_link_set_flags(link, UInt32(interfaceUpFlag))
        try checkNetlink(rtnl_link_macvtap_set_mode(link, mode.kernelValue), "rtnl_link_macvtap_set_mode", name)
        if let address {
            let nlAddress = try NetlinkAddress(address)
            rtnl_link_set_addr(link, nlAddress.handle)
        }
        try checkNetlink(rtnl_link_add(handle, link, NLM_F_CREATE | NLM_F_EXCL), "rtnl_link_add",
                         "macvtap \(name) on link \(lowerIndex) mode \(mode)")
    }

    /// Deletes the link called `name`.
    public func deleteLink(named name: String) throws(NetlinkError) {
        guard let link = rtnl_link_alloc() else { throw NetlinkError(code: NLE_NOMEM, operation: "rtnl_link_alloc") }
        defer { rtnl_link_put(link) }
        rtnl_link_set_name(link, name)
        try checkNetlink(rtnl_link_delete(handle, link), "rtnl_link_delete", name)
    }

    /// Sets the link `index` administratively up or down (`ip link set LINK up|down`).
    public func setLink(index: Int32, up: Bool) throws(NetlinkError) {
        try changeLink(index: index, context: "link \(index) \(up ? "up" : "down")") { changes in
            if up {
                rtnl_link_set_flags(changes, UInt32(interfaceUpFlag))
            } else {
                rtnl_link_unset_flags(changes, UInt32(interfaceUpFlag))
            }
        }
    }

    /// Applies `build`'s changes to the link `index` through RTM_NEWLINK/SETLINK (rtnl_link_change).
    func changeLink(index: Int32, context: String,
                    _ build: (OpaquePointer) throws(NetlinkError) -> Void) throws(NetlinkError) {
        try withKernelLink(index: index, name: nil) { (original) throws(NetlinkError) in
            guard let changes = rtnl_link_alloc() else { throw NetlinkError(code: NLE_NOMEM, operation: "rtnl_link_alloc") }
            defer { rtnl_link_put(changes) }
            try build(changes)
            try checkNetlink(rtnl_link_change(handle, original, changes, 0), "rtnl_link_change", context)
        }
    }
}

/// IFF_UP from <net/if.h> (an enum constant Swift imports awkwardly).
let interfaceUpFlag: Int32 = 0x1

/// An owned libnl address object holding a MAC address.
struct NetlinkAddress: ~Copyable {
    let handle: OpaquePointer

    init(_ address: MACAddress) throws(NetlinkError) {
        let built = address.bytes.withUnsafeBytes { raw in
            nl_addr_build(AF_LLC, UnsafeMutableRawPointer(mutating: raw.baseAddress), raw.count)
        }
        guard let built else { throw NetlinkError(code: NLE_NOMEM, operation: "nl_addr_build", context: "\(address)") }
        handle = built
    }

    deinit { nl_addr_put(handle) }

    /// The MAC address held by a libnl address, nil unless it is six bytes long.
    static func macAddress(of address: OpaquePointer?) -> MACAddress? {
        guard let address, nl_addr_get_len(address) == 6, let raw = nl_addr_get_binary_addr(address) else { return nil }
        return MACAddress(bytes: Array(UnsafeRawBufferPointer(start: raw, count: 6)))
    }
}

extension LinkInfo {
    /// Copies the fields out of a libnl rtnl_link (or a cache's nl_object, the same pointer).
    init(copying link: OpaquePointer) {
        let kind = rtnl_link_get_type(link).map { String(cString: $0) }
        let lower = rtnl_link_get_link(link)
        self.init(name: rtnl_link_get_name(link).map { String(cString: $0) } ?? "",
                  index: rtnl_link_get_ifindex(link),
                  kind: kind,
                  lowerIndex: lower > 0 ? lower : nil,
                  address: NetlinkAddress.macAddress(of: rtnl_link_get_addr(link)),
                  macvtapMode: kind == "macvtap" ? MacvtapMode(kernelValue: rtnl_link_macvtap_get_mode(link)) : nil,
                  isUp: rtnl_link_get_flags(link) & UInt32(interfaceUpFlag) != 0)
    }
}
