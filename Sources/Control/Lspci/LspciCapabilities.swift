import VMMBase

/// Capability lines (ls-caps.c, ls-ecaps.c). Every capability gets lspci's first line; the
/// `-vv` detail lines are decoded for the capabilities Switchyard's devices carry most
/// (PM, MSI, MSI-X, vendor-specific virtio), and omitted elsewhere.
extension DeviceRenderer {
    mutating func showCapabilities(pointer: Int) {
        var canHaveExtended = false
        if config.word(0x06) & 0x10 != 0 {
            var seen = Set<Int>()
            var offset = Int(config.byte(pointer) & ~3)
            while offset != 0 {
                out += "\tCapabilities: "
                guard config.canRead(offset, 4) else {
                    out += "<access denied>\n"
                    break
                }
                let id = config.byte(offset)
                let next = Int(config.byte(offset + 1) & ~3)
                let flags = config.word(offset + 2)
                out += "[\(hex(offset, 2))] "
                guard seen.insert(offset).inserted else {
                    out += "<chain looped>\n"
                    break
                }
                if id == 0xFF {
                    out += "<chain broken>\n"
                    break
                }
                switch id {
                case 0x07, 0x10: canHaveExtended = true
                default: break
                }
                showCapability(id: id, at: offset, flags: flags)
                offset = next
            }
        }
        if canHaveExtended { showExtendedCapabilities() }
    }

    private mutating func showCapability(id: UInt32, at offset: Int, flags cap: UInt32) {
        switch id {
        case 0x00: out += "Null\n"
        case 0x01: powerManagement(at: offset, cap)
        case 0x02: out += "AGP version \(String((cap >> 4) & 0xF, radix: 16)).\(String(cap & 0xF, radix: 16))\n"
        case 0x03: out += "Vital Product Data\n"
        case 0x04:
            out += "Slot ID: \(cap & 0x1F) slots, First\(flag(cap & 0xFF, 0x20)), chassis \(hex(cap >> 8, 2))\n"
        case 0x05: msi(at: offset, cap)
        case 0x06: out += "CompactPCI hot-swap <?>\n"
        case 0x07: out += config.headerType == 1 ? "PCI-X bridge device\n"
            : config.headerType == 0 ? "PCI-X non-bridge device\n" : ""
        case 0x08: out += hyperTransport(cap) + "\n"
        case 0x09: vendorSpecific(at: offset, cap)
        case 0x0A: out += "Debug port: BAR=\(cap >> 13) offset=\(hex(cap & 0x1FFF, 4))\n"
        case 0x0B: out += "CompactPCI central resource control <?>\n"
        case 0x0C: out += "Hot-plug capable\n"
        case 0x0D:
            guard config.canRead(offset, 8) else { break }
            out += "Subsystem: " + names.subsystem(vendor: vendorID, device: deviceID,
                                                  subsystemVendor: UInt16(config.word(offset + 4)),
                                                  subsystemDevice: UInt16(config.word(offset + 6)),
                                                  numbering: options.numbering) + "\n"
        case 0x0E: out += "AGP3 <?>\n"
        case 0x0F: out += "Secure device <?>\n"
        case 0x10: out += express(cap)
        case 0x11: msix(at: offset, cap)
        case 0x12: out += "SATA HBA v\((cap >> 4) & 0xF).\(cap & 0xF)\n"
        case 0x13: out += "PCI Advanced Features\n"
        case 0x14:
            out += "Enhanced Allocation (EA): NumEntries=\(cap & 0x3F)"
            if config.headerType == 1 && config.canRead(offset + 4, 2) {
                out += ", secondary=\(config.byte(offset + 4)), subordinate=\(config.byte(offset + 5))"
            }
            out += "\n"
        default: out += "Capability ID \(id == 0 ? "0" : "0x" + String(id, radix: 16)) [\(hex(cap, 4))]\n"
        }
    }

    private mutating func powerManagement(at offset: Int, _ cap: UInt32) {
        out += "Power Management version \(cap & 0x7)\n"
        guard verbose >= 2 else { return }
        let auxCurrent = [0, 55, 100, 160, 220, 270, 320, 375][Int((cap & 0x1C0) >> 6)]
        out += "\t\tFlags: PMEClk\(flag(cap, 0x8)) DSI\(flag(cap, 0x20)) D1\(flag(cap, 0x200)) D2\(flag(cap, 0x400))"
            + " AuxCurrent=\(auxCurrent)mA PME(D0\(flag(cap, 0x800)),D1\(flag(cap, 0x1000)),D2\(flag(cap, 0x2000)),"
            + "D3hot\(flag(cap, 0x4000)),D3cold\(flag(cap, 0x8000)))\n"
        guard config.canRead(offset + 4, 4) else { return }
        let control = config.word(offset + 4)
        out += "\t\tStatus: D\(control & 0x3) NoSoftRst\(flag(control, 0x8)) PME-Enable\(flag(control, 0x100))"
            + " DSel=\((control & 0x1E00) >> 9) DScale=\((control & 0x6000) >> 13) PME\(flag(control, 0x8000))\n"
        let bridge = config.byte(offset + 6)
        if bridge != 0 { out += "\t\tBridge: PM\(flag(bridge, 0x80)) B3\(flag(~bridge, 0x40))\n" }
    }

