import CLinux
import Foundation
import HostOS
import Testing
import VMMBase
@testable import VFIO

/// The request numbers and argument layouts of the real implementation, checked against the
/// kernel's own header: numbers from the `_IO(VFIO_TYPE, VFIO_BASE + n)` lines of
/// /usr/include/linux/vfio.h, encoded here as _IO does (no direction, no size: type << 8 | nr),
/// and struct layouts as the C compiler lays out the header's structs.
@Suite struct VFIORequestNumberTests {
    /// `NAME -> n` from every `#define NAME _IO(VFIO_TYPE, VFIO_BASE + n)` line of the header.
    static func headerRequests() throws -> [String: UInt] {
        let header = try String(contentsOfFile: "/usr/include/linux/vfio.h", encoding: .utf8)
        var result: [String: UInt] = [:]
        let pattern = try NSRegularExpression(pattern: #"#define\s+(VFIO_\w+)\s+_IO\(VFIO_TYPE,\s*VFIO_BASE\s*\+\s*(\d+)\)"#)
        for match in pattern.matches(in: header, range: NSRange(header.startIndex..., in: header)) {
            let name = String(header[Range(match.range(at: 1), in: header)!])
            result[name] = UInt(header[Range(match.range(at: 2), in: header)!])!
        }
        return result
    }

    /// _IO(type, nr) = (_IOC_NONE << 30) | (0 << 16) | (type << 8) | nr, with VFIO_TYPE ';' and VFIO_BASE 100.
    static func encodeIO(_ n: UInt) -> UInt { UInt(UInt8(ascii: ";")) << 8 | (100 + n) }

    @Test func everyRequestWeIssueIsTheHeadersIOEncoding() throws {
        let header = try Self.headerRequests()
        let ours: [(String, UInt)] = [
            ("VFIO_GET_API_VERSION", VFIORequest.getAPIVersion), ("VFIO_CHECK_EXTENSION", VFIORequest.checkExtension),
            ("VFIO_SET_IOMMU", VFIORequest.setIOMMU), ("VFIO_GROUP_GET_STATUS", VFIORequest.groupGetStatus),
            ("VFIO_GROUP_SET_CONTAINER", VFIORequest.groupSetContainer),
            ("VFIO_GROUP_UNSET_CONTAINER", VFIORequest.groupUnsetContainer),
            ("VFIO_GROUP_GET_DEVICE_FD", VFIORequest.groupGetDeviceFD), ("VFIO_DEVICE_GET_INFO", VFIORequest.deviceGetInfo),
            ("VFIO_DEVICE_GET_REGION_INFO", VFIORequest.deviceGetRegionInfo),
            ("VFIO_DEVICE_GET_IRQ_INFO", VFIORequest.deviceGetIRQInfo), ("VFIO_DEVICE_SET_IRQS", VFIORequest.deviceSetIRQs),
            ("VFIO_DEVICE_RESET", VFIORequest.deviceReset),
            ("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", VFIORequest.deviceGetPCIHotResetInfo),
            ("VFIO_DEVICE_PCI_HOT_RESET", VFIORequest.devicePCIHotReset), ("VFIO_IOMMU_GET_INFO", VFIORequest.iommuGetInfo),
            ("VFIO_IOMMU_MAP_DMA", VFIORequest.iommuMapDMA), ("VFIO_IOMMU_UNMAP_DMA", VFIORequest.iommuUnmapDMA),
        ]
        for (name, value) in ours {
            let n = try #require(header[name], "\(name) not found in linux/vfio.h")
            #expect(value == Self.encodeIO(n), "\(name): 0x\(String(value, radix: 16)) != _IO(';', 100 + \(n))")
        }
        // Spot values, so the encoding itself is pinned: 0x3B64 and the shared 0x3B70 (nr 12).
        #expect(VFIORequest.getAPIVersion == 0x3B64)
        #expect(VFIORequest.iommuGetInfo == 0x3B70 && VFIORequest.deviceGetPCIHotResetInfo == 0x3B70)
    }

    /// iommufd and the device cdev's bind and attach are newer than this host's headers (Debian
    /// 12's are 6.1): the numbers are pinned from Linux 6.12's <linux/iommufd.h> (IOMMUFD_TYPE ';',
    /// IOMMUFD_CMD_IOAS_ALLOC 0x81, IOAS_IOVA_RANGES 0x84, IOAS_MAP 0x85, IOAS_UNMAP 0x86) and
    /// <linux/vfio.h> (VFIO_BASE + 18 and + 19), all _IO.
    @Test func iommufdRequestsAreTheNewerHeadersIOEncodings() throws {
        #expect(VFIORequest.deviceBindIOMMUFD == Self.encodeIO(18) && VFIORequest.deviceBindIOMMUFD == 0x3B76)
        #expect(VFIORequest.deviceAttachIOMMUFDPageTable == Self.encodeIO(19))
        #expect([VFIORequest.ioasAlloc, VFIORequest.ioasIOVARanges, VFIORequest.ioasMap, VFIORequest.ioasUnmap]
                == [0x3B81, 0x3B84, 0x3B85, 0x3B86])
        // Where this host's header is new enough to name them, it agrees.
        let header = try Self.headerRequests()
        for (name, n) in [("VFIO_DEVICE_BIND_IOMMUFD", UInt(18)), ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", 19)] {
            if let found = header[name] { #expect(found == n, "\(name)") }
        }
        // The structs (all u32 fields, then u64s on their natural alignment).
        #expect(VFIOLayout.bindIOMMUFDSize == 16 && VFIOLayout.attachPageTableSize == 12 && VFIOLayout.ioasAllocSize == 12)
        #expect(VFIOLayout.ioasIOVARangesSize == 32 && VFIOLayout.ioasMapSize == 40 && VFIOLayout.ioasUnmapSize == 24)
    }

    @Test func argumentLayoutsAreTheCompilersLayoutOfTheHeaderStructs() {
        #expect(VFIOLayout.groupStatusSize == MemoryLayout<vfio_group_status>.size)
        #expect(VFIOLayout.deviceInfoSize == MemoryLayout<vfio_device_info>.size)
        #expect(VFIOLayout.regionInfoSize == MemoryLayout<vfio_region_info>.size)
        #expect(MemoryLayout<vfio_region_info>.offset(of: \.index) == 8)
        #expect(MemoryLayout<vfio_region_info>.offset(of: \.cap_offset) == 12)
        #expect(MemoryLayout<vfio_region_info>.offset(of: \.size) == 16)
        #expect(MemoryLayout<vfio_region_info>.offset(of: \.offset) == 24)
        #expect(VFIOLayout.irqInfoSize == MemoryLayout<vfio_irq_info>.size)
        #expect(VFIOLayout.irqSetHeaderSize == MemoryLayout<vfio_irq_set>.size)
        #expect(VFIOLayout.hotResetInfoHeaderSize == MemoryLayout<vfio_pci_hot_reset_info>.size)
        #expect(VFIOLayout.dependentDeviceSize == MemoryLayout<vfio_pci_dependent_device>.size)
        #expect(VFIOLayout.hotResetHeaderSize == MemoryLayout<vfio_pci_hot_reset>.size)
        #expect(VFIOLayout.iommuInfoSize == MemoryLayout<vfio_iommu_type1_info>.size)
        #expect(MemoryLayout<vfio_iommu_type1_info>.offset(of: \.iova_pgsizes) == 8)
        #expect(MemoryLayout<vfio_iommu_type1_info>.offset(of: \.cap_offset) == 16)
        #expect(VFIOLayout.dmaMapSize == MemoryLayout<vfio_iommu_type1_dma_map>.size)
        #expect(MemoryLayout<vfio_iommu_type1_dma_map>.offset(of: \.vaddr) == 8)
        #expect(MemoryLayout<vfio_iommu_type1_dma_map>.offset(of: \.iova) == 16)
        #expect(VFIOLayout.dmaUnmapSize == MemoryLayout<vfio_iommu_type1_dma_unmap>.size)
        #expect(MemoryLayout<vfio_region_info_cap_sparse_mmap>.size == 16)
        #expect(MemoryLayout<vfio_region_sparse_mmap_area>.size == 16)
        #expect(MemoryLayout<vfio_iommu_type1_info_cap_iova_range>.size == 16)
        #expect(MemoryLayout<vfio_info_cap_header>.size == 8)
    }

    @Test func setIRQsEncodesFlagsAsTheHeaderDefinesThem() {
        let trigger = VFIOIRQRequest(index: VFIOPCIIRQ.msix, start: 2, .trigger(eventfds: [7, nil])).encoded
        #expect(trigger[u32: 0] == 28)
        #expect(trigger[u32: 4] == UInt32(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER))
        #expect(trigger[u32: 8] == UInt32(VFIO_PCI_MSIX_IRQ_INDEX) && trigger[u32: 12] == 2 && trigger[u32: 16] == 2)
        #expect(trigger[u32: 20] == 7 && trigger[u32: 24] == UInt32(bitPattern: -1))
        let disable = VFIOIRQRequest(index: VFIOPCIIRQ.msi, .disable).encoded
        #expect(disable[u32: 4] == UInt32(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER) && disable[u32: 16] == 0)
        let resample = VFIOIRQRequest(index: VFIOPCIIRQ.intx, .unmaskOnEventfd(9)).encoded
        #expect(resample[u32: 4] == UInt32(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK))
        #expect(resample[u32: 16] == 1 && resample[u32: 20] == 9)
        let mask = VFIOIRQRequest(index: VFIOPCIIRQ.intx, .mask(count: 1)).encoded
        #expect(mask[u32: 4] == UInt32(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK))
        // The index constants are the header's.
        #expect(VFIOPCIIRQ.intx == UInt32(VFIO_PCI_INTX_IRQ_INDEX) && VFIOPCIIRQ.request == UInt32(VFIO_PCI_REQ_IRQ_INDEX))
        #expect(VFIOPCIRegion.config == UInt32(VFIO_PCI_CONFIG_REGION_INDEX) && VFIOPCIRegion.vga == UInt32(VFIO_PCI_VGA_REGION_INDEX))
    }

    @Test func regionInfoCapabilityChainDecodesAtTheHeadersOffsets() {
        // A BAR with an MSI-X table page left out: region info, then a sparse-mmap capability with
        // two areas, then a type capability, chained by `next` as the kernel builds it.
        let sparseAt = MemoryLayout<vfio_region_info>.size
        let areasAt = sparseAt + MemoryLayout<vfio_region_info_cap_sparse_mmap>.size
        let typeAt = areasAt + 2 * MemoryLayout<vfio_region_sparse_mmap_area>.size
        var b = IoctlBuffer.withArgsz(typeAt + MemoryLayout<vfio_region_info_cap_type>.size)
        b[u32: 4] = UInt32(VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS)
        b[u32: MemoryLayout<vfio_region_info>.offset(of: \.index)!] = 0
        b[u32: MemoryLayout<vfio_region_info>.offset(of: \.cap_offset)!] = UInt32(sparseAt)
        b[u64: MemoryLayout<vfio_region_info>.offset(of: \.size)!] = 0x4000
        b[u64: MemoryLayout<vfio_region_info>.offset(of: \.offset)!] = 0
        b[u16: sparseAt] = UInt16(VFIO_REGION_INFO_CAP_SPARSE_MMAP)
        b[u32: sparseAt + 4] = UInt32(typeAt)
        b[u32: sparseAt + MemoryLayout<vfio_region_info_cap_sparse_mmap>.offset(of: \.nr_areas)!] = 2
        b[u64: areasAt] = 0
        b[u64: areasAt + 8] = 0x2000
        b[u64: areasAt + 16] = 0x3000
        b[u64: areasAt + 24] = 0x1000
        b[u16: typeAt] = UInt16(VFIO_REGION_INFO_CAP_TYPE)
        b[u32: typeAt + MemoryLayout<vfio_region_info_cap_type>.offset(of: \.type)!] = UInt32(VFIO_REGION_TYPE_GFX)
        b[u32: typeAt + MemoryLayout<vfio_region_info_cap_type>.offset(of: \.subtype)!] = UInt32(VFIO_REGION_SUBTYPE_GFX_EDID)
        let info = VFIORegionInfo(decoding: b)
        #expect(info.readable && !info.writable && info.mappable && info.size == 0x4000)
        #expect(info.mappableAreas == [VFIOMappableArea(offset: 0, size: 0x2000), VFIOMappableArea(offset: 0x3000, size: 0x1000)])
        #expect(info.regionType == VFIORegionType(type: 1, subtype: 1))

        // A chain that points back at itself ends instead of looping.
        b[u32: typeAt + 4] = UInt32(sparseAt)
        #expect(b.capabilities(first: UInt32(sparseAt)).count == 2)
    }
}

/// The real implementation on this host. Where /dev/vfio is absent (this development machine)
/// the tests check the real errors; where it is present, that the container answers.
@Suite struct VFIOHostErrorTests {
    @Test func openingTheContainerNamesTheModuleToLoadOrAnswersAPIVersion0() throws {
        let host = VFIOHost()
        if FileSystem.exists("/dev/vfio/vfio") {
            let container = try host.openContainer()
            #expect(try container.apiVersion() == 0)
            return
        }
        do {
            _ = try host.openContainer()
            Issue.record("opened a container without /dev/vfio/vfio")
        } catch {
            #expect(error.reason == .vfioNotLoaded)
            #expect(error.errno == .noSuchFileOrDirectory)
            #expect(error.description.contains("/dev/vfio/vfio"))
            #expect(error.description.contains("modprobe vfio-pci"))
        }
    }

