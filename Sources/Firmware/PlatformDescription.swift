import VMMBase

/// Everything the firmware tables describe, as plain values. The machine fills it from its
/// configuration and the enumerator's assignments; the tables never look at live devices.
public struct PlatformDescription: Hashable, Sendable {
    public var oem: OEMIdentity
    public var cpus: [CPU]
    /// Guest RAM ranges (memory nodes of the device tree).
    public var memory: [AddressRange]
    public var pci: PCIHost
    public var interrupts: InterruptRouting
    public var power: PowerManagement
    public var legacy: LegacyDevices
    /// ACPI PCI hot-plug register block; nil when no bus uses ACPI hot-plug.
    public var acpiHotplug: ACPIHotplugRegisters?
    public var dmar: DMAR?
    public var hpet: HPET?
    public var layout: TableLayout
    public var deviceTree: DeviceTreeOptions

    public init(oem: OEMIdentity = OEMIdentity(), cpus: [CPU], memory: [AddressRange], pci: PCIHost,
                interrupts: InterruptRouting = InterruptRouting(), power: PowerManagement = PowerManagement(),
                legacy: LegacyDevices = LegacyDevices(), acpiHotplug: ACPIHotplugRegisters? = nil,
                dmar: DMAR? = nil, hpet: HPET? = HPET(), layout: TableLayout = TableLayout(),
                deviceTree: DeviceTreeOptions = DeviceTreeOptions()) {
        self.oem = oem
        self.cpus = cpus
        self.memory = memory
        self.pci = pci
        self.interrupts = interrupts
        self.power = power
        self.legacy = legacy
        self.acpiHotplug = acpiHotplug
        self.dmar = dmar
        self.hpet = hpet
        self.layout = layout
        self.deviceTree = deviceTree
    }

    /// Identity written into every table header.
    public struct OEMIdentity: Hashable, Sendable {
        /// Six ASCII characters.
        public var oemID: String
        /// Eight ASCII characters.
        public var oemTableID: String
        public var oemRevision: UInt32
        /// Four ASCII characters.
        public var creatorID: String
        public var creatorRevision: UInt32

        public init(oemID: String = "SWYARD", oemTableID: String = "SWYDQ35 ", oemRevision: UInt32 = 1,
                    creatorID: String = "SWYD", creatorRevision: UInt32 = 1) {
            self.oemID = oemID
            self.oemTableID = oemTableID
            self.oemRevision = oemRevision
            self.creatorID = creatorID
            self.creatorRevision = creatorRevision
        }
    }

    public struct CPU: Hashable, Sendable {
        public var apicID: UInt32
        public var enabled: Bool
        public init(apicID: UInt32, enabled: Bool = true) {
            self.apicID = apicID
            self.enabled = enabled
        }
    }

    /// One PCI host bridge (one segment): its ECAM, windows and bus hierarchy.
    public struct PCIHost: Hashable, Sendable {
        public var ecam: ECAM
        /// I/O window for devices behind the host bridge (must not cover 0x0000-0x0CFF).
        public var ioWindow: AddressRange?
        /// 32-bit MMIO window (below 4 GiB).
        public var mem32Window: AddressRange
        /// 64-bit MMIO window.
        public var mem64Window: AddressRange?
        /// Every bus below this host, root bus first or in any order; bridges link them.
        public var buses: [Bus]
        /// PCIe native hot-plug granted to the OS in _OSC (false: firmware keeps it, ACPI hot-plug).
        public var nativeHotplug: Bool
        /// SHPC controllers exist on conventional bridges (the OS may take SHPC control in _OSC).
        public var shpcPresent: Bool
        /// Device/function of the ICH9 LPC bridge on the root bus (QEMU: 00:1f.0).
        public var lpcDevfn: UInt8
        /// Legacy PIRQ routing of root-bus slots and pins to PIRQA-H.
        public var pirqRouting: PIRQRouting

        public init(ecam: ECAM, ioWindow: AddressRange?, mem32Window: AddressRange, mem64Window: AddressRange?,
                    buses: [Bus], nativeHotplug: Bool = true, shpcPresent: Bool = false,
                    lpcDevfn: UInt8 = 0xF8, pirqRouting: PIRQRouting = .q35) {
            self.ecam = ecam
            self.ioWindow = ioWindow
            self.mem32Window = mem32Window
            self.mem64Window = mem64Window
            self.buses = buses
            self.nativeHotplug = nativeHotplug
            self.shpcPresent = shpcPresent
            self.lpcDevfn = lpcDevfn
            self.pirqRouting = pirqRouting
        }

