import VFIO
import VMMBase

/// The device's config space through VFIO's config region (index 7). The kernel's vfio-pci
/// virtualizes parts of it too; what it gives is "the device" to the overlay.
struct VFIOConfigRegion: HostConfigAccess {
    let device: any VFIODeviceIO
    let region: VFIORegionInfo
    let name: String

    /// The whole region at assignment (at most 4 KiB).
    func snapshot() throws(VFIOError) -> [UInt8] {
        try device.read(region: region, at: 0, count: Int(min(region.size, 4096)))
    }

    func readConfig(_ offset: Int, width: AccessWidth) -> UInt32 {
        do throws(VFIOError) {
            return UInt32(truncatingIfNeeded: try device.readLittleEndian(region: region, at: UInt64(offset), size: width.bytes))
        } catch {
            GuestErrorLog.report(device: name, kind: "config-read", "config 0x\(String(offset, radix: 16)): \(error)")
            return UInt32(truncatingIfNeeded: width.allOnes)
        }
    }

    func writeConfig(_ offset: Int, width: AccessWidth, value: UInt32) {
        do throws(VFIOError) {
            try device.writeLittleEndian(region: region, at: UInt64(offset), size: width.bytes, UInt64(value))
        } catch {
            GuestErrorLog.report(device: name, kind: "config-write", "config 0x\(String(offset, radix: 16)): \(error)")
        }
    }
}
