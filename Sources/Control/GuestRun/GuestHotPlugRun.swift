import Foundation
import HostOS
import Machine
import Synchronization

/// `switchyard run --kernel K --initrd I`: boots a Linux guest on KVM with the machine, shows
/// what the guest sees (its own `lspci -tvnn`), then hot-plugs a test endpoint into a root
/// port and removes it twice (attention button, as QEMU does; then surprise removal), timing
/// each step as the guest sees it.
///
/// The guest side is the rig's L2 init (Tests/Rig/l2/init) in hot-plug mode, which reports on
/// COM1 with lines starting `RIG-L2 `: `init`, `lspci` (one per line of lspci's output),
/// `ready`, `plugged cycle=N`, `unplugged cycle=N`, `poweroff`. Times are host times from the
/// request to the line's arrival.
public struct GuestHotPlugRun {
    public struct Options: Sendable {
        public var kernelPath: String
        public var initrdPath: String
        /// Added to the kernel command line.
        public var extraCommandLine = ""
        /// The port the endpoint goes into, and the endpoint's id.
        public var slotBus = "rp1"
        public var deviceID = "hp1"
        public var bootTimeoutSeconds = 300.0
        public var stepTimeoutSeconds = 60.0
        /// The seccomp sandbox the run locks itself into once the guest is built (nil: none).
        public var sandbox: SandboxPolicy?

        public init(kernelPath: String, initrdPath: String) {
            self.kernelPath = kernelPath
            self.initrdPath = initrdPath
        }
    }

    /// Seconds for each step.
    public struct Report: Sendable, CustomStringConvertible {
        public var bootToInit = 0.0
        public var plug = 0.0
        public var unplugSeenByGuest = 0.0
        public var unplugDeviceDeleted = 0.0
        public var replug = 0.0
        public var surpriseSeenByGuest = 0.0
        public var surpriseDeviceDeleted = 0.0

