import AddressSpace
import HostOS
import PCI
import VFIO
import VMMBase

/// A part of a BAR backed by an mmap of the device's region: the machine lays it over the BAR
/// as host memory (a KVM memory slot: no exits); accesses that still come through the VMM use
/// the same handler.
public final class MappedBARArea: Sendable {
    public let bar: Int
    /// Offset inside the BAR.
    public let offset: UInt64
    public let handler: HostMemoryHandler

    init(bar: Int, offset: UInt64, memory: SharedMapping) {
        self.bar = bar
        self.offset = offset
        handler = HostMemoryHandler(bytes: memory.bytes, owner: memory)
    }

    public var size: UInt64 { handler.size }

    func contains(_ offset: UInt64, width: AccessWidth) -> Bool {
        offset >= self.offset && offset - self.offset <= size && size - (offset - self.offset) >= UInt64(width.bytes)
    }
}

/// The regions behind an assigned function's BARs and ROM: their VFIO region info, the areas
/// mmap'd (the sparse-mmap capability honoured, the MSI-X table and PBA pages left out, since
/// the VMM traps them), and accesses through the mapping or the region's pread/pwrite.
struct AssignedBARs: Sendable {
    static let pageSize: UInt64 = 4096

    let regions: [VFIORegionInfo?]  // BARs 0-5, then the ROM
    let mapped: [MappedBARArea]

    /// Region info of BARs 0-5 and the ROM (a region the device does not have is nil).
    static func regionInfos(of device: any VFIODeviceIO) throws(VFIOError) -> [VFIORegionInfo?] {
        var regions: [VFIORegionInfo?] = []
        for index in 0...6 {
            let info = try device.regionInfo(UInt32(index))
            regions.append(info.size > 0 ? info : nil)
        }
        return regions
    }

    /// The areas of BAR `index` the guest may reach as host memory: the region's mappable
    /// areas minus the pages holding the MSI-X table or PBA (unless the kernel says the table
    /// is mappable, the sparse areas already leave them out; we cut them either way).
    static func guestMappableAreas(_ region: VFIORegionInfo, bar index: Int, msix: MSIXLayout?) -> [VFIOMappableArea] {
        var trapped: [(start: UInt64, end: UInt64)] = []
        if let msix {
            if msix.tableBAR == index { trapped.append(pageRange(msix.tableOffset, msix.tableSize)) }
            if msix.pbaBAR == index { trapped.append(pageRange(msix.pbaOffset, msix.pbaSize)) }
        }
        var areas: [VFIOMappableArea] = []
        for area in region.mappableAreas {
            guard area.offset % pageSize == 0, area.size % pageSize == 0,
                  area.offset <= region.size, region.size - area.offset >= area.size else { continue }
            var pieces = [(start: area.offset, end: area.offset + area.size)]
            for cut in trapped {
                pieces = pieces.flatMap { piece -> [(start: UInt64, end: UInt64)] in
                    guard cut.start < piece.end, cut.end > piece.start else { return [piece] }
                    return [(piece.start, max(piece.start, cut.start)), (min(piece.end, cut.end), piece.end)]
                        .filter { $0.end > $0.start }
                }
            }
            areas += pieces.map { VFIOMappableArea(offset: $0.start, size: $0.end - $0.start) }
        }
        return areas
    }

    private static func pageRange(_ offset: UInt64, _ size: UInt64) -> (start: UInt64, end: UInt64) {
        let start = offset & ~(pageSize - 1)
        let (end, overflow) = (offset + size).addingReportingOverflow(pageSize - 1)
        return (start, overflow ? .max : end & ~(pageSize - 1))
    }

    /// Maps the guest-mappable areas of every memory BAR (none with `x-no-mmap`).
    static func map(device: any VFIODeviceIO, regions: [VFIORegionInfo?], bars: [BARDescriptor?],
                    msix: MSIXLayout?, enabled: Bool) throws(VFIOError) -> [MappedBARArea] {
        guard enabled else { return [] }
        var mapped: [MappedBARArea] = []
        for index in 0..<6 {
            guard let region = regions[index], let bar = bars[index], !bar.isIO else { continue }
            for area in guestMappableAreas(region, bar: index, msix: msix) {
                guard let size = Int(exactly: area.size) else { continue }
                // A piece of a mappable area (the MSI-X pages cut out), so mapped by offset.
                let at = try device.deviceOffset(region: region, at: area.offset, count: size)
                let mapping = try device.map(atDeviceOffset: at, size: size, protection: .readWrite)
                mapped.append(MappedBARArea(bar: index, offset: area.offset, memory: SharedMapping(mapping)))
            }
        }
        return mapped
    }

    /// A guest read of BAR `index` (6: the ROM) outside the MSI-X table and PBA.
    func read(device: any VFIODeviceIO, bar index: Int, offset: UInt64, width: AccessWidth, name: String) -> UInt64 {
        if let area = mapped.first(where: { $0.bar == index && $0.contains(offset, width: width) }) {
            return area.handler.read(offset: offset - area.offset, width: width)
        }
        guard index < regions.count, let region = regions[index] else { return width.allOnes }
        do throws(VFIOError) {
            return try device.readLittleEndian(region: region, at: offset, size: width.bytes)
        } catch {
            GuestErrorLog.report(device: name, kind: "bar-read", "BAR\(index)+0x\(String(offset, radix: 16)): \(error)")
            return width.allOnes
        }
    }

    /// A guest write of BAR `index` outside the MSI-X table and PBA; the ROM is read-only.
    func write(device: any VFIODeviceIO, bar index: Int, offset: UInt64, width: AccessWidth, value: UInt64, name: String) {
        guard index < 6 else { return }
        if let area = mapped.first(where: { $0.bar == index && $0.contains(offset, width: width) }) {
            area.handler.write(offset: offset - area.offset, width: width, value: value)
            return
        }
        guard let region = regions[index] else { return }
        do throws(VFIOError) {
            try device.writeLittleEndian(region: region, at: offset, size: width.bytes, value)
        } catch {
            GuestErrorLog.report(device: name, kind: "bar-write", "BAR\(index)+0x\(String(offset, radix: 16)): \(error)")
        }
    }
}
