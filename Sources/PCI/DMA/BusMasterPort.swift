import Glibc
import GuestMemory
import Interrupts
import Synchronization
import VMMBase

/// The DMA port the machine gives a placed function. Every access is admitted only while the
/// function is connected, its Bus Master Enable is set and it has a requester ID; a write into
/// the interrupt window is an MSI and goes to the interrupt sink, anything else goes through
/// the translation to guest RAM.
public final class BusMasterPort: DMAPort {
    /// Where x86 puts MSI writes: the local APICs' window (Intel SDM vol. 3, "Message Address
    /// Register Format"). DMA remapping does not translate it (VT-d spec, "Interrupt Remapping").
    public static let interruptWindow = AddressRange(base: 0xFEE0_0000, size: 0x10_0000)!

    private struct Connection {
        /// Strong, though the function holds this port too: `disconnect` breaks the cycle (the
        /// machine disconnects every port it handed out, at unplug and at teardown). A weak
        /// reference would give every function a side-table reference count, which made each
        /// retain and release of a function on the config path a slow one.
        let function: any PCIFunction
        let path: DMARequesterPath
    }

    /// The function's name, for errors and guest-error lines.
    public let name: String
    private let connection: Mutex<Connection?>
    private let memory: GuestMemory
    private let translation: any DMATranslation
    /// No IOMMU: bus addresses are guest-physical, and accesses skip the translator.
    private let identity: Bool
    private let interrupts: any InterruptSink
    /// Accesses in progress, so an unplug can wait for those admitted before it disconnected.
    private let calls = GracePeriod()

    public init(function: any PCIFunction, path: DMARequesterPath, memory: GuestMemory,
                translation: any DMATranslation, interrupts: any InterruptSink) {
        name = function.name
        connection = Mutex(Connection(function: function, path: path))
        self.memory = memory
        self.translation = translation
        identity = translation is IdentityDMATranslation
        self.interrupts = interrupts
    }

    /// From now on the port refuses everything (the function was unplugged); returns once the
    /// accesses admitted before have finished. `pause` waits between checks.
    public func disconnect(pause: () -> Void) {
        connection.withLock { $0 = nil }
        calls.waitForCallsInProgress(pause: pause)
    }

    public var requester: DMARequester? { connection.withLock { $0?.path }?.resolve() }

    /// The admission a burst on this thread holds: found through a thread-specific pointer, so
    /// the accesses inside need no change of API (the queue and its chains keep their port).
    private struct BurstGrant {
        let port: ObjectIdentifier
        let requester: DMARequester
    }

    private static let burstKey: pthread_key_t = {
        var key = pthread_key_t()
        let status = pthread_key_create(&key, nil)
        precondition(status == 0, "pthread_key_create: \(status)")
        return key
    }()

