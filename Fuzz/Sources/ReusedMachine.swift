import GuestMemory
import Machine
import VMMBase

/// One machine kept across fuzz inputs and put back, after each, into the state it was built
/// in (for the machine target: after firmware), instead of building one per input (the build
/// and firmware's enumeration cost ~100 ms under ASAN, the input itself well under 1 ms).
///
/// Putting back: devices the input added are detached (`Machine.removeDevices(addedSince:)`), RAM the input wrote is
/// copied back from a copy taken when built, then every device's state is restored
/// (`Machine.restoreDevices`, which also rebuilds routes, mappings and INTx routing). Where that
/// cannot reach the built state — a built device is gone, an added one stays, the snapshot is
/// refused, INTx line levels differ — the machine is built afresh (`rebuilds` counts those).
/// Tests/FuzzTests checks that a put-back machine equals a fresh one.
final class ReusedMachine {
    /// A machine as built, with what the target needs of its build (firmware's BARs).
    struct Built {
        let machine: Machine
        let bars: [AddressRange]
    }

    private let build: () -> Built?
    private(set) var built: Built
    private var baseline: Baseline
    /// How often putting back fell short and the machine was built afresh.
    private(set) var rebuilds = 0

    private struct Baseline {
        let devices: MachineDeviceState
        let set: DeviceSetMark
        /// Asserted INTx lines by GSI number, with how many functions assert each.
        let lines: [UInt32: Int]
        /// Low RAM by 4 KiB page as built; nil where no RAM is.
        let ram: [[UInt8]?]
    }

    static let page = 4096

    init?(build: @escaping () -> Built?) {
        guard let built = build(), let baseline = Self.baseline(of: built.machine) else { return nil }
        self.build = build
        self.built = built
        self.baseline = baseline
    }

    var machine: Machine { built.machine }

    private static func baseline(of machine: Machine) -> Baseline? {
        guard let devices = try? machine.snapshotDevices() else { return nil }
        let pages = Int(min(machine.configuration.memorySize, 1 << 32) / UInt64(page))
        let ram = (0..<pages).map { index in try? machine.guestMemory.read(at: GuestAddress(UInt64(index * page)), count: page) }
        return Baseline(devices: devices, set: machine.deviceSetMark(), lines: lines(of: machine), ram: ram)
    }

    static func lines(of machine: Machine) -> [UInt32: Int] {
        Dictionary(uniqueKeysWithValues: machine.assertedINTxLines.map { ($0.key.number, $0.value) })
    }

    /// Puts the machine back after an input that wrote guest memory (by any path: RAM, MMIO,
    /// config) at most in `written`; ranges outside RAM are ignored.
    func putBack(written: [Range<UInt64>]) {
        restoreRAM(written)
        let machine = built.machine
        guard machine.removeDevices(addedSince: baseline.set),
              (try? machine.restoreDevices(baseline.devices)) != nil,
              Self.lines(of: machine) == baseline.lines else {
            rebuild()
            return
        }
    }

    private func restoreRAM(_ written: [Range<UInt64>]) {
        let pageSize = UInt64(Self.page)
        for range in written where range.lowerBound < UInt64(baseline.ram.count) * pageSize {
            let last = min((range.upperBound &+ pageSize &- 1) / pageSize, UInt64(baseline.ram.count))
            for index in Int(range.lowerBound / pageSize)..<Int(last) {
                guard let bytes = baseline.ram[index] else { continue }
                try? built.machine.guestMemory.write(at: GuestAddress(UInt64(index) * pageSize), bytes: bytes)
            }
        }
    }

    private func rebuild() {
        guard let fresh = build(), let freshBaseline = Self.baseline(of: fresh.machine) else {
            fatalError("the fuzz topology no longer builds")
        }
        built = fresh
        baseline = freshBaseline
        rebuilds += 1
    }
}
