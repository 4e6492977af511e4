import Machine
import Synchronization
import VMMBase

/// The `machine` target: the fuzz topology after firmware ran (ECAM open, buses numbered, BARs
/// and windows assigned), driven by a byte stream decoded as guest accesses of every width —
/// CF8/CFC and ECAM config cycles, BAR MMIO (MSI-X tables, SHPC), port I/O on the chipset's
/// ports (LPC, PM, ACPI hot-plug, reset), raw MMIO — interleaved with hot-plug, unplug
/// (attention button and surprise) and platform reset. After every step: a function whose
/// removal completed (DEVICE_DELETED) is reachable by no config cycle.
struct MachineFuzzRun {
    let machine: Machine
    /// The BARs firmware assigned, where guest accesses mean something.
    let bars: [AddressRange]
    var bytes: ArraySlice<UInt8>
    var plugged: [PlacedDevice] = []
    var nextID = 0
    /// Ids whose DEVICE_DELETED came, filled by the machine's event listener.
    let deleted = DeletedIDs()
    let listener: Int

    /// Ports a guest of this machine talks to: CF8/CFC, the LPC's legacy devices, PM and GPE
    /// blocks at PMBASE 0x600, QEMU's ACPI PCI hot-plug registers, the reset control register.
    static let ports: [UInt16] = [0xCF8, 0xCFC, 0xCFD, 0xCFE, 0xCF9, 0x60, 0x64, 0x70, 0x71, 0x92, 0x3F8, 0x3F9, 0x3FA,
                                  0x3FB, 0x3FC, 0x3FD, 0x402, 0x510, 0x511, 0x600, 0x604, 0x608, 0x620, 0x628, 0x630,
                                  0x660, 0xAE00, 0xAE04, 0xAE08, 0xAE0C, 0xAE10, 0xCC4, 0xCC8, 0xCCC, 0xB2, 0xB3]
    /// Where a hot-plugged pci-testdev may go in the fuzz topology.
    static let slots = ["bus=rp1", "bus=dp0", "bus=br1,addr=3", "bus=br1,addr=4", "bus=pb1,addr=1"]

    /// The fuzz topology after firmware, as the run starts from it.
    static func build() -> ReusedMachine.Built? {
        guard let machine = FuzzTarget.machine(), let report = try? machine.runFirmware() else { return nil }
        return ReusedMachine.Built(machine: machine, functions: report.functions)
    }

    init(_ input: [UInt8], on built: ReusedMachine.Built) {
        machine = built.machine
        bars = built.functions.flatMap { $0.bars.map(\.range) }
        bytes = input[...]
        listener = machine.addEventListener { [deleted] event in
            if case .deviceDeleted(let id?, _) = event { deleted.ids.withLock { $0.append(id) } }
        }
    }

    mutating func runToEnd() {
        run()
        machine.removeEventListener(listener)
    }

    mutating func byte() -> UInt8? { bytes.popFirst() }
    mutating func value(_ count: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<count { v |= UInt64(byte() ?? 0) << (8 * UInt64(i)) }
        return v
    }
    mutating func width(upTo widest: AccessWidth = .dword) -> AccessWidth {
        let all: [AccessWidth] = widest == .qword ? [.byte, .word, .dword, .qword] : [.byte, .word, .dword]
        return all[Int(byte() ?? 0) % all.count]
    }

    mutating func run() {
        var steps = 0
        while steps < 256, let op = byte() {
            steps += 1
            let write = op & 0x80 != 0
            switch op & 0x7 {
            case 0:  // a config cycle through CF8/CFC (type 1 reaches every bus behind bridges)
                let address = UInt32(0x8000_0000) | UInt32(truncatingIfNeeded: value(3)) & 0x00FF_FFFC
                let w = width()
                machine.portWrite(0xCF8, width: .dword, value: UInt64(address))
                let port = 0xCFC + UInt16(value(1) & 3) & ~UInt16(w.rawValue - 1)
                access(port: port, width: w, write: write)
            case 1:  // ECAM (PCIEXBAR at the layout's base, opened by firmware)
                let offset = value(3) & 0x0FFF_FFFF
                let w = width()
                access(mmio: machine.configuration.layout.ecamBase + (offset & ~UInt64(w.rawValue - 1)), width: w, write: write)
            case 2:  // inside a BAR firmware assigned
                guard !bars.isEmpty else { continue }
                let bar = bars[Int(value(1)) % bars.count]
                let offset = value(2) % max(bar.size ?? 1, 1)
                let w = width(upTo: .qword)
                access(mmio: bar.base &+ (offset & ~UInt64(w.rawValue - 1)), width: w, write: write)
            case 3:  // a chipset port
                let port = Self.ports[Int(value(1)) % Self.ports.count] &+ UInt16(value(1) & 3)
                access(port: port, width: width(), write: write)
            case 4:
                plug()
            case 5:
                unplug(surprise: write)
            case 6:
                if op & 0x40 != 0 { machine.reset() } else { access(port: UInt16(truncatingIfNeeded: value(2)), width: width(), write: write) }
            default:  // anywhere in the 32-bit space (RAM, the PCI hole, LAPIC/IOAPIC, ROM)
                let w = width(upTo: .qword)
                access(mmio: value(4) & ~UInt64(w.rawValue - 1), width: w, write: write)
            }
            checkNothingDeletedIsReachable()
        }
    }

    mutating func access(port: UInt16, width: AccessWidth, write: Bool) {
        if write { machine.portWrite(port, width: width, value: value(width.rawValue)) } else { _ = machine.portRead(port, width: width) }
    }

    mutating func access(mmio address: UInt64, width: AccessWidth, write: Bool) {
        if write { machine.mmioWrite(address, width: width, value: value(width.rawValue)) } else { _ = machine.mmioRead(address, width: width) }
    }

    mutating func plug() {
        let slot = Self.slots[Int(value(1)) % Self.slots.count]
        nextID += 1
        guard let spec = try? DeviceSpec(parsing: "pci-testdev,id=hp\(nextID),\(slot)"),
              let placed = try? machine.hotPlug(spec) else { return }
        plugged.append(placed)
    }

    mutating func unplug(surprise: Bool) {
        guard !plugged.isEmpty else { return }
        let placed = plugged[Int(value(1)) % plugged.count]
        try? machine.unplug(id: placed.id, mode: surprise ? .surprise : .attentionButton)
    }

    /// A device whose DEVICE_DELETED was sent must be gone from every config path.
    func checkNothingDeletedIsReachable() {
        let gone = Set(deleted.ids.withLock { $0 })
        guard !gone.isEmpty else { return }
        let reachable = machine.reachableFunctions().map { ObjectIdentifier($0.function) }
        for placed in plugged where gone.contains(placed.id) {
            if reachable.contains(ObjectIdentifier(placed.function)) {
                fatalError("\(placed.id) was deleted but a config cycle still reaches it")
            }
        }
    }
}

final class DeletedIDs: Sendable {
    let ids = Mutex<[String]>([])
}
