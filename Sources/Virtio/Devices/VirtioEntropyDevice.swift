import Synchronization
import VMMBase

/// The entropy device (virtio 1.2, 5.4) with QEMU virtio-rng's semantics: one request queue
/// of 8 entries; each chain's writable buffers are filled with random bytes from the host
/// (getrandom through the standard library) and returned with the count written.
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
        var generator = SystemRandomNumberGenerator()
        do {
            while let chain = try requests.pop() {
                let count = min(chain.writableLength, Self.maximumRequest)
                var bytes = [UInt8](repeating: 0, count: count)
                var i = 0
                while i < count {
                    withUnsafeBytes(of: generator.next() as UInt64) { random in
                        for b in random where i < count {
                            bytes[i] = b
                            i += 1
                        }
                    }
                }
                try chain.write(bytes)
                try requests.complete(chain, written: count)
            }
            try requests.interruptIfNeeded()
        } catch {
            // The queue has marked the device NEEDS_RESET and logged why; nothing more to do.
        }
    }

    public func reset() { queue.withLock { $0 = nil } }
}