        public var description: String {
            func s(_ v: Double) -> String { String(format: "%.2f s", v) }
            return """
                boot to guest init          \(s(bootToInit))
                plug, guest sees it         \(s(plug))
                unplug (attention button)   guest lets go after \(s(unplugSeenByGuest)), DEVICE_DELETED after \(s(unplugDeviceDeleted))
                plug again, guest sees it   \(s(replug))
                unplug (surprise removal)   guest sees it gone after \(s(surpriseSeenByGuest)), DEVICE_DELETED after \(s(surpriseDeviceDeleted))
                """
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    static let agentPrefix = "RIG-L2 "
    static let commandLine = "console=ttyS0 quiet panic=-1 pci=noearly tsc=reliable no_timer_check "
        + "rig.l2=hotplug rig.l2cycles=2 rig.l2lspci=1"

    public let configuration: MachineConfiguration
    public let options: Options
    /// Where the demo's own lines and the guest's lines go.
    public let output: @Sendable (String) -> Void

    public init(configuration: MachineConfiguration, options: Options,
                output: @escaping @Sendable (String) -> Void = GuestHotPlugRun.writeLine) {
        self.configuration = configuration
        self.options = options
        self.output = output
    }

    /// A line straight to standard output (write(2), no stdio buffer): the lines are a live
    /// account even when stdout is a pipe.
    public static func writeLine(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    public func run() throws -> Report {
        let output = self.output
        let console = GuestConsole { line in
            // The agent's report lines, without their prefix; the kernel is quiet.
            output("guest: " + (line.hasPrefix(Self.agentPrefix) ? String(line.dropFirst(Self.agentPrefix.count)) : line))
        }
        if let sandbox = options.sandbox { try Sandbox.arm(sandbox) }
        let machine = try Machine(configuration, serialBackend: console)
        try machine.runFirmware()
        let kernel = try SwitchyardSession.readImage(options.kernelPath, option: "--kernel")
        let initrd = try SwitchyardSession.readImage(options.initrdPath, option: "--initrd")
        let deleted = Mutex<[String: UInt64]>([:])
        let poweredOff = Mutex(false)
        _ = machine.addEventListener { event in
            switch event {
            case .deviceDeleted(let id, let path): deleted.withLock { $0[id ?? path] = HostClock.monotonicNanoseconds() }
            case .powerOff, .resetRequested: poweredOff.withLock { $0 = true }
            case .assignedDeviceFailed: break
            }
        }
        let guest = try KVMLinuxGuest(machine: machine, kernel: kernel, initrd: initrd,
                                      commandLine: Self.commandLine + " " + options.extraCommandLine)
        output("switchyard: booting \(options.kernelPath) on q35 with \(configuration.memorySize >> 20) MiB and \(configuration.devices.count) devices (KVM)")
        // Everything is open and read: from here on the threads run under their kinds' lists.
        if options.sandbox != nil { try Sandbox.lockDown() }
        let start = HostClock.monotonicNanoseconds()
        try guest.start()
        defer { guest.stop() }

        var report = Report()
        var cursor = 0
        func seconds(_ from: UInt64, _ to: UInt64) -> Double { Double(to &- from) / 1e9 }
        func wait(_ what: String, timeout: Double, _ matches: @escaping (String) -> Bool) throws -> GuestConsole.Line {
            let ended = { guest.waitUntilFinished(timeoutMilliseconds: 0) }
            guard let (line, index) = console.waitForLine(from: cursor, timeoutSeconds: timeout, giveUp: ended, where: matches) else {
                if ended() { throw Failure(description: "the guest stopped before it reported \(what): \(guest.stop())") }
                throw Failure(description: "the guest did not report \(what) within \(Int(timeout)) s"
                              + (cursor == 0 ? " (does the initrd hold the rig's guest agent, Tests/Rig/l2/init?)" : ""))
            }
            cursor = index + 1
            return line
        }
        func agent(_ word: String) -> (String) -> Bool {
            { $0.hasPrefix(Self.agentPrefix + word) }
        }
        func waitForDeleted(since: UInt64) throws -> Double {
            let id = options.deviceID
            let deadline = since + UInt64(options.stepTimeoutSeconds * 1e9)
            while HostClock.monotonicNanoseconds() < deadline {
                if let at = deleted.withLock({ $0.removeValue(forKey: id) }) { return seconds(since, at) }
                HostClock.sleep(milliseconds: 1)
            }
            throw Failure(description: "no DEVICE_DELETED for \(id) within \(Int(options.stepTimeoutSeconds)) s")
        }
        let specText = "pci-testdev,id=\(options.deviceID),bus=\(options.slotBus)"
        let spec = try DeviceSpec(parsing: specText)

        let initLine = try wait("init", timeout: options.bootTimeoutSeconds, agent("init"))
        report.bootToInit = seconds(start, initLine.nanoseconds)
        _ = try wait("ready", timeout: options.stepTimeoutSeconds, agent("ready"))

        output("switchyard: device_add \(specText)")
        var t = HostClock.monotonicNanoseconds()
        try machine.hotPlug(spec)
        report.plug = seconds(t, try wait("the plugged device", timeout: options.stepTimeoutSeconds, agent("plugged cycle=1")).nanoseconds)

        output("switchyard: device_del \(options.deviceID) (attention button, as QEMU)")
        t = HostClock.monotonicNanoseconds()
        try machine.unplug(id: options.deviceID, mode: .attentionButton)
        report.unplugSeenByGuest = seconds(t, try wait("the unplug", timeout: options.stepTimeoutSeconds, agent("unplugged cycle=1")).nanoseconds)
        report.unplugDeviceDeleted = try waitForDeleted(since: t)
        _ = try wait("ready for cycle 2", timeout: options.stepTimeoutSeconds, agent("ready"))

        output("switchyard: device_add \(specText)")
        t = HostClock.monotonicNanoseconds()
        try machine.hotPlug(spec)
        report.replug = seconds(t, try wait("the plugged device", timeout: options.stepTimeoutSeconds, agent("plugged cycle=2")).nanoseconds)

        output("switchyard: device_del \(options.deviceID) with x-surprise (surprise removal)")
        t = HostClock.monotonicNanoseconds()
        try machine.unplug(id: options.deviceID, mode: .surprise)
        report.surpriseDeviceDeleted = try waitForDeleted(since: t)
        report.surpriseSeenByGuest = seconds(t, try wait("the surprise removal", timeout: options.stepTimeoutSeconds, agent("unplugged cycle=2")).nanoseconds)

        // The agent powers the guest off after its last cycle.
        let deadline = HostClock.monotonicNanoseconds() + UInt64(options.stepTimeoutSeconds * 1e9)
        while !poweredOff.withLock({ $0 }) && HostClock.monotonicNanoseconds() < deadline {
            HostClock.sleep(milliseconds: 5)
        }
        guard poweredOff.withLock({ $0 }) else { throw Failure(description: "the guest did not power off after its last cycle") }
        output("switchyard: the guest powered off after \(String(format: "%.2f", seconds(start, HostClock.monotonicNanoseconds()))) s")
        return report
    }
}
