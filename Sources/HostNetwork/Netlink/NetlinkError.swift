import CNetlink

/// A failed libnl call: libnl's own error code (NLE_*, positive) and its text from nl_geterror,
/// with the operation and what it acted on.
///
/// `description` reads like `rtnl_link_add(macvtap sy812-0 on eth0): Object exists (libnl error 6)`.
public struct NetlinkError: Error, Hashable, Sendable, CustomStringConvertible {
    /// libnl's error code, NLE_* (libnl returns it negated; it is kept positive here).
    public var code: Int32
    /// nl_geterror's text for `code`.
    public var text: String
    public var operation: String
    public var context: String?

    public init(code: Int32, operation: String, context: String? = nil) {
        self.code = code < 0 ? -code : code
        self.text = String(cString: nl_geterror(self.code))
        self.operation = operation
        self.context = context
    }

    /// The link (or object) asked for does not exist.
    public var isNotFound: Bool { code == NLE_OBJ_NOTFOUND || code == NLE_NODEV }
    /// The object to create already exists.
    public var isAlreadyExisting: Bool { code == NLE_EXIST }

    public var description: String {
        let subject = context.map { "(\($0))" } ?? ""
        return "\(operation)\(subject): \(text) (libnl error \(code))"
    }
}

/// Turns a libnl status (0 or a negative NLE_*) into a thrown `NetlinkError`.
@inline(__always)
func checkNetlink(_ status: Int32, _ operation: String,
                  _ context: @autoclosure () -> String? = nil) throws(NetlinkError) {
    if status < 0 { throw NetlinkError(code: status, operation: operation, context: context()) }
}
