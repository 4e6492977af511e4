/// A function some of whose BAR registers are doorbells: a write there only tells the device
/// "look now" (a virtio queue kick), so a hypervisor may catch it in the kernel (a KVM
/// ioeventfd), signal the doorbell's eventfd and resume the vCPU without an exit. The device's
/// own thread waits on that eventfd and runs what the trapped write runs; where no hypervisor
/// catches the write (no KVM, qtest), the write reaches `barWrite` as any other.
public protocol DoorbellBARs: PCIFunction {
    /// The doorbells inside BAR `index` (0-5), at offsets inside the BAR.
    func doorbells(ofBAR index: Int) -> [Doorbell]
}

public struct Doorbell: Sendable, Hashable {
    /// Offset inside the BAR of the doorbell register.
    public var offset: UInt64
    /// Bytes a write must have to ring it: 1, 2, 4 or 8.
    public var length: UInt32
    /// When set, only a write of this value rings it (others reach `barWrite`).
    public var dataMatch: UInt64?
    /// The eventfd the device waits on; the device keeps it open while it lists the doorbell.
    public var eventDescriptor: Int32

    public init(offset: UInt64, length: UInt32, dataMatch: UInt64? = nil, eventDescriptor: Int32) {
        self.offset = offset
        self.length = length
        self.dataMatch = dataMatch
        self.eventDescriptor = eventDescriptor
    }
}