        /// The bus this host bridge decodes first.
        public var rootBus: UInt8 { ecam.busRange.lowerBound }
    }

    /// PCI Express enhanced configuration access for one segment.
    public struct ECAM: Hashable, Sendable {
        public var base: UInt64
        public var segment: UInt16
        public var busRange: ClosedRange<UInt8>

        public init(base: UInt64, segment: UInt16 = 0, busRange: ClosedRange<UInt8> = 0...255) {
            self.base = base
            self.segment = segment
            self.busRange = busRange
        }

        /// 1 MiB of configuration space per bus.
        public var range: AddressRange? {
            let buses = UInt64(busRange.upperBound) - UInt64(busRange.lowerBound) + 1
            return AddressRange(base: base &+ UInt64(busRange.lowerBound) << 20, size: buses << 20)
        }
    }

    public struct Bus: Hashable, Sendable {
        public enum Kind: Hashable, Sendable {
            /// The host bridge's root bus.
            case root
            /// Secondary bus of a PCIe root port or switch downstream port: one slot, device 0.
            case pcieDownstream
            /// A conventional bus (behind a PCI-PCI or PCIe-to-PCI bridge).
            case conventional
            /// A PCIe switch's internal bus (behind its upstream port): PCI Express, so ACPI
            /// hot-plug offers only device 0 there, as QEMU's DSDT does.
            case pcieSwitchInternal
        }

        public var number: UInt8
        public var kind: Kind
        /// The ACPI hot-plug bus selector (BNUM value) when this bus uses ACPI PCI hot-plug.
        public var acpiHotplugSelector: UInt32?
        public var devices: [Device]

        public init(number: UInt8, kind: Kind, acpiHotplugSelector: UInt32? = nil, devices: [Device] = []) {
            self.number = number
            self.kind = kind
            self.acpiHotplugSelector = acpiHotplugSelector
            self.devices = devices
        }
    }

    public struct Device: Hashable, Sendable {
        public var devfn: UInt8
        /// May be hot-unplugged (gets _EJ0 when its bus uses ACPI hot-plug).
        public var hotpluggable: Bool
        /// Set when the function is a bridge (root port, switch port, PCI-PCI bridge).
        public var secondaryBus: UInt8?

        public init(devfn: UInt8, hotpluggable: Bool = false, secondaryBus: UInt8? = nil) {
            self.devfn = devfn
            self.hotpluggable = hotpluggable
            self.secondaryBus = secondaryBus
        }

        public var slot: UInt8 { devfn >> 3 }
        public var function: UInt8 { devfn & 7 }
    }

    /// Root-bus slot/pin to PIRQ mapping. `inta[slot]` is the PIRQ (0-7 for A-H) of INTA; pins
    /// rotate within its group of four, as QEMU's q35 `_PRT` does.
    public struct PIRQRouting: Hashable, Sendable {
        public var inta: [UInt8]

        public init(inta: [UInt8]) { self.inta = inta }

        /// QEMU q35 (`build_q35_routing_table`): slots 0-23 start at E,F,G,H by slot & 3; slot 24
        /// at E; slots 25-29 at A; slot 30 (PCIe-to-PCI bridge) at E; slot 31 at A.
        public static let q35 = PIRQRouting(inta: (0..<32).map { slot -> UInt8 in
            switch slot {
            case 0..<0x18: return 4 + UInt8(slot & 3)
            case 0x18, 0x1E: return 4
            default: return 0
            }
        })

        /// PIRQ (0-7) for `slot` and `pin` (0 = INTA ... 3 = INTD).
        public func pirq(slot: UInt8, pin: UInt8) -> UInt8 {
            let head = inta[Int(slot)]
            return (head & 4) | ((head &+ pin) & 3)
        }
    }

    public struct InterruptRouting: Hashable, Sendable {
        public var localAPICAddress: UInt32
        public var ioapicID: UInt8
        public var ioapicAddress: UInt32
        public var ioapicGSIBase: UInt32
        /// GSI of PIRQA in APIC mode; PIRQA-H map to consecutive GSIs (16-23).
        public var pirqGSIBase: UInt32
        /// ISA IRQs that PCI may share: overridden as level-triggered active-high (QEMU: 5, 9, 10, 11).
        public var levelTriggeredISAIRQs: [UInt8]
        /// ISA IRQs a PIRQ link may be routed to in PIC mode (QEMU: 5, 10, 11).
        public var pirqISAChoices: [UInt32]