    @Test func openingAGroupWithoutVFIONamesTheModuleAndAMissingGroupTheBinding() throws {
        let missingGroup = 987_654
        if !FileSystem.exists("/dev/vfio/vfio") {
            do { _ = try VFIOHost().openGroup(missingGroup); Issue.record("opened a group without VFIO") } catch {
                #expect(error.reason == .vfioNotLoaded)
            }
        }
        // A /dev/vfio with the container but not the group: the fix is binding the device.
        let root = try FileSystem.makeTemporaryDirectory(prefix: "switchyard-vfio")
        defer { try? FileSystem.removeTree(root) }
        try FileSystem.writeFile(root + "/vfio", [])
        do {
            _ = try VFIOHost(devicePath: root).openGroup(missingGroup)
            Issue.record("opened a group that does not exist")
        } catch {
            #expect(error.reason == .groupMissing(group: missingGroup))
            #expect(error.description.contains("switchyard host bind BDF --group"))
        }
    }

    /// Seen in the rig (vfio-refusals): host= a PF still on nvme, alone in its group, has no
    /// /dev/vfio/N at all (vfio-pci makes the node when it binds a member), so the open fails
    /// ENOENT rather than the group being "not viable"; the error names the member and its
    /// driver from sysfs (/sys/kernel/iommu_groups/N/devices/BDF -> device, its driver link).
    @Test func aMissingGroupNamesItsDevicesOnHostDrivers() throws {
        let root = try FileSystem.makeTemporaryDirectory(prefix: "switchyard-vfio")
        defer { try? FileSystem.removeTree(root) }
        try FileSystem.writeFile(root + "/vfio", [])
        let sysfs = root + "/sys"
        try FileSystem.makeDirectories(sysfs + "/kernel/iommu_groups/5/devices")
        try FileSystem.makeDirectories(sysfs + "/bus/pci/drivers/nvme")
        try FileSystem.makeDirectories(sysfs + "/devices/pci0000:00/0000:01:00.0")
        try FileSystem.createSymbolicLink(at: sysfs + "/devices/pci0000:00/0000:01:00.0/driver", to: "../../../bus/pci/drivers/nvme")
        try FileSystem.createSymbolicLink(at: sysfs + "/kernel/iommu_groups/5/devices/0000:01:00.0",
                                          to: "../../../../devices/pci0000:00/0000:01:00.0")
        do {
            _ = try VFIOHost(devicePath: root, sysfsPath: sysfs).openGroup(5)
            Issue.record("opened a group with no /dev/vfio node")
        } catch {
            #expect(error.reason == .groupMissing(group: 5, offenders: ["0000:01:00.0 (nvme)"]))
            #expect(error.errno == .noSuchFileOrDirectory)
            #expect(error.description.contains("no device of group 5 is bound to vfio-pci (on host drivers: 0000:01:00.0 (nvme))"))
            #expect(error.description.contains("switchyard host bind BDF --group"))
        }
    }

