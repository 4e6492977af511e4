import VMMBase

/// The DSDT's AML for a q35 description, following the shape of QEMU's q35 DSDT
/// (hw/i386/acpi-build.c): PCI0 with _OSC/_CRS/_PRT, PIRQ links over the LPC's PIRQ routing
/// registers, GSI links for APIC mode, LPC legacy devices, and QEMU's ACPI PCI hot-plug methods.
struct DSDTBuilder {
    let d: PlatformDescription
    let buses: [UInt8: PlatformDescription.Bus]

    init(_ description: PlatformDescription) {
        d = description
        buses = description.pci.busMap()
    }

    static func segment(_ text: String) throws -> AMLName {
        try AMLName(segments: [AMLNameSegment(text)])
    }

    /// Device name for a function: "S" + two hex digits of devfn, as QEMU names them.
    static func deviceName(_ devfn: UInt8) throws -> AMLName {
        try segment("S" + hex(devfn, 2).uppercased())
    }

    static let linkNames = ["LNKA", "LNKB", "LNKC", "LNKD", "LNKE", "LNKF", "LNKG", "LNKH"]
    static let gsiNames = ["GSIA", "GSIB", "GSIC", "GSID", "GSIE", "GSIF", "GSIG", "GSIH"]
    static let pirqFields = ["PRQA", "PRQB", "PRQC", "PRQD", "PRQE", "PRQF", "PRQG", "PRQH"]

    func build() throws -> [UInt8] {
        let terms: [AML] = [
            AML.nameDecl("PICF", .zero),
            try AML.method("_PIC", arguments: 1) { AML.store(.arg(0), .name("PICF")) },
            try AML.scope("\\_SB") {
                try pci0()
                try AML.field("PCI0.ISA.PIRQ", access: .byte, update: .preserve, [
                    .named("PRQA", bits: 8), .named("PRQB", bits: 8), .named("PRQC", bits: 8), .named("PRQD", bits: 8),
                    .offset(bytes: 8),
                    .named("PRQE", bits: 8), .named("PRQF", bits: 8), .named("PRQG", bits: 8), .named("PRQH", bits: 8),
                ])
                try irqStatusMethod()
                try irqCurrentMethod()
                for i in 0..<8 { try linkDevice(i) }
                for i in 0..<8 { try gsiLinkDevice(i) }
                if let h = d.hpet { try hpetDevice(h) }
                try ecamReservation()
                for (uid, _) in d.cpus.enumerated() {
                    try AML.device(Self.segment("C" + hex(uid, 3).uppercased())) {
                        AML.nameDecl("_HID", try AML.string("ACPI0007"))
                        AML.nameDecl("_UID", .int(uid))
                    }
                }
            },
            try AML.scope("\\_GPE") {
                AML.nameDecl("_HID", try AML.string("ACPI0006"))
                if let hp = d.acpiHotplug, usesACPIHotplug {
                    try AML.method(Self.segment("_E" + hex(hp.gpeBit, 2).uppercased())) {
                        AML.acquire(.name("\\_SB.PCI0.BLCK"))
                        AML.call("\\_SB.PCI0.PCNT")
                        AML.release(.name("\\_SB.PCI0.BLCK"))
                    }
                }
            },
            AML.nameDecl("\\_S5", try AML.package([.zero, .zero, .zero, .zero])),
        ]
        let oem = d.oem
        return ACPITable.make(signature: "DSDT", revision: 2, oem: oem, body: AML(terms).bytes)
    }

    var usesACPIHotplug: Bool { d.pci.buses.contains { $0.acpiHotplugSelector != nil } }

    // MARK: PCI0

