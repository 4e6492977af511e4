import VMMBase

/// Little-endian byte writer for fixed-layout tables.
struct TableWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes += AMLEncoding.le(UInt64(v), 2) }
    mutating func u32(_ v: UInt32) { bytes += AMLEncoding.le(UInt64(v), 4) }
    mutating func u64(_ v: UInt64) { bytes += AMLEncoding.le(v, 8) }
    mutating func ascii(_ s: String, _ n: Int) {
        let b = Array(s.utf8.prefix(n))
        bytes += b + Array(repeating: 0x20, count: n - b.count)
    }
    mutating func zeros(_ n: Int) { bytes += Array(repeating: 0, count: n) }
    mutating func gas(_ g: GenericAddress) {
        u8(g.space); u8(g.bitWidth); u8(g.bitOffset); u8(g.accessSize); u64(g.address)
    }
}

/// Generic Address Structure (ACPI 6.5 §5.2.3.2).
struct GenericAddress {
    var space: UInt8
    var bitWidth: UInt8
    var bitOffset: UInt8 = 0
    var accessSize: UInt8 = 0
    var address: UInt64

    static func io(_ port: UInt16, bits: UInt8, access: UInt8 = 0) -> GenericAddress {
        GenericAddress(space: 1, bitWidth: bits, accessSize: access, address: UInt64(port))
    }
    static let none = GenericAddress(space: 0, bitWidth: 0, address: 0)
}

/// Checksum byte that makes `bytes` sum to zero modulo 256.
func acpiChecksum(_ bytes: some Sequence<UInt8>) -> UInt8 {
    0 &- bytes.reduce(UInt8(0)) { $0 &+ $1 }
}

enum ACPITable {
    static let headerLength = 36

    /// A table: 36-byte system description header, then `body`, with length and checksum filled.
    static func make(signature: String, revision: UInt8, oem: PlatformDescription.OEMIdentity, body: [UInt8]) -> [UInt8] {
        var w = TableWriter()
        w.ascii(signature, 4)
        w.u32(UInt32(headerLength + body.count))
        w.u8(revision)
        w.u8(0)
        w.ascii(oem.oemID, 6)
        w.ascii(oem.oemTableID, 8)
        w.u32(oem.oemRevision)
        w.ascii(oem.creatorID, 4)
        w.u32(oem.creatorRevision)
        var bytes = w.bytes + body
        bytes[9] = acpiChecksum(bytes)
        return bytes
    }

    /// RSDP revision 2 (§5.2.5.3): checksum over the first 20 bytes, extended checksum over all 36.
    static func rsdp(oemID: String, xsdtAddress: UInt64) -> [UInt8] {
        var w = TableWriter()
        w.ascii("RSD PTR ", 8)
        w.u8(0)
        w.ascii(oemID, 6)
        w.u8(2)
        w.u32(0)            // RsdtAddress: XSDT only
        w.u32(36)
        w.u64(xsdtAddress)
        w.u8(0)
        w.zeros(3)
        var b = w.bytes
        b[8] = acpiChecksum(b[0..<20])
        b[32] = acpiChecksum(b)
        return b
    }

    static func xsdt(oem: PlatformDescription.OEMIdentity, entries: [UInt64]) -> [UInt8] {
        var w = TableWriter()
        for e in entries { w.u64(e) }
        return make(signature: "XSDT", revision: 1, oem: oem, body: w.bytes)
    }

    /// FACS (§5.2.10), version 2, 64 bytes. Has no checksum.
    static func facs() -> [UInt8] {
        var w = TableWriter()
        w.ascii("FACS", 4)
        w.u32(64)
        w.u32(0)            // hardware signature
        w.u32(0)            // firmware waking vector
        w.u32(0)            // global lock
        w.u32(0)            // flags
        w.u64(0)            // X firmware waking vector
        w.u8(2)             // version
        w.zeros(3)
        w.u32(0)            // OSPM flags
        w.zeros(24)
        return w.bytes
    }