    private mutating func msi(at offset: Int, _ cap: UInt32) {
        out += "MSI: Enable\(flag(cap, 0x1)) Count=\(1 << ((cap & 0x70) >> 4))/\(1 << ((cap & 0xE) >> 1))"
            + " Maskable\(flag(cap, 0x100)) 64bit\(flag(cap, 0x80))\n"
        guard verbose >= 2 else { return }
        let is64 = cap & 0x80 != 0
        guard config.canRead(offset + 4, (is64 ? 12 : 8) + 2 - 4) else { return }
        out += "\t\tAddress: "
        let data: UInt32
        if is64 {
            out += hex(config.long(offset + 8), 8)
            data = config.word(offset + 12)
        } else {
            data = config.word(offset + 8)
        }
        out += "\(hex(config.long(offset + 4), 8))  Data: \(hex(data, 4))\n"
        if cap & 0x100 != 0 {
            let maskOffset = offset + (is64 ? 16 : 12)
            guard config.canRead(maskOffset, 8) else { return }
            out += "\t\tMasking: \(hex(config.long(maskOffset), 8))  Pending: \(hex(config.long(maskOffset + 4), 8))\n"
        }
    }

    private mutating func msix(at offset: Int, _ cap: UInt32) {
        out += "MSI-X: Enable\(flag(cap, 0x8000)) Count=\((cap & 0x7FF) + 1) Masked\(flag(cap, 0x4000))\n"
        guard verbose >= 2, config.canRead(offset + 4, 8) else { return }
        let table = config.long(offset + 4), pba = config.long(offset + 8)
        out += "\t\tVector table: BAR=\(table & 0x7) offset=\(hex(table & ~0x7, 8))\n"
        out += "\t\tPBA: BAR=\(pba & 0x7) offset=\(hex(pba & ~0x7, 8))\n"
    }

    private mutating func vendorSpecific(at offset: Int, _ cap: UInt32) {
        out += "Vendor Specific Information: "
        let length = Int(cap & 0xFF), type = (cap >> 8) & 0xFF
        // ls-caps-vendor.c decodes virtio's capabilities (Red Hat 1af4:1000-107f).
        if vendorID == 0x1AF4, (0x1000...0x107F).contains(deviceID), length >= 16, config.canRead(offset, length) {
            let typeName = [1: "CommonCfg", 2: "Notify", 3: "ISR", 4: "DeviceCfg"][type] ?? "<unknown>"
            out += "VirtIO: \(typeName)\n"
            guard verbose >= 2 else { return }
            out += "\t\tBAR=\(config.byte(offset + 4)) offset=\(hex(config.long(offset + 8), 8))"
                + " size=\(hex(config.long(offset + 12), 8))"
            if type == 2 && length >= 20 { out += " multiplier=\(hex(config.long(offset + 16), 8))" }
            out += "\n"
            return
        }
        out += "Len=\(hex(length, 2)) <?>\n"
    }

    private func express(_ cap: UInt32) -> String {
        var line = "Express "
        if verbose >= 2 { line += "(v\(cap & 0xF)) " }
        let slot = flag(cap, 0x100)
        switch (cap & 0xF0) >> 4 {
        case 0: line += "Endpoint"
        case 1: line += "Legacy Endpoint"
        case 4: line += "Root Port (Slot\(slot))"
        case 5: line += "Upstream Port"
        case 6: line += "Downstream Port (Slot\(slot))"
        case 7: line += "PCI-Express to PCI/PCI-X Bridge"
        case 8: line += "PCI/PCI-X to PCI-Express Bridge (Slot\(slot))"
        case 9: line += "Root Complex Integrated Endpoint"
        case 10: line += "Root Complex Event Collector"
        case let type: line += "Unknown type \(type)"
        }
        return line + ", MSI \(hex((cap & 0x3E00) >> 9, 2))\n"
    }

    private func hyperTransport(_ cap: UInt32) -> String {
        switch cap & 0xE000 {
        case 0x0000: return "HyperTransport: Slave or Primary Interface"
        case 0x2000: return "HyperTransport: Host or Secondary Interface"
        default: break
        }
        switch cap & 0xF800 {
        case 0x4000: return "HyperTransport: Switch"
        case 0x8000: return "HyperTransport: Interrupt Discovery and Configuration"
        case 0x8800:
            let minor = cap & 0x1F
            return "HyperTransport: Revision ID: \((cap & 0xE0) >> 5).\(minor < 10 ? "0" : "")\(minor)"
        case 0x9000: return "HyperTransport: UnitID Clumping"
        case 0x9800: return "HyperTransport: Extended Configuration Space Access"
        case 0xA000: return "HyperTransport: Address Mapping"
        case 0xA800: return "HyperTransport: MSI Mapping Enable\(flag(cap, 0x1)) Fixed\(flag(cap, 0x2))"
        case 0xB000: return "HyperTransport: DirectRoute"
        case 0xB800: return "HyperTransport: VCSet"
        case 0xC000: return "HyperTransport: Retry Mode"
        case 0xC800: return "HyperTransport: X86 (reserved)"
        case let type: return "HyperTransport: #\(hex(type >> 11, 2))"
        }
    }

