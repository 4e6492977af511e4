/// A message-signalled interrupt as a device writes it: a 64-bit address and a 32-bit data
/// word. On x86 the address selects the local APIC (0xFEEx_xxxx) and the data the vector.
public struct MSIMessage: Hashable, Sendable, CustomStringConvertible {
    public var address: UInt64
    public var data: UInt32

    public init(address: UInt64, data: UInt32) {
        self.address = address
        self.data = data
    }

    /// True when the address lies in the x86 interrupt window 0xFEE00000-0xFEEFFFFF.
    public var targetsInterruptWindow: Bool { address >> 20 == 0xFEE }
    /// The vector in a compatibility-format message.
    public var vector: UInt8 { UInt8(truncatingIfNeeded: data) }
    /// Bit 4 of the address: set in VT-d's remappable format.
    public var isRemappableFormat: Bool { address & (1 << 4) != 0 }

    public var description: String { "MSI(addr 0x\(String(address, radix: 16)), data 0x\(String(data, radix: 16)))" }
}
