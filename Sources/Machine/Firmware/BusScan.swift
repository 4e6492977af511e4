import PCI
import VMMBase

/// A BAR as the all-ones probe found it.
struct BARProbe: Hashable {
    var index: Int
    var kind: ResourceKind
    var is64Bit: Bool
    var size: UInt64
    /// The read-only low bits to write back with the address.
    var flagBits: UInt32
}

/// One function found by the scan.
final class FunctionNode {
    let address: PCIAddress
    let vendorID: UInt16
    let deviceID: UInt16
    let classCode: UInt32
    let romOffset: Int
    var bars: [BARProbe] = []
    var romSize: UInt64?
    /// Device numbers from this function's slot up to its root-bus slot.
    var slotPath: [UInt8] = []
    var interruptPin: UInt8 = 0
    var secondary: BusNode?
    var windowRequests: [ResourceKind: [ResourceAllocator.Request]] = [:]
    var windowSizes: [ResourceKind: UInt64] = [:]
    /// For bridges with hot-pluggable slots below: what to keep free for devices not there yet.
    var reservation: HotPlugReservation?

    init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, classCode: UInt32, romOffset: Int) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.classCode = classCode
        self.romOffset = romOffset
    }
}

/// What firmware keeps free behind a hot-plug-capable bridge: extra bus numbers and window
/// sizes, as QEMU's bus-reserve, io-reserve, mem-reserve and pref64-reserve properties ask.
struct HotPlugReservation: Hashable {
    var buses: UInt8?
    var io: UInt64?
    var memory: UInt64?
    var prefetchable: UInt64?
    /// An I/O window nobody asked for, given only while the port space has room for every
    /// such window (see `FirmwareEnumerator`): with it, Linux finds a window for a hot-plugged
    /// endpoint's I/O BAR even behind a switch, where it cannot grow the upstream window.
    var ioWhenRoom: UInt64 = 0

    /// Defaults when a hot-pluggable bridge asks for nothing: room for a typical endpoint in
    /// each memory window, no extra buses, and a 4 KiB I/O window only when there is room
    /// (a dozen I/O windows would exhaust the 64 KiB port space; SeaBIOS gives none at all).
    static let defaults = HotPlugReservation(buses: 0, io: 0, memory: 2 << 20, prefetchable: 32 << 20, ioWhenRoom: 0x1000)

    func overridden(by other: HotPlugReservation?) -> HotPlugReservation {
        guard let other else { return self }
        // An explicit io-reserve (even 0) replaces the optional window.
        return HotPlugReservation(buses: other.buses ?? buses, io: other.io ?? io, memory: other.memory ?? memory,
                                  prefetchable: other.prefetchable ?? prefetchable,
                                  ioWhenRoom: other.io == nil ? ioWhenRoom : 0)
    }

    func size(of kind: ResourceKind, optionalIO: Bool = false) -> UInt64 {
        switch kind {
        case .io: max(io ?? 0, optionalIO ? ioWhenRoom : 0)
        case .memory: memory ?? 0
        case .prefetchable: prefetchable ?? 0
        }
    }
}

final class BusNode {
    let number: UInt8
    var subordinate: UInt8
    var functions: [FunctionNode] = []

    init(number: UInt8) {
        self.number = number
        subordinate = number
    }
}

/// Depth-first walk that numbers buses and probes BARs.
struct BusScan {
    let cycles: any ConfigCycles
    /// The next unused bus number (also the count of buses numbered so far).
    private(set) var nextBus = 1
    /// Every bus-number register written, with its value before, so a failed enumeration
    /// can put the machine back as it found it.
    private(set) var busNumberHistory: [(address: PCIAddress, original: UInt32)] = []

    init(cycles: any ConfigCycles) { self.cycles = cycles }

