import HostDevices
import VMMBase

/// Renders functions as pciutils' lspci (3.9) prints them: the listing, `-n`/`-nn`, the
/// `-t` tree, `-v`/`-vv` and the `-x` hex dumps. The formats follow lspci.c, ls-tree.c,
/// ls-caps.c and ls-ecaps.c; names come from libpci itself through `PCINameDatabase`.
public struct LspciRenderer: Sendable {
    /// Where lspci's facts would come from. They differ only where the kernel knows more
    /// than config space says.
    public enum View: Sendable, Hashable {
        /// lspci inside the guest, reading sysfs: BAR sizes and IRQs from `KernelResources`,
        /// bridge parents known for the tree, upper halves of 64-bit BARs not listed.
        case guestKernel
        /// `lspci -F dump`: config bytes only, exactly what libpci's dump method knows.
        case configDump
    }

    /// Sorted by (segment, bus, device, function), as lspci sorts.
    public let functions: [LspciFunction]
    public let view: View
    let names: PCINameDatabase

    public init(functions: [LspciFunction], view: View = .guestKernel, names: PCINameDatabase) {
        self.functions = functions.sorted { $0.address < $1.address }
        self.view = view
        self.names = names
    }

    public init(_ functions: [(address: PCIAddress, config: [UInt8])], view: View = .guestKernel,
                names: PCINameDatabase) {
        self.init(functions: functions.map { LspciFunction(address: $0.address, config: $0.config) },
                  view: view, names: names)
    }

    public func render(_ options: LspciOptions) -> String {
        if options.tree { return renderTree(options) }
        var out = ""
        for function in functions {
            var device = DeviceRenderer(function: function, view: view, names: names, options: options,
                                        showDomain: showsDomains)
            device.render()
            out += device.out
        }
        return out
    }

    /// lspci prints domains as soon as one device lives outside domain 0.
    var showsDomains: Bool { functions.contains { $0.address.segment != 0 } }
}

// MARK: - One device

/// lspci's per-device output: show_terse, show_verbose, show_hex_dump.
struct DeviceRenderer {
    let function: LspciFunction
    let view: LspciRenderer.View
    let names: PCINameDatabase
    let options: LspciOptions
    let showDomain: Bool
    let config: ConfigBytes
    var out = ""

    init(function: LspciFunction, view: LspciRenderer.View, names: PCINameDatabase, options: LspciOptions,
         showDomain: Bool) {
        self.function = function
        self.view = view
        self.names = names
        self.options = options
        self.showDomain = showDomain
        self.config = ConfigBytes(function.config, readable: function.readableSize)
    }

    var verbose: Int { options.verbosity }
    var vendorID: UInt16 { function.identity(in: view).vendorID }
    var deviceID: UInt16 { function.identity(in: view).deviceID }
    var deviceClass: UInt16 { UInt16(config.word(0x0A)) }
    var command: UInt32 { config.word(0x04) }

    mutating func render() {
        if verbose > 0 { showVerbose() } else { showTerse() }
        if options.hexDump > 0 { showHexDump() }
        if verbose > 0 || options.hexDump > 0 { out += "\n" }
    }

    var slotName: String {
        (showDomain ? hex(function.address.segment, 4) + ":" : "") + function.address.shortDescription
    }

    mutating func showTerse() {
        out += slotName + " " + names.className(deviceClass, numbering: options.numbering) + ": "
            + names.vendorAndDevice(vendor: vendorID, device: deviceID, numbering: options.numbering)
        let revision = config.byte(0x08)
        if revision != 0 { out += " (rev \(hex(revision, 2)))" }
        if verbose > 0 {
            let progIf = UInt8(config.byte(0x09))
            let progIfName = names.programmingInterface(classCode: deviceClass, progIf: progIf)
            if progIf != 0 || progIfName != nil {
                out += " (prog-if \(hex(progIf, 2))"
                if let progIfName { out += " [\(progIfName)]" }
                out += ")"
            }
        }
        out += "\n"
        if verbose > 0, let (subVendor, subDevice) = subsystem, subVendor != 0, subVendor != 0xFFFF {
            out += "\tSubsystem: " + names.subsystem(vendor: vendorID, device: deviceID, subsystemVendor: subVendor,
                                                     subsystemDevice: subDevice, numbering: options.numbering) + "\n"
        }
    }

