import GuestMemory
import Interrupts
import VMMBase

/// Why a bus-master access was refused. Nothing was read or written when one is thrown.
public enum DMAError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Command register bit 2 is clear: the function may not start transactions.
    case busMasterDisabled(function: String)
    /// A bridge above the function has no bus number yet, so it has no requester ID.
    case noRequesterID(function: String)
    /// The function is not placed (never was, or was unplugged).
    case disconnected
    /// A read of, or a write other than one naturally placed dword to, the interrupt window
    /// 0xFEE00000-0xFEEFFFFF, where only MSI writes are defined.
    case interruptWindow(address: UInt64, length: UInt64, isWrite: Bool)
    /// The bus address is not RAM, wraps past 2^64, or the translation refused it.
    case memory(GuestMemoryError)
    /// The port cannot lend host memory (it is not backed by guest RAM in this process).
    case hostAccessUnavailable

    public var description: String {
        switch self {
        case .busMasterDisabled(let f): "\(f): Bus Master Enable (command bit 2) is off"
        case .noRequesterID(let f): "\(f): a bridge above it has no secondary bus number, so it cannot master"
        case .disconnected: "the function is not connected to a bus"
        case .interruptWindow(let a, let l, let w):
            "\(w ? "write" : "read") of \(l) bytes at 0x\(String(a, radix: 16)) in the interrupt window (only dword MSI writes are defined)"
        case .memory(let e): e.description
        case .hostAccessUnavailable: "this DMA port cannot lend host memory"
        }
    }
}

/// A function's bus-master port: memory reads and writes it starts on the bus, checked
/// against its Bus Master Enable at the time of access, tagged with its requester ID, and
/// translated (by an IOMMU, identity without one) before they reach RAM. An MSI is a dword
/// write through it into the interrupt window.
///
/// Call it without holding the function's own lock: the port reads the function's command
/// register.
public protocol DMAPort: Sendable {
    /// The IDs this function's requests carry now; nil while it cannot master.
    var requester: DMARequester? { get }
    func read(at address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(DMAError)
    func write(at address: UInt64, from buffer: UnsafeRawBufferPointer) throws(DMAError)
    /// The host bytes behind `[address, address + length)` after the same checks as a read or
    /// write in that direction, in order (split where the translation splits), so a device can
    /// readv/writev guest buffers without a copy. Refused, like any access, when it touches the
    /// interrupt window.
    func hostSegments(at address: UInt64, length: UInt64, write: Bool) throws(DMAError) -> DMAHostSegments
    /// The same host bytes as `hostSegments`, after the same checks, passed to `body` one
    /// segment at a time: the per-I/O path, where a port can lend without building an array.
    /// A lending port holds the guest RAM it lends, so the bytes stay mapped while the port
    /// lives; like any loan they are for one I/O, under the translation checked now.
    func forEachHostSegment(at address: UInt64, length: UInt64, write: Bool,
                            _ body: (UnsafeMutableRawBufferPointer) -> Void) throws(DMAError)
    /// Runs `body`, a short run of accesses on this thread (one batch of a device's queue
    /// work), with the port's admission checked once at its start instead of at each access:
    /// a Bus Master Enable cleared or a bus number changed meanwhile applies from the next
    /// burst, as a device's requests already under way complete. The translation and the
    /// bounds are still checked per access, and an unplug waits for the burst to end, so a
    /// burst must not wait on anything outside the VMM.
    @discardableResult
    func burst<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R
}

/// Host memory a DMA port lends: valid while this value lives (it keeps the guest RAM
/// mappings alive), and only as long as the guest may still see the same translation; a
/// device uses it for one I/O and drops it.
public struct DMAHostSegments: @unchecked Sendable {
    public let buffers: [UnsafeMutableRawBufferPointer]
    /// Keeps the mappings behind `buffers` alive.
    private let owner: GuestMemory?

    public init(buffers: [UnsafeMutableRawBufferPointer], owner: GuestMemory?) {
        self.buffers = buffers
        self.owner = owner
    }

    public var totalLength: Int { buffers.reduce(0) { $0 + $1.count } }
}

extension DMAPort {
    /// Ports that admit nothing (fakes, disconnected ports) check each access as it comes.
    @discardableResult
    public func burst<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R { try body() }

    /// Ports with no guest RAM of their own (fakes, disconnected ports) lend nothing.
    public func hostSegments(at address: UInt64, length: UInt64, write: Bool) throws(DMAError) -> DMAHostSegments {
        throw .hostAccessUnavailable
    }

    public func forEachHostSegment(at address: UInt64, length: UInt64, write: Bool,
                                   _ body: (UnsafeMutableRawBufferPointer) -> Void) throws(DMAError) {
        let segments = try hostSegments(at: address, length: length, write: write)
        withExtendedLifetime(segments) { segments.buffers.forEach(body) }
    }

    public func read(at address: UInt64, count: Int) throws(DMAError) -> [UInt8] {
        precondition(count >= 0, "negative count")
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { raw in
            Result { () throws(DMAError) in try read(at: address, into: raw) }
        }.get()
        return bytes
    }

    public func write(at address: UInt64, bytes: [UInt8]) throws(DMAError) {
        try bytes.withUnsafeBytes { raw in
            Result { () throws(DMAError) in try write(at: address, from: raw) }
        }.get()
    }
}

/// The port of a function that is not placed: refuses everything.
public struct DisconnectedDMAPort: DMAPort {
    public init() {}
    public var requester: DMARequester? { nil }
    public func read(at address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(DMAError) {
        throw .disconnected
    }
    public func write(at address: UInt64, from buffer: UnsafeRawBufferPointer) throws(DMAError) {
        throw .disconnected
    }
}

/// A function that starts DMA accepts a port when the machine places it.
public protocol BusMasterFunction: PCIFunction {
    func connect(dma: any DMAPort)
}

/// The hook where an IOMMU translates a requester's bus addresses (VT-d's DMA remapping,
/// keyed by the requester ID the root complex sees).
public protocol DMATranslation: Sendable {
    func translate(_ address: UInt64, length: UInt64, write: Bool,
                   requester: RequesterID) -> Result<UInt64, TranslationFault>
    /// As `AddressTranslator.granule`: accesses are split so no piece crosses a multiple of it.
    var granule: UInt64 { get }
}

/// No IOMMU: bus addresses are guest-physical addresses.
public struct IdentityDMATranslation: DMATranslation {
    public init() {}
    public func translate(_ address: UInt64, length: UInt64, write: Bool,
                          requester: RequesterID) -> Result<UInt64, TranslationFault> {
        .success(address)
    }
    public var granule: UInt64 { .max }
}

/// One requester's view of a `DMATranslation`, so `TranslatedMemory` can split and check
/// accesses the one way it does for every translator.
struct RequesterTranslator: AddressTranslator {
    let translation: any DMATranslation
    let requester: RequesterID

    func translate(_ address: UInt64, length: UInt64, write: Bool) -> Result<UInt64, TranslationFault> {
        translation.translate(address, length: length, write: write, requester: requester)
    }
    var granule: UInt64 { translation.granule }
}
