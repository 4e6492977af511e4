import AddressSpace
import Synchronization
import VMMBase

/// The legacy configuration mechanism #1: CONFIG_ADDRESS at 0xCF8 and CONFIG_DATA at
/// 0xCFC-0xCFF. CONFIG_ADDRESS is latched only by dword writes (narrower writes to 0xCF8-0xCFB
/// are other registers' business, e.g. the reset control register at 0xCF9); data accesses
/// reach the function only while the enable bit (31) is set.
public final class ConfigAddressPort: IORegionHandler {
    public static let port: UInt64 = 0xCF8
    private let latched = Mutex<UInt32>(0)

    public init() {}

    public var value: UInt32 { latched.withLock { $0 } }

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        let v = UInt64(latched.withLock { $0 })
        return width.truncate(v >> (8 * offset))
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard offset == 0, width == .dword else { return }
        // Bits 1:0 are reserved and read back as zero; bits 30:24 are reserved too.
        latched.withLock { $0 = UInt32(truncatingIfNeeded: value) & 0x80FF_FFFC }
    }
}

public final class ConfigDataPort: IORegionHandler {
    public static let port: UInt64 = 0xCFC
    private let address: ConfigAddressPort
    private let root: PCIRootComplex

    public init(address: ConfigAddressPort, root: PCIRootComplex) {
        self.address = address
        self.root = root
    }

    private func decode(_ offset: UInt64) -> (bus: UInt8, devfn: UInt8, register: Int)? {
        let a = address.value
        guard a & 0x8000_0000 != 0 else { return nil }
        return (UInt8(truncatingIfNeeded: a >> 16), UInt8(truncatingIfNeeded: a >> 8),
                Int(a & 0xFC) + Int(offset & 3))
    }

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        guard let t = decode(offset) else { return width.allOnes }
        // CFC+n with a width that runs past 0xCFF only reaches the bytes up to 0xCFF; the
        // address space splits such accesses before they arrive here.
        return UInt64(root.configRead(bus: t.bus, devfn: t.devfn, offset: t.register, width: width))
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard let t = decode(offset) else { return }
        root.configWrite(bus: t.bus, devfn: t.devfn, offset: t.register, width: width,
                         value: UInt32(truncatingIfNeeded: value))
    }
}

/// PCI Express enhanced configuration access (ECAM): 4 KiB per function, 1 MiB per bus,
/// at the window the host bridge's PCIEXBAR programs. The window covers `busCount` buses.
public final class ECAMHandler: IORegionHandler {
    private let root: PCIRootComplex

    public init(root: PCIRootComplex) { self.root = root }

    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        if width == .qword {
            let low = read(offset: offset, width: .dword)
            let high = offset + 4 < 1 << 28 ? read(offset: offset + 4, width: .dword) : 0xFFFF_FFFF
            return low | high << 32
        }
        let (bus, devfn, register) = Self.decode(offset)
        if register + width.bytes > 4096 {  // runs into the next function: byte by byte
            var v: UInt64 = 0
            for i in 0..<UInt64(width.bytes) { v |= read(offset: offset + i, width: .byte) << (8 * i) }
            return v
        }
        return UInt64(root.configRead(bus: bus, devfn: devfn, offset: register, width: width))
    }

    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        if width == .qword {
            write(offset: offset, width: .dword, value: value & 0xFFFF_FFFF)
            write(offset: offset + 4, width: .dword, value: value >> 32)
            return
        }
        let (bus, devfn, register) = Self.decode(offset)
        if register + width.bytes > 4096 {
            for i in 0..<UInt64(width.bytes) { write(offset: offset + i, width: .byte, value: (value >> (8 * i)) & 0xFF) }
            return
        }
        root.configWrite(bus: bus, devfn: devfn, offset: register, width: width, value: UInt32(truncatingIfNeeded: value))
    }

    static func decode(_ offset: UInt64) -> (bus: UInt8, devfn: UInt8, register: Int) {
        (UInt8(truncatingIfNeeded: offset >> 20), UInt8(truncatingIfNeeded: offset >> 12), Int(offset & 0xFFF))
    }
}
