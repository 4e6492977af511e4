import PCI
import Synchronization
import VMMBase

/// A virtual function of an SR-IOV `PCITestDevice`. Its config space is a VF's (see
/// `ConfigSpace.virtualFunction(of:)`); its BAR 0, placed by the PF's VF BAR 0, holds 256 bytes
/// of scratch registers the guest can write and read back, each VF its own.
public final class PCITestVirtualFunction: PCIFunction {
    public let name: String
    public static let scratchSize = 256

    private struct State {
        var config: ConfigSpace
        var scratch = [UInt8](repeating: 0, count: PCITestVirtualFunction.scratchSize)
    }
    private let state: Mutex<State>

    public init(name: String, config: ConfigSpace) {
        self.name = name
        state = Mutex(State(config: config))
    }

    public func configRead(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { $0.config.read(offset, width: width) }
    }

    public func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        state.withLock { s in
            let effects = s.config.write(offset, width: width, value: value)
            if effects.contains(.functionLevelReset) { Self.reset(&s) }
            return effects
        }
    }

    public func configSnapshot() -> ConfigSpace { state.withLock { $0.config } }

    public func reset() { state.withLock { Self.reset(&$0) } }

    private static func reset(_ s: inout State) {
        s.config.reset()
        s.scratch = [UInt8](repeating: 0, count: scratchSize)
    }

    public func barRead(_ index: Int, offset: UInt64, width: AccessWidth) -> UInt64 {
        state.withLock { s in
            guard index == 0, offset + UInt64(width.bytes) <= UInt64(Self.scratchSize) else { return 0 }
            return LittleEndian.load(s.scratch, at: Int(offset), count: width.bytes)
        }
    }

    public func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        state.withLock { s in
            guard index == 0, offset + UInt64(width.bytes) <= UInt64(Self.scratchSize) else { return }
            LittleEndian.store(value, into: &s.scratch, at: Int(offset), count: width.bytes)
        }
    }
}

extension PCITestVirtualFunction: DeviceStateSnapshotting {
    /// The VF's config space (command, MSI-less header state) and its scratch BAR.
    public struct Snapshot: Sendable, Hashable, Codable {
        var config: ConfigSpace
        var scratch: [UInt8]
    }

    public func snapshot() -> Snapshot { state.withLock { Snapshot(config: $0.config, scratch: $0.scratch) } }

    public func restore(_ snapshot: Snapshot) throws(DeviceStateError) {
        try state.withLock { s throws(DeviceStateError) in
            try Self.check(snapshot, fits: s.config, device: name)
            s.config = snapshot.config
            s.scratch = snapshot.scratch
        }
    }

    /// Throws unless `snapshot` fits a VF whose config space has `layout`'s layout.
    static func check(_ snapshot: Snapshot, fits layout: ConfigSpace, device: String) throws(DeviceStateError) {
        try layout.checkLayout(of: snapshot.config, device: device)
        guard snapshot.scratch.count == scratchSize else {
            throw .layoutMismatch(device: device, reason: "\(snapshot.scratch.count) scratch bytes, not \(scratchSize)")
        }
    }
}