    mutating func scan(bus number: UInt8, parentSlots: [UInt8] = []) throws(EnumerationError) -> BusNode {
        let bus = BusNode(number: number)
        for device in UInt8(0)..<32 {
            guard read(number, device << 3, Reg.vendorID, .word) != 0xFFFF else { continue }
            let multi = read(number, device << 3, Reg.headerType, .byte) & 0x80 != 0
            for function in UInt8(0)..<(multi ? 8 : 1) {
                let devfn = device << 3 | function
                let ids = read(number, devfn, Reg.vendorID, .dword)
                guard ids & 0xFFFF != 0xFFFF else { continue }
                let header = read(number, devfn, Reg.headerType, .byte) & 0x7F
                let layout: HeaderLayout = header == 1 ? .bridge : .endpoint
                let node = FunctionNode(address: PCIAddress(bus: number, devfn: devfn), vendorID: UInt16(ids & 0xFFFF),
                                        deviceID: UInt16(ids >> 16),
                                        classCode: read(number, devfn, Reg.revisionID, .dword) >> 8,
                                        romOffset: layout.romOffset)
                node.slotPath = [device] + parentSlots
                node.interruptPin = UInt8(read(number, devfn, Reg.interruptPin, .byte) & 0xFF)
                probeBARs(node, layout: layout)
                if layout == .bridge { node.reservation = reservation(of: node) }
                if layout == .bridge {
                    guard nextBus <= 255 else { throw .busNumbersExhausted(at: node.address) }
                    let secondary = UInt8(nextBus)
                    nextBus += 1
                    // Open the whole range below while scanning, then close it to what was found.
                    setBusNumbers(node, primary: number, secondary: secondary, subordinate: 0xFF)
                    let child = try scan(bus: secondary, parentSlots: node.slotPath)
                    // Keep bus numbers for bridges and switches that may be plugged later.
                    let extra = Int(node.reservation?.buses ?? 0)
                    let wanted = max(nextBus - 1, Int(secondary) + extra)
                    guard wanted <= 255 else { throw .busNumbersExhausted(at: node.address) }
                    nextBus = wanted + 1
                    child.subordinate = UInt8(wanted)
                    setBusNumbers(node, primary: number, secondary: secondary, subordinate: child.subordinate)
                    node.secondary = child
                    bus.subordinate = max(bus.subordinate, child.subordinate)
                }
                bus.functions.append(node)
            }
        }
        return bus
    }

    /// Capability offsets of a function, walking the standard list defensively (a looping
    /// or out-of-range list ends the walk).
    private func capabilities(_ a: PCIAddress) -> [(id: UInt8, offset: Int)] {
        guard read(a.bus, a.devfn, Reg.status, .word) & UInt32(StatusBits.capabilityList.rawValue) != 0 else { return [] }
        var out: [(UInt8, Int)] = []
        var offset = Int(read(a.bus, a.devfn, Reg.capabilitiesPointer, .byte) & 0xFC)
        while offset >= 0x40 && out.count < 48 {
            let header = read(a.bus, a.devfn, offset, .word)
            out.append((UInt8(header & 0xFF), offset))
            offset = Int(header >> 8) & 0xFC
        }
        return out
    }

    /// Whether a bridge has hot-pluggable slots (PCIe Slot Capabilities with Hot-Plug Capable,
    /// or an SHPC), and the reservation it asks for through QEMU's resource-reserve
    /// capability (Red Hat vendor-specific capability, type 1), which firmware honours.
    private func reservation(of node: FunctionNode) -> HotPlugReservation? {
        let a = node.address
        var hotPluggable = false
        var requested: HotPlugReservation?
        for (id, offset) in capabilities(a) {
            switch id {
            case CapabilityID.pciExpress:
                let flags = read(a.bus, a.devfn, offset + 2, .word)
                let slotImplemented = flags & (1 << 8) != 0
                let slotCaps = read(a.bus, a.devfn, offset + 0x14, .dword)
                if slotImplemented && slotCaps & (1 << 6) != 0 { hotPluggable = true }
            case CapabilityID.hotPlug:
                hotPluggable = true
            case CapabilityID.vendorSpecific:
                let lengthAndType = read(a.bus, a.devfn, offset + 2, .word)
                guard lengthAndType & 0xFF >= 0x20, lengthAndType >> 8 == 1 else { continue }
                func q(_ o: Int) -> UInt64 {
                    UInt64(read(a.bus, a.devfn, offset + o, .dword)) | UInt64(read(a.bus, a.devfn, offset + o + 4, .dword)) << 32
                }
                func set32(_ v: UInt32) -> UInt64? { v == .max ? nil : UInt64(v) }
                func set64(_ v: UInt64) -> UInt64? { v == .max ? nil : v }
                let pref32 = set32(read(a.bus, a.devfn, offset + 0x14, .dword))
                let pref64 = set64(q(0x18))
                requested = HotPlugReservation(
                    buses: set32(read(a.bus, a.devfn, offset + 4, .dword)).map { UInt8(clamping: $0) },
                    io: set64(q(0x08)), memory: set32(read(a.bus, a.devfn, offset + 0x10, .dword)),
                    prefetchable: pref64 ?? pref32)
            default:
                break
            }
        }
        guard hotPluggable || requested != nil else { return nil }
        return HotPlugReservation.defaults.overridden(by: requested)
    }