    /// libpci's PCI_FILL_SUBSYS: header fields for type 0 and CardBus, the SSVID capability
    /// for bridges.
    var subsystem: (UInt16, UInt16)? {
        switch config.headerType {
        case 0: return (UInt16(config.word(0x2C)), UInt16(config.word(0x2E)))
        case 1:
            guard let ssvid = config.findCapability(0x0D) else { return nil }
            return (UInt16(config.word(ssvid + 4)), UInt16(config.word(ssvid + 6)))
        case 2: return (UInt16(config.word(0x40)), UInt16(config.word(0x42)))
        default: return nil
        }
    }

    var irq: Int {
        if view == .guestKernel, let irq = function.resources?.irq { return irq }
        return Int(config.byte(0x3C))
    }

    mutating func showVerbose() {
        showTerse()
        let headerType = config.headerType
        var bist: UInt32 = 0, maxLatency: UInt32 = 0, minGrant: UInt32 = 0
        var unknownHeader = false
        switch headerType {
        case 0:
            if deviceClass == 0x0604 { out += "\t!!! Invalid class \(hex(deviceClass, 4)) for header type 00\n" }
            bist = config.byte(0x0F)
            maxLatency = config.byte(0x3F)
            minGrant = config.byte(0x3E)
        case 1, 2:
            if deviceClass >> 8 != 0x06 {
                out += "\t!!! Invalid class \(hex(deviceClass, 4)) for header type \(hex(headerType, 2))\n"
            }
            bist = config.byte(0x0F)
        default:
            out += "\t!!! Unknown header type \(hex(headerType, 2))\n"
            unknownHeader = true
        }

        let status = config.word(0x06)
        if !unknownHeader && verbose > 1 {
            out += "\tControl: I/O\(flag(command, 0x1)) Mem\(flag(command, 0x2)) BusMaster\(flag(command, 0x4))"
                + " SpecCycle\(flag(command, 0x8)) MemWINV\(flag(command, 0x10)) VGASnoop\(flag(command, 0x20))"
                + " ParErr\(flag(command, 0x40)) Stepping\(flag(command, 0x80)) SERR\(flag(command, 0x100))"
                + " FastB2B\(flag(command, 0x200)) DisINTx\(flag(command, 0x400))\n"
            out += "\tStatus: Cap\(flag(status, 0x10)) 66MHz\(flag(status, 0x20)) UDF\(flag(status, 0x40))"
                + " FastB2B\(flag(status, 0x80)) ParErr\(flag(status, 0x100)) DEVSEL=\(devsel(status))"
                + " >TAbort\(flag(status, 0x800)) <TAbort\(flag(status, 0x1000)) <MAbort\(flag(status, 0x2000))"
                + " >SERR\(flag(status, 0x4000)) <PERR\(flag(status, 0x8000)) INTx\(flag(status, 0x08))\n"
            if command & 0x4 != 0 {
                out += "\tLatency: \(config.byte(0x0D))"
                if minGrant != 0 || maxLatency != 0 {
                    out += " ("
                    if minGrant != 0 { out += "\(minGrant * 250)ns min" }
                    if minGrant != 0 && maxLatency != 0 { out += ", " }
                    if maxLatency != 0 { out += "\(maxLatency * 250)ns max" }
                    out += ")"
                }
                let cacheLine = config.byte(0x0C)
                if cacheLine != 0 { out += ", Cache Line Size: \(cacheLine * 4) bytes" }
                out += "\n"
            }
        }
        if verbose > 1 {
            let pin = unknownHeader ? 0 : config.byte(0x3D)
            if pin != 0 || irq != 0 {
                let pinLetter = pin != 0 ? String(UnicodeScalar(UInt8(truncatingIfNeeded: 0x41 + pin - 1))) : "?"
                out += "\tInterrupt: pin \(pinLetter) routed to IRQ \(irq)\n"
            }
        }
        if !unknownHeader && verbose <= 1 {
            out += "\tFlags: "
            if command & 0x4 != 0 { out += "bus master, " }
            if command & 0x20 != 0 { out += "VGA palette snoop, " }
            if command & 0x80 != 0 { out += "stepping, " }
            if command & 0x200 != 0 { out += "fast Back2Back, " }
            if status & 0x20 != 0 { out += "66MHz, " }
            if status & 0x40 != 0 { out += "user-definable features, " }
            out += "\(devsel(status)) devsel"
            if command & 0x4 != 0 { out += ", latency \(config.byte(0x0D))" }
            if irq != 0 { out += ", IRQ \(irq)" }
            out += "\n"
        }
        if bist & 0x80 != 0 {
            out += bist & 0x40 != 0 ? "\tBIST is running\n" : "\tBIST result: \(hex(bist & 0x0F, 2))\n"
        }

        switch headerType {
        case 0:
            showBases(count: 6)
            showROM(register: 0x30)
            showCapabilities(pointer: 0x34)
        case 1:
            showBridgeHeader()
        case 2:
            showCardBusHeader()
        default:
            break  // lspci shows OS-reported resources here; config space alone has none.
        }
    }

