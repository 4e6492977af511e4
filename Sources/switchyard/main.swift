import Control
import Foundation
import HostOS
import Machine

/// `switchyard` command line: argument parsing and configuration only.
enum Command {
    /// A QEMU-compatible invocation: build the machine, serve QMP and qtest until quit.
    case serve(QEMUInvocation)
    case run(MachineConfiguration)
    /// run with a kernel: boot it on KVM and hot-plug into it (GuestHotPlugRun).
    case runGuest(MachineConfiguration, GuestHotPlugRun.Options)
    case lspci(MachineConfiguration, LspciOptions)
    case firmware(MachineConfiguration, outputDirectory: String)
    case kvmProbe
    /// sandbox-probe WHERE CALL [-sandbox on|off[,spawn=...]] [-kernel FILE]
    case sandboxProbe(SandboxProbe.Call, SandboxProbe.Site, SandboxPolicy?, kernel: String?)
    /// host list|bind|unbind|sriov: the host's PCI devices (HostCommand)
    case host(HostCommand)
    case help
}

struct UsageError: Error, CustomStringConvertible {
    let description: String
}

let usage = """
    usage: switchyard COMMAND [OPTIONS]
           switchyard -machine q35 [QEMU-STYLE OPTIONS]

    Switchyard is a virtual machine monitor for Linux/KVM built around the PCI platform:
    an Intel q35 chipset (MCH 8086:29c0, ICH9 LPC 8086:2918) with bridges and hot-plug.

    commands:
      run                 build the machine, run firmware enumeration, print the guest's
                          lspci -tvnn tree and a one-line summary
      run --kernel KERNEL --initrd INITRD [--append ARGS] [-sandbox on|off[,spawn=...]]
                          boot Linux on KVM with the machine (KERNEL: a bzImage or an ELF
                          vmlinux, booted through PVH; needs a host whose KVM runs
                          64-bit guests: see kvm-probe), print the guest's own lspci -tvnn,
                          then hot-plug a pci-testdev into root port rp1 and unplug it twice
                          (attention button, then surprise removal), timing what the guest
                          sees. INITRD must hold the rig's guest agent (Tests/Rig/l2/init);
                          `make run` builds one. Runs under the seccomp sandbox once the
                          guest is built, as -accel kvm does (-sandbox off to leave it out)
      lspci [-n|-nn] [-t] [-v...] [-x|-xxx|-xxxx]
                          print what lspci in a guest would print after enumeration
      firmware --out DIR  write the ACPI tables (RSDP, XSDT, FACP, FACS, DSDT, APIC, MCFG,
                          HPET, DMAR when present) and the device tree (machine.dtb) the
                          machine would give its guest, one file each, for iasl -d / dtc
      kvm-probe           time a tiny 64-bit guest on /dev/kvm: exit 0 when this host's KVM
                          runs 64-bit guests at a usable speed, 1 when it does not (too slow,
                          hangs or fails), 2 when there is no usable KVM
      sandbox-probe WHERE CALL [-sandbox on|off[,spawn=allow|deny]] [-kernel FILE]
                          lock the process down as -sandbox on does and make CALL (execve,
                          socket, ioctl-kvm-run, getpid, open-etc-passwd, open-kernel,
                          signal-parent, signal-self) on a thread WHERE says (a kind: vcpu,
                          io, control, signal; main: the main thread itself; early: a thread
                          of no kind started before lock-down): a call that thread may not
                          make ends the process with the sandbox's report (SIGSYS); otherwise
                          prints what it returned (an open outside the granted files: EACCES)
    \(HostCommand.usage)
      help, --help        this text

    machine options (any command):
      -device DRIVER[,id=ID][,bus=BUS][,addr=SLOT[.FN]][,multifunction=on]
                          add a device (drivers: pci-testdev, pci-bridge, pcie-root-port,
                          ioh3420, x3130-upstream, xio3130-downstream, virtio-rng-pci,
                          virtio-net-pci with netdev=ID[,mac=][,mq=on][,vectors=N] (a
                          -netdev of the QEMU-style invocation), and vfio-pci with
                          host=BDF[,rombar=0|1][,x-no-mmap=on][,iommufd=ID] (VFIO through
                          iommufd where the kernel has it, else the type1 container; iommufd=
                          names an -object iommufd,id=ID and insists on it)); BUS is pcie.0 or
                          the id of a bridge or port added earlier. Devices add to a bare
                          q35, as with QEMU: the built-in default machine (a pci-testdev t0
                          at 00:02, a pci-bridge br1 at 00:03 with t1 and t2, an empty root
                          port rp1 at 00:04) is used only when no -device is given
      -nodefaults         the bare chipset even without -device
      -m SIZE             guest RAM, e.g. 512M or 2G (default 128M)

    \(QEMUInvocation.usage)
    """

