import Foundation
import VMMBase

/// Every firmware table for one machine, built from a `PlatformDescription`.
public struct FirmwareTables: Sendable, Equatable {
    /// A table with the guest-physical address its pointers assume.
    public struct Table: Sendable, Equatable {
        public let signature: String
        public let address: UInt64
        public let bytes: [UInt8]
        /// File name under `write(to:)`.
        public var fileName: String { (signature == "RSD PTR " ? "RSDP" : signature) + ".bin" }
    }

    public let rsdp: Table
    public let xsdt: Table
    public let fadt: Table
    public let facs: Table
    public let dsdt: Table
    public let madt: Table
    public let mcfg: Table
    public let dmar: Table?
    public let hpet: Table?
    /// The flattened device tree blob.
    public let deviceTree: [UInt8]

    /// All ACPI tables in memory order (RSDP first).
    public var tables: [Table] { [rsdp, xsdt, fadt, facs, dsdt, madt, mcfg] + [dmar, hpet].compactMap { $0 } }

    /// Validates the description, then lays the tables out from `layout.base`: RSDP, XSDT, FACP,
    /// FACS (64-byte aligned), DSDT, APIC, MCFG, DMAR, HPET, each 16-byte aligned.
    public static func build(_ description: PlatformDescription) throws(FirmwareError) -> FirmwareTables {
        try description.validate()
        let d = description
        do {
            let dsdtBytes = try DSDTBuilder(d).build()
            let madt = ACPITable.madt(d)
            let mcfg = ACPITable.mcfg(d)
            let dmar = d.dmar.map { ACPITable.dmar(d, $0) }
            let hpet = d.hpet.map { ACPITable.hpet(d, $0) }
            let facs = ACPITable.facs()

            func align(_ v: UInt64, _ a: UInt64) -> UInt64 { (v + a - 1) & ~(a - 1) }
            let base = d.layout.base
            let rsdpAddr = base
            let xsdtAddr = align(rsdpAddr + 36, 16)
            let xsdtCount = 3 + (dmar == nil ? 0 : 1) + (hpet == nil ? 0 : 1)
            let fadtAddr = align(xsdtAddr + UInt64(36 + 8 * xsdtCount), 16)
            let facsAddr = align(fadtAddr + 276, 64)
            let dsdtAddr = align(facsAddr + 64, 16)
            let madtAddr = align(dsdtAddr + UInt64(dsdtBytes.count), 16)
            let mcfgAddr = align(madtAddr + UInt64(madt.count), 16)
            var next = align(mcfgAddr + UInt64(mcfg.count), 16)
            var dmarAddr: UInt64 = 0, hpetAddr: UInt64 = 0
            if let t = dmar { dmarAddr = next; next = align(next + UInt64(t.count), 16) }
            if let t = hpet { hpetAddr = next; next = align(next + UInt64(t.count), 16) }
            let used = next - base
            guard used <= d.layout.size, base.addingReportingOverflow(used).overflow == false else {
                throw FirmwareError.tablesTooLarge(size: Int(used), room: d.layout.size)
            }
            guard facsAddr <= 0xFFFF_FFFF, dsdtAddr <= 0xFFFF_FFFF else {
                throw FirmwareError.invalidWindow("table layout above 4 GiB (FADT's 32-bit pointers)")
            }

            var entries = [fadtAddr, madtAddr, mcfgAddr]
            if dmar != nil { entries.append(dmarAddr) }
            if hpet != nil { entries.append(hpetAddr) }
            let dt: [UInt8]
            do { dt = try DeviceTreeBuilder(d: d).build() } catch { throw FirmwareError.deviceTree(error) }

            return FirmwareTables(
                rsdp: Table(signature: "RSD PTR ", address: rsdpAddr, bytes: ACPITable.rsdp(oemID: d.oem.oemID, xsdtAddress: xsdtAddr)),
                xsdt: Table(signature: "XSDT", address: xsdtAddr, bytes: ACPITable.xsdt(oem: d.oem, entries: entries)),
                fadt: Table(signature: "FACP", address: fadtAddr, bytes: ACPITable.fadt(d, facs: facsAddr, dsdt: dsdtAddr)),
                facs: Table(signature: "FACS", address: facsAddr, bytes: facs),
                dsdt: Table(signature: "DSDT", address: dsdtAddr, bytes: dsdtBytes),
                madt: Table(signature: "APIC", address: madtAddr, bytes: madt),
                mcfg: Table(signature: "MCFG", address: mcfgAddr, bytes: mcfg),
                dmar: dmar.map { Table(signature: "DMAR", address: dmarAddr, bytes: $0) },
                hpet: hpet.map { Table(signature: "HPET", address: hpetAddr, bytes: $0) },
                deviceTree: dt)
        } catch let e as FirmwareError {
            throw e
        } catch let e as AMLError {
            throw .aml(e)
        } catch {
            throw .invalidWindow("unexpected error \(error)")
        }
    }

    /// The tables as one image to copy at `layout.base` (gaps zero-filled).
    public var image: [UInt8] {
        let base = rsdp.address
        let end = tables.map { $0.address + UInt64($0.bytes.count) }.max() ?? base
        var out = [UInt8](repeating: 0, count: Int(end - base))
        for t in tables { out.replaceSubrange(Int(t.address - base)..<Int(t.address - base) + t.bytes.count, with: t.bytes) }
        return out
    }

    /// Writes RSDP.bin, XSDT.bin, FACP.bin, FACS.bin, DSDT.bin, APIC.bin, MCFG.bin, DMAR.bin and
    /// HPET.bin when present, and machine.dtb, into an existing directory.
    /// Writes every table and the device tree, creating `directory` if needed.
    public func write(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for t in tables {
            try Data(t.bytes).write(to: directory.appendingPathComponent(t.fileName))
        }
        try Data(deviceTree).write(to: directory.appendingPathComponent("machine.dtb"))
    }
}