    private func pci0() throws -> AML {
        let host = d.pci
        return try AML.device("PCI0") {
            AML.nameDecl("_HID", try AML.eisaID("PNP0A08"))
            AML.nameDecl("_CID", try AML.eisaID("PNP0A03"))
            AML.nameDecl("_SEG", .int(host.ecam.segment))
            AML.nameDecl("_BBN", .int(host.rootBus))
            AML.nameDecl("_UID", .int(host.ecam.segment))
            AML.nameDecl("SUPP", .zero)
            AML.nameDecl("CTRL", .zero)
            try oscMethod()
            AML.nameDecl("_CRS", try crs())
            AML.nameDecl("PRTP", try routingTable(gsi: false))
            AML.nameDecl("PRTA", try routingTable(gsi: true))
            try AML.method("_PRT") {
                try AML.if(.lEqual(.name("PICF"), .zero)) { AML.return(.name("PRTP")) }
                try AML.else { AML.return(.name("PRTA")) }
            }
            try lpcDevice()
            try reservation("GPE0", "GPE0 resources", base: d.power.gpe0Block,
                            length: PlatformDescription.PowerManagement.gpe0Length)
            if let hp = d.acpiHotplug, usesACPIHotplug {
                try reservation("PHPR", "PCI Hotplug resources", base: hp.base, length: hp.length)
                try hotplugRegisters(hp)
            }
            try busContents(host.rootBus)
        }
    }

    /// _OSC for the PCI host bridge (PCI Firmware 3.3 §4.5): PME, AER and PCIe capability control
    /// always; native PCIe hot-plug only when the description chooses it; SHPC when present.
    private func oscMethod() throws -> AML {
        let allowed: UInt64 = 0x1C | (d.pci.nativeHotplug ? 0x01 : 0) | (d.pci.shpcPresent ? 0x02 : 0)
        return try AML.method("_OSC", arguments: 4) {
            try AML.createField(bytes: 4, .arg(3), byteIndex: .zero, "CDW1")
            try AML.if(.lEqual(.arg(0), try AML.uuid("33DB4D5B-1FF7-401C-9657-7441C03DD766"))) {
                try AML.createField(bytes: 4, .arg(3), byteIndex: .int(4), "CDW2")
                try AML.createField(bytes: 4, .arg(3), byteIndex: .int(8), "CDW3")
                AML.store(.name("CDW2"), .name("SUPP"))
                AML.store(.name("CDW3"), .name("CTRL"))
                AML.and(.name("CTRL"), .int(allowed), target: .name("CTRL"))
                try AML.if(.lNot(.lEqual(.arg(1), .one))) {
                    AML.or(.name("CDW1"), .int(0x08), target: .name("CDW1"))   // unknown revision
                }
                try AML.if(.lNot(.lEqual(.name("CDW3"), .name("CTRL")))) {
                    AML.or(.name("CDW1"), .int(0x10), target: .name("CDW1"))   // capabilities masked
                }
                AML.store(.name("CTRL"), .name("CDW3"))
            }
            try AML.else {
                AML.or(.name("CDW1"), .int(0x04), target: .name("CDW1"))       // unrecognized UUID
            }
            AML.return(.arg(3))
        }
    }

    private func crs() throws -> AML {
        let host = d.pci
        var r: [ResourceDescriptor] = [
            try .wordBusNumber(minimum: UInt16(host.ecam.busRange.lowerBound), maximum: UInt16(host.ecam.busRange.upperBound)),
            .io(minimum: 0x0CF8, maximum: 0x0CF8, alignment: 1, length: 8),
            try .wordIO(minimum: 0x0000, maximum: 0x0CF7),
        ]
        if let io = host.ioWindow {
            r.append(try .wordIO(minimum: UInt16(io.base), maximum: UInt16(io.last)))
        }
        r.append(try .dwordMemory(cacheability: .cacheable, minimum: 0x000A_0000, maximum: 0x000B_FFFF))
        r.append(try .dwordMemory(cacheability: .nonCacheable, minimum: UInt32(host.mem32Window.base),
                                  maximum: UInt32(host.mem32Window.last)))
        if let w = host.mem64Window {
            r.append(try .qwordMemory(cacheability: .cacheable, minimum: w.base, maximum: w.last))
        }
        return try AML.resourceTemplate(r)
    }

