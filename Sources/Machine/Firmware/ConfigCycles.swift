import VMMBase

/// How firmware reaches config space: the same two mechanisms a guest has.
public protocol ConfigCycles {
    func read(bus: UInt8, devfn: UInt8, offset: Int, width: AccessWidth) -> UInt32
    func write(bus: UInt8, devfn: UInt8, offset: Int, width: AccessWidth, value: UInt32)
}

/// Config cycles through CONFIG_ADDRESS/CONFIG_DATA port I/O, as a vCPU issues them.
public struct PortConfigCycles: ConfigCycles {
    let machine: Machine
    public init(_ machine: Machine) { self.machine = machine }

    private func select(_ bus: UInt8, _ devfn: UInt8, _ offset: Int) {
        let address = 0x8000_0000 | UInt32(bus) << 16 | UInt32(devfn) << 8 | UInt32(offset & 0xFC)
        machine.portWrite(0xCF8, width: .dword, value: UInt64(address))
    }

    public func read(bus: UInt8, devfn: UInt8, offset: Int, width: AccessWidth) -> UInt32 {
        select(bus, devfn, offset)
        return UInt32(truncatingIfNeeded: machine.portRead(0xCFC + UInt16(offset & 3), width: width))
    }

    public func write(bus: UInt8, devfn: UInt8, offset: Int, width: AccessWidth, value: UInt32) {
        select(bus, devfn, offset)
        machine.portWrite(0xCFC + UInt16(offset & 3), width: width, value: UInt64(value))
    }
}

/// Config cycles through ECAM memory accesses at `base`.
public struct ECAMConfigCycles: ConfigCycles {
    let machine: Machine
    let base: UInt64
    public init(_ machine: Machine, base: UInt64) {
        self.machine = machine
        self.base = base
    }

    private func address(_ bus: UInt8, _ devfn: UInt8, _ offset: Int) -> UInt64 {
        base + (UInt64(bus) << 20 | UInt64(devfn) << 12 | UInt64(offset & 0xFFF))
    }

    public func read(bus: UInt8, devfn: UInt8, offset: Int, width: AccessWidth) -> UInt32 {
        UInt32(truncatingIfNeeded: machine.mmioRead(address(bus, devfn, offset), width: width))
    }

    public func write(bus: UInt8, devfn: UInt8, offset: Int, width: AccessWidth, value: UInt32) {
        machine.mmioWrite(address(bus, devfn, offset), width: width, value: UInt64(value))
    }
}
