import Machine
import PCI
import VMMBase

/// `query-pci` in QEMU's schema (qapi/pci.json): the root bus with its devices, and each
/// bridge's bus numbers, windows and the devices behind it while its secondary bus is
/// numbered. Config values are what a guest reads through config cycles now; BAR addresses
/// are where the BAR decodes (-1 while it does not), as QEMU reports its mapped address.
enum QueryPCI {
    static func info(_ machine: Machine) -> JSONValue {
        let spaces = machine.guestVisibleConfigSpaces(headerOnly: true)
        let models = GuestLspci.modelsByAddress(machine)
        var ids: [ObjectIdentifier: String] = [:]
        for placed in machine.devices { ids[ObjectIdentifier(placed.function)] = placed.userID ?? "" }
        var byBus: [UInt8: [(PCIAddress, [UInt8])]] = [:]
        for (address, config) in spaces { byBus[address.bus, default: []].append((address, config)) }

        func devices(on bus: UInt8, depth: Int) -> JSONValue {
            .array((byBus[bus] ?? []).map { address, config in
                let model = models[address]
                let qdevID = model.flatMap { ids[ObjectIdentifier($0)] } ?? ""
                return device(address, config, model: model, qdevID: qdevID, depth: depth)
            })
        }

        func device(_ address: PCIAddress, _ c: [UInt8], model: (any PCIFunction)?, qdevID: String, depth: Int) -> JSONValue {
            func word(_ o: Int) -> Int64 { Int64(c[o]) | Int64(c[o + 1]) << 8 }
            func dword(_ o: Int) -> Int64 { word(o) | word(o + 2) << 16 }
            let classCode = word(0x0A)
            var classInfo: [(String, JSONValue)] = [("class", .int(classCode))]
            if let desc = classDescriptions[UInt16(classCode)] { classInfo.append(("desc", .string(desc))) }
            let headerType = c[0x0E] & 0x7F
            var id: [(String, JSONValue)] = [("device", .int(word(0x02))), ("vendor", .int(word(0x00)))]
            if headerType == 0 {
                id += [("subsystem", .int(word(0x2E))), ("subsystem-vendor", .int(word(0x2C)))]
            }
            var members: [(String, JSONValue)] = [
                ("bus", .int(Int64(address.bus))), ("slot", .int(Int64(address.device))),
                ("function", .int(Int64(address.function))),
                ("class_info", .object(classInfo)), ("id", .object(id)),
            ]
            let pin = c[0x3D]
            if pin != 0 { members.append(("irq", .int(Int64(c[0x3C])))) }
            members.append(("irq_pin", .int(Int64(pin))))
            members.append(("qdev_id", .string(qdevID)))
            if headerType == 1 {
                let secondary = c[0x19]
                let ioUpper = c[0x1C] & 0x0F == 1
                let ioBase = Int64(c[0x1C] & 0xF0) << 8 | (ioUpper ? word(0x30) << 16 : 0)
                let ioLimit = Int64(c[0x1D] & 0xF0) << 8 | 0xFFF | (ioUpper ? word(0x32) << 16 : 0)
                let memBase = (word(0x20) & 0xFFF0) << 16
                let memLimit = (word(0x22) & 0xFFF0) << 16 | 0xF_FFFF
                let pref64 = word(0x24) & 0xF == 1
                let prefBase = (word(0x24) & 0xFFF0) << 16 | (pref64 ? dword(0x28) << 32 : 0)
                let prefLimit = (word(0x26) & 0xFFF0) << 16 | 0xF_FFFF | (pref64 ? dword(0x2C) << 32 : 0)
                var bridge: [(String, JSONValue)] = [("bus", [
                    "number": .int(Int64(c[0x18])), "secondary": .int(Int64(secondary)),
                    "subordinate": .int(Int64(c[0x1A])),
                    "io_range": ["base": .int(ioBase), "limit": .int(ioLimit)],
                    "memory_range": ["base": .int(memBase), "limit": .int(memLimit)],
                    "prefetchable_range": ["base": .int(prefBase), "limit": .int(prefLimit)],
                ])]
                if secondary != 0, secondary > address.bus, byBus[secondary] != nil, depth < 256 {
                    bridge.append(("devices", devices(on: secondary, depth: depth + 1)))
                }
                members.append(("pci_bridge", .object(bridge)))
            }
            members.append(("regions", .array(regions(model?.configSnapshot()))))
            return .object(members)
        }

        return [["bus": .int(Int64(machine.rootComplex.rootBusNumber)),
                 "devices": devices(on: machine.rootComplex.rootBusNumber, depth: 0)]]
    }

