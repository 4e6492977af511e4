import Foundation
import Chipset
import HostOS
import Machine
import Synchronization

/// A running QEMU-style invocation: the machine, its QMP monitors and qtest server on their
/// sockets. It serves until QMP `quit` or until the qtest connection closes.
public final class SwitchyardSession: Sendable {
    public let invocation: QEMUInvocation
    public let controller: VMController
    public let qmp: QMPMonitor
    public let qtest: QTestServer?
    /// The Linux guest on KVM (-accel kvm -kernel), set up but not started until `run`.
    public let guest: KVMLinuxGuest?
    /// COM1 is on standard output (and reads standard input once the guest runs).
    let serialToStdout: Bool
    /// COM1 on a socket or pipe (-serial unix:, pipe:, chardev:).
    let socketSerial: SocketSerialBackend?
    private let listeners = Mutex<[SocketListener]>([])
    private let connections = Mutex<[SocketConnection]>([])

    /// Builds the machine (reset state: firmware does not run, as under QEMU's qtest). With
    /// -accel kvm -kernel, firmware runs (PCI resources as SeaBIOS assigns them) and the kernel
    /// is loaded into a KVM guest that `run` starts.
    public init(_ invocation: QEMUInvocation) throws {
        self.invocation = invocation
        serialToStdout = invocation.serial == .stdio || (invocation.serial == nil && invocation.bootsLinux)
        switch invocation.serial {
        case .socket, .pipe: socketSerial = SocketSerialBackend()
        default: socketSerial = nil
        }
        let serialBackend: any SerialBackend
        if let socketSerial {
            serialBackend = socketSerial
        } else if serialToStdout {
            serialBackend = FileDescriptorSerialBackend()
        } else {
            serialBackend = NullSerialBackend()
        }
        let machine = try Machine(invocation.machine, serialBackend: serialBackend)
        if invocation.bootsLinux, let kernelPath = invocation.kernel {
            try machine.runFirmware()
            // Read now, so a missing file is an error before anything starts, and again at
            // every reboot.
            let initrdPath = invocation.initrd
            let files: LinuxKernelImage.Files = { () throws(LinuxLoadError) in
                do {
                    return (try Self.readImage(kernelPath, option: "-kernel"),
                            try initrdPath.map { path throws in try Self.readImage(path, option: "-initrd") })
                } catch {
                    throw .unreadableImage("\(error)")
                }
            }
            do {
                _ = try files()
            } catch {
                throw InvocationError(error.description)
            }
            do {
                guest = try KVMLinuxGuest(machine: machine,
                                          boot: LinuxKernelImage(commandLine: invocation.append ?? "",
                                                                 acpi: invocation.acpi, files: files),
                                          vcpuCount: invocation.cpus, irqchip: invocation.kernelIRQChip)
            } catch {
                throw InvocationError("cannot boot \(kernelPath): \(error)")
            }
        } else {
            guest = nil
        }
        controller = VMController(machine: machine, startPaused: invocation.startPaused,
                                  rebootAction: invocation.noReboot ? .shutdown : .reset)
        qmp = QMPMonitor(controller: controller)
        if invocation.qtest != nil {
            qtest = QTestServer(machine: machine, virtualClock: invocation.accelerator == .qtest,
                                log: try QTestLog.open(invocation.qtestLog))
        } else {
            qtest = nil
        }
    }

