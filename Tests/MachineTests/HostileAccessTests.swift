import Chipset
import Machine
import PCI
import Testing
import TestRequirements
import VMMBase

/// Long random sequences of guest accesses — garbage in CF8, every width at every data-port
/// offset, ECAM accesses anywhere (misaligned, crossing functions, past the last bus),
/// random MMIO and port I/O — must never crash the machine, never change a read-only bit,
/// and never set a write-1-to-clear bit.
@Suite struct HostileAccessTests {
    struct Snapshot {
        var readOnly: [PCIAddress: [UInt8]] = [:]
        var w1c: [PCIAddress: [UInt8]] = [:]
    }

    /// Read-only and W1C bits of every function, read from the models (not through the guest).
    func snapshot(_ machine: Machine) -> Snapshot {
        var s = Snapshot()
        func visit(_ bus: PCIBus, prefix: UInt8) {
            for (devfn, f) in bus.functions {
                let cs = f.configSnapshot()
                let key = PCIAddress(segment: UInt16(prefix), bus: 0, devfn: devfn)
                s.readOnly[key] = (0..<4096).map { cs.bytes[$0] & ~cs.writable[$0] & ~cs.writeOneToClear[$0] }
                s.w1c[key] = (0..<4096).map { cs.bytes[$0] & cs.writeOneToClear[$0] }
                if let bridge = f as? any PCIBridgeFunction { visit(bridge.secondary, prefix: prefix &+ 1 &+ devfn) }
            }
        }
        visit(machine.rootBus, prefix: 0)
        return s
    }

    @Test(arguments: [1, 2, 3, 4]) func randomAccessSequencesKeepInvariants(seed: UInt64) throws {
        let machine = try Machine(.defaultMachine)
        try machine.runFirmware()
        let before = snapshot(machine)
        var rng = SplitMix64(state: seed &* 0x2545_F491_4F6C_DD1D)
        let widths: [AccessWidth] = [.byte, .word, .dword, .qword]
        for _ in 0..<20_000 {
            let width = widths[Int(rng.next() % 4)]
            let value = rng.next()
            switch rng.next() % 6 {
            case 0:  // CONFIG_ADDRESS: any value, any width, enable bit often set
                let garbage = rng.next() & 0xFFFF_FFFF | (rng.next() % 4 == 0 ? 0 : 0x8000_0000)
                machine.portWrite(0xCF8 + UInt16(rng.next() % 4), width: rng.next() % 3 == 0 ? width : .dword, value: garbage)
            case 1:
                machine.portWrite(0xCFC + UInt16(rng.next() % 4), width: width, value: value)
            case 2:
                _ = machine.portRead(0xCF8 + UInt16(rng.next() % 8), width: width)
            case 3:  // ECAM, anywhere in the 256 MiB window and a little past it
                let offset = rng.next() % (256 << 20 + 0x2000)
                if rng.next() % 2 == 0 {
                    machine.mmioWrite(0xB000_0000 + offset, width: width, value: value)
                } else {
                    _ = machine.mmioRead(0xB000_0000 + offset, width: width)
                }
            case 4:
                machine.mmioWrite(rng.next(), width: width, value: value)
            default:
                machine.portWrite(UInt16(truncatingIfNeeded: rng.next()), width: width, value: value)
            }
        }
        let after = snapshot(machine)
        for (key, ro) in before.readOnly {
            // Bridges may have been renumbered, hiding or revealing buses; compare what is still there.
            guard let now = after.readOnly[key] else { continue }
            #expect(now == ro, "read-only bits changed in \(key)")
            let w1cBefore = before.w1c[key]!, w1cAfter = after.w1c[key]!
            for i in 0..<4096 where w1cAfter[i] & ~w1cBefore[i] != 0 {
                Issue.record("a W1C bit was set by a guest write in \(key) at 0x\(String(i, radix: 16))")
            }
        }
    }
}