    /// QEMU's q35 routing: 32 slots x 4 pins, through LNKx (PIC mode) or GSIx (APIC mode).
    private func routingTable(gsi: Bool) throws -> AML {
        var entries: [AML] = []
        for slot in UInt8(0)..<32 {
            for pin in UInt8(0)..<4 {
                let pirq = Int(d.pci.pirqRouting.pirq(slot: slot, pin: pin))
                let link = gsi ? Self.gsiNames[pirq] : Self.linkNames[pirq]
                entries.append(try AML.package([.int(UInt64(slot) << 16 | 0xFFFF), .int(pin),
                                                .name(try Self.segment(link)), .zero]))
            }
        }
        return try AML.package(entries)
    }

    private func lpcDevice() throws -> AML {
        let lpc = d.pci.lpcDevfn
        let legacy = d.legacy
        return try AML.device("ISA") {
            AML.nameDecl("_ADR", .int(UInt64(lpc >> 3) << 16 | UInt64(lpc & 7)))
            AML.operationRegion("PIRQ", .pciConfig, offset: .int(0x60), length: .int(0x0C))
            if legacy.rtc {
                try AML.device("RTC") {
                    AML.nameDecl("_HID", try AML.eisaID("PNP0B00"))
                    AML.nameDecl("_CRS", try AML.resourceTemplate([
                        .io(minimum: 0x70, maximum: 0x70, alignment: 1, length: 8), try .irqNoFlags([8]),
                    ]))
                }
            }
            if legacy.i8042 {
                try AML.device("KBD") {
                    AML.nameDecl("_HID", try AML.eisaID("PNP0303"))
                    AML.nameDecl("_STA", .int(0x0F))
                    AML.nameDecl("_CRS", try AML.resourceTemplate([
                        .io(minimum: 0x60, maximum: 0x60, alignment: 1, length: 1),
                        .io(minimum: 0x64, maximum: 0x64, alignment: 1, length: 1), try .irqNoFlags([1]),
                    ]))
                }
                try AML.device("MOU") {
                    AML.nameDecl("_HID", try AML.eisaID("PNP0F13"))
                    AML.nameDecl("_STA", .int(0x0F))
                    AML.nameDecl("_CRS", try AML.resourceTemplate([try .irqNoFlags([12])]))
                }
            }
            if let com = legacy.serial {
                try AML.device("COM1") {
                    AML.nameDecl("_HID", try AML.eisaID("PNP0501"))
                    AML.nameDecl("_UID", .one)
                    AML.nameDecl("_STA", .int(0x0F))
                    AML.nameDecl("_CRS", try AML.resourceTemplate([
                        .io(minimum: com.port, maximum: com.port, alignment: 0, length: 8), try .irqNoFlags([com.irq]),
                    ]))
                }
            }
        }
    }

    /// A PNP0A06 device that reserves an I/O range so the OS does not hand it out.
    private func reservation(_ name: String, _ uid: String, base: UInt16, length: UInt8) throws -> AML {
        try AML.device(Self.segment(name)) {
            AML.nameDecl("_HID", try AML.string("PNP0A06"))
            AML.nameDecl("_UID", try AML.string(uid))
            AML.nameDecl("_STA", .int(0x0B))
            AML.nameDecl("_CRS", try AML.resourceTemplate([
                .io(minimum: base, maximum: base, alignment: 1, length: length),
            ]))
        }
    }

    // MARK: Interrupt links

    /// IQST: a link whose route register has bit 7 set is disabled.
    private func irqStatusMethod() throws -> AML {
        try AML.method("IQST", arguments: 1) {
            try AML.if(.and(.int(0x80), .arg(0))) { AML.return(.int(0x09)) }
            AML.return(.int(0x0B))
        }
    }

    /// IQCR: current resources of a link from its route register's IRQ bits. The template lives
    /// in Local0 (QEMU names it PRR0 inside the method, which iasl remarks on).
    private func irqCurrentMethod() throws -> AML {
        try AML.method("IQCR", arguments: 1, serialized: true) {
            AML.store(try AML.resourceTemplate([
                try .interrupt(edgeTriggered: false, activeLow: false, shared: true, [0]),
            ]), .local(0))
            try AML.createField(bytes: 4, .local(0), byteIndex: .int(5), "PRRI")
            AML.store(.and(.arg(0), .int(0x0F)), .name("PRRI"))
            AML.return(.local(0))
        }
    }

