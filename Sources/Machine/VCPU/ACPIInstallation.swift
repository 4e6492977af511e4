import Chipset
import Firmware
import GuestMemory
import VMMBase

extension Machine {
    /// What SeaBIOS does to the ICH9 LPC before handing over to an ACPI OS: PMBASE at
    /// `pmBase` and ACPI decoding on (ACPI_CNTL.ACPI_EN, SCI on IRQ 9), so the PM block (PM1
    /// event/control, PM timer, GPE0) the FADT points at answers.
    public func enablePowerManagement(pmBase: UInt16 = 0x600) {
        let cycles = PortConfigCycles(self)
        let lpc = UInt8(0x1F << 3)
        cycles.write(bus: 0, devfn: lpc, offset: ICH9LPC.Register.pmBase, width: .dword, value: UInt32(pmBase) | 1)
        cycles.write(bus: 0, devfn: lpc, offset: ICH9LPC.Register.acpiControl, width: .byte, value: 0x80)
    }

    /// Builds the ACPI tables for the machine as firmware left it (run `runFirmware()` first),
    /// turns on the PM block they describe and writes them into guest RAM at their base
    /// (0xE0000, in the legacy hole the e820 map reports reserved). Returns the tables; the
    /// RSDP's address goes into boot_params or hvm_start_info.
    ///
    /// The machine has no HPET, so the tables describe none (Linux would otherwise read all ones
    /// from it and give up on its clock events only after a delay).
    @discardableResult
    public func installACPITables(cpuCount: Int = 1) throws(LinuxLoadError) -> FirmwareTables {
        var description = platformDescription(cpuCount: cpuCount)
        description.hpet = nil
        let tables: FirmwareTables
        do { tables = try FirmwareTables.build(description) } catch { throw .firmwareTables(error) }
        enablePowerManagement(pmBase: description.power.pmBase)
        let image = tables.image
        do throws(GuestMemoryError) {
            try guestMemory.write(at: GuestAddress(tables.rsdp.address), bytes: image)
        } catch {
            throw .outsideRAM(address: tables.rsdp.address, count: UInt64(image.count))
        }
        return tables
    }
}
