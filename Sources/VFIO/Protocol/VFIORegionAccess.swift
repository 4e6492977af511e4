import HostOS
import VMMBase

// Region-relative access, bounded once here so no caller computes device-fd offsets itself.
extension VFIODeviceIO {
    /// The absolute device-fd offset of `offset..<offset+count` inside `region`, or an error
    /// when the range is not inside the region (checked arithmetic: offsets may come from a guest).
    public func deviceOffset(region: VFIORegionInfo, at offset: UInt64, count: Int) throws(VFIOError) -> UInt64 {
        let (end, endOverflow) = offset.addingReportingOverflow(UInt64(count))
        let (absolute, absOverflow) = region.offset.addingReportingOverflow(offset)
        guard count >= 0, !endOverflow, !absOverflow, end <= region.size else {
            throw VFIOError(.invalidRequest("offset 0x\(String(offset, radix: 16)) + \(count) is outside region \(region.index) "
                                            + "(size 0x\(String(region.size, radix: 16)))"),
                            operation: "region access", subject: "device \(name)")
        }
        return absolute
    }

    /// Reads `count` bytes at `offset` inside `region` (short reads are an error).
    public func read(region: VFIORegionInfo, at offset: UInt64, count: Int) throws(VFIOError) -> [UInt8] {
        let absolute = try deviceOffset(region: region, at: offset, count: count)
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { raw in
            Result { () throws(VFIOError) in try read(atDeviceOffset: absolute, into: raw) }
        }.get()
        guard n == count else {
            throw VFIOError(.invalidRequest("short read: \(n) of \(count) bytes at 0x\(String(offset, radix: 16)) in region \(region.index)"),
                            operation: "pread", subject: "device \(name)")
        }
        return bytes
    }

    /// Writes `bytes` at `offset` inside `region` (short writes are an error).
    public func write(region: VFIORegionInfo, at offset: UInt64, _ bytes: [UInt8]) throws(VFIOError) {
        let absolute = try deviceOffset(region: region, at: offset, count: bytes.count)
        let n = try bytes.withUnsafeBytes { raw in
            Result { () throws(VFIOError) in try write(atDeviceOffset: absolute, from: raw) }
        }.get()
        guard n == bytes.count else {
            throw VFIOError(.invalidRequest("short write: \(n) of \(bytes.count) bytes at 0x\(String(offset, radix: 16)) in region \(region.index)"),
                            operation: "pwrite", subject: "device \(name)")
        }
    }

    /// Reads a little-endian value of 1, 2, 4 or 8 bytes (`size` 1...8).
    public func readLittleEndian(region: VFIORegionInfo, at offset: UInt64, size: Int) throws(VFIOError) -> UInt64 {
        LittleEndian.load(try read(region: region, at: offset, count: size), at: 0, count: size)
    }

    /// Writes the low `size` bytes of `value`, little-endian.
    public func writeLittleEndian(region: VFIORegionInfo, at offset: UInt64, size: Int, _ value: UInt64) throws(VFIOError) {
        var bytes = [UInt8](repeating: 0, count: size)
        LittleEndian.store(value, into: &bytes, at: 0, count: size)
        try write(region: region, at: offset, bytes)
    }

    /// mmaps one mappable area of `region` (offsets inside the region).
    public func map(region: VFIORegionInfo, area: VFIOMappableArea,
                    protection: MemoryMapping.Protection = .readWrite) throws(VFIOError) -> MemoryMapping {
        guard region.mappableAreas.contains(area), let size = Int(exactly: area.size) else {
            throw VFIOError(.invalidRequest("area 0x\(String(area.offset, radix: 16))+0x\(String(area.size, radix: 16)) "
                                            + "is not a mappable area of region \(region.index)"),
                            operation: "mmap", subject: "device \(name)")
        }
        let absolute = try deviceOffset(region: region, at: area.offset, count: size)
        return try map(atDeviceOffset: absolute, size: size, protection: protection)
    }
}
