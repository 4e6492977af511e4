import CLinux
import VMMBase

/// Why KVM_RUN returned, decoded from kvm_run into plain values.
public enum VCPUExit: Hashable, Sendable {
    /// IN/OUT (or INS/OUTS with `count` > 1). The data lives in the kvm_run mapping at
    /// `dataOffset`; `KVMRunArea.complete(_:with:)` moves it to and from the handler.
    case portIO(PortIOExit)
    /// An access to guest-physical memory that no slot backs.
    case mmio(MMIOExit)
    /// HLT (only without an in-kernel LAPIC; with one, KVM waits in the kernel).
    case halt
    /// Triple fault or similar: the CPU shut down.
    case shutdown
    /// PSCI/ACPI-style request from the guest (reset, shutdown, crash).
    case systemEvent(SystemEvent)
    /// KVM could not emulate something; `data` is `internal.data[0..<ndata]`.
    case internalError(suberror: UInt32, data: [UInt64])
    /// VM entry failed (bad guest state); the hardware reason and the host CPU.
    case failEntry(hardwareReason: UInt64, cpu: UInt32)
    /// Exit reason KVM_EXIT_UNKNOWN with the hardware reason.
    case unknown(hardwareReason: UInt64)
    /// KVM_EXIT_IOAPIC_EOI (split irqchip only): the local APIC took an EOI for a vector that a
    /// level-triggered route of the userspace IOAPIC delivers; the IOAPIC must see it.
    case ioapicEOI(vector: UInt8)
    /// KVM_RUN returned EINTR (a signal or immediate_exit) or KVM_EXIT_INTR.
    case interrupted
    /// A reason this decoder does not interpret (debug, IRQ window, hypercall, ...).
    case other(reason: UInt32)
    /// kvm_run held values that fail the bounds checks; nothing was accessed.
    case malformed(KVMExitError)
}

public struct PortIOExit: Hashable, Sendable {
    public enum Direction: Hashable, Sendable {
        /// IN: the guest reads; the VMM fills the data.
        case read
        /// OUT: the guest writes; the VMM consumes the data.
        case write
    }
    public var direction: Direction
    public var port: UInt16
    public var width: AccessWidth
    /// Number of `width`-sized items (string I/O); at least 1.
    public var count: UInt32
    /// Byte offset of the first item inside the kvm_run mapping.
    public var dataOffset: Int

    public init(direction: Direction, port: UInt16, width: AccessWidth, count: UInt32, dataOffset: Int) {
        self.direction = direction
        self.port = port
        self.width = width
        self.count = count
        self.dataOffset = dataOffset
    }
}

public struct MMIOExit: Hashable, Sendable {
    public var address: UInt64
    /// 1 through 8 bytes (KVM splits accesses that cross pages into odd sizes).
    public var length: Int
    public var isWrite: Bool
    /// For writes: the `length` bytes the guest wrote, little-endian. 0 for reads.
    public var data: UInt64

    public init(address: UInt64, length: Int, isWrite: Bool, data: UInt64) {
        self.address = address
        self.length = length
        self.isWrite = isWrite
        self.data = data
    }
}

public struct SystemEvent: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        case shutdown, reset, crash
        case other(UInt32)
    }
    public var kind: Kind
    public var data: [UInt64]

    public init(kind: Kind, data: [UInt64] = []) {
        self.kind = kind
        self.data = data
    }

    init(rawType: UInt32, data: [UInt64]) {
        switch rawType {
        case UInt32(KVM_SYSTEM_EVENT_SHUTDOWN): kind = .shutdown
        case UInt32(KVM_SYSTEM_EVENT_RESET): kind = .reset
        case UInt32(KVM_SYSTEM_EVENT_CRASH): kind = .crash
        default: kind = .other(rawType)
        }
        self.data = data
    }
}

/// A kvm_run value that fails a bounds or sanity check.
public enum KVMExitError: Error, Hashable, Sendable {
    /// The mapping is smaller than struct kvm_run.
    case runAreaTooSmall(size: Int, needed: Int)
    case invalidPortIODirection(UInt8)
    case invalidPortIOSize(UInt8)
    case invalidPortIOCount(UInt32)
    /// The data (`size` x `count` bytes at `offset`) is not inside the mapping after kvm_run.
    case portIODataOutOfBounds(offset: UInt64, size: Int, count: UInt32, mappingSize: Int)
    case invalidMMIOLength(UInt32)
}
