import VMMBase

/// A description the tables cannot represent, found before any byte is written.
public enum FirmwareError: Error, Equatable, Sendable, CustomStringConvertible {
    case noCPUs
    case duplicateAPICID(UInt32)
    case invalidOEMField(field: String, value: String)
    case busOutsideECAM(bus: UInt8, ecam: ClosedRange<UInt8>)
    case duplicateBus(UInt8)
    case missingRootBus(UInt8)
    case unknownSecondaryBus(bridge: PCIAddress, bus: UInt8)
    case busReachedTwice(UInt8)
    case unreachableBus(UInt8)
    case duplicateDevfn(bus: UInt8, devfn: UInt8)
    /// A PCIe downstream link carries only device 0.
    case deviceOnDownstreamLink(bus: UInt8, devfn: UInt8)
    /// More ACPI hot-plug buses than the selector register can address (QEMU: 256 per segment).
    case tooManyHotplugBuses(segment: UInt16, count: Int, limit: Int)
    case duplicateHotplugSelector(UInt32)
    case hotplugRegistersMissing
    case overlappingWindows(String, String)
    case invalidWindow(String)
    case invalidPIRQRouting
    case tablesTooLarge(size: Int, room: UInt64)
    case aml(AMLError)
    case deviceTree(FDTError)

    public var description: String {
        switch self {
        case .noCPUs: return "the description has no CPU"
        case .duplicateAPICID(let id): return "APIC ID \(id) is used twice"
        case .invalidOEMField(let f, let v): return "OEM field \(f) '\(v)' has the wrong length or is not ASCII"
        case .busOutsideECAM(let b, let r): return "bus \(b) is outside the ECAM bus range \(r.lowerBound)-\(r.upperBound)"
        case .duplicateBus(let b): return "bus \(b) is described twice"
        case .missingRootBus(let b): return "the root bus \(b) is not described"
        case .unknownSecondaryBus(let a, let b): return "bridge \(a) names secondary bus \(b), which is not described"
        case .busReachedTwice(let b): return "bus \(b) is the secondary bus of more than one bridge"
        case .unreachableBus(let b): return "bus \(b) is not reached from the root bus through bridges"
        case .duplicateDevfn(let b, let d): return "devfn 0x\(String(d, radix: 16)) appears twice on bus \(b)"
        case .deviceOnDownstreamLink(let b, let d): return "bus \(b) is a PCIe link; devfn 0x\(String(d, radix: 16)) is not device 0"
        case .tooManyHotplugBuses(let s, let c, let l): return "segment \(s) has \(c) ACPI hot-plug buses; at most \(l) can be selected"
        case .duplicateHotplugSelector(let s): return "ACPI hot-plug selector \(s) is used by two buses"
        case .hotplugRegistersMissing: return "a bus uses ACPI hot-plug but the description has no hot-plug register block"
        case .overlappingWindows(let a, let b): return "\(a) overlaps \(b)"
        case .invalidWindow(let w): return "\(w) cannot be described"
        case .invalidPIRQRouting: return "the PIRQ routing needs 32 slot entries with values 0-7"
        case .tablesTooLarge(let size, let room): return "the tables need \(size) bytes; the layout has \(room)"
        case .aml(let e): return "AML: \(e)"
        case .deviceTree(let e): return "device tree: \(e)"
        }
    }
}