    /// FADT revision 6 (§5.2.9, 276 bytes) with ICH9 PM blocks at PMBASE as QEMU lays them out.
    static func fadt(_ d: PlatformDescription, facs: UInt64, dsdt: UInt64) -> [UInt8] {
        let pm = d.power
        var w = TableWriter()
        w.u32(UInt32(truncatingIfNeeded: facs))   // FIRMWARE_CTRL (below 4 GiB here)
        w.u32(UInt32(truncatingIfNeeded: dsdt))   // DSDT
        w.u8(0)                 // reserved (INT_MODEL in 1.0)
        w.u8(0)                 // preferred PM profile: unspecified
        w.u16(pm.sciIRQ)
        w.u32(pm.smiCommandPort)
        w.u8(pm.smiCommandPort == 0 ? 0 : pm.acpiEnable)
        w.u8(pm.smiCommandPort == 0 ? 0 : pm.acpiDisable)
        w.u8(0)                 // S4BIOS_REQ
        w.u8(0)                 // PSTATE_CNT
        w.u32(UInt32(pm.pm1aEvent))
        w.u32(0)                // PM1b_EVT_BLK
        w.u32(UInt32(pm.pm1aControl))
        w.u32(0)                // PM1b_CNT_BLK
        w.u32(0)                // PM2_CNT_BLK
        w.u32(UInt32(pm.pmTimer))
        w.u32(UInt32(pm.gpe0Block))
        w.u32(0)                // GPE1_BLK
        w.u8(4)                 // PM1_EVT_LEN
        w.u8(2)                 // PM1_CNT_LEN
        w.u8(0)                 // PM2_CNT_LEN
        w.u8(4)                 // PM_TMR_LEN
        w.u8(PlatformDescription.PowerManagement.gpe0Length)
        w.u8(0)                 // GPE1_BLK_LEN
        w.u8(0)                 // GPE1_BASE
        w.u8(0)                 // CST_CNT
        w.u16(0x0FFF)           // P_LVL2_LAT: C2 not supported
        w.u16(0x0FFF)           // P_LVL3_LAT: C3 not supported
        w.u16(0)                // FLUSH_SIZE
        w.u16(0)                // FLUSH_STRIDE
        w.u8(0)                 // DUTY_OFFSET
        w.u8(0)                 // DUTY_WIDTH
        w.u8(0)                 // DAY_ALRM
        w.u8(0)                 // MON_ALRM
        w.u8(pm.rtcCentury)
        var bootArch: UInt16 = 0
        if d.legacy.serial != nil || d.legacy.rtc || d.legacy.i8042 { bootArch |= 1 }  // LEGACY_DEVICES
        if d.legacy.i8042 { bootArch |= 2 }                                           // 8042
        w.u16(bootArch)
        w.u8(0)
        // WBINVD, PROC_C1, SLP_BUTTON, RTC_S4, RESET_REG_SUP, USE_PLATFORM_CLOCK as QEMU q35;
        // FORCE_APIC_CLUSTER_MODEL above 8 CPUs.
        var flags: UInt32 = 1 << 0 | 1 << 2 | 1 << 5 | 1 << 7 | 1 << 10 | 1 << 15
        if d.cpus.count > 8 { flags |= 1 << 18 }
        w.u32(flags)
        w.gas(.io(pm.resetPort, bits: 8, access: 1))
        w.u8(pm.resetValue)
        w.u16(0)                // ARM_BOOT_ARCH
        w.u8(0)                 // FADT minor version
        w.u64(facs)             // X_FIRMWARE_CTRL
        w.u64(dsdt)             // X_DSDT
        w.gas(.io(pm.pm1aEvent, bits: 32))
        w.gas(.none)
        w.gas(.io(pm.pm1aControl, bits: 16))
        w.gas(.none)
        w.gas(.none)            // X_PM2_CNT_BLK
        w.gas(.io(pm.pmTimer, bits: 32))
        w.gas(.io(pm.gpe0Block, bits: PlatformDescription.PowerManagement.gpe0Length * 8))
        w.gas(.none)            // X_GPE1_BLK
        w.gas(.none)            // SLEEP_CONTROL_REG
        w.gas(.none)            // SLEEP_STATUS_REG
        w.u64(0)                // hypervisor vendor identity
        return make(signature: "FACP", revision: 6, oem: d.oem, body: w.bytes)
    }

