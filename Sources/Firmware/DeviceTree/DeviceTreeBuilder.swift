import VMMBase

/// The machine's device tree: cpus, memory, an IOAPIC interrupt controller, a generic ECAM PCI
/// host (`pci-host-ecam-generic`) with its windows and INTx map, the LPC as an ISA bridge carrying
/// the ns16550a serial port, and optionally an MSI controller referenced by `msi-map`.
struct DeviceTreeBuilder {
    let d: PlatformDescription

    static let ioapicPhandle: UInt32 = 1
    static let msiPhandle: UInt32 = 2

    /// Interrupt specifier types of the intel,ce4100-ioapic binding.
    static let edgeRising: UInt32 = 0
    static let levelHigh: UInt32 = 2

    static func split(_ v: UInt64) -> [UInt32] { [UInt32(v >> 32), UInt32(truncatingIfNeeded: v)] }

    func build() throws(FDTError) -> [UInt8] {
        var capacity = 64 * 1024
        while true {
            do {
                var w = try FDTWriter(capacity: capacity)
                try write(&w)
                return try w.finish()
            } catch let e where e.code == FDTError.noSpace && capacity < 16 << 20 {
                capacity *= 2
            }
        }
    }

    var hostNodeName: String { "pcie@" + String(d.pci.ecam.range?.base ?? d.pci.ecam.base, radix: 16) }
    var lpcNodeName: String {
        "isa@" + String(d.pci.lpcDevfn >> 3, radix: 16) + (d.pci.lpcDevfn & 7 == 0 ? "" : "," + String(d.pci.lpcDevfn & 7))
    }

    private func write(_ w: inout FDTWriter) throws(FDTError) {
        try w.beginNode("")
        try w.property("#address-cells", cells: [2])
        try w.property("#size-cells", cells: [2])
        try w.property("model", string: d.deviceTree.model)
        try w.property("compatible", string: d.deviceTree.compatible)

        try w.beginNode("chosen")
        if let s = d.legacy.serial {
            try w.property("stdout-path", string: "/\(hostNodeName)/\(lpcNodeName)/serial@\(String(s.port, radix: 16))")
        }
        try w.endNode()

        try w.beginNode("cpus")
        try w.property("#address-cells", cells: [1])
        try w.property("#size-cells", cells: [0])
        for cpu in d.cpus {
            try w.beginNode("cpu@" + String(cpu.apicID, radix: 16))
            try w.property("device_type", string: "cpu")
            try w.property("reg", cells: [cpu.apicID])
            if !cpu.enabled { try w.property("status", string: "disabled") }
            try w.endNode()
        }
        try w.endNode()

        for r in d.memory {
            try w.beginNode("memory@" + String(r.base, radix: 16))
            try w.property("device_type", string: "memory")
            try w.property("reg", cells: Self.split(r.base) + Self.split(r.size ?? 0))
            try w.endNode()
        }

        let ir = d.interrupts
        try w.beginNode("interrupt-controller@" + String(ir.ioapicAddress, radix: 16))
        try w.property("compatible", string: "intel,ce4100-ioapic")
        try w.property("reg", cells: Self.split(UInt64(ir.ioapicAddress)) + Self.split(0x1000))
        try w.property("interrupt-controller")
        try w.property("#address-cells", cells: [0])
        try w.property("#interrupt-cells", cells: [2])
        try w.property("phandle", cells: [Self.ioapicPhandle])
        try w.endNode()

        if let msi = d.deviceTree.msiController {
            try w.beginNode("msi-controller@" + String(msi.base, radix: 16))
            try w.property("compatible", string: msi.compatible)
            try w.property("reg", cells: Self.split(msi.base) + Self.split(msi.size))
            try w.property("msi-controller")
            try w.property("#msi-cells", cells: [1])
            try w.property("phandle", cells: [Self.msiPhandle])
            try w.endNode()
        }

        try writeHost(&w)
        try w.endNode()
    }

    private func writeHost(_ w: inout FDTWriter) throws(FDTError) {
        let host = d.pci
        let ecam = host.ecam.range!
        try w.beginNode(hostNodeName)
        try w.property("compatible", string: "pci-host-ecam-generic")
        try w.property("device_type", string: "pci")
        try w.property("reg", cells: Self.split(ecam.base) + Self.split(ecam.size ?? 0))
        try w.property("bus-range", cells: [UInt32(host.ecam.busRange.lowerBound), UInt32(host.ecam.busRange.upperBound)])
        try w.property("linux,pci-domain", cells: [UInt32(host.ecam.segment)])
        try w.property("#address-cells", cells: [3])
        try w.property("#size-cells", cells: [2])
        var ranges: [UInt32] = []
        if let io = host.ioWindow {
            ranges += [0x0100_0000] + Self.split(io.base) + Self.split(io.base) + Self.split(io.size ?? 0)
        }
        let m32 = host.mem32Window
        ranges += [0x0200_0000] + Self.split(m32.base) + Self.split(m32.base) + Self.split(m32.size ?? 0)
        if let m64 = host.mem64Window {
            ranges += [0x0300_0000] + Self.split(m64.base) + Self.split(m64.base) + Self.split(m64.size ?? 0)
        }
        try w.property("ranges", cells: ranges)

        // INTx: root-bus slot and pin (1-4) to the PIRQ's GSI in APIC mode, level/high as the
        // ACPI GSI links declare. Devices behind bridges reach these entries by swizzling.
        try w.property("#interrupt-cells", cells: [1])
        try w.property("interrupt-map-mask", cells: [0xF800, 0, 0, 7])
        var map: [UInt32] = []
        for slot in UInt8(0)..<32 {
            for pin in UInt8(0)..<4 {
                let gsi = d.interrupts.pirqGSIBase + UInt32(host.pirqRouting.pirq(slot: slot, pin: pin))
                map += [UInt32(host.rootBus) << 16 | UInt32(slot) << 11, 0, 0, UInt32(pin) + 1,
                        Self.ioapicPhandle, gsi, Self.levelHigh]
            }
        }
        try w.property("interrupt-map", cells: map)
        if d.deviceTree.msiController != nil {
            try w.property("msi-map", cells: [0, Self.msiPhandle, 0, 0x10000])
        }

        if d.legacy.serial != nil {
            try w.beginNode(lpcNodeName)
            // Named "isa" so OSes translate its I/O addresses as ISA; compatible by PCI ID (ICH9
            // LPC 8086:2918) rather than device_type "isa", whose schema forbids the PCI "reg".
            try w.property("compatible", string: "pci8086,2918")
            try w.property("reg", cells: [UInt32(host.rootBus) << 16 | UInt32(host.lpcDevfn) << 8, 0, 0, 0, 0])
            try w.property("#address-cells", cells: [2])
            try w.property("#size-cells", cells: [1])
            // ISA I/O space 0-0xFFFF is PCI I/O space 0-0xFFFF.
            try w.property("ranges", cells: [1, 0, 0x0100_0000, 0, 0, 0x10000])
            if let s = d.legacy.serial {
                try w.beginNode("serial@" + String(s.port, radix: 16))
                try w.property("compatible", string: "ns16550a")
                try w.property("reg", cells: [1, UInt32(s.port), 8])
                try w.property("clock-frequency", cells: [s.clockFrequency])
                try w.property("interrupt-parent", cells: [Self.ioapicPhandle])
                try w.property("interrupts", cells: [UInt32(s.irq), Self.edgeRising])
                try w.endNode()
            }
            try w.endNode()
        }
        try w.endNode()
    }
}
