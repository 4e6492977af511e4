import Machine
import VMMBase

/// The `virtqueue` target: virtio-rng-pci (packed=on) behind a root port after firmware ran, set
/// up by a driver as Linux's virtio_pci_modern sets it up (features, queue 0 of 8 with its rings
/// in RAM, DRIVER_OK; a split ring, or a packed one when a fresh driver asks), then a byte
/// stream of guest moves: descriptors, indirect tables,
/// available-ring entries and indices, used_event and flags, kicks, common-config writes,
/// status writes (reset included), a fresh driver setup, Bus Master Enable toggles. The
/// device must survive every one: hostile rings end in NEEDS_RESET, never a trap.
struct VirtqueueFuzzRun {
    static let topology = ["pcie-root-port,id=rp1,chassis=1,slot=1", "virtio-rng-pci,id=rng,bus=rp1,packed=on"]
    static let descriptors: UInt64 = 0x10_0000, available: UInt64 = 0x10_1000, used: UInt64 = 0x10_2000
    /// Where descriptors point: buffers and indirect tables.
    static let buffers: UInt64 = 0x10_3000

    let machine: Machine
    /// BAR 4 (the virtio regions) and the function's config address in ECAM.
    let regions: UInt64
    let ecam: UInt64
    var bytes: ArraySlice<UInt8>

    /// The machine after firmware, kept across inputs (ReusedMachine).
    static func build() -> ReusedMachine.Built? {
        guard let devices = try? topology.map({ text throws(MachineConfigurationError) in try DeviceSpec(parsing: text) }),
              let machine = try? Machine(MachineConfiguration(memorySize: 32 << 20, devices: devices)),
              let report = try? machine.runFirmware() else { return nil }
        return ReusedMachine.Built(machine: machine, functions: report.functions)
    }

    init?(_ input: [UInt8], on built: ReusedMachine.Built) {
        guard let rng = built.functions.first(where: { $0.vendorID == 0x1AF4 }),
              let bar = rng.bars.first(where: { $0.index == 4 }) else { return nil }
        machine = built.machine
        regions = bar.range.base
        ecam = machine.configuration.layout.ecamBase + UInt64(rng.address.bus) << 20
            + UInt64(rng.address.device) << 15 + UInt64(rng.address.function) << 12
        bytes = input[...]
    }

    mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }
    mutating func value(_ count: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<count { v |= UInt64(byte()) << (8 * UInt64(i)) }
        return v
    }

    func common(_ offset: UInt64, _ width: AccessWidth, _ value: UInt64) {
        machine.mmioWrite(regions + offset, width: width, value: value)
    }

    /// ACKNOWLEDGE, DRIVER, VERSION_1 + INDIRECT_DESC + EVENT_IDX (+ RING_PACKED), FEATURES_OK,
    /// queue 0, DRIVER_OK. A packed ring's driver and device event structures are where the
    /// split ring's available and used rings are.
    func setUpDriver(packed: Bool = false) {
        common(0x14, .byte, 0)
        common(0x14, .byte, 1)
        common(0x14, .byte, 3)
        common(0x08, .dword, 0)
        common(0x0C, .dword, 0x3000_0000)
        common(0x08, .dword, 1)
        common(0x0C, .dword, packed ? 5 : 1)
        common(0x14, .byte, 0xB)
        common(0x16, .word, 0)
        common(0x20, .dword, Self.descriptors)
        common(0x28, .dword, Self.available)
        common(0x30, .dword, Self.used)
        common(0x1C, .word, 1)
        common(0x14, .byte, 0xF)
    }

    mutating func run() {
        setUpDriver()
        var steps = 0
        while steps < 256, !bytes.isEmpty {
            steps += 1
            let op = byte()
            switch op & 0x7 {
            case 0:  // a descriptor: an index past the table writes the rings' neighbours, fine
                let index = UInt64(op >> 3)
                var address = value(8)
                // Mostly near the buffers, so chains reach RAM; sometimes anywhere.
                if address & 1 == 0 { address = Self.buffers + address % 0x4000 }
                var descriptor = [UInt8](repeating: 0, count: 16)
                withUnsafeBytes(of: address.littleEndian) { descriptor.replaceSubrange(0..<8, with: $0) }
                for i in 8..<16 { descriptor[i] = byte() }
                machine.writeMemory(Self.descriptors + 16 * index, descriptor)
            case 1:  // an available-ring entry, then avail->idx
                machine.writeMemory(Self.available + 4 + 2 * UInt64(op >> 5), [byte(), byte()])
                machine.writeMemory(Self.available + 2, [byte(), byte()])
            case 2:  // avail->flags or used_event; a packed ring's driver event flags
                let at = op & 0x10 != 0 ? Self.available + 2 : op & 0x8 != 0 ? Self.available : Self.available + 4 + 2 * 8
                machine.writeMemory(at, [byte(), byte()])
            case 3:  // an indirect table or buffer bytes
                let offset = value(2) % 0x4000
                machine.writeMemory(Self.buffers + offset, (0..<16).map { _ in byte() })
            case 4:  // the kick
                machine.mmioWrite(regions + 0x3000, width: .word, value: 0)
            case 5:  // any common-config register
                let widths: [AccessWidth] = [.byte, .word, .dword]
                common(value(1) % 0x40, widths[Int(op >> 3) % 3], value(4))
            case 6:  // a status write (0 resets), or a fresh driver (split or packed ring)
                if op & 0x8 != 0 { setUpDriver(packed: op & 0x10 != 0) } else { common(0x14, .byte, value(1)) }
            default:  // Bus Master Enable and Memory Space off or on
                machine.mmioWrite(ecam + 4, width: .word, value: op & 0x8 != 0 ? 0x6 : UInt64(op >> 4) & 0x6)
            }
        }
    }
}