    /// iommufd is chosen where the kernel has it: /dev/iommu, and the "vfio-dev" character major
    /// in /proc/devices (drivers/vfio/device_cdev.c registers it only with
    /// CONFIG_VFIO_DEVICE_CDEV); a kernel with only one of them (Debian 12's 6.1 has neither,
    /// bookworm-backports' 6.12 has the group interface only) gets the container.
    @Test func theAutomaticChoiceTakesIOMMUFDOnlyWithDeviceCdevs() throws {
        let root = try FileSystem.makeTemporaryDirectory(prefix: "switchyard-vfio")
        defer { try? FileSystem.removeTree(root) }
        let withCdevs = ProcDevices(parsing: "Character devices:\n  1 mem\n 10 misc\n239 vfio-dev\n\nBlock devices:\n  8 sd\n")
        let without = ProcDevices(parsing: "Character devices:\n  1 mem\n 10 misc\n\nBlock devices:\n  8 vfio-dev\n")
        #expect(withCdevs.hasVFIODeviceCdevs && !without.hasVFIODeviceCdevs, "a block major of that name does not count")
        func chosen(_ devices: ProcDevices) -> String {
            String(describing: type(of: VFIOHost.automatic(devicePath: root, iommuPath: root + "/iommu", devices: devices)))
        }
        #expect(chosen(withCdevs) == "VFIOHost", "device cdevs without /dev/iommu")
        try FileSystem.writeFile(root + "/iommu", [])
        #expect(chosen(without) == "VFIOHost", "/dev/iommu without device cdevs")
        #expect(chosen(withCdevs) == "IOMMUFDHost")
        // This host: its own /proc/devices parses (a kernel always has "mem").
        #expect(ProcDevices.read().characterDevices.contains("mem"))
    }

