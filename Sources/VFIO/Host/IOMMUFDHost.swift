import HostOS
import Synchronization
import VMMBase

/// VFIO through iommufd (Linux 6.6+ with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV), the
/// kernel's successor to the type1 container: DMA maps live in an IOAS of /dev/iommu, and each
/// device is its own cdev (/dev/vfio/devices/vfioN) bound to that iommufd and attached to the
/// IOAS. The group is no longer a file: the kernel checks the group's isolation when a device
/// binds, and we check it first through sysfs to name what is in the way.
public final class IOMMUFDHost: VFIOKernel {
    public let iommuPath: String
    private let groups: VFIOHost

    public init(devicePath: String = "/dev/vfio", iommuPath: String = "/dev/iommu", sysfsPath: String = "/sys") {
        self.iommuPath = iommuPath
        groups = VFIOHost(devicePath: devicePath, sysfsPath: sysfsPath)
    }

    /// Whether this kernel offers iommufd with device cdevs (`VFIOInterface.offered`).
    /// (`devices`: this host's /proc/devices unless given; read only when /dev/iommu exists.)
    public static func available(iommuPath: String = "/dev/iommu", devices: ProcDevices? = nil) -> Bool {
        VFIOInterface.offered(iommufdDevice: FileSystem.exists(iommuPath), containerDevice: false,
                              devices: devices ?? .read()) == .iommufd
    }

    /// A new iommufd with one IOAS.
    public func openContainer() throws(VFIOError) -> any VFIOContainerIO {
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(iommuPath, .readWrite) } catch {
            throw VFIOError(error.errno == .noSuchFileOrDirectory ? .vfioNotLoaded : .kernel, operation: "open",
                            subject: iommuPath, system: error)
        }
        var b = IoctlBuffer.withArgsz(VFIOLayout.ioasAllocSize)
        do { try b.call(fd, VFIORequest.ioasAlloc) } catch {
            throw VFIOError(.kernel, operation: "IOMMU_IOAS_ALLOC", subject: iommuPath, system: error)
        }
        return IOMMUFDAddressSpace(fd, ioas: b[u32: 8])
    }

    public var usesIOMMUFD: Bool { true }

    public func iommuGroup(of device: PCIAddress) throws(VFIOError) -> Int { try groups.iommuGroup(of: device) }

    public func openGroup(_ number: Int) throws(VFIOError) -> any VFIOGroupIO {
        IOMMUFDGroup(number: number, devicePath: groups.devicePath, sysfsPath: groups.sysfsPath)
    }
}

extension VFIOHost {
    /// The host's VFIO as QEMU users would want it chosen: iommufd when the kernel has it (the
    /// interface new kernel features arrive in), the type1 container otherwise.
    public static func automatic(devicePath: String = "/dev/vfio", iommuPath: String = "/dev/iommu",
                                 sysfsPath: String = "/sys", devices: ProcDevices? = nil) -> any VFIOKernel {
        if IOMMUFDHost.available(iommuPath: iommuPath, devices: devices) {
            return IOMMUFDHost(devicePath: devicePath, iommuPath: iommuPath, sysfsPath: sysfsPath)
        }
        return VFIOHost(devicePath: devicePath, sysfsPath: sysfsPath)
    }
}

/// An IOAS: the container's role under iommufd. It has type1v2's semantics (maps at fixed IOVAs,
/// unmapped whole), so it answers the container protocol's checks for it; there is no IOMMU type
/// to set and no DMA entry limit.
final class IOMMUFDAddressSpace: VFIOContainerIO {
    let descriptor: FileDescriptor
    let ioas: UInt32

    init(_ descriptor: consuming FileDescriptor, ioas: UInt32) {
        self.descriptor = descriptor
        self.ioas = ioas
    }

    private var subject: String { "IOAS \(ioas) of /dev/iommu (fd \(descriptor.rawValue))" }

    /// The device cdevs speak VFIO API 0.
    func apiVersion() throws(VFIOError) -> Int32 { 0 }

    func checkExtension(_ e: VFIOExtension) throws(VFIOError) -> Bool { e == .type1v2 }

    func setIOMMU(_ type: VFIOExtension) throws(VFIOError) {
        guard type == .type1v2 else {
            throw VFIOError(.extensionMissing(type), operation: "VFIO_SET_IOMMU(\(type))", subject: subject)
        }
    }

    /// IOMMU_IOAS_IOVA_RANGES: the IOVAs the attached devices can all reach, and the alignment.
    func iommuInfo() throws(VFIOError) -> VFIOIOMMUInfo {
        var capacity = 8
        while true {
            var ranges = [UInt64](repeating: 0, count: 2 * capacity)
            var b = IoctlBuffer.withArgsz(VFIOLayout.ioasIOVARangesSize)
            b[u32: 4] = ioas
            b[u32: 8] = UInt32(capacity)
            let result = ranges.withUnsafeMutableBytes { raw in
                b[u64: 16] = UInt64(UInt(bitPattern: raw.baseAddress))
                return Result { () throws(SystemError) in try b.call(descriptor, VFIORequest.ioasIOVARanges) }
            }
            do { _ = try result.get() } catch where error.errno == .messageTooLong && capacity < 4096 {
                capacity = Int(b[u32: 8])
                continue
            } catch {
                throw VFIOError(.kernel, operation: "IOMMU_IOAS_IOVA_RANGES", subject: subject, system: error)
            }
            let count = min(Int(b[u32: 8]), capacity)
            let alignment = b[u64: 24]
            return VFIOIOMMUInfo(pageSizes: alignment.nonzeroBitCount == 1 ? alignment : 0,
                                 iovaRanges: (0..<count).map { VFIOIOVARange(start: ranges[2 * $0], end: ranges[2 * $0 + 1]) })
        }
    }

