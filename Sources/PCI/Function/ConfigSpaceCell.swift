import Synchronization
import VMMBase

/// A config space behind a lock: the shared core of simple functions. Devices with extra
/// state keep their own `Mutex` around a struct that contains a `ConfigSpace`.
public final class ConfigSpaceCell: Sendable {
    private let state: Mutex<ConfigSpace>

    public init(_ config: ConfigSpace) {
        var config = config
        config.captureResetState()
        state = Mutex(config)
    }

    public func read(_ offset: Int, width: AccessWidth) -> UInt32 {
        state.withLock { $0.read(offset, width: width) }
    }

    public func write(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        state.withLock { $0.write(offset, width: width, value: value) }
    }

    public func snapshot() -> ConfigSpace { state.withLock { $0 } }

    public func reset() { state.withLock { $0.reset() } }

    public func withLock<R>(_ body: (inout ConfigSpace) -> R) -> R { state.withLock { body(&$0) } }
}
