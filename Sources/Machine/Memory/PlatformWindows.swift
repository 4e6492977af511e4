import AddressSpace
import Chipset
import VMMBase

/// A PAM segment of 0xC0000-0xFFFFF: reads and writes reach RAM only where the attribute
/// allows; the rest goes to PCI, where (with no firmware ROM mapped) nothing answers.
final class PAMWindow: IORegionHandler {
    let ram: RAMHandler
    let base: UInt64
    let attribute: PAMAttribute

    init(ram: RAMHandler, base: UInt64, attribute: PAMAttribute) {
        self.ram = ram
        self.base = base
        self.attribute = attribute
    }

    func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        attribute.readsDRAM ? ram.read(offset: base + offset, width: width) : width.allOnes
    }

    func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        if attribute.writesDRAM { ram.write(offset: base + offset, width: width, value: value) }
    }
}

/// A read-only segment can be a read-only memory slot; write-only and disabled ones exit on
/// every access (reads must come from PCI, not RAM).
extension PAMWindow: RAMBackedHandler {
    var ramOffset: UInt64 { base }
    var directAccess: DirectAccess? { attribute == .readOnly ? .readOnly : nil }
}

/// Memory that non-SMM code must not see (closed SMRAM, TSEG): reads all-ones, writes vanish.
final class Blackhole: IORegionHandler {
    func read(offset: UInt64, width: AccessWidth) -> UInt64 { width.allOnes }
    func write(offset: UInt64, width: AccessWidth, value: UInt64) {}
}

/// The LPC's 16 KiB chipset configuration block at RCBA. A write that changes the DxxIR pin
/// routing calls `pinRoutingChanged` (after the LPC's lock is released).
final class ChipsetConfigWindow: IORegionHandler {
    let lpc: ICH9LPC
    let pinRoutingChanged: @Sendable () -> Void
    init(lpc: ICH9LPC, pinRoutingChanged: @escaping @Sendable () -> Void) {
        self.lpc = lpc
        self.pinRoutingChanged = pinRoutingChanged
    }
    func read(offset: UInt64, width: AccessWidth) -> UInt64 { lpc.chipsetConfigRead(offset, width: width) }
    func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        if lpc.chipsetConfigWrite(offset, width: width, value: value).contains(.pinRouting) { pinRoutingChanged() }
    }
}

extension Region {
    /// The q35 memory decode in front of RAM, from the MCH and LPC registers as they are now
    /// (non-SMM view): PAM segments, the legacy SMRAM window, TSEG, and RCBA (whose pin routing
    /// writes call `pinRoutingChanged`).
    mutating func addChipsetDecode(hostBridge: Q35HostBridge, lpc: ICH9LPC, ram: RAMHandler, lowMemoryTop: UInt64,
                                   pinRoutingChanged: @escaping @Sendable () -> Void) {
        let pam = hostBridge.pam
        for segment in PAMSegment.all where segment.index < pam.count && pam[segment.index] != .readWrite {
            add(.leaf("pam\(segment.index)", size: segment.size,
                      handler: PAMWindow(ram: ram, base: segment.base, attribute: pam[segment.index])),
                at: segment.base, priority: 2)
        }
        let smram = hostBridge.smram
        if !smram.legacyRAMVisibleOutsideSMM {
            add(.leaf("smram-legacy", size: 0x2_0000, handler: Blackhole()), at: 0xA_0000, priority: 2)
        }
        if smram.tsegSize > 0 && smram.tsegSize <= lowMemoryTop {
            add(.leaf("tseg", size: smram.tsegSize, handler: Blackhole()), at: lowMemoryTop - smram.tsegSize, priority: 2)
        }
        if let rcba = lpc.rcba {
            add(.leaf("rcba", size: 0x4000, handler: ChipsetConfigWindow(lpc: lpc, pinRoutingChanged: pinRoutingChanged)), at: rcba, priority: 1)
        }
    }
}
