import CPCI
import VMMBase

/// Host PCI discovery through libpci (pciutils): `pci_scan_bus`, the device fields and
/// `pci_fill_info`. libpci's fatal errors come back as `HostDevicesError.libpci` instead of
/// exiting the process (see the CPCI shim).
///
/// Thread safety: each call uses its own `pci_access` and a thread-local error trampoline, so
/// calls from different threads are independent.
public enum LibPCI {
    /// Every PCI function libpci sees, sorted by address. Driver and IOMMU group come from
    /// libpci's string properties; SR-IOV counts are not filled (see `HostPCIDiscovery`).
    /// Devices in domains above 0xffff (VMD) are skipped: `PCIAddress` cannot name them.
    public static func scan() throws(HostDevicesError) -> [HostPCIDevice] {
        var message = [CChar](repeating: 0, count: 256)
        guard let access = sy_pci_open_and_scan(&message, Int32(message.count)) else {
            throw .libpci(cString(message))
        }
        defer { pci_cleanup(access) }

        let wanted = PCI_FILL_IDENT | PCI_FILL_CLASS | PCI_FILL_CLASS_EXT | PCI_FILL_SUBSYS
            | PCI_FILL_DRIVER | PCI_FILL_IOMMU_GROUP
        var result: [HostPCIDevice] = []
        var next = access.pointee.devices
        while let dev = next {
            next = dev.pointee.next
            let known = sy_pci_fill_info(dev, Int32(wanted), &message, Int32(message.count))
            if known < 0 { throw .libpci(cString(message)) }
            let d = dev.pointee
            guard d.domain >= 0, d.domain <= 0xFFFF,
                  let address = PCIAddress(segment: UInt16(d.domain), bus: d.bus, device: d.dev, function: d.func)
            else { continue }
            let hasExt = known & Int32(PCI_FILL_CLASS_EXT) != 0
            let hasSubsys = known & Int32(PCI_FILL_SUBSYS) != 0
            var device = HostPCIDevice(
                address: address, vendorID: d.vendor_id, deviceID: d.device_id,
                subsystemVendorID: hasSubsys ? d.subsys_vendor_id : 0,
                subsystemID: hasSubsys ? d.subsys_id : 0,
                classCode: UInt32(d.device_class) << 8 | UInt32(hasExt ? d.prog_if : 0),
                revision: hasExt ? d.rev_id : 0)
            if known & Int32(PCI_FILL_DRIVER) != 0, let p = pci_get_string_property(dev, UInt32(PCI_FILL_DRIVER)) {
                device.driver = String(cString: p)
            }
            if known & Int32(PCI_FILL_IOMMU_GROUP) != 0,
               let p = pci_get_string_property(dev, UInt32(PCI_FILL_IOMMU_GROUP)) {
                device.iommuGroup = UInt32(String(cString: p))
            }
            result.append(device)
        }
        return result.sorted { $0.address < $1.address }
    }
}

/// Host PCI discovery: libpci for the device list and identities, sysfs for driver binding,
/// IOMMU group, SR-IOV counts and VF parentage.
public enum HostPCIDiscovery {
    public static func discover(sysfs: some SysfsReader = Sysfs()) throws(HostDevicesError) -> [HostPCIDevice] {
        let scanner = SysfsPCIScanner(reader: sysfs)
        var devices = try LibPCI.scan()
        for i in devices.indices {
            // sysfs is the authority for binding state: libpci leaves fields unset when it
            // does not know them, sysfs says "absent" explicitly.
            devices[i].driver = nil
            devices[i].iommuGroup = nil
            try scanner.addDetails(to: &devices[i])
        }
        return devices
    }
}

/// The NUL-terminated text in a C character buffer.
private func cString(_ buffer: [CChar]) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