    /// A kernel or initrd file, read with as few read(2) calls as its size allows (each
    /// system call is costly when Switchyard itself runs in an emulated guest).
    static func readImage(_ path: String, option: String) throws -> [UInt8] {
        do {
            let fd = try FileDescriptor.open(path, .readOnly)
            let size = Int(try fd.size())
            guard size <= 1 << 30 else {
                throw SystemError(.outOfRange, operation: "read", context: "\(size) bytes (1 GiB at most)")
            }
            var bytes = [UInt8](repeating: 0, count: size)
            var done = 0
            while done < size {
                let n = try bytes.withUnsafeMutableBytes { raw in
                    Result { () throws(SystemError) in
                        try fd.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[done...]))
                    }
                }.get()
                if n == 0 { break }
                done += n
            }
            return done == size ? bytes : Array(bytes[..<done])
        } catch {
            throw InvocationError("\(option) \(path): \(error)")
        }
    }

    /// Starts the guest's vCPUs. A power-off, or every vCPU ending (KVM error), ends the
    /// session; a failure is reported on standard error. A reset request (reset registers,
    /// triple fault) reboots the guest, or with -no-reboot ends the session (VMController).
    func startGuest(_ guest: KVMLinuxGuest) throws {
        _ = controller.machine.addEventListener { [controller] event in
            switch event {
            case .powerOff: controller.requestExit(code: 0)
            case .resetRequested, .deviceDeleted, .assignedDeviceFailed: break
            }
        }
        try guest.start()
        if serialToStdout { forwardStandardInput(to: controller.machine.legacy.serial) }
        detach("switchyard-vcpus", kind: .control) { [controller] in
            _ = guest.waitUntilFinished(timeoutMilliseconds: -1)
            controller.requestExit(code: 1)
        }
    }

    /// COM1's input: what arrives on standard input, as QEMU's `-serial stdio` does. Ends at EOF.
    func forwardStandardInput(to serial: UART16550) {
        Self.forwardInput(to: serial) {
            var buffer = [UInt8](repeating: 0, count: 256)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                return n > 0 ? Array(buffer[..<n]) : nil
            }
        }
    }

    /// Feeds what `next` returns into the UART, on a thread of its own, until it returns nil
    /// (end of stream).
    static func forwardInput(to serial: UART16550, _ next: @escaping @Sendable () -> [UInt8]?) {
        detach("switchyard-serial-input", kind: .io) { feed(serial, next) }
    }

    /// Bytes the UART has no room for wait until the guest reads (polled every millisecond).
    static func feed(_ serial: UART16550, _ next: () -> [UInt8]?) {
        while var pending = next() {
            while !pending.isEmpty {
                pending.removeFirst(serial.receive(pending))
                if !pending.isEmpty { usleep(1000) }
            }
        }
    }

    /// A COM1 client, served until it goes away: it gets the guest's output from now on, and
    /// its input goes to the UART.
    private func serveSerial(_ connection: SocketConnection, backend: SocketSerialBackend) {
        backend.attach(connection)
        defer { backend.detach(connection) }
        Self.feed(controller.machine.legacy.serial) { connection.read(maximum: 4096) }
    }

    /// Opens every socket: client endpoints connect now; server endpoints listen, and with
    /// wait=on the first client is accepted before this returns.
    public func start() throws {
        if let backend = socketSerial {
            switch invocation.serial {
            case .socket(let endpoint):
                try open(endpoint, name: "serial") { [self] connection in serveSerial(connection, backend: backend) }
            case .pipe(let path):
                let connection = try Self.openPipe(path)
                connections.withLock { $0.append(connection) }
                detach("switchyard-serial", kind: .io) { [self] in serveSerial(connection, backend: backend) }
            default:
                break
            }
        }
        for endpoint in invocation.qmp {
            try open(endpoint, name: "qmp") { [qmp] connection in qmp.serve(connection) }
        }
        for path in invocation.qmpPipes {
            let connection = try Self.openPipe(path)
            connections.withLock { $0.append(connection) }
            detach("switchyard-qmp", kind: .control) { [qmp] in qmp.serve(connection) }
        }
        if let endpoint = invocation.qtest, let qtest {
            try open(endpoint, name: "qtest") { [controller] connection in
                qtest.serve(connection)
                controller.requestExit(code: 0)
            }
        }
    }

    /// A pipe chardev as QEMU opens one: PATH.in to read and PATH.out to write, else PATH for
    /// both. Read-write, as QEMU does, so opening never waits for the other side and a writer
    /// that closes and reopens PATH.in is no end of stream.
    static func openPipe(_ path: String) throws -> SocketConnection {
        if let input = try? FileDescriptor.open(path + ".in", .readWrite),
           let output = try? FileDescriptor.open(path + ".out", .readWrite) {
            return SocketConnection(reading: input, writing: output)
        }
        do {
            let fd = try FileDescriptor.open(path, .readWrite)
            return SocketConnection(reading: try fd.duplicate(), writing: fd)
        } catch {
            throw InvocationError("-chardev pipe,path=\(path): cannot open \(path).in and \(path).out, nor \(path): \(error)")
        }
    }

    private func open(_ endpoint: SocketEndpoint, name: String,
                      _ handler: @escaping @Sendable (SocketConnection) -> Void) throws {
        if endpoint.server {
            let listener: SocketListener
            do {
                listener = try SocketListener(path: endpoint.path)
            } catch {
                throw InvocationError("\(name) \(endpoint): \(error)")
            }
            listeners.withLock { $0.append(listener) }
            if endpoint.wait {
                guard listener.acceptOne(handler) else { throw InvocationError("\(name) \(endpoint): accept failed") }
            }
            listener.start(handler)
        } else {
            let fd: FileDescriptor
            do {
                fd = try UnixSocket.connect(path: endpoint.path)
            } catch {
                throw InvocationError("\(name) \(endpoint): cannot connect: \(error)")
            }
            let connection = SocketConnection(fd)
            connections.withLock { $0.append(connection) }
            detach("switchyard-\(name)", kind: name == "serial" ? .io : .control) { handler(connection) }
        }
    }

    /// Serves until exit is requested; closes every socket; returns the exit code.
    /// SIGTERM, SIGINT and SIGHUP end the session cleanly (sockets removed), as QEMU ends on them.
    /// With `sandbox` (the executable passes `invocation.sandboxPolicy`), the process is
    /// locked down once its sockets are open, before the guest starts.
    public func run(sandbox: SandboxPolicy? = nil) throws -> Int32 {
        if let sandbox { try Sandbox.arm(sandbox) }
        try SignalSet.termination.block()
        detach("switchyard-signals", kind: .signal) { [controller] in
            _ = SignalSet.termination.wait()
            controller.requestExit(code: 0)
        }
        if let guest {
            controller.setResetAction({ try guest.reboot() }, stopNow: { guest.runner.holdForReset() })
            // QMP `stop` parks every vCPU before it returns (as QEMU's does); `cont` lets them go.
            // Neither interleaves with a reboot, which leaves the vCPUs paused or running as it
            // found them.
            controller.observeRunState { [controller] old, new in
                if new == .paused && old == .running {
                    let parked = controller.withoutResetInProgress { guest.runner.pause() }
                    if !parked {
                        FileHandle.standardError.write(Data("switchyard: stop: a vCPU did not leave KVM_RUN within 2 s\n".utf8))
                    }
                } else if new == .running && old == .paused {
                    controller.withoutResetInProgress { guest.runner.resume() }
                }
            }
            if invocation.startPaused {
                // -S: the vCPUs start at the first QMP `cont`.
                let started = Mutex(false)
                controller.observeRunState { [self] _, new in
                    guard new == .running, started.withLock({ s in defer { s = true }; return !s }) else { return }
                    do {
                        try startGuest(guest)
                    } catch {
                        FileHandle.standardError.write(Data("switchyard: cannot start the guest: \(error)\n".utf8))
                        controller.requestExit(code: 1)
                    }
                }
            }
        }
        try start()
        if sandbox != nil { try Sandbox.lockDown() }
        if let guest, !invocation.startPaused { try startGuest(guest) }
        let code = controller.waitForExit()
        if let guest {
            let reasons = guest.stop()
            if code != 0 {
                FileHandle.standardError.write(Data("switchyard: the guest stopped: \(reasons)\n".utf8))
            }
            if let error = guest.interruptSink.error {
                FileHandle.standardError.write(Data("switchyard: interrupt delivery failed: \(error)\n".utf8))
            }
        }
        stop()
        controller.machine.closeNetworkBackends()
        return code
    }

    public func stop() {
        for listener in listeners.withLock({ $0 }) { listener.stop() }
        for connection in connections.withLock({ $0 }) { connection.close() }
    }
}
