import HostOS

/// What the host's IOMMUs offer device assignment, from sysfs and the kernel's interrupt list.
///
/// Interrupt remapping is read from two places, because they answer different questions:
/// - the hardware's capability, per unit: an Intel VT-d unit's Extended Capability register
///   (/sys/class/iommu/dmarN/intel-iommu/ecap, bit 3 "IR", VT-d spec 11.4.3); AMD-Vi units
///   (ivhdN) do not expose theirs in sysfs, so they stay unknown;
/// - whether the kernel turned it on: its interrupt chips are then the remapping ones, named
///   "IR-IO-APIC", "IR-PCI-MSI", "IR-PCI-MSIX-..." in /proc/interrupts (x86: the remapping
///   domains' names, Intel and AMD alike). That is the one that decides, as VFIO type1 asks the
///   kernel the same thing (IOMMU_CAP_INTR_REMAP) before it accepts a group.
public struct IOMMUState: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable {
        case intelVTd = "intel-vt-d"
        case amdVi = "amd-vi"
        case other
    }

    public struct Unit: Hashable, Sendable {
        /// The /sys/class/iommu entry: "dmar0", "ivhd0".
        public var name: String
        public var kind: Kind
        /// The unit's interrupt-remapping capability; nil when sysfs does not say.
        public var interruptRemappingCapable: Bool?
        public init(name: String, kind: Kind, interruptRemappingCapable: Bool?) {
            self.name = name
            self.kind = kind
            self.interruptRemappingCapable = interruptRemappingCapable
        }
    }

    /// Every IOMMU unit the kernel registered (/sys/class/iommu).
    public var units: [Unit]
    /// Whether the kernel put devices in IOMMU groups (/sys/kernel/iommu_groups is not empty):
    /// an IOMMU that is present but off (no intel_iommu=on) registers no groups.
    public var hasGroups: Bool
    /// The kernel remaps interrupts (an "IR-" interrupt chip in /proc/interrupts).
    public var interruptRemappingEnabled: Bool
    /// The allow_unsafe_interrupts parameter of the interface VFIO goes through (vfio_iommu_type1's,
    /// or iommufd's) is set: it accepts groups without interrupt remapping.
    public var unsafeInterruptsAllowed: Bool
    /// The VFIO interface the kernel offers, and Switchyard takes (the newest).
    public var vfioInterface: VFIOInterface

    /// How a VMM reaches VFIO on this kernel (HostOS's rule).
    public typealias VFIOInterface = HostOS.VFIOInterface

    public init(units: [Unit], hasGroups: Bool, interruptRemappingEnabled: Bool, unsafeInterruptsAllowed: Bool,
                vfioInterface: VFIOInterface = .container) {
        self.units = units
        self.hasGroups = hasGroups
        self.interruptRemappingEnabled = interruptRemappingEnabled
        self.unsafeInterruptsAllowed = unsafeInterruptsAllowed
        self.vfioInterface = vfioInterface
    }

    /// DMA isolation is on: there are units and the kernel made groups.
    public var isEnabled: Bool { !units.isEmpty && hasGroups }

    /// Reads sysfs through `sysfs` and the text of /proc/interrupts.
    public static func read(sysfs: some SysfsReader, procInterrupts: String,
                            procDevices: ProcDevices = ProcDevices(parsing: "")) throws(HostDevicesError) -> IOMMUState {
        let files = SysfsFiles(reader: sysfs)
        var units: [Unit] = []
        for name in try files.entries("class/iommu") {
            let ecapPath = "class/iommu/\(name)/intel-iommu/ecap"
            if let ecap = try files.attribute(ecapPath) {
                let digits = ecap.hasPrefix("0x") ? String(ecap.dropFirst(2)) : ecap
                guard let value = UInt64(digits, radix: 16) else { throw .malformed(path: ecapPath, value: ecap) }
                units.append(Unit(name: name, kind: .intelVTd, interruptRemappingCapable: value & (1 << 3) != 0))
            } else if !(try files.entries("class/iommu/\(name)/amd-iommu")).isEmpty {
                units.append(Unit(name: name, kind: .amdVi, interruptRemappingCapable: nil))
            } else {
                units.append(Unit(name: name, kind: .other, interruptRemappingCapable: nil))
            }
        }
        let misc = try files.entries("class/misc")
        let interface = VFIOInterface.offered(iommufdDevice: misc.contains("iommu"), containerDevice: misc.contains("vfio"),
                                              devices: procDevices)
        let module = interface == .iommufd ? "iommufd" : "vfio_iommu_type1"
        let unsafe = try files.attribute("module/\(module)/parameters/allow_unsafe_interrupts")
        return IOMMUState(
            units: units,
            hasGroups: !(try files.entries("kernel/iommu_groups")).isEmpty,
            interruptRemappingEnabled: interruptChipsRemap(procInterrupts),
            unsafeInterruptsAllowed: unsafe == "Y" || unsafe == "1",
            vfioInterface: interface)
    }

    /// Any interrupt in /proc/interrupts is delivered through a remapping chip ("IR-...").
    static func interruptChipsRemap(_ text: String) -> Bool {
        text.split(separator: "\n").contains { line in
            line.split(separator: " ").contains { $0.hasPrefix("IR-") }
        }
    }
}

/// A `SysfsReader` whose errors are `HostDevicesError`s.
struct SysfsFiles<Reader: SysfsReader> {
    let reader: Reader
    func attribute(_ path: String) throws(HostDevicesError) -> String? {
        do { return try reader.attribute(path) } catch { throw .system(error) }
    }
    func entries(_ path: String) throws(HostDevicesError) -> [String] {
        do { return try reader.entries(path) } catch { throw .system(error) }
    }
    func linkName(_ path: String) throws(HostDevicesError) -> String? {
        do { return try reader.linkName(path) } catch { throw .system(error) }
    }
    func linkTarget(_ path: String) throws(HostDevicesError) -> String? {
        do { return try reader.linkTarget(path) } catch { throw .system(error) }
    }
}