    /// Under iommufd a device is its cdev, named in sysfs (/sys/bus/pci/devices/BDF/vfio-dev/vfioN);
    /// a device that has none is not on vfio-pci, and the error says to bind it. A group with a
    /// member on a host driver is refused before any bind, naming it.
    @Test func iommufdRefusalsNameTheFix() throws {
        let root = try FileSystem.makeTemporaryDirectory(prefix: "switchyard-vfio")
        defer { try? FileSystem.removeTree(root) }
        let sysfs = root + "/sys"
        try FileSystem.makeDirectories(sysfs + "/kernel/iommu_groups/5/devices")
        try FileSystem.makeDirectories(sysfs + "/bus/pci/devices/0000:01:00.0")
        // A regular file in place of /dev/iommu: the IOAS allocation reaches the kernel, which says ENOTTY.
        try FileSystem.writeFile(root + "/iommu", [])
        let host = IOMMUFDHost(devicePath: root, iommuPath: root + "/iommu", sysfsPath: sysfs)
        do { _ = try host.openContainer(); Issue.record("allocated an IOAS on a regular file") } catch {
            #expect(error.operation == "IOMMU_IOAS_ALLOC" && error.errno == .inappropriateIOControl)
        }
        let ioas = IOMMUFDAddressSpace(try FileDescriptor.open(root + "/iommu", .readWrite), ioas: 1)
        let group = try host.openGroup(5)
        #expect(try group.status() == VFIOGroupStatus(viable: true, containerSet: false))
        try group.setContainer(ioas)
        do { _ = try group.openDevice("0000:01:00.0"); Issue.record("opened a device without a cdev") } catch {
            #expect(error.description.contains("has no VFIO device node"))
            #expect(error.description.contains("switchyard host bind 0000:01:00.0"))
        }
        // A member on nvme: not viable, named.
        try FileSystem.makeDirectories(sysfs + "/bus/pci/drivers/nvme")
        try FileSystem.makeDirectories(sysfs + "/devices/pci0000:00/0000:01:00.1")
        try FileSystem.createSymbolicLink(at: sysfs + "/devices/pci0000:00/0000:01:00.1/driver", to: "../../../bus/pci/drivers/nvme")
        try FileSystem.createSymbolicLink(at: sysfs + "/kernel/iommu_groups/5/devices/0000:01:00.1",
                                          to: "../../../../devices/pci0000:00/0000:01:00.1")
        do { try host.openGroup(5).setContainer(ioas); Issue.record("a group with a member on nvme was attached") } catch {
            #expect(error.reason == .groupNotViable(group: 5, offenders: ["0000:01:00.1 (nvme)"]))
        }
    }

