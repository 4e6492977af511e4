import HostOS
import VMMBase

/// A device fd from VFIO_GROUP_GET_DEVICE_FD, or a device cdev bound to iommufd.
final class VFIOHostDevice: VFIODeviceIO {
    let name: String
    let descriptor: FileDescriptor

    init(name: String, descriptor: consuming FileDescriptor) {
        self.name = name
        self.descriptor = descriptor
    }

    private var subject: String { "device \(name)" }

    private func failure(_ operation: String, _ error: SystemError) -> VFIOError {
        VFIOError(error.errno == .busy ? .busy : .kernel, operation: operation, subject: subject, system: error)
    }

    /// An info ioctl whose reply may not fit: the kernel raises argsz and we ask again.
    private func query(_ request: UInt, size: Int, fill: (inout IoctlBuffer) -> Void) throws(SystemError) -> IoctlBuffer {
        var b = IoctlBuffer.withArgsz(size)
        fill(&b)
        try b.call(descriptor, request)
        let needed = Int(b[u32: 0])
        guard needed > size else { return b }
        b = IoctlBuffer.withArgsz(needed)
        fill(&b)
        try b.call(descriptor, request)
        return b
    }

    func info() throws(VFIOError) -> VFIODeviceInfo {
        do { return VFIODeviceInfo(decoding: try query(VFIORequest.deviceGetInfo, size: VFIOLayout.deviceInfoSize) { _ in }) } catch {
            throw failure("VFIO_DEVICE_GET_INFO", error)
        }
    }

    func regionInfo(_ index: UInt32) throws(VFIOError) -> VFIORegionInfo {
        do {
            return VFIORegionInfo(decoding: try query(VFIORequest.deviceGetRegionInfo, size: VFIOLayout.regionInfoSize) { $0[u32: 8] = index })
        } catch {
            throw failure("VFIO_DEVICE_GET_REGION_INFO(\(index))", error)
        }
    }

    func irqInfo(_ index: UInt32) throws(VFIOError) -> VFIOIRQInfo {
        do {
            return VFIOIRQInfo(decoding: try query(VFIORequest.deviceGetIRQInfo, size: VFIOLayout.irqInfoSize) { $0[u32: 8] = index })
        } catch {
            throw failure("VFIO_DEVICE_GET_IRQ_INFO(\(index))", error)
        }
    }

    func setIRQs(_ request: VFIOIRQRequest) throws(VFIOError) {
        var b = request.encoded
        do { try b.call(descriptor, VFIORequest.deviceSetIRQs) } catch {
            throw failure("VFIO_DEVICE_SET_IRQS(index \(request.index), \(request.operation))", error)
        }
    }

    func reset() throws(VFIOError) {
        do { try ioctl(descriptor, VFIORequest.deviceReset) } catch { throw failure("VFIO_DEVICE_RESET", error) }
    }

    func hotResetInfo() throws(VFIOError) -> [VFIOHotResetDependency] {
        // The first call has room for no device: the kernel answers ENOSPC with the count filled in.
        var b = IoctlBuffer.withArgsz(VFIOLayout.hotResetInfoHeaderSize)
        do {
            try b.call(descriptor, VFIORequest.deviceGetPCIHotResetInfo)
        } catch where error.errno == .noSpace {
            let count = Int(min(b[u32: 8], 4096))
            b = IoctlBuffer.withArgsz(VFIOLayout.hotResetInfoHeaderSize + count * VFIOLayout.dependentDeviceSize)
            do { try b.call(descriptor, VFIORequest.deviceGetPCIHotResetInfo) } catch {
                throw failure("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", error)
            }
        } catch {
            throw failure("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", error)
        }
        let count = Int(b[u32: 8])
        let devids = b[u32: 4] & VFIOLayout.hotResetFlagDeviceID != 0
        return (0..<count).compactMap { i in
            let at = VFIOLayout.hotResetInfoHeaderSize + i * VFIOLayout.dependentDeviceSize
            guard b.has(at, VFIOLayout.dependentDeviceSize) else { return nil }
            let id = b[u32: at]
            return VFIOHotResetDependency(owner: devids ? .iommufd(owned: id != VFIOLayout.hotResetDeviceNotOwned) : .group(Int(id)),
                                          address: PCIAddress(segment: b[u16: at + 4], bus: b[u8: at + 6], devfn: b[u8: at + 7]))
        }
    }

    func hotReset(groups: [any VFIOGroupIO]) throws(VFIOError) {
        var fds: [Int32] = []
        // (A cdev's caller passes no groups: its iommufd is the proof, and the array is empty.)
        for group in groups {
            guard let host = group as? VFIOHostGroup else {
                throw VFIOError(.invalidRequest("group \(group.number) is not a /dev/vfio group"),
                                operation: "VFIO_DEVICE_PCI_HOT_RESET", subject: subject)
            }
            fds.append(host.descriptor.rawValue)
        }
        var b = IoctlBuffer.withArgsz(VFIOLayout.hotResetHeaderSize + 4 * fds.count)
        b[u32: 8] = UInt32(fds.count)
        for (i, fd) in fds.enumerated() { b[u32: VFIOLayout.hotResetHeaderSize + 4 * i] = UInt32(bitPattern: fd) }
        do { try b.call(descriptor, VFIORequest.devicePCIHotReset) } catch {
            throw failure("VFIO_DEVICE_PCI_HOT_RESET", error)
        }
    }

    func read(atDeviceOffset offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VFIOError) -> Int {
        guard let at = Int64(exactly: offset) else { throw outOfRange("pread", offset) }
        do { return try descriptor.read(fromAbsoluteOffset: at, into: buffer) } catch { throw failure("pread", error) }
    }

    func write(atDeviceOffset offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(VFIOError) -> Int {
        guard let at = Int64(exactly: offset) else { throw outOfRange("pwrite", offset) }
        do { return try descriptor.write(toAbsoluteOffset: at, buffer) } catch { throw failure("pwrite", error) }
    }

    func map(atDeviceOffset offset: UInt64, size: Int, protection: MemoryMapping.Protection) throws(VFIOError) -> MemoryMapping {
        guard let at = Int64(exactly: offset) else { throw outOfRange("mmap", offset) }
        do { return try MemoryMapping(mapping: descriptor, offset: at, count: size, protection: protection) } catch {
            throw failure("mmap", error)
        }
    }

    private func outOfRange(_ operation: String, _ offset: UInt64) -> VFIOError {
        VFIOError(.invalidRequest("device offset 0x\(String(offset, radix: 16)) is out of range"), operation: operation, subject: subject)
    }
}