    static func regions(_ cs: ConfigSpace?) -> [JSONValue] {
        guard let cs else { return [] }
        var out: [JSONValue] = []
        for (index, bar) in cs.bars.enumerated() {
            guard let bar, bar.size > 0 else { continue }
            let address = cs.decodedBARRange(index).map { Int64(bitPattern: $0.base) } ?? -1
            var members: [(String, JSONValue)] = [("bar", .int(Int64(index))), ("type", bar.isIO ? "io" : "memory"),
                                                  ("address", .int(address)), ("size", .int(Int64(bar.size)))]
            if !bar.isIO {
                members += [("prefetch", .bool(bar.isPrefetchable)), ("mem_type_64", .bool(bar.is64Bit))]
            }
            out.append(.object(members))
        }
        if let romSize = cs.rom, romSize > 0 {
            let address = cs.decodedROMRange().map { Int64(bitPattern: $0.base) } ?? -1
            out.append(["bar": 6, "type": "memory", "address": .int(address), "size": .int(Int64(romSize)),
                        "prefetch": false, "mem_type_64": false])
        }
        return out
    }

    /// QEMU's pci_class_descriptions for the classes Switchyard meets (class << 8 | subclass).
    static let classDescriptions: [UInt16: String] = [
        0x0001: "VGA controller",
        0x0100: "SCSI controller", 0x0101: "IDE controller", 0x0102: "Floppy controller",
        0x0103: "IPI controller", 0x0104: "RAID controller", 0x0106: "SATA controller",
        0x0107: "SAS controller", 0x0180: "Storage controller",
        0x0200: "Ethernet controller", 0x0201: "Token Ring controller", 0x0202: "FDDI controller",
        0x0203: "ATM controller", 0x0280: "Network controller",
        0x0300: "VGA controller", 0x0301: "XGA controller", 0x0302: "3D controller",
        0x0380: "Display controller",
        0x0400: "Video controller", 0x0401: "Audio controller", 0x0402: "Phone", 0x0403: "Audio controller",
        0x0480: "Multimedia controller",
        0x0500: "RAM controller", 0x0501: "Flash controller", 0x0580: "Memory controller",
        0x0600: "Host bridge", 0x0601: "ISA bridge", 0x0602: "EISA bridge", 0x0603: "MC bridge",
        0x0604: "PCI bridge", 0x0605: "PCMCIA bridge", 0x0606: "NUBUS bridge", 0x0607: "CARDBUS bridge",
        0x0608: "RACEWAY bridge", 0x0680: "Bridge",
        0x0700: "Serial port", 0x0701: "Parallel port", 0x0703: "Modem",
        0x0800: "Interrupt controller", 0x0801: "DMA controller", 0x0802: "Timer", 0x0803: "RTC",
        0x0900: "Keyboard", 0x0901: "Pen", 0x0902: "Mouse",
        0x0A00: "Dock station", 0x0B00: "i386 cpu", 0x0B01: "i486 cpu", 0x0B02: "pentium cpu",
        0x0B10: "alpha cpu", 0x0B20: "powerpc cpu", 0x0B30: "mips cpu", 0x0B40: "co-processor",
        0x0C00: "Fireware contorller", 0x0C01: "Access bus controller", 0x0C02: "SSA controller",
        0x0C03: "USB controller", 0x0C04: "Fibre channel controller", 0x0C05: "SMBus",
        0x0E00: "I2O controller", 0x0F00: "Satellite TV controller",
        0x1000: "Network Cryptography controller", 0x1001: "Entertainment Cryptography controller",
        0x1080: "Encryption controller", 0x1100: "DPIO module", 0x1101: "Performance counters",
        0x1110: "Communication synchronizer", 0x1120: "Management card", 0x1180: "Data acquisition controller",
    ]
}