    /// MADT (§5.2.12): local APIC (or x2APIC above ID 254) per CPU, the IOAPIC, QEMU's interrupt
    /// source overrides (IRQ0 -> GSI2; PCI-shareable ISA IRQs level/high), LINT1 as NMI.
    static func madt(_ d: PlatformDescription) -> [UInt8] {
        let ir = d.interrupts
        var w = TableWriter()
        w.u32(ir.localAPICAddress)
        w.u32(1)                            // PCAT_COMPAT: dual 8259s present
        var x2apic = false
        for (uid, cpu) in d.cpus.enumerated() {
            if cpu.apicID < 255 && uid < 255 {
                w.u8(0); w.u8(8); w.u8(UInt8(uid)); w.u8(UInt8(cpu.apicID)); w.u32(cpu.enabled ? 1 : 0)
            } else {
                x2apic = true
                w.u8(9); w.u8(16); w.u16(0); w.u32(cpu.apicID); w.u32(cpu.enabled ? 1 : 0); w.u32(UInt32(uid))
            }
        }
        w.u8(1); w.u8(12); w.u8(ir.ioapicID); w.u8(0); w.u32(ir.ioapicAddress); w.u32(ir.ioapicGSIBase)
        w.u8(2); w.u8(10); w.u8(0); w.u8(0); w.u32(2); w.u16(0)
        for irq in ir.levelTriggeredISAIRQs.sorted() where irq != 0 && irq < 16 {
            w.u8(2); w.u8(10); w.u8(0); w.u8(irq); w.u32(UInt32(irq)); w.u16(0x000D)   // active high, level
        }
        w.u8(4); w.u8(6); w.u8(0xFF); w.u16(0); w.u8(1)                                // all CPUs, LINT1
        if x2apic {
            w.u8(0x0A); w.u8(12); w.u16(0); w.u32(0xFFFF_FFFF); w.u8(1); w.zeros(3)
        }
        return make(signature: "APIC", revision: 3, oem: d.oem, body: w.bytes)
    }

    /// MCFG (PCI Firmware 3.2 §4.1.2): one allocation per segment.
    static func mcfg(_ d: PlatformDescription) -> [UInt8] {
        var w = TableWriter()
        w.zeros(8)
        let e = d.pci.ecam
        w.u64(e.base)
        w.u16(e.segment)
        w.u8(e.busRange.lowerBound)
        w.u8(e.busRange.upperBound)
        w.u32(0)
        return make(signature: "MCFG", revision: 1, oem: d.oem, body: w.bytes)
    }

    /// DMAR (VT-d 3.x §8): one DRHD with INCLUDE_PCI_ALL and the IOAPIC in its device scope.
    static func dmar(_ d: PlatformDescription, _ r: PlatformDescription.DMAR) -> [UInt8] {
        var w = TableWriter()
        w.u8(r.hostAddressWidth - 1)
        w.u8((r.interruptRemapping ? 1 : 0) | (r.x2apicOptOut ? 2 : 0))
        w.zeros(10)
        // DRHD: type 0, length 16 + device scope (8).
        w.u16(0); w.u16(16 + 8)
        w.u8(1)                 // INCLUDE_PCI_ALL
        w.u8(0)
        w.u16(d.pci.ecam.segment)
        w.u64(r.registerBase)
        // Device scope: IOAPIC (type 3), length 8, enumeration ID = IOAPIC ID, start bus, path (dev, fn).
        w.u8(3); w.u8(8); w.u16(0); w.u8(d.interrupts.ioapicID); w.u8(r.ioapicBus)
        w.u8(r.ioapicDevfn >> 3); w.u8(r.ioapicDevfn & 7)
        return make(signature: "DMAR", revision: 1, oem: d.oem, body: w.bytes)
    }

    /// HPET description table (IA-PC HPET 1.0a §3.2.4).
    static func hpet(_ d: PlatformDescription, _ h: PlatformDescription.HPET) -> [UInt8] {
        var w = TableWriter()
        w.u32(h.blockID)
        w.gas(GenericAddress(space: 0, bitWidth: 0, address: h.base))
        w.u8(0)                 // HPET number
        w.u16(0)                // minimum clock tick in periodic mode
        w.u8(0)                 // page protection
        return make(signature: "HPET", revision: 1, oem: d.oem, body: w.bytes)
    }
}
