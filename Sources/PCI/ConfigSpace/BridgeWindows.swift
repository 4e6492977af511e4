import VMMBase

/// The windows a type-1 header forwards from its primary to its secondary side.
public struct BridgeWindows: Sendable, Hashable {
    public var io: AddressRange?
    public var memory: AddressRange?
    public var prefetchable: AddressRange?
}

extension ConfigSpace {
    public var busNumbers: BridgeBusNumbers {
        BridgeBusNumbers(primary: bytes[Reg.primaryBus], secondary: bytes[Reg.secondaryBus],
                         subordinate: bytes[Reg.subordinateBus])
    }

    /// The windows as programmed, ignoring the Command enables (a window with limit below
    /// base is closed and nil).
    public var programmedWindows: BridgeWindows {
        guard layout == .bridge else { return BridgeWindows() }
        let ioBase32 = bytes[Reg.ioBase] & 0x0F == 0x01
        var ioBase = UInt64(bytes[Reg.ioBase] & 0xF0) << 8
        var ioLimit = UInt64(bytes[Reg.ioLimit] & 0xF0) << 8 | 0xFFF
        if ioBase32 {
            ioBase |= get(Reg.ioBaseUpper, width: 2) << 16
            ioLimit |= get(Reg.ioLimitUpper, width: 2) << 16
        }
        let memBase = (get(Reg.memoryBase, width: 2) & 0xFFF0) << 16
        let memLimit = (get(Reg.memoryLimit, width: 2) & 0xFFF0) << 16 | 0xF_FFFF
        let pref64 = get(Reg.prefetchBase, width: 2) & 0xF == 0x1
        var prefBase = (get(Reg.prefetchBase, width: 2) & 0xFFF0) << 16
        var prefLimit = (get(Reg.prefetchLimit, width: 2) & 0xFFF0) << 16 | 0xF_FFFF
        if pref64 {
            prefBase |= get(Reg.prefetchBaseUpper, width: 4) << 32
            prefLimit |= get(Reg.prefetchLimitUpper, width: 4) << 32
        }
        return BridgeWindows(io: AddressRange(base: ioBase, last: ioLimit),
                             memory: AddressRange(base: memBase, last: memLimit),
                             prefetchable: AddressRange(base: prefBase, last: prefLimit))
    }

    /// The windows that forward right now: I/O needs Command.io, memory windows Command.memory.
    public var decodedWindows: BridgeWindows {
        var w = programmedWindows
        if !command.contains(.io) { w.io = nil }
        if !command.contains(.memory) { w.memory = nil; w.prefetchable = nil }
        return w
    }

    public var bridgeControl: BridgeControlBits {
        BridgeControlBits(rawValue: UInt16(get(Reg.bridgeControl, width: 2)))
    }
}