        public init(localAPICAddress: UInt32 = 0xFEE0_0000, ioapicID: UInt8 = 0, ioapicAddress: UInt32 = 0xFEC0_0000,
                    ioapicGSIBase: UInt32 = 0, pirqGSIBase: UInt32 = 16,
                    levelTriggeredISAIRQs: [UInt8] = [5, 9, 10, 11], pirqISAChoices: [UInt32] = [5, 10, 11]) {
            self.localAPICAddress = localAPICAddress
            self.ioapicID = ioapicID
            self.ioapicAddress = ioapicAddress
            self.ioapicGSIBase = ioapicGSIBase
            self.pirqGSIBase = pirqGSIBase
            self.levelTriggeredISAIRQs = levelTriggeredISAIRQs
            self.pirqISAChoices = pirqISAChoices
        }
    }

    /// ICH9 power management I/O (QEMU's offsets from PMBASE).
    public struct PowerManagement: Hashable, Sendable {
        public var pmBase: UInt16
        public var sciIRQ: UInt16
        /// APM control port the OS writes ACPI enable/disable to (0 when always in ACPI mode).
        public var smiCommandPort: UInt32
        public var acpiEnable: UInt8
        public var acpiDisable: UInt8
        public var resetPort: UInt16
        public var resetValue: UInt8
        /// RTC CMOS century register index (0 for none).
        public var rtcCentury: UInt8

        public init(pmBase: UInt16 = 0x600, sciIRQ: UInt16 = 9, smiCommandPort: UInt32 = 0xB2,
                    acpiEnable: UInt8 = 0x02, acpiDisable: UInt8 = 0x03,
                    resetPort: UInt16 = 0xCF9, resetValue: UInt8 = 0x06, rtcCentury: UInt8 = 0x32) {
            self.pmBase = pmBase
            self.sciIRQ = sciIRQ
            self.smiCommandPort = smiCommandPort
            self.acpiEnable = acpiEnable
            self.acpiDisable = acpiDisable
            self.resetPort = resetPort
            self.resetValue = resetValue
            self.rtcCentury = rtcCentury
        }

        public var pm1aEvent: UInt16 { pmBase }
        public var pm1aControl: UInt16 { pmBase + 0x04 }
        public var pmTimer: UInt16 { pmBase + 0x08 }
        /// ICH9_PMIO_GPE0_STS.
        public var gpe0Block: UInt16 { pmBase + 0x20 }
        public static let gpe0Length: UInt8 = 16
    }

    public struct LegacyDevices: Hashable, Sendable {
        public var serial: SerialPort?
        public var rtc: Bool
        public var i8042: Bool

        public init(serial: SerialPort? = SerialPort(), rtc: Bool = true, i8042: Bool = true) {
            self.serial = serial
            self.rtc = rtc
            self.i8042 = i8042
        }
    }

    public struct SerialPort: Hashable, Sendable {
        public var port: UInt16
        public var irq: UInt8
        public var clockFrequency: UInt32
        public init(port: UInt16 = 0x3F8, irq: UInt8 = 4, clockFrequency: UInt32 = 1_843_200) {
            self.port = port
            self.irq = irq
            self.clockFrequency = clockFrequency
        }
    }

    /// QEMU's ACPI PCI hot-plug interface (docs/specs/acpi_pci_hotplug.rst): UP 0x00, DOWN 0x04,
    /// EJ 0x08, RMV 0x0C, SEL(BNUM) 0x10, AIDX 0x14. QEMU q35 puts it at 0x0CC0 today
    /// (ACPI_PCIHP_ADDR_ICH9; 0x0CC4 in QEMU 6.1) and raises GPE0 bit 1.
    public struct ACPIHotplugRegisters: Hashable, Sendable {
        public var base: UInt16
        public var length: UInt8
        public var gpeBit: UInt8

        public init(base: UInt16 = 0x0CC0, length: UInt8 = 0x18, gpeBit: UInt8 = 1) {
            self.base = base
            self.length = length
            self.gpeBit = gpeBit
        }
    }

