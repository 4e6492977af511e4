import CUdev
import VMMBase

/// A device as libudev reports it.
public struct UdevDevice: Hashable, Sendable {
    /// "/sys/devices/pci0000:00/0000:00:03.0"
    public var syspath: String
    /// "0000:00:03.0"
    public var sysname: String
    public var driver: String?
    /// udev properties (from the udev database when udevd runs, else the sysfs uevent file):
    /// PCI_SLOT_NAME, PCI_ID, PCI_CLASS, DRIVER, MODALIAS...
    public var properties: [String: String]

    /// The PCI address for a device of the "pci" subsystem.
    public var pciAddress: PCIAddress? { PCIAddress(parsing: properties["PCI_SLOT_NAME"] ?? sysname) }
}

/// A minimal libudev wrapper: enumerate the devices of one subsystem.
public enum Udev {
    public static func devices(subsystem: String) throws(HostDevicesError) -> [UdevDevice] {
        guard let udev = udev_new() else { throw .udev("udev_new failed") }
        defer { udev_unref(udev) }
        guard let enumerate = udev_enumerate_new(udev) else { throw .udev("udev_enumerate_new failed") }
        defer { udev_enumerate_unref(enumerate) }
        var rc = udev_enumerate_add_match_subsystem(enumerate, subsystem)
        if rc < 0 { throw .udev("udev_enumerate_add_match_subsystem: error \(-rc)") }
        rc = udev_enumerate_scan_devices(enumerate)
        if rc < 0 { throw .udev("udev_enumerate_scan_devices: error \(-rc)") }

        var result: [UdevDevice] = []
        var entry = udev_enumerate_get_list_entry(enumerate)
        while let e = entry {
            entry = udev_list_entry_get_next(e)
            guard let path = udev_list_entry_get_name(e),
                  let device = udev_device_new_from_syspath(udev, path)
            else { continue }
            defer { udev_device_unref(device) }
            var properties: [String: String] = [:]
            var p = udev_device_get_properties_list_entry(device)
            while let property = p {
                p = udev_list_entry_get_next(property)
                if let name = udev_list_entry_get_name(property) {
                    properties[String(cString: name)] = udev_list_entry_get_value(property).map { String(cString: $0) } ?? ""
                }
            }
            result.append(UdevDevice(
                syspath: String(cString: path),
                sysname: udev_device_get_sysname(device).map { String(cString: $0) } ?? "",
                driver: udev_device_get_driver(device).map { String(cString: $0) },
                properties: properties))
        }
        return result.sorted { $0.sysname < $1.sysname }
    }
}
