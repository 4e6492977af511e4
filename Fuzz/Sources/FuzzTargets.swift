import Control
import Machine

/// Switchyard's fuzz targets: each takes one input of any bytes and must neither trap nor
/// hang. `switchyard-fuzz` picks one by name (SWITCHYARD_FUZZ_TARGET under libFuzzer, the
/// first argument when replaying a corpus).
enum FuzzTarget: String, CaseIterable {
    /// QMP text after negotiation: framing, JSON, argument checking and every command,
    /// device_add/device_del included, on a machine with ports, a switch and a bridge.
    case qmp
    /// qtest lines: port, memory and config accesses, clock and IRQ commands.
    case qtest
    /// A QEMU-style command line (arguments separated by NUL bytes), and the machine it builds.
    case options
    /// Guest accesses and hot-plug on the whole machine after firmware (MachineFuzzRun).
    case machine
    /// bzImage and ELF/PVH kernels, boot planning and placement (LoaderFuzzRun).
    case loaders
    /// Split virtqueue rings and the virtio-pci transport of virtio-rng-pci (VirtqueueFuzzRun).
    case virtqueue
    /// A hostile host device assigned with vfio-pci through the VFIO twin: its config space and
    /// BARs, then guest accesses (VFIOFuzzRun).
    case vfio

    func run(_ input: [UInt8]) {
        switch self {
        case .qmp: Self.runQMP(input)
        case .qtest: Self.runQTest(input)
        case .options: Self.runOptions(input)
        case .machine:
            let reused = Self.reused(MachineFuzzRun.build)
            var run = MachineFuzzRun(input, on: reused.built)
            run.runToEnd()
            reused.putBack()
        case .loaders: LoaderFuzzRun.run(input)
        case .virtqueue:
            let reused = Self.reused(VirtqueueFuzzRun.build)
            guard var run = VirtqueueFuzzRun(input, on: reused.built) else { fatalError("the virtio fuzz topology no longer enumerates virtio-rng") }
            run.run()
            reused.putBack()
        case .vfio:
            guard var run = VFIOFuzzRun(input) else { return }
            run.run()
        }
    }

    /// A topology with every kind of hot-plug slot: root ports, a switch, a bridge with SHPC.
    static let topology: [String] = [
        "pcie-root-port,id=rp1,chassis=1,slot=1", "pcie-root-port,id=rp2,chassis=1,slot=2",
        "ioh3420,id=rp3,chassis=1,slot=3", "x3130-upstream,id=up,bus=rp2",
        "xio3130-downstream,id=dp0,bus=up,chassis=2,slot=0", "pci-bridge,id=br1,chassis_nr=3",
        "pci-testdev,id=t1,bus=br1,addr=2", "pcie-pci-bridge,id=pb1,bus=rp3",
    ]

    /// The machine each target keeps across inputs (ReusedMachine), built at its first input.
    nonisolated(unsafe) private static var kept: ReusedMachine?

    static func reused(_ build: @escaping () -> ReusedMachine.Built?) -> ReusedMachine {
        if let kept { return kept }
        guard let made = ReusedMachine(build: build) else { fatalError("the fuzz topology no longer builds or enumerates") }
        kept = made
        return made
    }

    /// The fuzz topology as built, before firmware (what qmp and qtest start from).
    static func unenumerated() -> ReusedMachine.Built? { machine().map { ReusedMachine.Built(machine: $0, functions: []) } }

    static func machine() -> Machine? {
        guard let devices = try? topology.map({ text throws(MachineConfigurationError) in try DeviceSpec(parsing: text) }) else {
            return nil
        }
        return try? Machine(MachineConfiguration(memorySize: 32 << 20, devices: devices))
    }

    static func runQMP(_ input: [UInt8]) {
        let reused = reused(unenumerated)
        runQMP(input, on: reused.machine)
        reused.putBack()
    }

    static func runQMP(_ input: [UInt8], on machine: Machine) {
        let monitor = QMPMonitor(controller: VMController(machine: machine, startPaused: true), messageLimit: 1 << 16)
        let session = monitor.openSession()
        _ = monitor.handle(text: Array(#"{"execute": "qmp_capabilities"}"#.utf8), in: session)
        var splitter = JSONStreamSplitter(limit: 1 << 16)
        splitter.append(input)
        var handled = 0
        while handled < 64, let item = splitter.next() {
            if case .text(let text) = item { _ = monitor.handle(text: text, in: session) }
            handled += 1
            _ = session.takeOutput()
        }
    }

    /// Commands that move a byte count: capped so one input cannot write 64 MiB byte by byte
    /// into MMIO (slow, not wrong).
    static let transfers: Set<String> = ["read", "write", "memset", "b64read", "b64write"]

    static func runQTest(_ input: [UInt8]) {
        let reused = reused(unenumerated)
        runQTest(input, on: reused.machine)
        reused.putBack()
    }

    static func runQTest(_ input: [UInt8], on machine: Machine) {
        let server = QTestServer(machine: machine, virtualClock: true, log: nil, lineLimit: 1 << 16)
        for line in input.split(separator: 0x0A, omittingEmptySubsequences: false).prefix(256) {
            let words = line.split(separator: 0x20)
            if let command = words.first, transfers.contains(String(decoding: command, as: UTF8.self)),
               words.count > 2, words[2].count > 4 {
                continue
            }
            server.process(line: Array(line))
            _ = server.takeOutput()
        }
    }

    static func runOptions(_ input: [UInt8]) {
        let arguments = input.split(separator: 0, omittingEmptySubsequences: false).prefix(64)
            .map { String(decoding: $0, as: UTF8.self) }
        guard var invocation = try? QEMUInvocation.parse(arguments) else { return }
        // The machine it describes, with RAM kept small: the size check is the parser's job.
        invocation.machine.memorySize = min(invocation.machine.memorySize, 64 << 20)
        _ = try? Machine(invocation.machine)
    }
}
