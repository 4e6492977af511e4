import Foundation
import Glibc
import TestRequirements
import Testing

/// The seccomp sandbox in the real switchyard binary: a forbidden call ends the process by
/// SIGSYS with a line naming the call (its number checked against the kernel's header), the
/// same call runs with -sandbox off, and real sessions work under it. The -sandbox errors are
/// QEMU's own, read from QEMU.
@Suite("seccomp sandbox in the switchyard binary", .serialized)
struct SandboxTests {
    /// `__NR_name` from the kernel's UAPI header.
    static func kernelNumber(_ name: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", encoding: .utf8)
        else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 3, fields[1] == "__NR_\(name)" { return Int(fields[2]) }
        }
        return nil
    }

    /// The environment for a sandboxed child. Under `make test-asan` LeakSanitizer's check at
    /// exit stops the world with prctl and ptrace, which no sandbox list allows (rightly): the
    /// children run without it there; the test process keeps it.
    static var childEnvironment: [String: String] {
        var environment = ProcessInfo.processInfo.environment
        if let options = environment["ASAN_OPTIONS"] { environment["ASAN_OPTIONS"] = options + ":detect_leaks=0" }
        return environment
    }

    /// Runs the binary; its output, error text and how it ended.
    static func probe(_ arguments: [String]) throws -> (out: String, err: String, reason: Process.TerminationReason, status: Int32) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: switchyardBinary)
        process.arguments = arguments
        process.environment = childEnvironment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let errBox = ErrorOutput()
        let reader = Thread { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); errBox.done.signal() }
        reader.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        errBox.done.wait()
        process.waitUntilExit()
        return (String(decoding: outData, as: UTF8.self), String(decoding: errBox.data, as: UTF8.self),
                process.terminationReason, process.terminationStatus)
    }

    @Test(arguments: [("control", "socket"), ("io", "execve"), ("signal", "socket"), ("vcpu", "execve")])
    func forbiddenCallEndsTheProcessBySIGSYS(kind: String, call: String) throws {
        let number = try required(Self.kernelNumber(call), "no asm/unistd_64.h (apt install linux-libc-dev)")
        let result = try Self.probe(["sandbox-probe", kind, call])
        #expect(result.reason == .uncaughtSignal && result.status == SIGSYS, "\(result)")
        #expect(result.err.contains("switchyard: sandbox: forbidden system call \(call) (number \(number), arguments "),
                "\(result.err)")
        #expect(result.err.contains(") in a thread of kind \(kind); the process ends"), "\(result.err)")
        #expect(!result.out.contains("returned"))
    }

    @Test func kvmRunIsAVCPUThreadsCallOnly() throws {
        let number = try required(Self.kernelNumber("ioctl"), "no asm/unistd_64.h (apt install linux-libc-dev)")
        // On a vCPU thread the request is allowed; the kernel answers EBADF for fd -1.
        let vcpu = try Self.probe(["sandbox-probe", "vcpu", "ioctl-kvm-run"])
        #expect(vcpu.reason == .exit && vcpu.status == 0, "\(vcpu)")
        #expect(vcpu.out.contains("returned -1 (\(String(cString: strerror(EBADF)))"), "\(vcpu.out)")
        let control = try Self.probe(["sandbox-probe", "control", "ioctl-kvm-run"])
        #expect(control.reason == .uncaughtSignal && control.status == SIGSYS, "\(control)")
        // KVM_RUN is _IO(0xAE, 0x80) (linux/kvm.h); fd -1 is the int 0xffffffff.
        #expect(control.err.contains("forbidden system call ioctl (number \(number), arguments 0xffffffff 0xae80) in a thread of kind control"),
                "\(control.err)")
    }

    @Test func withoutTheSandboxTheSameCallsRun() throws {
        let socket = try Self.probe(["sandbox-probe", "control", "socket", "-sandbox", "off"])
        #expect(socket.reason == .exit && socket.status == 0, "\(socket)")
        #expect(socket.out.range(of: #"socket on a control thread returned [0-9]+\n"#, options: .regularExpression) != nil, "\(socket.out)")
        let execve = try Self.probe(["sandbox-probe", "io", "execve", "-sandbox", "off"])
        #expect(execve.reason == .exit && execve.status == 0, "\(execve)")
        #expect(execve.out.contains("returned -1 (\(String(cString: strerror(ENOENT)))"), "\(execve.out)")
        #expect(!socket.err.contains("sandbox") && !execve.err.contains("sandbox"))
    }

    /// Landlock, where the kernel has it: after lock-down a thread opens only what set-up
    /// granted its kind. The -kernel file (a reboot reads it again) opens on vCPU, I/O and
    /// control threads; /etc/passwd, granted to none, fails with the kernel's EACCES, and opens
    /// with -sandbox off.
    @Test func threadsOpenOnlyTheFilesGrantedAtSetUp() throws {
        let kernel = NSTemporaryDirectory() + "sy-\(getpid())-sandbox-kernel"
        try Data("a boot image".utf8).write(to: URL(fileURLWithPath: kernel))
        defer { unlink(kernel) }
        let first = try Self.probe(["sandbox-probe", "vcpu", "open-etc-passwd", "-kernel", kernel])
        try require(!first.err.contains("file opens are not narrowed"), "no Landlock here: \(first.err)")
        let denied = "returned -1 (\(String(cString: strerror(EACCES))) (errno \(EACCES)))"
        let opened = #"returned [0-9]+\n"#
        // main: the main thread after lock-down (it waits, then tears down), within every kind's
        // grants; early: a thread started before lock-down (as the runtime's are), which
        // lock-down gives the main thread's ruleset (without it, it opened /etc/passwd).
        for kind in ["vcpu", "io", "control", "main", "early"] {
            let ungranted = try Self.probe(["sandbox-probe", kind, "open-etc-passwd", "-kernel", kernel])
            #expect(ungranted.reason == .exit && ungranted.status == 0, "\(ungranted)")
            if kind == "early" && ungranted.err.contains("a ThreadSanitizer build: threads already running at lock-down keep no Landlock ruleset") {
                // make test-tsan: the binary says it left them out (its own line), and they open.
                #expect(ungranted.out.range(of: opened, options: .regularExpression) != nil, "\(ungranted)")
                continue
            }
            #expect(ungranted.out.contains(denied), "\(kind): \(ungranted.out)")
            let granted = try Self.probe(["sandbox-probe", kind, "open-kernel", "-kernel", kernel])
            #expect(granted.out.range(of: opened, options: .regularExpression) != nil, "\(kind): \(granted)")
        }
        let off = try Self.probe(["sandbox-probe", "vcpu", "open-etc-passwd", "-sandbox", "off"])
        #expect(off.out.range(of: opened, options: .regularExpression) != nil, "\(off)")
    }

    /// tgkill reaches only this process's own threads (pthread_kill, raise): signalling
    /// another process (here the test, the probe's parent, with signal 0) traps on every
    /// thread, those started before lock-down included; -sandbox off lets it run.
    @Test(arguments: ["vcpu", "io", "control", "signal", "main", "early"])
    func noThreadSignalsAnotherProcess(site: String) throws {
        let number = try required(Self.kernelNumber("tgkill"), "no asm/unistd_64.h (apt install linux-libc-dev)")
        let other = try Self.probe(["sandbox-probe", site, "signal-parent"])
        #expect(other.reason == .uncaughtSignal && other.status == SIGSYS, "\(site): \(other)")
        #expect(other.err.contains("forbidden system call tgkill (number \(number), arguments 0x\(String(getpid(), radix: 16)) "),
                "\(site): \(other.err)")
        let own = try Self.probe(["sandbox-probe", site, "signal-self"])
        #expect(own.reason == .exit && own.status == 0 && own.out.contains("signal-self") && own.out.hasSuffix("returned 0\n"),
                "\(site): \(own)")
        let off = try Self.probe(["sandbox-probe", site, "signal-parent", "-sandbox", "off"])
        #expect(off.reason == .exit && off.out.hasSuffix("returned 0\n"), "\(site): \(off)")
    }

    /// A qtest and QMP session under -sandbox on: config cycles, a hot-plug and an unplug, quit.
    @Test(.timeLimit(.minutes(1)))
    func qtestSessionRunsUnderTheSandbox() throws {
        let listener = try TestListener(name: "qtest")
        let qmpPath = temporarySocketPath("qmp")
        let stderrPath = NSTemporaryDirectory() + "sy-\(getpid())-sandbox-stderr.txt"
        let child = try ChildProcess(switchyardBinary,
                                     ["-machine", "q35", "-accel", "qtest", "-sandbox", "on,spawn=deny", "-nodefaults",
                                      "-device", "pcie-root-port,id=rp1,chassis=1,slot=1",
                                      "-qtest", "unix:\(listener.path)", "-qtest-log", "none",
                                      "-qmp", "unix:\(qmpPath),server=on,wait=off"], stderrPath: stderrPath,
                                     environment: Self.childEnvironment)
        defer { child.stop() }
        let qt = QTestClient(try listener.accept())
        for _ in 0..<50 {
            #expect(try qt.configRead(device: 0, offset: 0) == "OK 0x29c08086")
        }
        let qmp = try QMPTestClient(path: qmpPath)   // a client connecting after lock-down
        try qmp.negotiate()
        #expect(try qmp.execute("device_add", #"{"driver": "pci-testdev", "id": "t9", "bus": "rp1"}"#) == #"{"return": {}}"#)
        #expect(try qmp.execute("query-status").contains("\"status\""))
        #expect(try qmp.execute("quit") == #"{"return": {}}"#)
        #expect(child.waitForExit(seconds: 10) == 0)
        let errors = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        // make test-tsan's binary says it sends threads running at lock-down no request; nothing else.
        let sandboxLines = errors.split(separator: "\n").filter { $0.contains("sandbox") && !$0.contains("a ThreadSanitizer build:") }
        #expect(sandboxLines.isEmpty, "\(errors)")
        unlink(stderrPath)
    }

    /// -sandbox's errors, word for word as QEMU 10 prints them after its program name.
    @Test(.requires(FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64"), "no qemu-system-x86_64 (scripts/setup.sh)"),
          arguments: ["foo", "on,spawn=maybe", "on,bogus=1", "on,obsolete=maybe"])
    func optionErrorsAreQEMUs(value: String) throws {
        let qemu = try run("/usr/bin/qemu-system-x86_64", ["-sandbox", value, "-machine", "none", "-display", "none"])
        let ours = try run(switchyardBinary, ["-machine", "q35", "-accel", "qtest", "-sandbox", value])
        let qemuLine = qemu.err.split(separator: "\n").first.map { $0.replacingOccurrences(of: "qemu-system-x86_64: ", with: "") }
        #expect(qemuLine != nil && qemu.status != 0)
        #expect(ours.err == "switchyard: \(qemuLine ?? "")\n")
        #expect(ours.status == 2)
    }
}