func parse(_ arguments: [String]) throws -> Command {
    guard let verb = arguments.first else { return .help }
    if verb == "kvm-probe" {
        guard arguments.count == 1 else { throw UsageError(description: "kvm-probe takes no options") }
        return .kvmProbe
    }
    if verb == "host" { return .host(try HostCommand(arguments: Array(arguments.dropFirst()))) }
    if verb == "sandbox-probe" {
        let sites = SandboxProbe.Site.names.joined(separator: ", ")
        let calls = SandboxProbe.Call.allCases.map(\.rawValue).joined(separator: ", ")
        guard arguments.count >= 3 else {
            throw UsageError(description: "sandbox-probe needs WHERE CALL [-sandbox on|off] [-kernel FILE], e.g. sandbox-probe control socket")
        }
        guard let site = SandboxProbe.Site(arguments[1]) else {
            throw UsageError(description: "sandbox-probe: unknown thread '\(arguments[1])'; it is one of \(sites)")
        }
        guard let call = SandboxProbe.Call(rawValue: arguments[2]) else {
            throw UsageError(description: "sandbox-probe: unknown call '\(arguments[2])'; calls are \(calls)")
        }
        let invocation = try QEMUInvocation.parse(Array(arguments.dropFirst(3)))
        return .sandboxProbe(call, site, invocation.sandboxPolicy, kernel: invocation.kernel)
    }
    if verb.hasPrefix("-"), !["-h", "--help", "-help"].contains(verb) {
        return .serve(try QEMUInvocation.parse(arguments))
    }
    var devices: [DeviceSpec] = []
    var defaults = true
    var memory: UInt64?
    var lspciFlags: [String] = []
    var outputDirectory: String?
    var kernel: String?, initrd: String?, append = ""
    var sandbox: String?
    var rest = arguments.dropFirst()
    while let argument = rest.popFirst() {
        switch argument {
        case "-device", "--device":
            guard let spec = rest.popFirst() else { throw UsageError(description: "-device needs a value, e.g. -device pci-testdev,id=t1") }
            devices.append(try DeviceSpec(parsing: spec))
        case "-nodefaults", "--nodefaults":
            defaults = false
        case "-m":
            guard let value = rest.popFirst() else {
                throw UsageError(description: "-m needs a memory size of at least 1M, e.g. -m 512M")
            }
            memory = try MemorySize.option(value)
        case "--kernel" where verb == "run", "--initrd" where verb == "run", "--append" where verb == "run":
            guard let value = rest.popFirst() else { throw UsageError(description: "\(argument) needs a value, e.g. \(argument) /boot/vmlinuz") }
            switch argument {
            case "--kernel": kernel = value
            case "--initrd": initrd = value
            default: append = value
            }
        case "-sandbox" where verb == "run":
            guard let value = rest.popFirst() else { throw UsageError(description: "-sandbox needs a value: on|off[,spawn=allow|deny]") }
            sandbox = value
        case "--out" where verb == "firmware":
            guard let value = rest.popFirst() else { throw UsageError(description: "--out needs a directory, e.g. --out tables/") }
            outputDirectory = value
        case "-h", "--help":
            return .help
        default:
            if verb == "lspci", argument.count > 1, argument.hasPrefix("-"), argument.dropFirst().allSatisfy({ "ntvx".contains($0) }) {
                lspciFlags.append(argument)
            } else {
                throw UsageError(description: "unknown option '\(argument)' for '\(verb)'; see switchyard --help")
            }
        }
    }
    // As with QEMU, -device adds to a bare q35: the default machine is a starting point for
    // someone who names no device at all, never something a -device can collide with.
    var configuration = defaults && devices.isEmpty ? MachineConfiguration.defaultMachine : MachineConfiguration()
    configuration.devices += devices
    if let memory { configuration.memorySize = memory }
    switch verb {
    case "run":
        guard kernel != nil || initrd != nil else { return .run(configuration) }
        guard let kernel, let initrd else {
            throw UsageError(description: "run needs both --kernel KERNEL and --initrd INITRD to boot a guest (or neither)")
        }
        if memory == nil { configuration.memorySize = 512 << 20 }  // a Linux guest wants more than the model's 128 MiB
        var options = GuestHotPlugRun.Options(kernelPath: kernel, initrdPath: initrd)
        options.extraCommandLine = append
        // As for -accel kvm: a guest runs, so the sandbox is on unless -sandbox off.
        options.sandbox = try QEMUInvocation.sandboxPolicy(option: sandbox, defaultOn: true)
        options.sandbox?.fileAccess = .machine(bootImages: [kernel, initrd], socketPaths: [])
        guard configuration.devices.contains(where: { $0.id == options.slotBus }) else {
            throw UsageError(description: "run --kernel hot-plugs into root port '\(options.slotBus)', which this machine lacks (-device or -nodefaults leave out the default machine); add -device pcie-root-port,id=\(options.slotBus),chassis=1,slot=1")
        }
        return .runGuest(configuration, options)
    case "lspci": return .lspci(configuration, try LspciOptions(arguments: lspciFlags))
    case "firmware":
        guard let outputDirectory else { throw UsageError(description: "firmware needs --out DIR, the directory to write the tables to") }
        return .firmware(configuration, outputDirectory: outputDirectory)
    case "help", "-h", "--help": return .help
    default: throw UsageError(description: "unknown command '\(verb)'; commands are run, lspci, firmware, kvm-probe, host, help")
    }
}

