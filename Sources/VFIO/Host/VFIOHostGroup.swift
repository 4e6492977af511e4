import HostOS
import VMMBase

/// A group over /dev/vfio/N.
final class VFIOHostGroup: VFIOGroupIO {
    let number: Int
    let descriptor: FileDescriptor
    private let sysfsPath: String

    init(number: Int, descriptor: consuming FileDescriptor, sysfsPath: String) {
        self.number = number
        self.descriptor = descriptor
        self.sysfsPath = sysfsPath
    }

    private var subject: String { "group \(number)" }

    func status() throws(VFIOError) -> VFIOGroupStatus {
        var b = IoctlBuffer.withArgsz(VFIOLayout.groupStatusSize)
        do { try b.call(descriptor, VFIORequest.groupGetStatus) } catch {
            throw VFIOError(.kernel, operation: "VFIO_GROUP_GET_STATUS", subject: subject, system: error)
        }
        let flags = b[u32: 4]
        return VFIOGroupStatus(viable: flags & VFIOLayout.groupFlagViable != 0,
                               containerSet: flags & VFIOLayout.groupFlagContainerSet != 0)
    }

    /// Checks viability first, so the error lists the devices still on other drivers.
    func setContainer(_ container: any VFIOContainerIO) throws(VFIOError) {
        guard let host = container as? VFIOHostContainer else {
            throw VFIOError(.invalidRequest("the container is not a /dev/vfio/vfio container"),
                            operation: "VFIO_GROUP_SET_CONTAINER", subject: subject)
        }
        guard try status().viable else {
            throw VFIOError(.groupNotViable(group: number, offenders: offenders()), operation: "VFIO_GROUP_SET_CONTAINER",
                            subject: subject)
        }
        var fd = host.descriptor.rawValue
        do { try ioctl(descriptor, VFIORequest.groupSetContainer, &fd) } catch {
            let reason: VFIOError.Reason = switch error.errno {
            // A second group joining a container whose type1 IOMMU is set is attached now.
            case .notPermitted: .noInterruptRemapping(group: number)
            case .busy: .busy
            default: .kernel
            }
            throw VFIOError(reason, operation: "VFIO_GROUP_SET_CONTAINER", subject: subject, system: error)
        }
        host.joined(group: number)
    }

    func openDevice(_ name: String) throws(VFIOError) -> any VFIODeviceIO {
        var cName = Array(name.utf8CString).map { UInt8(bitPattern: $0) }
        let fd: Int32
        do {
            fd = try cName.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) in try ioctl(descriptor, VFIORequest.groupGetDeviceFD, raw.baseAddress) }
            }.get()
        } catch {
            let reason: VFIOError.Reason = switch error.errno {
            case .busy: .busy
            case .invalidArgument, .noDevice:
                .invalidRequest("\(name) is not a device of group \(number) (ls /sys/kernel/iommu_groups/\(number)/devices)")
            default: .kernel
            }
            throw VFIOError(reason, operation: "VFIO_GROUP_GET_DEVICE_FD", subject: "device \(name) in \(subject)",
                            system: error)
        }
        return VFIOHostDevice(name: name, descriptor: FileDescriptor(adopting: fd))
    }

    /// The group's devices bound to a driver that makes it not viable, as "BDF (driver)".
    func offenders() -> [String] { Self.offenders(group: number, sysfsPath: sysfsPath) }

    /// The devices of group `group` on a driver that makes it not viable, as "BDF (driver)"
    /// (also why /dev/vfio/N is missing: no member is on vfio-pci). vfio-pci, pci-stub and
    /// pcieport (bridges) are the drivers the kernel accepts.
    static func offenders(group number: Int, sysfsPath: String) -> [String] {
        let dir = sysfsPath + "/kernel/iommu_groups/\(number)/devices"
        guard let devices = try? FileSystem.listDirectory(dir) else { return [] }
        return devices.sorted().compactMap { device in
            guard let link = try? FileSystem.readLink(dir + "/" + device + "/driver"),
                  let driver = link.split(separator: "/").last.map(String.init),
                  !["vfio-pci", "pci-stub", "pcieport"].contains(driver)
            else { return nil }
            return "\(device) (\(driver))"
        }
    }
}