    // MARK: Extended capabilities (show_ext_caps)

    private mutating func showExtendedCapabilities() {
        var offset = 0x100
        var seen = Set<Int>()
        repeat {
            guard config.canRead(offset, 4) else { break }
            let header = config.long(offset)
            if header == 0 || header == 0xFFFF_FFFF { break }
            let id = header & 0xFFFF
            out += "\tCapabilities: [\(hex(offset, 3))"
            if verbose > 1 { out += " v\((header >> 16) & 0xF)" }
            out += "] "
            guard seen.insert(offset).inserted else {
                out += "<chain looped>\n"
                break
            }
            out += extendedCapabilityLine(id: id, at: offset) + "\n"
            offset = Int((header >> 20) & ~3)
        } while offset != 0
    }

    private func extendedCapabilityLine(id: UInt32, at offset: Int) -> String {
        switch id {
        case 0x00: return "Null"
        case 0x01: return "Advanced Error Reporting"
        case 0x02, 0x09: return "Virtual Channel"
        case 0x03:
            guard config.canRead(offset + 4, 8) else { return "" }
            let low = config.long(offset + 4), high = config.long(offset + 8)
            let bytes = [high >> 24, high >> 16, high >> 8, high, low >> 24, low >> 16, low >> 8, low]
            return "Device Serial Number " + bytes.map { hex($0 & 0xFF, 2) }.joined(separator: "-")
        case 0x04: return "Power Budgeting <?>"
        case 0x05: return "Root Complex Link"
        case 0x06: return "Root Complex Internal Link <?>"
        case 0x07: return "Root Complex Event Collector Endpoint Association"
        case 0x08: return "Multi-Function Virtual Channel <?>"
        case 0x0A: return "Root Complex Register Block <?>"
        case 0x0B:
            guard config.canRead(offset + 4, 4) else { return "Vendor Specific Information: <unreadable>" }
            let h = config.long(offset + 4)
            return "Vendor Specific Information: ID=\(hex(h & 0xFFFF, 4)) Rev=\((h >> 16) & 0xF)"
                + " Len=\(hex(h >> 20, 3)) <?>"
        case 0x0D: return "Access Control Services"
        case 0x0E: return "Alternative Routing-ID Interpretation (ARI)"
        case 0x0F: return "Address Translation Service (ATS)"
        case 0x10: return "Single Root I/O Virtualization (SR-IOV)"
        case 0x11: return "Multi-Root I/O Virtualization <?>"
        case 0x12: return "Multicast"
        case 0x13: return "Page Request Interface (PRI)"
        case 0x15: return "Physical Resizable BAR"
        case 0x16: return "Dynamic Power Allocation <?>"
        case 0x17: return "Transaction Processing Hints"
        case 0x18: return "Latency Tolerance Reporting"
        case 0x19: return "Secondary PCI Express"
        case 0x1A: return "Protocol Multiplexing <?>"
        case 0x1B: return "Process Address Space ID (PASID)"
        case 0x1C: return "LN Requester <?>"
        case 0x1D: return "Downstream Port Containment"
        case 0x1E: return "L1 PM Substates"
        case 0x1F: return "Precision Time Measurement"
        case 0x20: return "PCI Express over M_PHY <?>"
        case 0x21: return "FRS Queueing <?>"
        case 0x22: return "Readiness Time Reporting <?>"
        case 0x23:
            guard config.canRead(offset + 4, 8) else { return "Designated Vendor-Specific: <unreadable>" }
            let h = config.long(offset + 4)
            let vendor = h & 0xFFFF, length = h >> 20
            var line = "Designated Vendor-Specific: Vendor=\(hex(vendor, 4)) ID=\(hex(config.word(offset + 8), 4))"
                + " Rev=\((h >> 16) & 0xF) Len=\(length)"
            line += vendor == 0x1E98 && length >= 16 ? ": CXL" : " <?>"  // 0x1e98: CXL's DVSEC vendor
            return line
        case 0x24: return "Virtual Resizable BAR"
        case 0x25: return "Data Link Feature <?>"
        case 0x26: return "Physical Layer 16.0 GT/s <?>"
        case 0x27: return "Lane Margining at the Receiver <?>"
        case 0x28: return "Hierarchy ID <?>"
        case 0x29: return "Native PCIe Enclosure Management <?>"
        case 0x2E: return "Data Object Exchange"
        default: return "Extended Capability ID \(id == 0 ? "0" : "0x" + String(id, radix: 16))"
        }
    }
}