    /// See `DMAPort.burst`. A burst the port refuses admits nothing: each access inside is
    /// then refused (and reported) on its own, as outside a burst.
    @discardableResult
    public func burst<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        if heldGrant != nil { return try body() }
        let epoch = calls.enter()
        defer { calls.leave(epoch) }
        guard let requester = try? admit() else { return try body() }
        var grant = BurstGrant(port: ObjectIdentifier(self), requester: requester)
        return try withUnsafeMutablePointer(to: &grant) { (held) throws(E) -> R in
            let outer = pthread_getspecific(Self.burstKey)
            pthread_setspecific(Self.burstKey, held)
            defer { pthread_setspecific(Self.burstKey, outer) }
            return try body()
        }
    }

    public func read(at address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(DMAError) {
        try admitted { requester throws(DMAError) in
            let span = try checkedSpan(address, buffer.count)
            if let span, span.overlaps(Self.interruptWindow) {
                throw .interruptWindow(address: address, length: UInt64(buffer.count), isWrite: false)
            }
            do throws(GuestMemoryError) {
                if identity {
                    try memory.read(at: GuestAddress(address), into: buffer)
                } else {
                    try translated(for: requester).read(at: address, into: buffer)
                }
            } catch {
                throw .memory(error)
            }
        }
    }

    public func write(at address: UInt64, from buffer: UnsafeRawBufferPointer) throws(DMAError) {
        try admitted { requester throws(DMAError) in
            let span = try checkedSpan(address, buffer.count)
            if let span, span.overlaps(Self.interruptWindow) {
                guard buffer.count == 4, Self.interruptWindow.contains(span) else {
                    throw .interruptWindow(address: address, length: UInt64(buffer.count), isWrite: true)
                }
                interrupts.signal(MSIMessage(address: address, data: UInt32(littleEndian: buffer.loadUnaligned(as: UInt32.self))))
                return
            }
            do throws(GuestMemoryError) {
                if identity {
                    try memory.write(at: GuestAddress(address), from: buffer)
                } else {
                    try translated(for: requester).write(at: address, from: buffer)
                }
            } catch {
                throw .memory(error)
            }
        }
    }

    public func hostSegments(at address: UInt64, length: UInt64, write: Bool) throws(DMAError) -> DMAHostSegments {
        try admitted { requester throws(DMAError) in
            guard try checkHostAccess(at: address, length: length, write: write) else {
                return DMAHostSegments(buffers: [], owner: nil)
            }
            return DMAHostSegments(buffers: try hostBuffers(for: requester, at: address, length: length, write: write),
                                   owner: memory)
        }
    }

    /// Lends the host memory behind an access, one segment at a time, with one admission: an
    /// access within one translation granule (nearly all) is lent without an array. The port's
    /// reference to guest RAM keeps it mapped while `body` runs.
    public func forEachHostSegment(at address: UInt64, length: UInt64, write: Bool,
                                   _ body: (UnsafeMutableRawBufferPointer) -> Void) throws(DMAError) {
        try admitted { requester throws(DMAError) in
            guard try checkHostAccess(at: address, length: length, write: write) else { return }
            do throws(GuestMemoryError) {
                let target = identity ? address : try translated(for: requester).singlePiece(address, Int(length), write: write)
                if let target {
                    body(try memory.hostBuffer(at: GuestAddress(target), length: length))
                    return
                }
            } catch {
                throw .memory(error)
            }
            try hostBuffers(for: requester, at: address, length: length, write: write).forEach(body)
        }
    }

    /// The host buffers behind an admitted access, in bus order.
    private func hostBuffers(for requester: DMARequester, at address: UInt64, length: UInt64,
                             write: Bool) throws(DMAError) -> [UnsafeMutableRawBufferPointer] {
        do {
            let pieces = try translated(for: requester).pieces(address, Int(length), write: write)
            var buffers: [UnsafeMutableRawBufferPointer] = []
            buffers.reserveCapacity(pieces.count)
            for (target, _, count) in pieces {
                buffers.append(try memory.hostBuffer(at: GuestAddress(target), length: UInt64(count)))
            }
            return buffers
        } catch {
            throw .memory(error)
        }
    }

    /// Sends `message` as the function's MSI: a dword write of its data to its address. A
    /// refused one (Bus Master Enable off: MSI is a memory write) is dropped with a log line.
    public func deliver(_ message: MSIMessage) {
        if !Self.interruptWindow.contains(message.address) {
            // Still a memory write, as on real hardware (and QEMU): it lands wherever it points.
            GuestErrorLog.report(device: name, kind: "msi-address",
                                 "\(message) is outside the interrupt window \(Self.interruptWindow): delivered as a plain memory write")
        }
        var data = message.data.littleEndian
        do throws(DMAError) {
            try withUnsafeBytes(of: &data) { (raw) throws(DMAError) in try write(at: message.address, from: raw) }
        } catch {
            GuestErrorLog.report(device: name, kind: "msi", "\(message) dropped: \(error)")
        }
    }

    /// Runs `access` with the requester inside the grace period: the burst's admission when
    /// this thread is in one of this port's bursts (which holds the grace period), else a
    /// fresh one.
    @inline(__always)
    private func admitted<R>(_ access: (DMARequester) throws(DMAError) -> R) throws(DMAError) -> R {
        if let held = heldGrant { return try access(held) }
        let epoch = calls.enter()
        defer { calls.leave(epoch) }
        return try access(try admit())
    }

    /// The requester of this port's burst this thread is in, if any.
    private var heldGrant: DMARequester? {
        guard let held = pthread_getspecific(Self.burstKey)?.assumingMemoryBound(to: BurstGrant.self).pointee,
              held.port == ObjectIdentifier(self) else { return nil }
        return held.requester
    }

    /// The requester, when the function may master now.
    private func admit() throws(DMAError) -> DMARequester {
        let current = connection.withLock { c -> (function: any PCIFunction, path: DMARequesterPath)? in
            guard let c else { return nil }
            return (c.function, c.path)
        }
        guard let current else { throw .disconnected }
        let command = CommandBits(rawValue: UInt16(truncatingIfNeeded: current.function.configRead(Reg.command, width: .word)))
        guard command.contains(.busMaster) else { throw .busMasterDisabled(function: name) }
        guard let requester = current.path.resolve() else { throw .noRequesterID(function: name) }
        return requester
    }

    /// The checks of any access for a host-memory loan; false for an empty one.
    private func checkHostAccess(at address: UInt64, length: UInt64, write: Bool) throws(DMAError) -> Bool {
        guard length > 0 else { return false }
        guard let span = AddressRange(base: address, size: length), length <= UInt64(Int.max) else {
            throw .memory(.addressOverflow(address: address, length: length))
        }
        if span.overlaps(Self.interruptWindow) {
            throw .interruptWindow(address: address, length: length, isWrite: write)
        }
        return true
    }

    /// The bytes an access covers; nil for an empty access; throws when it wraps past 2^64.
    private func checkedSpan(_ address: UInt64, _ count: Int) throws(DMAError) -> AddressRange? {
        guard count > 0 else { return nil }
        guard let span = AddressRange(base: address, size: UInt64(count)) else {
            throw .memory(.addressOverflow(address: address, length: UInt64(count)))
        }
        return span
    }

    private func translated(for requester: DMARequester) -> TranslatedMemory<GuestMemory, RequesterTranslator> {
        TranslatedMemory(memory: memory, translator: RequesterTranslator(translation: translation, requester: requester.alias))
    }
}
