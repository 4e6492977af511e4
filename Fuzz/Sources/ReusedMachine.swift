import GuestMemory
import Machine
import VMMBase

/// One machine kept across fuzz inputs and put back, after each, into the state it was built
/// in (for the machine target: after firmware), instead of building one per input (the build
/// and firmware's enumeration cost ~100 ms under ASAN, the input itself well under 1 ms).
///
/// Putting back: devices the input added are detached (`Machine.removeDevices(addedSince:)`),
/// every device's state is restored (`Machine.restoreDevices`, which also rebuilds routes,
/// mappings and INTx routing), then RAM touched since the build is put back (`RAMBaseline`:
/// found by the host's page residency, so a device's DMA counts as much as the input's own
/// writes). Where that cannot reach the built state — a built device is gone, an added one stays, the
/// snapshot is refused, INTx line levels differ — the machine is built afresh (`rebuilds`
/// counts those). Tests/FuzzTests checks that a put-back machine equals a fresh one.
final class ReusedMachine {
    /// A machine as built, with the functions firmware enumerated (none before firmware).
    struct Built {
        let machine: Machine
        let functions: [EnumeratedFunction]
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
        var ram: RAMBaseline
    }

    init?(build: @escaping () -> Built?) {
        guard let built = build(), let baseline = Self.baseline(of: built.machine) else { return nil }
        self.build = build
        self.built = built
        self.baseline = baseline
    }

    var machine: Machine { built.machine }

    private static func baseline(of machine: Machine) -> Baseline? {
        guard let devices = try? machine.snapshotDevices(), let ram = RAMBaseline(of: machine.guestMemory) else { return nil }
        return Baseline(devices: devices, set: machine.deviceSetMark(), lines: lines(of: machine), ram: ram)
    }

    static func lines(of machine: Machine) -> [UInt32: Int] {
        Dictionary(uniqueKeysWithValues: machine.assertedINTxLines.map { ($0.key.number, $0.value) })
    }

    /// Puts the machine back after an input.
    func putBack() {
        let machine = built.machine
        guard machine.removeDevices(addedSince: baseline.set),
              (try? machine.restoreDevices(baseline.devices)) != nil,
              Self.lines(of: machine) == baseline.lines,
              baseline.ram.restore() else {
            rebuild()
            return
        }
    }

    /// Pages the last put-back restored.
    var restoredPages: Int { baseline.ram.restoredPages }

    private func rebuild() {
        guard let fresh = build(), let freshBaseline = Self.baseline(of: fresh.machine) else {
            fatalError("the fuzz topology no longer builds")
        }
        built = fresh
        baseline = freshBaseline
        rebuilds += 1
    }
}