    /// Intel VT-d remapping hardware (DMAR).
    public struct DMAR: Hashable, Sendable {
        public var registerBase: UInt64
        /// Host address width in bits (39 or 48); the table stores width - 1.
        public var hostAddressWidth: UInt8
        public var interruptRemapping: Bool
        public var x2apicOptOut: Bool
        /// Where the IOAPIC sits for the DRHD device scope (its interrupt requester ID): QEMU's
        /// Q35_PSEUDO_BUS_PLATFORM 0xFF and Q35_PSEUDO_DEVFN_IOAPIC 0x00, i.e. FF:00.0.
        public var ioapicBus: UInt8
        public var ioapicDevfn: UInt8

        public init(registerBase: UInt64 = 0xFED9_0000, hostAddressWidth: UInt8 = 39, interruptRemapping: Bool = true,
                    x2apicOptOut: Bool = false, ioapicBus: UInt8 = 0xFF, ioapicDevfn: UInt8 = 0x00) {
            self.registerBase = registerBase
            self.hostAddressWidth = hostAddressWidth
            self.interruptRemapping = interruptRemapping
            self.x2apicOptOut = x2apicOptOut
            self.ioapicBus = ioapicBus
            self.ioapicDevfn = ioapicDevfn
        }
    }

    public struct HPET: Hashable, Sendable {
        public var base: UInt64
        /// Event timer block ID (QEMU: 0x8086A201).
        public var blockID: UInt32
        public init(base: UInt64 = 0xFED0_0000, blockID: UInt32 = 0x8086_A201) {
            self.base = base
            self.blockID = blockID
        }
    }

    /// Where the tables will live in guest memory (their pointers are absolute).
    public struct TableLayout: Hashable, Sendable {
        /// The RSDP sits here; the other tables follow, 16-byte aligned.
        public var base: UInt64
        /// Room for all tables together.
        public var size: UInt64
        public init(base: UInt64 = 0x000E_0000, size: UInt64 = 0x20000) {
            self.base = base
            self.size = size
        }
    }

    public struct DeviceTreeOptions: Hashable, Sendable {
        public var model: String
        public var compatible: String
        /// An MSI controller node (with `msi-controller`) and `msi-map` on the PCI host.
        public var msiController: MSIController?
        public init(model: String = "Switchyard q35", compatible: String = "switchyard,q35",
                    msiController: MSIController? = nil) {
            self.model = model
            self.compatible = compatible
            self.msiController = msiController
        }
    }

    public struct MSIController: Hashable, Sendable {
        public var compatible: String
        public var base: UInt64
        public var size: UInt64
        public init(compatible: String = "switchyard,msi", base: UInt64 = 0xFEE0_0000, size: UInt64 = 0x10_0000) {
            self.compatible = compatible
            self.base = base
            self.size = size
        }
    }
}

extension PlatformDescription {
    /// A plain q35: ECAM at 0xB0000000 for buses 0-255, I/O window 0xC000-0xFFFF, 32-bit window
    /// 0xC0000000-0xFEBFFFFF, 64-bit window of 512 GiB at 512 GiB; RAM below 2 GiB, the rest above
    /// 4 GiB. Root bus: host bridge 00.0, LPC 1f.0, SATA 1f.2, SMBus 1f.3, plus `rootDevices`.
    public static func q35(cpuCount: Int = 1, memorySize: UInt64 = 1 << 30,
                           rootDevices: [Device] = []) -> PlatformDescription {
        let low = min(memorySize, 0x8000_0000)
        var memory = [AddressRange(base: 0, size: low)!]
        if memorySize > low { memory.append(AddressRange(base: 0x1_0000_0000, size: memorySize - low)!) }
        var devices = [Device(devfn: 0x00)] + rootDevices + [Device(devfn: 0xF8), Device(devfn: 0xFA), Device(devfn: 0xFB)]
        devices.sort { $0.devfn < $1.devfn }
        return PlatformDescription(
            cpus: (0..<cpuCount).map { CPU(apicID: UInt32($0)) },
            memory: memory,
            pci: PCIHost(ecam: ECAM(base: 0xB000_0000),
                         ioWindow: AddressRange(base: 0xC000, last: 0xFFFF),
                         mem32Window: AddressRange(base: 0xC000_0000, last: 0xFEBF_FFFF)!,
                         mem64Window: AddressRange(base: 0x80_0000_0000, size: 0x80_0000_0000),
                         buses: [Bus(number: 0, kind: .root, devices: devices)]))
    }
}
