/// A device model whose guest-visible state can be taken out as a value and put back into a
/// freshly realized instance of the same model (what migration will carry). Host resources
/// (backends, file descriptors, interrupt wiring) are not state: the new instance has its own.
public protocol DeviceStateSnapshotting: AnyObject {
    associatedtype Snapshot: Sendable & Hashable & Codable
    func snapshot() -> Snapshot
    /// Replaces the device's state. A snapshot that does not fit this instance (another
    /// layout, a value the device could never hold) is refused and changes nothing.
    func restore(_ snapshot: Snapshot) throws(DeviceStateError)
}

/// Why a snapshot was refused.
public enum DeviceStateError: Error, Hashable, CustomStringConvertible {
    /// The snapshot was taken from a device of another layout than this one.
    case layoutMismatch(device: String, reason: String)
    /// A value in the snapshot is one the device can never hold.
    case invalidValue(device: String, reason: String)

    public var description: String {
        switch self {
        case .layoutMismatch(let device, let reason): "cannot restore \(device): snapshot is of another layout (\(reason))"
        case .invalidValue(let device, let reason): "cannot restore \(device): \(reason)"
        }
    }
}