    func mapDMA(_ m: VFIODMAMapping) throws(VFIOError) {
        var b = IoctlBuffer.withArgsz(VFIOLayout.ioasMapSize)
        b[u32: 4] = VFIOLayout.ioasMapFixedIOVA | (m.readable ? VFIOLayout.ioasMapReadable : 0)
            | (m.writable ? VFIOLayout.ioasMapWriteable : 0)
        b[u32: 8] = ioas
        b[u64: 16] = UInt64(m.hostAddress)
        b[u64: 24] = m.size
        b[u64: 32] = m.iova
        do { try b.call(descriptor, VFIORequest.ioasMap) } catch {
            throw VFIOError(.kernel, operation: "IOMMU_IOAS_MAP", subject: subject + iovaRangeText(m.iova, m.size), system: error)
        }
    }

    func unmapDMA(iova: UInt64, size: UInt64) throws(VFIOError) -> UInt64 {
        var b = IoctlBuffer.withArgsz(VFIOLayout.ioasUnmapSize)
        b[u32: 4] = ioas
        b[u64: 8] = iova
        b[u64: 16] = size
        do { try b.call(descriptor, VFIORequest.ioasUnmap) } catch {
            throw VFIOError(.kernel, operation: "IOMMU_IOAS_UNMAP", subject: subject + iovaRangeText(iova, size), system: error)
        }
        return b[u64: 16]
    }
}

/// A group under iommufd: no file, only the sysfs view of its members. Its devices are opened
/// as cdevs, bound to the IOAS's iommufd and attached to the IOAS.
final class IOMMUFDGroup: VFIOGroupIO {
    let number: Int
    private let devicePath: String
    private let sysfsPath: String
    private let addressSpace = Mutex<IOMMUFDAddressSpace?>(nil)

    init(number: Int, devicePath: String, sysfsPath: String) {
        self.number = number
        self.devicePath = devicePath
        self.sysfsPath = sysfsPath
    }

    private var subject: String { "group \(number)" }

    /// Viable when no member is on a driver other than vfio-pci, pci-stub or pcieport (what
    /// iommufd's claim of DMA ownership at bind requires).
    func status() throws(VFIOError) -> VFIOGroupStatus {
        VFIOGroupStatus(viable: VFIOHostGroup.offenders(group: number, sysfsPath: sysfsPath).isEmpty,
                        containerSet: addressSpace.withLock { $0 != nil })
    }

    func setContainer(_ container: any VFIOContainerIO) throws(VFIOError) {
        guard let ioas = container as? IOMMUFDAddressSpace else {
            throw VFIOError(.invalidRequest("the container is not an iommufd IOAS"), operation: "attach", subject: subject)
        }
        let offenders = VFIOHostGroup.offenders(group: number, sysfsPath: sysfsPath)
        guard offenders.isEmpty else {
            throw VFIOError(.groupNotViable(group: number, offenders: offenders), operation: "VFIO_DEVICE_BIND_IOMMUFD",
                            subject: subject)
        }
        addressSpace.withLock { $0 = ioas }
    }

    /// Opens `name`'s cdev (named by /sys/bus/pci/devices/NAME/vfio-dev/), binds it to the
    /// iommufd and attaches it to the IOAS.
    func openDevice(_ name: String) throws(VFIOError) -> any VFIODeviceIO {
        guard let ioas = addressSpace.withLock({ $0 }) else {
            throw VFIOError(.invalidRequest("group \(number) is attached to no IOAS yet"), operation: "VFIO_DEVICE_BIND_IOMMUFD",
                            subject: "device \(name)")
        }
        let classDir = sysfsPath + "/bus/pci/devices/\(name)/vfio-dev"
        guard let node = (try? FileSystem.listDirectory(classDir))?.first(where: { $0.hasPrefix("vfio") }) else {
            throw VFIOError(.invalidRequest("\(name) has no VFIO device node (\(classDir) is empty): bind it to vfio-pci: "
                                            + "switchyard host bind \(name)"),
                            operation: "open", subject: "device \(name)")
        }
        let path = devicePath + "/devices/" + node
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(path, .readWrite) } catch {
            throw VFIOError(error.errno == .busy ? .busy : .kernel, operation: "open", subject: path, system: error)
        }
        var bind = IoctlBuffer.withArgsz(VFIOLayout.bindIOMMUFDSize)
        bind[u32: 8] = UInt32(bitPattern: ioas.descriptor.rawValue)
        do { try bind.call(fd, VFIORequest.deviceBindIOMMUFD) } catch {
            let reason: VFIOError.Reason = switch error.errno {
            // iommufd refuses a group whose interrupts cannot be isolated with EPERM.
            case .notPermitted: .noInterruptRemapping(group: number)
            // Another driver or another iommufd owns the group's DMA.
            case .busy: .busy
            default: .kernel
            }
            throw VFIOError(reason, operation: "VFIO_DEVICE_BIND_IOMMUFD", subject: "\(path) (\(name))", system: error)
        }
        var attach = IoctlBuffer.withArgsz(VFIOLayout.attachPageTableSize)
        attach[u32: 8] = ioas.ioas
        do { try attach.call(fd, VFIORequest.deviceAttachIOMMUFDPageTable) } catch {
            throw VFIOError(.kernel, operation: "VFIO_DEVICE_ATTACH_IOMMUFD_PT(IOAS \(ioas.ioas))", subject: "\(path) (\(name))",
                            system: error)
        }
        return VFIOHostDevice(name: name, descriptor: fd)
    }
}