    // MARK: BARs and ROM (show_bases, show_rom)

    mutating func showBases(count: Int) {
        let sizes = view == .guestKernel ? function.resources?.barSizes : nil
        var index = 0
        var bases = [UInt64](repeating: 0, count: count)
        // libpci's generic fill: a 64-bit BAR's address spans two registers; the upper
        // register gets no base of its own.
        while index < count {
            let raw = config.long(0x10 + 4 * index)
            defer { index += 1 }
            guard raw != 0, raw != 0xFFFF_FFFF else { continue }
            if raw & 1 == 1 || raw & 0x6 != 0x4 {
                bases[index] = UInt64(raw)
            } else if index < count - 1 {
                bases[index] = UInt64(raw) | UInt64(config.long(0x10 + 4 * (index + 1))) << 32
                index += 1
            }
        }
        for i in 0..<count {
            let raw = config.long(0x10 + 4 * i)
            var position = bases[i]
            let length = sizes.map { i < $0.count ? $0[i] : 0 } ?? 0
            var flags: UInt32
            var hardwareLower: UInt32 = 0
            var broken = false
            if view == .guestKernel {
                // sysfs resource flags, rebuilt from the BAR's type bits; the upper half of
                // a 64-bit BAR has none.
                if isUpperHalfOf64BitBAR(i) { continue }
                if raw & 1 == 1 { flags = 1 } else { flags = raw & 0x8 | (raw & 0x6 == 0x4 ? 0x4 : 0) }
                if position == 0 && length == 0 { continue }
                if raw == 0xFFFF_FFFF { position = 0 }
                hardwareLower = raw
                if raw & 1 == 0 && raw & 0x6 == 0x4 && i >= count - 1 { broken = true }
            } else {
                flags = raw == 0xFFFF_FFFF ? 0 : raw
                if position == 0 && flags == 0 && length == 0 { continue }
            }
            out += verbose > 1 ? "\tRegion \(i): " : "\t"
            if flags & 1 == 1 {
                let address = position & ~UInt64(0x3)
                out += "I/O ports at "
                if address != 0 || command & 0x1 != 0 {
                    out += hex(address, 4)
                } else {
                    out += hardwareLower != 0 ? "<ignored>" : "<unassigned>"
                }
                if command & 0x1 == 0 { out += " [disabled]" }
            } else {
                let type = flags & 0x6
                let address = position & ~UInt64(0xF)
                out += "Memory at "
                if broken {
                    out += "<broken-64-bit-slot>"
                } else if address != 0 {
                    out += hex(address, 8)
                } else {
                    out += hardwareLower != 0 ? "<ignored>" : "<unassigned>"
                }
                let width = type == 0 ? "32-bit" : type == 4 ? "64-bit" : type == 2 ? "low-1M" : "type 3"
                out += " (\(width), \(flags & 0x8 != 0 ? "" : "non-")prefetchable)"
                if command & 0x2 == 0 { out += " [disabled]" }
            }
            out += sizeSuffix(length)
            out += "\n"
        }
    }

