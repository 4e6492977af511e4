import VMMBase

/// A function model whose state a machine snapshot carries: it names its model and gives its
/// state as a `ModelState`; a restore refuses another model's. A model that is
/// `DeviceStateSnapshotting` adopts it with its tag alone.
public protocol SnapshottableFunction: PCIFunction {
    /// The model's tag in a snapshot.
    static var snapshotModel: String { get }
    func modelState() -> ModelState
    /// Refuses another model's state (`layoutMismatch`) or one this instance cannot hold,
    /// and then changes nothing.
    func restoreModel(_ state: ModelState) throws(DeviceStateError)
}

extension SnapshottableFunction where Self: DeviceStateSnapshotting {
    public func modelState() -> ModelState { ModelState(model: Self.snapshotModel, snapshot()) }

    public func restoreModel(_ state: ModelState) throws(DeviceStateError) {
        try restore(try state.snapshot(as: Snapshot.self, model: Self.snapshotModel, device: name))
    }
}
