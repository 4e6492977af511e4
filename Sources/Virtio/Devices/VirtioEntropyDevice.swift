import Glibc
import Synchronization
import VMMBase

/// The entropy device (virtio 1.2, 5.4) with QEMU virtio-rng's semantics: one request queue
/// of 8 entries; each chain's writable buffers are filled with random bytes from the host
/// (getrandom through the standard library), at most 64 KiB, and returned with the count written.
public final class VirtioEntropyDevice: VirtioDevice {
    /// QEMU's virtio-rng queue size.
    public static let queueSize: UInt16 = 8
    /// Bytes given per request at most, so one huge buffer cannot keep a thread busy.
    public static let maximumRequest = 64 * 1024

    public let name: String
    public var deviceType: VirtioDeviceType { .entropy }
    public var deviceFeatures: VirtioFeatures { [] }
    public var queueMaximumSizes: [UInt16] { [Self.queueSize] }

    private let queue = Mutex<VirtQueue?>(nil)

    public init(name: String) { self.name = name }

    public func activate(_ activation: VirtioActivation) throws(VirtioActivationError) {
        guard let requests = activation.queues.first ?? nil else {
            throw VirtioActivationError("the request queue was not enabled")
        }
        queue.withLock { $0 = requests }
        // Buffers made available before DRIVER_OK get their bytes now.
        queueNotified(0)
    }

    public func queueNotified(_ index: Int) {
        guard index == 0, let requests = queue.withLock({ $0 }) else { return }
        var vectors: [iovec] = []
        var used: [UsedElement] = []
        do {
            // The random bytes go straight into the lent buffers; the chains served go back
            // with one used-index store.
            try requests.burst { () throws(VirtQueueError) in
                while let chain = try requests.popLending(.writable, into: &vectors) {
                    let written = vectors.withUnsafeBufferPointer { Self.fillWithRandomBytes($0, upTo: Self.maximumRequest) }
                    used.append(UsedElement(chain, written: UInt32(written)))
                    vectors.removeAll(keepingCapacity: true)
                }
                try used.withUnsafeBufferPointer { (u) throws(VirtQueueError) in try requests.complete(u) }
                try requests.interruptIfNeeded()
            }
        } catch {
            // The queue has marked the device NEEDS_RESET and logged why; nothing more to do.
        }
    }

    /// Fills `buffers` in order with random bytes (getrandom through the standard library), no
    /// more than `limit` in all; returns how many.
    private static func fillWithRandomBytes(_ buffers: UnsafeBufferPointer<iovec>, upTo limit: Int) -> Int {
        var generator = SystemRandomNumberGenerator()
        var filled = 0
        for buffer in buffers where filled < limit {
            guard let base = buffer.iov_base else { continue }
            let count = min(buffer.iov_len, limit - filled)
            var offset = 0
            while offset < count {
                let random = generator.next() as UInt64
                let piece = min(8, count - offset)
                withUnsafeBytes(of: random) { (base + offset).copyMemory(from: $0.baseAddress!, byteCount: piece) }
                offset += piece
            }
            filled += count
        }
        return filled
    }

    public func reset() { queue.withLock { $0 = nil } }
}
