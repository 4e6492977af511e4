import PCI
import VMMBase

/// The guest's BARs of an assigned function: the kind (I/O, 32- or 64-bit memory,
/// prefetchable) from the device's own BAR registers, the size from VFIO's region info. The
/// guest's addresses are ours: sizing and programming happen in the emulated BARs only.
public enum VirtualBARs {
    /// Why a region cannot be offered as a BAR; the BAR is left out and the reason logged.
    public struct Skipped: Sendable, Hashable {
        public let index: Int
        public let reason: String
    }

    /// - Parameter regionSizes: VFIO region sizes of BARs 0-5 (0 for an unimplemented BAR).
    public static func descriptors(host: [UInt8], regionSizes: [UInt64]) -> (bars: [BARDescriptor?], skipped: [Skipped]) {
        var bars = [BARDescriptor?](repeating: nil, count: 6)
        var skipped: [Skipped] = []
        var index = 0
        while index < 6 {
            let size = index < regionSizes.count ? regionSizes[index] : 0
            let low = LittleEndian.load(host, at: ConfigSpace.barOffset(index), count: 4)
            let kind: BARDescriptor.Kind
            if low & 1 == 1 {
                kind = .io
            } else if (low >> 1) & 3 == 2 {
                kind = .memory64(prefetchable: low & 8 != 0)
            } else {
                kind = .memory32(prefetchable: low & 8 != 0)
            }
            let descriptor = BARDescriptor(kind, size: size)
            let slots = descriptor.is64Bit ? 2 : 1
            defer { index += slots }
            guard size != 0 else { continue }
            if let reason = problem(descriptor, at: index) {
                skipped.append(Skipped(index: index, reason: reason))
                continue
            }
            bars[index] = descriptor
        }
        return (bars, skipped)
    }

    /// The rules of `ConfigSpace.defineBAR` (PCI Local Bus 3.0, 6.2.5.1), checked first so a
    /// device that breaks them loses that BAR with a reason rather than the assignment.
    private static func problem(_ bar: BARDescriptor, at index: Int) -> String? {
        if bar.size.nonzeroBitCount != 1 { return "size \(bar.size) is not a power of two" }
        if bar.is64Bit && index == 5 { return "a 64-bit BAR in the last slot" }
        if bar.isIO && !(4...256).contains(bar.size) { return "an I/O BAR of \(bar.size) bytes (4 to 256 allowed)" }
        if !bar.isIO && bar.size < 16 { return "a memory BAR below 16 bytes" }
        if !bar.is64Bit && bar.size > 1 << 31 { return "a 32-bit BAR above 2 GiB" }
        return nil
    }
}
