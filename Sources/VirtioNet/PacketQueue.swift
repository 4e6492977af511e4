import Glibc
import HostNetwork
import HostOS

/// One queue of a host packet backend as virtio-net uses it: frames behind a 12-byte vnet
/// header, moved by single readv/writev calls straight from and into guest buffers, and an
/// fd that polls readable when a frame waits. TapQueue (tap and macvtap) is the real one.
public protocol PacketQueue: AnyObject, Sendable {
    /// Polled for readability by the device's I/O thread.
    var pollDescriptor: Int32 { get }
    /// Sets the vnet header size and the offloads the guest accepts (at DRIVER_OK).
    func configure(headerSize: Int, offloads: TapOffloads) throws(SystemError)
    /// Sends one frame; nil when the host queue is full.
    func writev(_ buffers: UnsafeBufferPointer<iovec>) throws(SystemError) -> Int?
    /// Receives one frame; nil when none waits.
    func readv(_ buffers: UnsafeBufferPointer<iovec>) throws(SystemError) -> Int?
    /// Joins or leaves the queues of a multi-queue backend the host steers frames to (a queue
    /// pair the driver does not use is left out).
    func setAttached(_ attached: Bool) throws(SystemError)
}

extension TapQueue: PacketQueue {
    public var pollDescriptor: Int32 { descriptor.rawValue }

    public func configure(headerSize: Int, offloads: TapOffloads) throws(SystemError) {
        try setVnetHeaderSize(headerSize)
        try setOffloads(offloads)
    }
}