    @Test func aContainerThatIsNotVFIOFailsWithTheKernelsErrno() throws {
        // A regular file in place of /dev/vfio/vfio: the ioctl reaches the kernel and fails ENOTTY.
        let root = try FileSystem.makeTemporaryDirectory(prefix: "switchyard-vfio")
        defer { try? FileSystem.removeTree(root) }
        try FileSystem.writeFile(root + "/vfio", [])
        let container = try VFIOHost(devicePath: root).openContainer()
        do {
            _ = try container.apiVersion()
            Issue.record("VFIO_GET_API_VERSION succeeded on a regular file")
        } catch {
            #expect(error.errno == .inappropriateIOControl)
            #expect(error.operation == "VFIO_GET_API_VERSION")
        }
    }

    @Test func theIOMMUGroupOfAHostDeviceOrWhyThereIsNone() throws {
        let host = VFIOHost()
        let device = try #require(PCIAddress(bus: 0, device: 0, function: 0))
        let link = "/sys/bus/pci/devices/\(device)/iommu_group"
        if FileSystem.exists("/sys/bus/pci/devices/\(device)") {
            if let target = try? FileSystem.readLink(link) {
                #expect(try host.iommuGroup(of: device) == Int(target.split(separator: "/").last!))
            } else {
                do { _ = try host.iommuGroup(of: device); Issue.record("a group without an iommu_group link") } catch {
                    #expect(error.reason == .noIOMMUGroup(device: "0000:00:00.0"))
                    #expect(error.description.contains("intel_iommu=on"))
                }
            }
        }
        let absent = try #require(PCIAddress(bus: 0xfe, device: 31, function: 7))
        do { _ = try host.iommuGroup(of: absent); Issue.record("found a group for an absent device") } catch {
            #expect(error.description.contains("no PCI device 0000:fe:1f.7"))
        }
    }
}

/// The devices a non-viable group names, read from a sysfs tree laid out as the kernel's
/// (Documentation/ABI/testing/sysfs-kernel-iommu_groups: /sys/kernel/iommu_groups/N/devices/BDF
/// links to the device, whose `driver` link names its driver).
@Suite struct VFIOGroupOffenderTests {
    @Test func devicesOnOtherDriversAreNamedAndVFIOPCIAndBridgesAreNot() throws {
        let sysfs = try FileSystem.makeTemporaryDirectory(prefix: "switchyard-sysfs")
        defer { try? FileSystem.removeTree(sysfs) }
        let devices = sysfs + "/devices/pci0000:00"
        let group = sysfs + "/kernel/iommu_groups/12/devices"
        try FileSystem.makeDirectories(group)
        for driver in ["vfio-pci", "igb", "pcieport", "nvme"] { try FileSystem.makeDirectories(sysfs + "/bus/pci/drivers/" + driver) }
        for (bdf, driver) in [("0000:01:00.0", "vfio-pci"), ("0000:01:00.1", "igb"), ("0000:00:1c.0", "pcieport"),
                              ("0000:01:00.2", nil), ("0000:01:00.3", "nvme")] as [(String, String?)] {
            try FileSystem.makeDirectories(devices + "/" + bdf)
            if let driver { try FileSystem.createSymbolicLink(at: devices + "/" + bdf + "/driver", to: "../../../bus/pci/drivers/" + driver) }
            try FileSystem.createSymbolicLink(at: group + "/" + bdf, to: "../../../../devices/pci0000:00/" + bdf)
        }
        let fd = try FileDescriptor.open("/dev/null", .readOnly)
        let offenders = VFIOHostGroup(number: 12, descriptor: fd, sysfsPath: sysfs).offenders()
        #expect(offenders == ["0000:01:00.1 (igb)", "0000:01:00.3 (nvme)"])
    }
}
