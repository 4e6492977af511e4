import HostOS
import Synchronization
import VMMBase

/// The real VFIO: /dev/vfio/vfio and /dev/vfio/N, groups found through sysfs.
public final class VFIOHost: VFIOKernel {
    /// Where the character devices are (/dev/vfio) and where sysfs is (/sys).
    public let devicePath: String
    public let sysfsPath: String

    public init(devicePath: String = "/dev/vfio", sysfsPath: String = "/sys") {
        self.devicePath = devicePath
        self.sysfsPath = sysfsPath
    }

    public func openContainer() throws(VFIOError) -> any VFIOContainerIO {
        let path = devicePath + "/vfio"
        do {
            return VFIOHostContainer(try FileDescriptor.open(path, .readWrite))
        } catch {
            let reason: VFIOError.Reason = error.errno == .noSuchFileOrDirectory ? .vfioNotLoaded : .kernel
            throw VFIOError(reason, operation: "open", subject: path, system: error)
        }
    }

    public func iommuGroup(of device: PCIAddress) throws(VFIOError) -> Int {
        let dir = sysfsPath + "/bus/pci/devices/\(device)"
        guard FileSystem.exists(dir) else {
            throw VFIOError(.invalidRequest("the host has no PCI device \(device) (see lspci -D)"),
                            operation: "find IOMMU group", subject: dir)
        }
        let link: String
        do {
            link = try FileSystem.readLink(dir + "/iommu_group")
        } catch {
            throw VFIOError(.noIOMMUGroup(device: "\(device)"), operation: "readlink", subject: dir + "/iommu_group",
                            system: error)
        }
        guard let name = link.split(separator: "/").last, let number = Int(name) else {
            throw VFIOError(.invalidRequest("unexpected iommu_group link \(link)"), operation: "readlink",
                            subject: dir + "/iommu_group")
        }
        return number
    }

    public func openGroup(_ number: Int) throws(VFIOError) -> any VFIOGroupIO {
        let path = devicePath + "/\(number)"
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(path, .readWrite)
        } catch {
            let reason: VFIOError.Reason = switch error.errno {
            case .noSuchFileOrDirectory:
                FileSystem.exists(devicePath + "/vfio")
                    ? .groupMissing(group: number, offenders: VFIOHostGroup.offenders(group: number, sysfsPath: sysfsPath))
                    : .vfioNotLoaded
            case .busy: .busy
            default: .kernel
            }
            throw VFIOError(reason, operation: "open", subject: path, system: error)
        }
        return VFIOHostGroup(number: number, descriptor: fd, sysfsPath: sysfsPath)
    }
}

/// A container over /dev/vfio/vfio.
final class VFIOHostContainer: VFIOContainerIO {
    let descriptor: FileDescriptor
    /// The groups put in it (for naming the group when type1 refuses for want of interrupt remapping).
    private let groups = Mutex<[Int]>([])

    init(_ descriptor: consuming FileDescriptor) { self.descriptor = descriptor }

    private var subject: String { "container /dev/vfio/vfio (fd \(descriptor.rawValue))" }

    func joined(group: Int) { groups.withLock { $0.append(group) } }

    func apiVersion() throws(VFIOError) -> Int32 {
        do { return try ioctl(descriptor, VFIORequest.getAPIVersion) } catch {
            throw VFIOError(.kernel, operation: "VFIO_GET_API_VERSION", subject: subject, system: error)
        }
    }

    func checkExtension(_ e: VFIOExtension) throws(VFIOError) -> Bool {
        do { return try ioctl(descriptor, VFIORequest.checkExtension, UInt(e.rawValue)) > 0 } catch {
            throw VFIOError(.kernel, operation: "VFIO_CHECK_EXTENSION(\(e))", subject: subject, system: error)
        }
    }

    func setIOMMU(_ type: VFIOExtension) throws(VFIOError) {
        do { try ioctl(descriptor, VFIORequest.setIOMMU, UInt(type.rawValue)) } catch {
            // type1 refuses a group whose IOMMU cannot remap interrupts with EPERM.
            let reason: VFIOError.Reason = switch error.errno {
            case .notPermitted: .noInterruptRemapping(group: groups.withLock { $0.last ?? -1 })
            case .busy: .busy
            case .invalidArgument, .noDevice: .extensionMissing(type)
            default: .kernel
            }
            throw VFIOError(reason, operation: "VFIO_SET_IOMMU(\(type))", subject: subject, system: error)
        }
    }

    func iommuInfo() throws(VFIOError) -> VFIOIOMMUInfo {
        do {
            var b = IoctlBuffer.withArgsz(VFIOLayout.iommuInfoSize)
            try b.call(descriptor, VFIORequest.iommuGetInfo)
            let needed = Int(b[u32: 0])
            if needed > VFIOLayout.iommuInfoSize {
                b = IoctlBuffer.withArgsz(needed)
                try b.call(descriptor, VFIORequest.iommuGetInfo)
            }
            return VFIOIOMMUInfo(decoding: b)
        } catch {
            throw VFIOError(.kernel, operation: "VFIO_IOMMU_GET_INFO", subject: subject, system: error)
        }
    }

    func mapDMA(_ m: VFIODMAMapping) throws(VFIOError) {
        var b = IoctlBuffer.withArgsz(VFIOLayout.dmaMapSize)
        b[u32: 4] = (m.readable ? VFIOLayout.dmaFlagRead : 0) | (m.writable ? VFIOLayout.dmaFlagWrite : 0)
        b[u64: 8] = UInt64(m.hostAddress)
        b[u64: 16] = m.iova
        b[u64: 24] = m.size
        do { try b.call(descriptor, VFIORequest.iommuMapDMA) } catch {
            // type1 says ENOSPC when dma_entry_limit is reached.
            let reason: VFIOError.Reason = error.errno == .noSpace ? .dmaMappingLimit(needed: 1, available: 0) : .kernel
            throw VFIOError(reason, operation: "VFIO_IOMMU_MAP_DMA", subject: subject + iovaRangeText(m.iova, m.size), system: error)
        }
    }

    func unmapDMA(iova: UInt64, size: UInt64) throws(VFIOError) -> UInt64 {
        var b = IoctlBuffer.withArgsz(VFIOLayout.dmaUnmapSize)
        b[u64: 8] = iova
        b[u64: 16] = size
        do { try b.call(descriptor, VFIORequest.iommuUnmapDMA) } catch {
            throw VFIOError(.kernel, operation: "VFIO_IOMMU_UNMAP_DMA", subject: subject + iovaRangeText(iova, size), system: error)
        }
        return b[u64: 16]
    }
}
