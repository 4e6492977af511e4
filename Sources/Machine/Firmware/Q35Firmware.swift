import Chipset
import Interrupts
import PCI
import VMMBase

extension Machine {
    /// Does what firmware does before the OS: programs PCIEXBAR so ECAM appears at the
    /// layout's base (through CF8/CFC, the only config path before ECAM exists), then
    /// enumerates every bus through ECAM and assigns resources.
    @discardableResult
    public func runFirmware() throws(EnumerationError) -> EnumerationReport {
        // Thousands of BAR and window writes, one commit of the views at the end.
        try spaces.batched { () throws(EnumerationError) -> EnumerationReport in try enumerateAndRoute() }
    }

    private func enumerateAndRoute() throws(EnumerationError) -> EnumerationReport {
        let layout = configuration.layout
        let ports = PortConfigCycles(self)
        let lengthField: UInt32 = switch layout.ecamSize {
        case 128 << 20: 1
        case 64 << 20: 2
        default: 0
        }
        // PCIEXBAR (MCH 0x60): base, length in bits 2:1, enable in bit 0. High dword first so
        // the window never appears at a half-written address.
        ports.write(bus: 0, devfn: 0, offset: 0x64, width: .dword, value: UInt32(truncatingIfNeeded: layout.ecamBase >> 32))
        ports.write(bus: 0, devfn: 0, offset: 0x60, width: .dword,
                    value: UInt32(truncatingIfNeeded: layout.ecamBase) | lengthField << 1 | 1)
        let enumerator = FirmwareEnumerator(cycles: ECAMConfigCycles(self, base: layout.ecamBase), windows: .init(
            io: AddressRange(base: layout.pciIOBase, last: layout.pciIOLast)!,
            memory32: AddressRange(base: layout.pciMemory32Base, last: layout.pciMemory32Last)!,
            memory64: AddressRange(base: layout.pciMemory64Base, last: layout.pciMemory64Last)!))
        let report = try enumerator.run()
        routeLegacyInterrupts(report, cycles: ports)
        return report
    }

    /// PC firmware's legacy interrupt set-up: every PIRQ link gets a PIC IRQ (10 or 11,
    /// alternating in pairs as SeaBIOS does on q35), and every function's Interrupt Line says
    /// which IRQ its pin reaches after swizzling. APIC-mode guests use ACPI's _PRT instead.
    func routeLegacyInterrupts(_ report: EnumerationReport, cycles: some ConfigCycles) {
        let irqOfLink: [UInt8] = [10, 10, 11, 11, 10, 10, 11, 11]
        let lpc = UInt8(0x1F << 3)
        for link in PIRQ.allCases {
            let register = link.rawValue < 4 ? 0x60 + link.rawValue : 0x68 + link.rawValue - 4
            cycles.write(bus: 0, devfn: lpc, offset: register, width: .byte, value: UInt32(irqOfLink[link.rawValue]))
        }
        for function in report.functions {
            guard let pin = INTxPin(register: function.interruptPin) else { continue }
            let route = INTxRoute(pin: pin, slotPath: function.slotPath)
            let link = self.lpc.pirq(forSlot: route.rootSlot, pin: route.rootPin)
            cycles.write(bus: function.address.bus, devfn: function.address.devfn, offset: Reg.interruptLine,
                         width: .byte, value: UInt32(irqOfLink[link.rawValue]))
        }
    }

    /// Every function's config space as a guest would read it, through config cycles: all
    /// 4 KiB, or with `headerOnly` just the 64-byte header (what query-pci shows, at a
    /// sixty-fourth of the config cycles, so monitors polling it barely slow the guest).
    public func guestVisibleConfigSpaces(headerOnly: Bool = false) -> [(address: PCIAddress, config: [UInt8])] {
        let length = headerOnly ? 64 : 4096
        var result: [(PCIAddress, [UInt8])] = []
        func walk(_ bus: UInt8, depth: Int) {
            for devfn in 0...255 {
                let devfn = UInt8(devfn)
                // A present function, SR-IOV VFs included (their Vendor ID reads FFFFh).
                guard rootComplex.function(bus: bus, devfn: devfn) != nil else { continue }
                var bytes = [UInt8](repeating: 0, count: 4096)
                for offset in stride(from: 0, to: length, by: 4) {
                    let v = rootComplex.configRead(bus: bus, devfn: devfn, offset: offset, width: .dword)
                    LittleEndian.store(UInt64(v), into: &bytes, at: offset, count: 4)
                }
                // Conventional functions have no extended space: past 256 reads all-ones.
                if headerOnly || bytes[256..<260].allSatisfy({ $0 == 0xFF }) {
                    for i in 256..<4096 { bytes[i] = 0 }
                }
                result.append((PCIAddress(bus: bus, devfn: devfn), bytes))
                if bytes[0x0E] & 0x7F == 1, depth < 256 {
                    let secondary = bytes[0x19], subordinate = bytes[0x1A]
                    if secondary > bus && subordinate >= secondary { walk(secondary, depth: depth + 1) }
                }
            }
        }
        walk(0, depth: 0)
        return result
    }
}
