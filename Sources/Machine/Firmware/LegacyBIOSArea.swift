import VMMBase

extension Machine {
    /// The PAM registers as PC firmware leaves them for the OS (SeaBIOS's make_bios_readonly):
    /// 0xC0000-0xEFFFF read/write RAM, the system BIOS segment 0xF0000-0xFFFFF read-only RAM.
    /// This machine has no option ROMs, so no other segment is protected. Guests then read the
    /// ACPI tables at 0xE0000 from RAM, as under QEMU with SeaBIOS.
    public func programPAMAsFirmwareLeavesIt() {
        let cycles = PortConfigCycles(self)
        for register in 0x91...0x96 { cycles.write(bus: 0, devfn: 0, offset: register, width: .byte, value: 0x33) }
        cycles.write(bus: 0, devfn: 0, offset: 0x90, width: .byte, value: 0x10)
    }
}