    func isUpperHalfOf64BitBAR(_ index: Int) -> Bool {
        var i = 0
        while i < index {
            let raw = config.long(0x10 + 4 * i)
            if raw != 0xFFFF_FFFF && raw & 1 == 0 && raw & 0x6 == 0x4 {
                if i + 1 == index { return true }
                i += 2
            } else {
                i += 1
            }
        }
        return false
    }

    mutating func showROM(register: Int) {
        let raw = config.long(register)
        let length = view == .guestKernel ? (function.resources?.romSize ?? 0) : 0
        // Both views take the ROM address from the register: a guest kernel keeps what
        // firmware assigned.
        let rom: UInt64 = raw == 0xFFFF_FFFF ? 0 : UInt64(raw)
        let flags = UInt64(raw)
        if rom == 0 && flags == 0 && length == 0 { return }
        out += "\tExpansion ROM at "
        let mask = ~UInt64(0x7FF)
        if rom & mask != 0 {
            out += hex(rom & mask, 8)
        } else {
            out += flags & mask != 0 ? "<ignored>" : "<unassigned>"
        }
        if flags & 1 == 0 {
            out += " [disabled]"
        } else if command & 0x2 == 0 {
            out += " [disabled by cmd]"
        }
        out += sizeSuffix(length)
        out += "\n"
    }

    // MARK: Bridges (show_htype1, show_htype2)

    mutating func showBridgeHeader() {
        showBases(count: 2)
        out += "\tBus: primary=\(hex(config.byte(0x18), 2)), secondary=\(hex(config.byte(0x19), 2)),"
            + " subordinate=\(hex(config.byte(0x1A), 2)), sec-latency=\(config.byte(0x1B))\n"

        // Windows come from the registers in both views: a guest kernel reports the windows
        // firmware programmed.
        let ioBase = config.byte(0x1C), ioLimit = config.byte(0x1D), ioType = ioBase & 0xF
        if ioType != ioLimit & 0xF || (ioType != 0 && ioType != 1) {
            out += "\t!!! Unknown I/O range types \(String(ioBase, radix: 16))/\(String(ioLimit, radix: 16))\n"
        } else {
            var base = UInt64(ioBase & 0xF0) << 8, limit = UInt64(ioLimit & 0xF0) << 8
            if ioType == 1 {
                base |= UInt64(config.word(0x30)) << 16
                limit |= UInt64(config.word(0x32)) << 16
            }
            showRange("\tI/O behind bridge", base, limit + 0xFFF, bits: ioType == 1 ? 32 : 16)
        }

        let memBase = config.word(0x20), memLimit = config.word(0x22), memType = memBase & 0xF
        if memType != memLimit & 0xF || memType != 0 {
            out += "\t!!! Unknown memory range types \(String(memBase, radix: 16))/\(String(memLimit, radix: 16))\n"
        } else {
            showRange("\tMemory behind bridge", UInt64(memBase & ~0xF) << 16, (UInt64(memLimit & ~0xF) << 16) + 0xFFFFF,
                      bits: 32)
        }

        let prefBase = config.word(0x24), prefLimit = config.word(0x26), prefType = prefBase & 0xF
        if prefType != prefLimit & 0xF || (prefType != 0 && prefType != 1) {
            out += "\t!!! Unknown prefetchable memory range types"
                + " \(String(prefBase, radix: 16))/\(String(prefLimit, radix: 16))\n"
        } else {
            var base = UInt64(prefBase & ~0xF) << 16, limit = UInt64(prefLimit & ~0xF) << 16
            if prefType == 1 {
                base |= UInt64(config.long(0x28)) << 32
                limit |= UInt64(config.long(0x2C)) << 32
            }
            showRange("\tPrefetchable memory behind bridge", base, limit + 0xFFFFF, bits: prefType == 1 ? 64 : 32)
        }

        if verbose > 1 {
            let s = config.word(0x1E)
            out += "\tSecondary status: 66MHz\(flag(s, 0x20)) FastB2B\(flag(s, 0x80)) ParErr\(flag(s, 0x100))"
                + " DEVSEL=\(devsel(s)) >TAbort\(flag(s, 0x800)) <TAbort\(flag(s, 0x1000)) <MAbort\(flag(s, 0x2000))"
                + " <SERR\(flag(s, 0x4000)) <PERR\(flag(s, 0x8000))\n"
        }
        showROM(register: 0x38)
        if verbose > 1 {
            let c = config.word(0x3E)
            out += "\tBridgeCtl: Parity\(flag(c, 0x1)) SERR\(flag(c, 0x2)) NoISA\(flag(c, 0x4)) VGA\(flag(c, 0x8))"
                + " VGA16\(flag(c, 0x10)) MAbort\(flag(c, 0x20)) >Reset\(flag(c, 0x40)) FastB2B\(flag(c, 0x80))\n"
            out += "\t\tPriDiscTmr\(flag(c, 0x100)) SecDiscTmr\(flag(c, 0x200)) DiscTmrStat\(flag(c, 0x400))"
                + " DiscTmrSERREn\(flag(c, 0x800))\n"
        }
        showCapabilities(pointer: 0x34)
    }

