import Machine
import VFIO
import VMMBase

/// The `vfio` target: a host PCI function as hostile as a broken or malicious device can make
/// it, assigned with `-device vfio-pci` behind a root port through the VFIO twin (the seam this
/// host has). The input gives the device's config space (its capability chain, MSI and MSI-X
/// layout, Express capability, ROM: what the virtualized config space parses), its BAR layout,
/// then a byte stream of guest config and BAR accesses after firmware. Assignment may refuse
/// the device (a clear error, not a trap); if it takes it, no guest access may trap.
///
/// Input: a flags byte (bit 0: a 4096-byte Express config space, else 256; bit 1: MSI-X table
/// trapped), the config bytes (zero-filled when short), six BAR bytes (low 3 bits: none, I/O,
/// 32-bit, 32-bit prefetchable, 64-bit, 64-bit prefetchable; the rest: the size's power of
/// two), then operations.
struct VFIOFuzzRun {
    static let hostText = "0000:3b:00.0"
    static let host = PCIAddress(bus: 0x3B, devfn: 0)

    let machine: Machine
    let ecam: UInt64
    /// The BARs firmware placed: (base, size).
    let bars: [(base: UInt64, size: UInt64)]
    var bytes: ArraySlice<UInt8>

    /// Nil when the input describes a device assignment refuses (or one the twin cannot model).
    init?(_ input: [UInt8]) {
        var bytes = input[...]
        let flags = bytes.popFirst() ?? 0
        let configSize = flags & 1 != 0 ? 4096 : 256
        var config = Array(bytes.prefix(configSize))
        bytes = bytes.dropFirst(configSize)
        config += [UInt8](repeating: 0, count: configSize - config.count)
        var layout: [VFIOTwinIdentity.BAR] = []
        var index = 0
        while index < 6 {
            let spec = bytes.popFirst() ?? 0
            defer { index += 1 }
            let power = UInt64(spec >> 3)
            switch spec & 7 {
            case 1: layout.append(.init(index: index, kind: .io, size: 1 << min(max(power, 2), 8)))
            case 2, 3: layout.append(.init(index: index, kind: .memory32(prefetchable: spec & 7 == 3), size: 1 << min(max(power, 12), 20)))
            case 4 where index < 5, 5 where index < 5:
                layout.append(.init(index: index, kind: .memory64(prefetchable: spec & 7 == 5), size: 1 << min(max(power, 12), 20)))
                index += 1
            default: continue
            }
        }
        let identity = VFIOTwinIdentity(name: "fuzz", config: config, bars: layout)
        guard let twin = try? VFIOTwinDevice(name: Self.hostText, identity: identity, msixTableTrapped: flags & 2 != 0) else { return nil }
        let kernel = VFIOTwinKernel(devices: [.init(address: Self.host, group: 9, device: twin)])
        guard let devices = try? ["pcie-root-port,id=rp1,chassis=1,slot=1", "vfio-pci,host=\(Self.hostText),id=dev,bus=rp1"]
                .map({ text throws(MachineConfigurationError) in try DeviceSpec(parsing: text) }),
              let machine = try? Machine(MachineConfiguration(memorySize: 32 << 20, devices: devices), vfioKernel: kernel),
              let report = try? machine.runFirmware(),
              let function = report.functions.first(where: { $0.address.bus != 0 }) else { return nil }
        self.machine = machine
        ecam = machine.configuration.layout.ecamBase + UInt64(function.address.bus) << 20
            + UInt64(function.address.device) << 15 + UInt64(function.address.function) << 12
        bars = function.bars.compactMap { bar in bar.range.size.map { (bar.range.base, $0) } }
        self.bytes = bytes
    }

    mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }
    mutating func value(_ count: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<count { v |= UInt64(byte()) << (8 * UInt64(i)) }
        return v
    }

    mutating func run() {
        let widths: [AccessWidth] = [.byte, .word, .dword]
        var steps = 0
        while steps < 256, !bytes.isEmpty {
            steps += 1
            let op = byte()
            let width = widths[Int(op >> 2) % 3]
            switch op & 3 {
            case 0:  // a config read anywhere in the 4 KiB (unaligned ones included)
                _ = machine.mmioRead(ecam + value(2) % 4096, width: width)
            case 1:  // a config write: command, BARs, MSI/MSI-X control, Express control, ROM, any
                machine.mmioWrite(ecam + value(2) % 4096, width: width, value: value(4))
            case 2 where !bars.isEmpty:  // a BAR read (the MSI-X table and PBA when trapped)
                let bar = bars[Int(byte()) % bars.count]
                _ = machine.mmioRead(bar.base + value(4) % bar.size, width: width)
            case 3 where !bars.isEmpty:
                let bar = bars[Int(byte()) % bars.count]
                machine.mmioWrite(bar.base + value(4) % bar.size, width: width, value: value(4))
            default:
                continue
            }
        }
    }
}