extension PlatformDescription {
    /// Checks everything the tables rely on. `build` calls it first.
    public func validate() throws(FirmwareError) {
        guard !cpus.isEmpty else { throw .noCPUs }
        var apic = Set<UInt32>()
        for c in cpus where !apic.insert(c.apicID).inserted { throw .duplicateAPICID(c.apicID) }
        for (f, v, n) in [("oemID", oem.oemID, 6), ("oemTableID", oem.oemTableID, 8), ("creatorID", oem.creatorID, 4)] {
            guard v.utf8.count == n, v.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
                throw .invalidOEMField(field: f, value: v)
            }
        }
        try pci.validate(hotplugRegisters: acpiHotplug)
        try validateWindows()
    }

    private func validateWindows() throws(FirmwareError) {
        guard let ecamRange = pci.ecam.range else { throw .invalidWindow("ECAM \(pci.ecam)") }
        if let io = pci.ioWindow {
            guard io.last <= 0xFFFF else { throw .invalidWindow("I/O window \(io)") }
            let legacy = AddressRange(base: 0, last: 0xCFF)!
            if io.overlaps(legacy) { throw .overlappingWindows("I/O window \(io)", "legacy I/O and CF8/CFC \(legacy)") }
        }
        if let h = hpet, h.base > 0xFFFF_FFFF - 0x3FF { throw .invalidWindow("HPET at 0x\(String(h.base, radix: 16)) (Memory32Fixed needs it below 4 GiB)") }
        guard pci.mem32Window.last <= 0xFFFF_FFFF else { throw .invalidWindow("32-bit window \(pci.mem32Window)") }
        if let w64 = pci.mem64Window, w64.base <= 0xFFFF_FFFF {
            throw .invalidWindow("64-bit window \(w64) starts below 4 GiB")
        }
        var mmio: [(String, AddressRange)] = [("ECAM \(ecamRange)", ecamRange),
                                              ("32-bit window \(pci.mem32Window)", pci.mem32Window),
                                              ("VGA hole", AddressRange(base: 0xA0000, last: 0xBFFFF)!),
                                              ("IOAPIC", AddressRange(base: UInt64(interrupts.ioapicAddress), size: 0x1000)!),
                                              ("local APIC", AddressRange(base: UInt64(interrupts.localAPICAddress), size: 0x1000)!)]
        if let w64 = pci.mem64Window { mmio.append(("64-bit window \(w64)", w64)) }
        if let h = hpet, let r = AddressRange(base: h.base, size: 0x400) { mmio.append(("HPET \(r)", r)) }
        if let d = dmar, let r = AddressRange(base: d.registerBase, size: 0x1000) { mmio.append(("DMAR registers \(r)", r)) }
        for (i, r) in memory.enumerated() { mmio.append(("RAM range \(i) \(r)", r)) }
        for i in mmio.indices {
            for j in mmio.indices where j > i && mmio[i].1.overlaps(mmio[j].1) {
                // RAM below 1 MiB normally includes the VGA hole in the e820 sense; only flag real clashes.
                if mmio[i].0 == "VGA hole" || mmio[j].0 == "VGA hole" {
                    if mmio[i].0.hasPrefix("RAM") || mmio[j].0.hasPrefix("RAM") { continue }
                }
                throw .overlappingWindows(mmio[i].0, mmio[j].0)
            }
        }
    }
}

extension PlatformDescription.PCIHost {
    /// Bus lookup by number.
    func busMap() -> [UInt8: PlatformDescription.Bus] {
        Dictionary(buses.map { ($0.number, $0) }, uniquingKeysWith: { a, _ in a })
    }

    func validate(hotplugRegisters: PlatformDescription.ACPIHotplugRegisters?) throws(FirmwareError) {
        guard pirqRouting.inta.count == 32, pirqRouting.inta.allSatisfy({ $0 < 8 }) else { throw .invalidPIRQRouting }
        var seen = Set<UInt8>()
        for bus in buses {
            guard ecam.busRange.contains(bus.number) else { throw .busOutsideECAM(bus: bus.number, ecam: ecam.busRange) }
            guard seen.insert(bus.number).inserted else { throw .duplicateBus(bus.number) }
            var devfns = Set<UInt8>()
            for d in bus.devices {
                guard devfns.insert(d.devfn).inserted else { throw .duplicateDevfn(bus: bus.number, devfn: d.devfn) }
                if bus.kind == .pcieDownstream && d.slot != 0 { throw .deviceOnDownstreamLink(bus: bus.number, devfn: d.devfn) }
                if let s = d.secondaryBus, !ecam.busRange.contains(s) { throw .busOutsideECAM(bus: s, ecam: ecam.busRange) }
            }
        }
        let map = busMap()
        guard map[rootBus] != nil else { throw .missingRootBus(rootBus) }
        // Walk the tree from the root: every bus exactly once.
        var reached: Set<UInt8> = [rootBus]
        var queue = [rootBus]
        while let b = queue.popLast() {
            for d in map[b]!.devices {
                guard let s = d.secondaryBus else { continue }
                guard map[s] != nil, s != rootBus else {
                    throw .unknownSecondaryBus(bridge: PCIAddress(segment: ecam.segment, bus: b, devfn: d.devfn), bus: s)
                }
                guard reached.insert(s).inserted else { throw .busReachedTwice(s) }
                queue.append(s)
            }
        }
        for bus in buses where !reached.contains(bus.number) { throw .unreachableBus(bus.number) }
        let hotplug = buses.compactMap(\.acpiHotplugSelector)
        if !hotplug.isEmpty && hotplugRegisters == nil { throw .hotplugRegistersMissing }
        let limit = 256
        if hotplug.count > limit { throw .tooManyHotplugBuses(segment: ecam.segment, count: hotplug.count, limit: limit) }
        var sel = Set<UInt32>()
        for s in hotplug {
            guard s < UInt32(limit) else { throw .tooManyHotplugBuses(segment: ecam.segment, count: Int(s) + 1, limit: limit) }
            guard sel.insert(s).inserted else { throw .duplicateHotplugSelector(s) }
        }
    }
}
