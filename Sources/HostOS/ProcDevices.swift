/// /proc/devices: the character and block device majors the kernel has registered, by name.
public struct ProcDevices: Hashable, Sendable {
    /// Names under "Character devices:" ("misc", "vfio-dev", ...).
    public var characterDevices: Set<String>

    /// Parses the file's text: a "Character devices:" section, then "Block devices:", each line
    /// a major number and a name.
    public init(parsing text: String) {
        var names: Set<String> = []
        var inCharacter = false
        for line in text.split(separator: "\n") {
            if line.hasSuffix("devices:") {
                inCharacter = line.hasPrefix("Character")
                continue
            }
            let fields = line.split(separator: " ", maxSplits: 1)
            if inCharacter, fields.count == 2, Int(fields[0]) != nil { names.insert(String(fields[1])) }
        }
        characterDevices = names
    }

    /// This host's, or none when it cannot be read.
    public static func read(path: String = "/proc/devices") -> ProcDevices {
        ProcDevices(parsing: (try? FileSystem.readFile(path)).map { String(decoding: $0, as: UTF8.self) } ?? "")
    }

    /// VFIO's device cdevs (/dev/vfio/devices/vfioN, CONFIG_VFIO_DEVICE_CDEV) have their major.
    public var hasVFIODeviceCdevs: Bool { characterDevices.contains("vfio-dev") }
}

/// How a VMM reaches VFIO on a kernel: the newest interface it offers, which Switchyard takes.
public enum VFIOInterface: String, Hashable, Sendable {
    /// Neither /dev/vfio/vfio nor /dev/iommu: vfio-pci is not loaded.
    case none
    /// The type1 container, /dev/vfio/vfio (a misc device "vfio").
    case container
    /// iommufd, /dev/iommu (misc device "iommu"), with VFIO device cdevs (the "vfio-dev"
    /// character major; Linux 6.6+ built with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV).
    case iommufd

    /// The one rule: iommufd needs its device and VFIO's device cdevs (/proc/devices' major,
    /// registered only with CONFIG_VFIO_DEVICE_CDEV: the vfio-dev class in sysfs exists
    /// without it); else the container where its device exists. `devices` is read only when
    /// the iommufd device exists.
    public static func offered(iommufdDevice: Bool, containerDevice: Bool,
                               devices: @autoclosure () -> ProcDevices) -> VFIOInterface {
        if iommufdDevice && devices().hasVFIODeviceCdevs { return .iommufd }
        return containerDevice ? .container : .none
    }
}