    /// CardBus bridges are not something Switchyard models; the bus line and capabilities
    /// are enough to recognise one.
    mutating func showCardBusHeader() {
        showBases(count: 1)
        out += "\tBus: primary=\(hex(config.byte(0x18), 2)), secondary=\(hex(config.byte(0x19), 2)),"
            + " subordinate=\(hex(config.byte(0x1A), 2)), sec-latency=\(config.byte(0x1B))\n"
        showCapabilities(pointer: 0x14)
    }

    mutating func showRange(_ prefix: String, _ base: UInt64, _ limit: UInt64, bits: Int) {
        out += prefix + ":"
        let digits = (bits + 3) / 4
        if base <= limit || verbose > 2 { out += " \(hex(base, digits))-\(hex(limit, digits))" }
        out += base <= limit ? sizeSuffix(limit - base + 1) : " [disabled]"
        if bits != 0 { out += " [\(bits)-bit]" }
        out += "\n"
    }

    // MARK: Hex dump (show_hex_dump)

    mutating func showHexDump() {
        // lspci caches 64 bytes of header (128 for CardBus) and fetches more only for -xxx.
        var count = config.headerType == 2 ? 128 : 64
        if options.hexDump >= 3 && config.canRead(count, 256 - count) {
            count = 256
            if options.hexDump >= 4 && config.canRead(256, 4096 - 256) { count = 4096 }
        }
        for i in 0..<count {
            if i & 15 == 0 { out += hex(i, 2) + ":" }
            out += " " + hex(function.config[i], 2)
            if i & 15 == 15 { out += "\n" }
        }
    }
}

// MARK: - Small formatting helpers shared with the capability decoders

func flag(_ value: UInt32, _ bit: UInt32) -> Character { value & bit != 0 ? "+" : "-" }

func devsel(_ status: UInt32) -> String {
    switch status & 0x600 {
    case 0x400: "slow"
    case 0x200: "medium"
    case 0x000: "fast"
    default: "??"
    }
}

/// lspci's show_size: " [size=4K]", nothing for 0.
func sizeSuffix(_ size: UInt64) -> String {
    guard size != 0 else { return "" }
    let suffixes = ["", "K", "M", "G", "T"]
    var x = size
    var i = 0
    while i < suffixes.count - 1, x % 1024 == 0 {
        x /= 1024
        i += 1
    }
    return " [size=\(UInt32(truncatingIfNeeded: x))\(suffixes[i])]"
}