func execute(_ command: Command) throws {
    switch command {
    case .serve(let invocation):
        let session = try SwitchyardSession(invocation)
        exit(try session.run(sandbox: invocation.sandboxPolicy))
    case .help:
        print(usage)
    case .host(let command):
        print(try command.run(), terminator: "")
    case .sandboxProbe(let call, let site, let policy, let kernel):
        print(try SandboxProbe.run(call, at: site, policy: policy, kernel: kernel))
    case .kvmProbe:
        let outcome = LongModeProbe.run()
        print("switchyard: \(outcome)")
        switch outcome {
        case .runs: exit(0)
        case .tooSlow, .hangs, .failed: exit(1)
        case .unavailable: exit(2)
        }
    case .lspci(let configuration, let options):
        let machine = try Machine(configuration)
        try machine.runFirmware()
        print(GuestLspci.render(machine, options: options), terminator: "")
    case .firmware(let configuration, let directory):
        let machine = try Machine(configuration)
        try machine.runFirmware()
        let tables = try machine.firmwareTables()
        try tables.write(to: URL(fileURLWithPath: directory, isDirectory: true))
        print("switchyard: wrote \(tables.tables.map(\.fileName).joined(separator: ", ")) and machine.dtb to \(directory)")
    case .runGuest(let configuration, let options):
        let report = try GuestHotPlugRun(configuration: configuration, options: options).run()
        GuestHotPlugRun.writeLine("switchyard: timings (host clock, from the request to the guest's report)\n\(report)")
    case .run(let configuration):
        let machine = try Machine(configuration)
        let report = try machine.runFirmware()
        print(GuestLspci.render(machine, options: LspciOptions(numbering: .namesAndNumbers, verbosity: 1, tree: true)),
              terminator: "")
        print("switchyard: q35 with \(configuration.memorySize >> 20) MiB: \(report.summary)")
    }
}

do {
    try execute(try parse(Array(CommandLine.arguments.dropFirst())))
} catch {
    FileHandle.standardError.write(Data("switchyard: \(error)\n".utf8))
    exit(2)
}
