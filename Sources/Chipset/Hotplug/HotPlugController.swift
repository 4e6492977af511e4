import PCI
import VMMBase

/// What happened in a hot-plug slot that the machine must act on.
public enum HotPlugEvent: Sendable, Hashable {
    /// The guest removed power from the slot after an unplug request (or the removal was a
    /// surprise): the machine detaches the device, frees its resources, reports DEVICE_DELETED.
    case ejected(device: UInt8)
    /// The guest powered the slot on; the device is ready to be configured.
    case poweredOn(device: UInt8)
    /// The guest refused or cancelled a removal (e.g. pressed the button again within 5 s).
    case unplugCancelled(device: UInt8)
}

/// How a removal is requested.
public enum UnplugMode: Sendable, Hashable {
    /// Attention button: the guest is asked and powers the slot off when it is done.
    case attentionButton
    /// Surprise removal (needs the slot's hot-plug-surprise capability): the device is gone
    /// at once; the guest is told afterwards.
    case surprise
}

public enum HotPlugError: Error, Hashable, CustomStringConvertible {
    case noSuchSlot(controller: String, device: UInt8)
    case slotOccupied(controller: String, device: UInt8)
    case slotEmpty(controller: String, device: UInt8)
    case surpriseNotSupported(controller: String)
    case unplugInProgress(controller: String, device: UInt8)

    public var description: String {
        switch self {
        case .noSuchSlot(let c, let d): "\(c) has no hot-plug slot for device \(d)"
        case .slotOccupied(let c, let d): "slot \(d) of \(c) is occupied"
        case .slotEmpty(let c, let d): "slot \(d) of \(c) is empty"
        case .surpriseNotSupported(let c): "\(c) does not advertise hot-plug surprise; use the attention button"
        case .unplugInProgress(let c, let d): "an unplug of slot \(d) of \(c) is already in progress"
        }
    }
}

/// A hot-plug controller on a bridge or port: PCIe native (one slot, device 0), SHPC (up to
/// 31 slots), or ACPI. It owns slot state; the machine owns the devices. Controllers raise
/// their own interrupts (without holding their lock); state changes the machine must act on
/// come back as `HotPlugEvent` values from `takeEvents()`, which the machine calls after any
/// config write to the controller's function and after `plug`/`requestUnplug`.
public protocol HotPlugController: AnyObject, Sendable {
    /// Device numbers on the secondary bus that are hot-pluggable slots.
    var hotPlugSlots: [UInt8] { get }
    /// The machine has attached a device at `device` on the secondary bus: signal presence.
    func plug(device: UInt8) throws(HotPlugError)
    /// Ask for removal of the device at `device`.
    func requestUnplug(device: UInt8, mode: UnplugMode) throws(HotPlugError)
    /// Events since the last call.
    func takeEvents() -> [HotPlugEvent]
}