    /// Restores every bus-number register the scan wrote, newest first.
    func undoBusNumbers() {
        for (address, original) in busNumberHistory.reversed() {
            write(address.bus, address.devfn, Reg.primaryBus, .dword, original)
        }
    }

    private mutating func setBusNumbers(_ node: FunctionNode, primary: UInt8, secondary: UInt8, subordinate: UInt8) {
        let a = node.address
        let original = read(a.bus, a.devfn, Reg.primaryBus, .dword)
        busNumberHistory.append((a, original))
        let latency = original & 0xFF00_0000
        write(a.bus, a.devfn, Reg.primaryBus, .dword,
              latency | UInt32(subordinate) << 16 | UInt32(secondary) << 8 | UInt32(primary))
    }

    private func probeBARs(_ node: FunctionNode, layout: HeaderLayout) {
        let a = node.address
        let command = read(a.bus, a.devfn, Reg.command, .word)
        // Sizing moves BARs over arbitrary addresses: decode stays off meanwhile.
        write(a.bus, a.devfn, Reg.command, .word, command & ~UInt32(CommandBits([.io, .memory]).rawValue))
        var index = 0
        while index < layout.barCount {
            let offset = ConfigSpace.barOffset(index)
            let original = read(a.bus, a.devfn, offset, .dword)
            write(a.bus, a.devfn, offset, .dword, 0xFFFF_FFFF)
            let probed = read(a.bus, a.devfn, offset, .dword)
            write(a.bus, a.devfn, offset, .dword, original)
            if probed & 1 == 1 {
                var mask = probed & 0xFFFF_FFFC
                if mask & 0xFFFF_0000 == 0 { mask |= 0xFFFF_0000 }  // 16-bit I/O decoder
                let size = UInt64((~mask &+ 1) & 0xFFFF)
                if mask != 0 && size != 0 {
                    node.bars.append(BARProbe(index: index, kind: .io, is64Bit: false, size: size, flagBits: probed & 0x3))
                }
                index += 1
                continue
            }
            let is64 = probed & 0x6 == 0x4
            let prefetchable = probed & 0x8 != 0
            var mask = UInt64(probed & 0xFFFF_FFF0)
            if is64 && index + 1 < layout.barCount {
                let upperOffset = offset + 4
                let originalUpper = read(a.bus, a.devfn, upperOffset, .dword)
                write(a.bus, a.devfn, upperOffset, .dword, 0xFFFF_FFFF)
                mask |= UInt64(read(a.bus, a.devfn, upperOffset, .dword)) << 32
                write(a.bus, a.devfn, upperOffset, .dword, originalUpper)
            } else {
                mask |= 0xFFFF_FFFF_0000_0000
            }
            if mask & 0xFFFF_FFFF != 0 || (is64 && mask != 0xFFFF_FFFF_0000_0000) {
                let size = ~mask &+ 1
                if size != 0 && mask != 0xFFFF_FFFF_0000_0000 {
                    // Prefetchable 64-bit BARs go to the 64-bit window; everything else below 4 GiB.
                    let kind: ResourceKind = (is64 && prefetchable) ? .prefetchable : .memory
                    node.bars.append(BARProbe(index: index, kind: kind, is64Bit: is64, size: size, flagBits: probed & 0xF))
                }
            }
            index += is64 ? 2 : 1
        }
        // Expansion ROM: the enable bit stays clear, so the probe reads back address bits only.
        let romOriginal = read(a.bus, a.devfn, layout.romOffset, .dword)
        write(a.bus, a.devfn, layout.romOffset, .dword, 0xFFFF_F800)
        let rom = read(a.bus, a.devfn, layout.romOffset, .dword) & 0xFFFF_F800
        write(a.bus, a.devfn, layout.romOffset, .dword, romOriginal)
        if rom != 0 { node.romSize = UInt64((~rom &+ 1) & 0xFFFF_FFFF) }
        write(a.bus, a.devfn, Reg.command, .word, command)
    }

    private func read(_ bus: UInt8, _ devfn: UInt8, _ offset: Int, _ width: AccessWidth) -> UInt32 {
        cycles.read(bus: bus, devfn: devfn, offset: offset, width: width)
    }

    private func write(_ bus: UInt8, _ devfn: UInt8, _ offset: Int, _ width: AccessWidth, _ value: UInt32) {
        cycles.write(bus: bus, devfn: devfn, offset: offset, width: width, value: value)
    }
}
