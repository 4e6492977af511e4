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
    var secondary: BusNode?
    var windowRequests: [ResourceKind: [ResourceAllocator.Request]] = [:]

    init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, classCode: UInt32, romOffset: Int) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.classCode = classCode
        self.romOffset = romOffset
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

    init(cycles: any ConfigCycles) { self.cycles = cycles }

    mutating func scan(bus number: UInt8) throws(EnumerationError) -> BusNode {
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
                probeBARs(node, layout: layout)
                if layout == .bridge {
                    guard nextBus <= 255 else { throw .busNumbersExhausted(at: node.address) }
                    let secondary = UInt8(nextBus)
                    nextBus += 1
                    // Open the whole range below while scanning, then close it to what was found.
                    setBusNumbers(node, primary: number, secondary: secondary, subordinate: 0xFF)
                    let child = try scan(bus: secondary)
                    child.subordinate = UInt8(nextBus - 1)
                    setBusNumbers(node, primary: number, secondary: secondary, subordinate: child.subordinate)
                    node.secondary = child
                    bus.subordinate = max(bus.subordinate, child.subordinate)
                }
                bus.functions.append(node)
            }
        }
        return bus
    }

    private func setBusNumbers(_ node: FunctionNode, primary: UInt8, secondary: UInt8, subordinate: UInt8) {
        let a = node.address
        let latency = read(a.bus, a.devfn, Reg.primaryBus, .dword) & 0xFF00_0000
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