    private func linkDevice(_ i: Int) throws -> AML {
        let reg = AML.name(try Self.segment(Self.pirqFields[i]))
        return try AML.device(Self.segment(Self.linkNames[i])) {
            AML.nameDecl("_HID", try AML.eisaID("PNP0C0F"))
            AML.nameDecl("_UID", .int(i))
            AML.nameDecl("_PRS", try AML.resourceTemplate([
                try .interrupt(edgeTriggered: false, activeLow: false, shared: true, d.interrupts.pirqISAChoices),
            ]))
            try AML.method("_STA") { AML.return(.call("IQST", reg)) }
            try AML.method("_DIS") { AML.or(reg, .int(0x80), target: reg) }
            try AML.method("_CRS") { AML.return(.call("IQCR", reg)) }
            try AML.method("_SRS", arguments: 1) {
                try AML.createField(bytes: 4, .arg(0), byteIndex: .int(5), "PRRI")
                AML.store(.name("PRRI"), reg)
            }
        }
    }

    private func gsiLinkDevice(_ i: Int) throws -> AML {
        let gsi = d.interrupts.pirqGSIBase + UInt32(i)
        let template = try AML.resourceTemplate([
            try .interrupt(edgeTriggered: false, activeLow: false, shared: true, [gsi]),
        ])
        return try AML.device(Self.segment(Self.gsiNames[i])) {
            AML.nameDecl("_HID", try AML.eisaID("PNP0C0F"))
            AML.nameDecl("_UID", .int(gsi))
            AML.nameDecl("_PRS", template)
            AML.nameDecl("_CRS", template)
            try AML.method("_DIS") {}
            try AML.method("_SRS", arguments: 1) {}
        }
    }

    /// The ECAM window as a motherboard resource (PNP0C02). PCI Firmware 3.3 §4.1.2 asks for
    /// it, and Linux uses MMCONFIG without complaint only when ACPI reserves it ("not reserved
    /// in ACPI motherboard resources" otherwise, falling back to the E820 entry).
    private func ecamReservation() throws -> AML {
        guard let range = d.pci.ecam.range, let size = range.size, range.base <= UInt64(UInt32.max) else { return AML([]) }
        return try AML.device("ECMR") {
            AML.nameDecl("_HID", try AML.eisaID("PNP0C02"))
            AML.nameDecl("_UID", try AML.string("ECAM"))
            AML.nameDecl("_CRS", try AML.resourceTemplate([
                .memory32Fixed(writable: true, base: UInt32(range.base), length: UInt32(clamping: size)),
            ]))
        }
    }

    private func hpetDevice(_ h: PlatformDescription.HPET) throws -> AML {
        try AML.device("HPET") {
            AML.nameDecl("_HID", try AML.eisaID("PNP0103"))
            AML.nameDecl("_UID", .zero)
            AML.nameDecl("_STA", .int(0x0F))
            AML.nameDecl("_CRS", try AML.resourceTemplate([
                .memory32Fixed(writable: false, base: UInt32(truncatingIfNeeded: h.base), length: 0x400),
            ]))
        }
    }

    // MARK: ACPI PCI hot-plug

    /// QEMU's register block: PCIU/PCID (up/down), B0EJ (eject), BNUM (bus select), and PCEJ.
    private func hotplugRegisters(_ hp: PlatformDescription.ACPIHotplugRegisters) throws -> [AML] {
        [
            AML.operationRegion("PCST", .systemIO, offset: .int(hp.base), length: .int(0x08)),
            try AML.field("PCST", access: .dword, update: .writeAsZeros, [.named("PCIU", bits: 32), .named("PCID", bits: 32)]),
            AML.operationRegion("SEJ", .systemIO, offset: .int(hp.base + 0x08), length: .int(0x04)),
            try AML.field("SEJ", access: .dword, update: .writeAsZeros, [.named("B0EJ", bits: 32)]),
            AML.operationRegion("BNMR", .systemIO, offset: .int(hp.base + 0x10), length: .int(0x08)),
            try AML.field("BNMR", access: .dword, update: .writeAsZeros, [.named("BNUM", bits: 32), .named("PIDX", bits: 32)]),
            try AML.mutex("BLCK"),
            try AML.method("PCEJ", arguments: 2) {
                AML.acquire(.name("BLCK"))
                AML.store(.arg(0), .name("BNUM"))
                AML.store(.shiftLeft(.one, .arg(1)), .name("B0EJ"))
                AML.release(.name("BLCK"))
                AML.return(.zero)
            },
        ]
    }

