import PCI
import VMMBase

/// A capability as the host device's own config space lists it.
public struct HostCapability: Sendable, Hashable {
    public let kind: CapabilityRecord.Kind
    public let offset: Int
    /// Bytes up to the next capability above it in the same area (or the area's end): the
    /// most it can own, QEMU's rule for capabilities whose length the VMM does not know.
    public let span: Int
    /// The extended capability's version (bits 19:16 of its header); 0 for standard ones.
    public let version: UInt8
}

/// Walks the standard (from 0x34) and extended (from 0x100) capability chains of a device's
/// config bytes. Device bytes are not trusted either: a pointer out of its area, misaligned,
/// or seen before ends the walk (a loop), so a broken chain gives a short list, not a hang.
public enum HostCapabilities {
    public static func walk(_ bytes: [UInt8]) -> [HostCapability] {
        precondition(bytes.count >= ConfigSpace.conventionalSize)
        var found: [(kind: CapabilityRecord.Kind, offset: Int, version: UInt8)] = []
        let status = UInt16(bytes[Reg.status]) | UInt16(bytes[Reg.status + 1]) << 8
        if status & StatusBits.capabilityList.rawValue != 0 {
            var seen = Set<Int>()
            var next = Int(bytes[Reg.capabilitiesPointer]) & ~3
            while next >= Reg.firstCapability, next + 2 <= ConfigSpace.conventionalSize, seen.insert(next).inserted {
                found.append((.standard(bytes[next]), next, 0))
                next = Int(bytes[next + 1]) & ~3
            }
        }
        if bytes.count >= ConfigSpace.expressSize {
            var seen = Set<Int>()
            var next = Reg.extendedStart
            while next >= Reg.extendedStart, next + 4 <= ConfigSpace.expressSize, seen.insert(next).inserted {
                let header = UInt32(LittleEndian.load(bytes, at: next, count: 4))
                // An all-zero or all-ones header at 0x100 means no extended capabilities.
                guard header != 0, header != 0xFFFF_FFFF else { break }
                found.append((.extended(UInt16(header & 0xFFFF)), next, UInt8((header >> 16) & 0xF)))
                next = Int(header >> 20) & ~3
            }
        }
        return found.map { cap in
            let extended = if case .extended = cap.kind { true } else { false }
            let areaEnd = extended ? ConfigSpace.expressSize : ConfigSpace.conventionalSize
            let above = found.map(\.offset).filter { $0 > cap.offset && $0 < areaEnd }.min() ?? areaEnd
            return HostCapability(kind: cap.kind, offset: cap.offset, span: above - cap.offset, version: cap.version)
        }
    }
}