    /// Whether a bus, or any bus below it, uses ACPI hot-plug.
    private func leadsToHotplug(_ bus: UInt8) -> Bool {
        guard let b = buses[bus] else { return false }
        if b.acpiHotplugSelector != nil { return true }
        return b.devices.contains { $0.secondaryBus.map(leadsToHotplug) ?? false }
    }

    /// The terms inside a bus's device (PCI0 or a bridge): hot-plug slots, bridge devices on the
    /// way to hot-plug buses, DVNT and PCNT.
    private func busContents(_ number: UInt8) throws -> [AML] {
        guard let bus = buses[number], leadsToHotplug(number) else { return [] }
        var terms: [AML] = []
        let byDevfn = Dictionary(bus.devices.map { ($0.devfn, $0) }, uniquingKeysWith: { a, _ in a })
        var notified: [UInt8] = []         // slots that DVNT notifies
        var childBridges: [UInt8] = []     // devfns whose PCNT is chained
        if let sel = bus.acpiHotplugSelector { terms.append(AML.nameDecl("BSEL", .int(sel))) }

        let slots: [UInt8] = bus.acpiHotplugSelector == nil ? [] : (bus.kind == .conventional ? Array(0..<32) : [0])
        var emitted = Set<UInt8>()
        for devfn in Set(bus.devices.map(\.devfn) + slots.map { $0 << 3 }).sorted() where !emitted.contains(devfn) {
            let dev = byDevfn[devfn]
            let slot = devfn >> 3
            let isHotplugSlot = bus.acpiHotplugSelector != nil && slots.contains(slot) && devfn & 7 == 0
                && (dev == nil || (dev!.hotpluggable && dev!.secondaryBus == nil))
            if let s = dev?.secondaryBus, leadsToHotplug(s) {
                emitted.insert(devfn)
                childBridges.append(devfn)
                terms.append(try AML.device(Self.deviceName(devfn)) {
                    AML.nameDecl("_ADR", .int(UInt64(slot) << 16 | UInt64(devfn & 7)))
                    try busContents(s)
                })
            } else if isHotplugSlot {
                // A slot is free or holds a hot-pluggable function 0; functions 1-7 of a slot
                // go with function 0, as QEMU's ejection removes the whole slot.
                if bus.devices.contains(where: { $0.slot == slot && !$0.hotpluggable }) { continue }
                emitted.insert(devfn)
                notified.append(slot)
                terms.append(try AML.device(Self.deviceName(devfn)) {
                    AML.nameDecl("_ADR", .int(UInt64(slot) << 16))
                    AML.nameDecl("_SUN", .int(slot))
                    try AML.method("_EJ0", arguments: 1) { AML.call("PCEJ", .name("BSEL"), .name("_SUN")) }
                })
            }
        }
        if bus.acpiHotplugSelector != nil {
            terms.append(try AML.method("DVNT", arguments: 2) {
                for slot in notified {
                    try AML.if(.and(.arg(0), .int(UInt64(1) << UInt64(slot)))) {
                        AML.notify(.name(try Self.deviceName(slot << 3)), .arg(1))
                    }
                }
            })
        }
        terms.append(try AML.method("PCNT") {
            if bus.acpiHotplugSelector != nil {
                AML.store(.name("BSEL"), .name("BNUM"))
                AML.call("DVNT", .name("PCIU"), .one)        // device check
                AML.call("DVNT", .name("PCID"), .int(3))     // eject request
            }
            for devfn in childBridges {
                let child = try Self.deviceName(devfn)
                AML.call(try AMLName(rooted: false, parents: 1, segments: child.segments + [AMLNameSegment("PCNT")]))
            }
        })
        return terms
    }
}
