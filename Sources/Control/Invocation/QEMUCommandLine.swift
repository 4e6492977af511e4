import HostOS
import Machine

/// The accelerator a QEMU-style invocation asks for.
public enum Accelerator: String, Sendable, Hashable {
    /// vCPUs run under KVM.
    case kvm
    /// No vCPU: a qtest client plays the CPU; the virtual clock belongs to it.
    case qtest
}

/// A QEMU-compatible invocation (`switchyard -machine q35 -accel qtest -qtest unix:PATH ...`):
/// what the `switchyard` executable parses and `SwitchyardSession` runs.
public struct QEMUInvocation: Sendable, Hashable {
    public var machine = MachineConfiguration()
    public var accelerator: Accelerator = .kvm
    public var cpus = 1
    /// -S: build the machine but do not start it (query-status says prelaunch).
    public var startPaused = false
    /// QMP monitors: from -qmp, and from -mon chardev=ID,mode=control.
    public var qmp: [SocketEndpoint] = []
    /// QMP monitors on FIFO pairs, from -chardev pipe,path=P and -mon: read P.in, write P.out.
    public var qmpPipes: [String] = []
    public var qtest: SocketEndpoint?
    /// -qtest-log: a path, "none", or nil for standard error (QEMU's default).
    public var qtestLog: String?
    public var kernel: String?
    public var initrd: String?
    public var append: String?
    /// -serial: where COM1 goes. nil is the default: standard output when a kernel boots
    /// under KVM, nowhere otherwise.
    public var serial: SerialTarget?
    /// -no-reboot: a reset request (guest or QMP system_reset) ends the process with SHUTDOWN
    /// instead of rebooting the machine.
    public var noReboot = false
    /// -machine acpi=on|off: whether a KVM Linux boot gets ACPI tables (default on).
    public var acpi = true
    /// -machine kernel-irqchip=on|split: where a KVM guest's interrupt controllers live.
    public var kernelIRQChip: KernelIRQChip = .on
    /// -sandbox on|off; nil: on for -accel kvm, off otherwise.
    public var sandbox: Bool?
    /// -sandbox spawn=allow|deny (QEMU's default: allow).
    public var sandboxAllowsSpawning = true

    /// The sandbox this invocation runs under after set-up, or nil for none: the system-call
    /// lists, and the files a thread may still open (the boot images, /dev/vfio, the server
    /// sockets' directories for their removal; at teardown, a leased VF's rebind).
    public var sandboxPolicy: SandboxPolicy? {
        guard sandbox ?? (accelerator == .kvm) else { return nil }
        var sockets = qmp + [qtest].compactMap { $0 }
        if case .socket(let endpoint) = serial { sockets.append(endpoint) }
        return SandboxPolicy(allowsSpawning: sandboxAllowsSpawning,
                             fileAccess: .machine(bootImages: [kernel, initrd].compactMap { $0 },
                                                  socketPaths: sockets.filter(\.server).map(\.path),
                                                  leasesVirtualFunctions: machine.netdevs.contains { $0.properties["pf"] != nil }))
    }

    /// Where -serial sends COM1 (and where its input comes from).
    public enum SerialTarget: Sendable, Hashable {
        case none
        case stdio
        /// `unix:PATH[,server=on][,wait=off]`, or `chardev:ID` naming a socket chardev.
        case socket(SocketEndpoint)
        /// `pipe:PATH` or a pipe chardev: reads PATH.in, writes PATH.out.
        case pipe(String)
    }

    /// A Linux guest boots on KVM: -accel kvm with -kernel.
    public var bootsLinux: Bool { accelerator == .kvm && kernel != nil }

    public init() {}
}

public struct InvocationError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension QEMUInvocation {
    /// The options a QEMU-style invocation understands, for help text.
    public static let usage = """
        QEMU-style invocation (the first argument starts with '-'):
          -machine q35[,accel=kvm|qtest][,acpi=on|off][,kernel-irqchip=on|split]
                                           the machine type (q35 only; pc-q35-* accepted);
                                           acpi=off boots Linux without ACPI tables;
                                           kernel-irqchip=split keeps only the local APICs in
                                           KVM (our IOAPIC, no PIC or PIT); off is refused
          -accel kvm|qtest                 kvm runs vCPUs; qtest runs none (a qtest client drives
                                           the machine); tcg is not supported
          -m SIZE                          guest RAM, e.g. 512M, 2G, or size=2G (default 128M)
          -smp N[,...]                     vCPU count (1-255)
          -device DRIVER[,id=ID][,bus=BUS][,addr=SLOT[.FN]][,multifunction=on][,PROP=VALUE...]
          -netdev tap,id=ID[,ifname=NAME|fd=N|fds=N:M...][,queues=N][,vhost=on|off]
                                           a tap backend (vnet headers; IFF_MULTI_QUEUE with
                                           queues=N); script=no and downscript=no are accepted
          -netdev macvtap,id=ID,link=LOWER[,mode=bridge|vepa|private|passthru][,mac=][,queues=N]
          -netdev macvtap,id=ID,ifname=MACVTAP[,queues=N]
          -netdev macvtap,id=ID,pf=PF,vf=auto|N[,mac=][,vlan=N][,spoofchk=on|off][,trust=on|off]
                                           a macvtap: a new one on LOWER (deleted at exit), an
                                           existing one, or a passthru one on a free SR-IOV VF of
                                           PF whose MAC/VLAN Switchyard sets and restores at exit;
                                           each takes vhost=on|off (vhost-net moves the frames)
          -nodefaults                      accepted; a QEMU-style machine starts bare anyway
          -S                               do not start: query-status reports prelaunch until cont
          -display none                    (only none)
          -serial stdio|none|unix:PATH[,server=on][,wait=off]|pipe:PATH|chardev:ID
                                           COM1 (stdio is the default with -accel kvm -kernel);
                                           a socket or pipe carries it both ways
          -monitor none                    (only none)
          -qmp unix:PATH[,server=on][,wait=off]
                                           a QMP monitor; without server=on Switchyard connects
                                           to PATH, with it Switchyard listens there
          -chardev socket,id=ID,path=PATH[,server=on][,wait=off]
          -chardev pipe,id=ID,path=PATH    reads PATH.in, writes PATH.out (FIFOs the caller
                                           made; PATH itself when those are missing)
          -mon chardev=ID,mode=control     a QMP monitor on a socket or pipe chardev
          -qtest unix:PATH[,server=on][,wait=off]
                                           the qtest protocol (QEMU's system/qtest.c); the
                                           process ends when this socket closes
          -qtest-log FILE|none             log qtest traffic as QEMU does (default: stderr)
          -kernel FILE, -initrd FILE, -append TEXT
                                           with -accel kvm: boot this Linux kernel on KVM, a
                                           bzImage (64-bit boot protocol) or an uncompressed
                                           ELF vmlinux (PVH entry: no decompression); COM1 on
                                           standard output; the process ends when the guest
                                           powers off or resets
          -no-reboot                       exit instead of rebooting on a reset
          -sandbox on|off[,spawn=allow|deny]
                                           seccomp filters after set-up (on by default with
                                           -accel kvm): each thread kind (vCPU, I/O, control,
                                           signal) may make only its listed system calls; any
                                           other call is reported and ends the process (SIGSYS).
                                           execve is never allowed; spawn=deny forbids fork too.
                                           QEMU's obsolete, elevateprivileges and
                                           resourcecontrol are accepted with deny (their calls
                                           are never on a list)
          -global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on|off
                                           on: hot-plug into ports and bridges through ACPI
                                           (QEMU 10's default); off (Switchyard's default):
                                           native PCIe and SHPC hot-plug
        Switchyard serves its monitors until QMP `quit`, until the qtest socket closes, or
        until a booted guest powers off.
        """

    /// Parses a QEMU-style argument list. Errors name the option at fault.
    public static func parse(_ arguments: [String]) throws(InvocationError) -> QEMUInvocation {
        var result = QEMUInvocation()
        var chardevs: [String: Chardev] = [:]
        var serialChardev: String?
        var monitors: [String] = []
        var rest = arguments[...]
        func value(_ option: String) throws(InvocationError) -> String {
            guard let v = rest.popFirst() else { throw InvocationError("option \(option) needs a value") }
            return v
        }
        while let raw = rest.popFirst() {
            // QEMU accepts --option as well as -option.
            let option = raw.hasPrefix("--") ? String(raw.dropFirst()) : raw
            switch option {
            case "-machine", "-M":
                let text = try value(option)
                let fields = try KeyValueList(text, implicitKey: "type", option: option)
                for (key, v) in fields.pairs {
                    switch key {
                    case "type":
                        guard v == "q35" || v.hasPrefix("pc-q35") else {
                            throw InvocationError("-machine \(v): unsupported machine type; Switchyard models q35 only")
                        }
                    case "accel": result.accelerator = try accelerator(v)
                    case "acpi": result.acpi = try flag(v, key, option)
                    case "kernel-irqchip": result.kernelIRQChip = try kernelIRQChip(v)
                    default: throw InvocationError("-machine: unsupported property '\(key)'")
                    }
                }
            case "-accel":
                let fields = try KeyValueList(try value(option), implicitKey: "accel", option: option)
                for (key, v) in fields.pairs {
                    guard key == "accel" else { throw InvocationError("-accel: unsupported property '\(key)'") }
                    result.accelerator = try accelerator(v)
                }
            case "-enable-kvm":
                result.accelerator = .kvm
            case "-m":
                result.machine.memorySize = try MemorySize.option(try value(option))
            case "-smp":
                let fields = try KeyValueList(try value(option), implicitKey: "cpus", option: option)
                for (key, v) in fields.pairs {
                    guard let n = Int(v), (1...255).contains(n) else {
                        throw InvocationError("-smp: \(key)=\(v) must be a number from 1 to 255")
                    }
                    switch key {
                    case "cpus": result.cpus = n
                    case "sockets", "cores", "threads", "maxcpus", "dies", "clusters": break
                    default: throw InvocationError("-smp: unsupported property '\(key)'")
                    }
                }
            case "-device":
                let text = try value(option)
                do {
                    result.machine.devices.append(try DeviceSpec(parsing: text))
                } catch {
                    throw InvocationError("-device \(text): \(error)")
                }
            case "-netdev":
                let text = try value(option)
                let netdev: NetdevSpec
                do {
                    netdev = try NetdevSpec(parsing: text)
                } catch {
                    throw InvocationError("\(error)")
                }
                guard !result.machine.netdevs.contains(where: { $0.id == netdev.id }) else {
                    throw InvocationError("-netdev \(text): Duplicate ID '\(netdev.id)' for netdev")
                }
                result.machine.netdevs.append(netdev)
            case "-object":
                let text = try value(option)
                let id = try Self.iommufdObject(text)
                guard !result.machine.iommufdObjects.contains(id) else {
                    throw InvocationError("-object \(text): Duplicate ID '\(id)' for object")
                }
                result.machine.iommufdObjects.append(id)
            case "-nodefaults", "-no-user-config", "-no-shutdown":
                break
            case "-no-reboot":
                result.noReboot = true
            case "-S":
                result.startPaused = true
            case "-serial":
                let v = try value(option)
                guard result.serial == nil, serialChardev == nil else {
                    throw InvocationError("-serial \(v): only one -serial (COM1) is supported")
                }
                switch v {
                case "stdio": result.serial = .stdio
                case "none", "null": result.serial = SerialTarget.none
                case _ where v.hasPrefix("unix:"): result.serial = .socket(try endpoint(v, option: option))
                case _ where v.hasPrefix("pipe:") && v.count > 5: result.serial = .pipe(String(v.dropFirst(5)))
                case _ where v.hasPrefix("chardev:") && v.count > 8: serialChardev = String(v.dropFirst(8))
                default:
                    throw InvocationError("-serial \(v): use stdio, none, unix:PATH[,server=on][,wait=off], pipe:PATH or chardev:ID")
                }
            case "-display", "-monitor", "-parallel", "-vga":
                let v = try value(option)
                guard v == "none" else { throw InvocationError("\(option) \(v): only '\(option) none' is supported") }
            case "-qmp":
                let text = try value(option)
                result.qmp.append(try endpoint(text, option: option))
            case "-chardev":
                let text = try value(option)
                let fields = try KeyValueList(text, implicitKey: "backend", option: option)
                let backend = fields["backend"]
                guard backend == "socket" || backend == "pipe" else {
                    throw InvocationError("-chardev \(text): only socket and pipe chardevs are supported")
                }
                guard let id = fields["id"], !id.isEmpty else { throw InvocationError("-chardev \(text): needs id=") }
                guard let path = fields["path"], !path.isEmpty else {
                    throw InvocationError("-chardev \(text): needs path=")
                }
                guard chardevs[id] == nil else { throw InvocationError("-chardev: duplicate id '\(id)'") }
                if backend == "pipe" {
                    for (key, _) in fields.pairs where !["backend", "id", "path"].contains(key) {
                        throw InvocationError("-chardev \(text): unsupported property '\(key)' for a pipe")
                    }
                    chardevs[id] = .pipe(path)
                    continue
                }
                var e = SocketEndpoint(path: path)
                for (key, v) in fields.pairs {
                    switch key {
                    case "backend", "id", "path": break
                    case "server": e.server = try flag(v, key, option)
                    case "wait": e.wait = try flag(v, key, option)
                    case "nowait": e.wait = false
                    default: throw InvocationError("-chardev \(text): unsupported property '\(key)'")
                    }
                }
                chardevs[id] = .socket(e)
            case "-mon":
                let text = try value(option)
                let fields = try KeyValueList(text, implicitKey: "chardev", option: option)
                for (key, v) in fields.pairs {
                    switch key {
                    case "chardev": monitors.append(v)
                    case "mode":
                        guard v == "control" else { throw InvocationError("-mon \(text): only mode=control (QMP) is supported") }
                    case "pretty": break
                    default: throw InvocationError("-mon \(text): unsupported property '\(key)'")
                    }
                }
                guard fields["mode"] == "control" else { throw InvocationError("-mon \(text): needs mode=control (QMP)") }
            case "-qtest":
                let text = try value(option)
                guard result.qtest == nil else { throw InvocationError("-qtest given twice") }
                result.qtest = try endpoint(text, option: option)
            case "-qtest-log":
                result.qtestLog = try value(option)
            case "-global":
                result.machine.acpiPCIHotplug = try acpiHotplugGlobal(try value(option))
            case "-sandbox":
                try sandboxOption(try value(option), into: &result)
            case "-kernel": result.kernel = try value(option)
            case "-initrd": result.initrd = try value(option)
            case "-append": result.append = try value(option)
            default:
                if option.hasPrefix("-") {
                    throw InvocationError("unknown option '\(raw)'; see switchyard --help")
                }
                throw InvocationError("unexpected argument '\(raw)'; options start with '-'; see switchyard --help")
            }
        }
        if let id = serialChardev {
            guard !monitors.contains(id) else {
                throw InvocationError("-serial chardev:\(id): chardev '\(id)' is already a QMP monitor; give COM1 its own -chardev")
            }
            switch chardevs[id] {
            case .socket(let e): result.serial = .socket(e)
            case .pipe(let path): result.serial = .pipe(path)
            case nil: throw InvocationError("-serial chardev:\(id): no -chardev with id '\(id)'")
            }
        }
        for id in monitors {
            switch chardevs[id] {
            case .socket(let e): result.qmp.append(e)
            case .pipe(let path): result.qmpPipes.append(path)
            case nil: throw InvocationError("-mon chardev=\(id): no -chardev with id '\(id)'")
            }
        }
        if (result.initrd != nil || result.append != nil) && result.kernel == nil {
            throw InvocationError("-initrd and -append need -kernel")
        }
        return result
    }

    /// A -chardev's backend.
    enum Chardev {
        case socket(SocketEndpoint)
        /// The path a pipe chardev's FIFOs are named from.
        case pipe(String)
    }

    /// QEMU's OnOffSplit; `off` needs local APICs in user space, which Switchyard does not have.
    static func kernelIRQChip(_ text: String) throws(InvocationError) -> KernelIRQChip {
        switch text {
        case "on": return .on
        case "split": return .split
        case "off":
            throw InvocationError("-machine kernel-irqchip=off: Switchyard has no userspace local APIC; use kernel-irqchip=on (the default) or kernel-irqchip=split")
        default:
            throw InvocationError("-machine kernel-irqchip=\(text): Parameter 'kernel-irqchip' does not accept value '\(text)' (on, split; off is not supported)")
        }
    }

    static func accelerator(_ text: String) throws(InvocationError) -> Accelerator {
        // QEMU accepts a ':'-separated fallback list; the first supported one wins.
        for name in text.split(separator: ":") {
            switch name {
            case "kvm": return .kvm
            case "qtest": return .qtest
            case "tcg": continue
            default: throw InvocationError("-accel \(name): unknown accelerator; Switchyard supports kvm and qtest")
            }
        }
        throw InvocationError("-accel tcg: TCG is not supported; Switchyard runs guests under KVM (-accel kvm) or with no vCPU (-accel qtest)")
    }

    /// `-sandbox on|off[,spawn=allow|deny][,obsolete=deny]...`, with QEMU's error texts.
    /// The policy `-sandbox TEXT` asks for (nil: off), for commands other than the QEMU-style
    /// invocation (`switchyard run`); `defaultOn` decides when the option is absent.
    /// `-object iommufd,id=ID` (QEMU's spelling; also `qom-type=iommufd`): the id. Other object
    /// types, and an fd= of a /dev/iommu the caller opened, are refused with what is supported;
    /// the errors are QEMU 10's words.
    static func iommufdObject(_ text: String) throws(InvocationError) -> String {
        let fields = try KeyValueList(text, implicitKey: "qom-type", option: "-object")
        for (key, _) in fields.pairs where key != "qom-type" && key != "id" {
            if key == "fd" {
                throw InvocationError("-object \(text): fd= is not supported: Switchyard opens /dev/iommu itself; leave fd= out")
            }
            throw InvocationError("-object \(text): Invalid parameter '\(key)'")
        }
        let type = fields["qom-type"], id = fields["id"]
        guard let type else { throw InvocationError("-object \(text): Parameter 'qom-type' is missing") }
        guard type == "iommufd" else {
            throw InvocationError("-object \(text): Parameter 'qom-type' does not accept value '\(type)' (Switchyard knows iommufd: -object iommufd,id=ID)")
        }
        guard let id, !id.isEmpty else { throw InvocationError("-object \(text): Parameter 'id' is missing") }
        return id
    }

    public static func sandboxPolicy(option text: String?, defaultOn: Bool) throws(InvocationError) -> SandboxPolicy? {
        var parsed = QEMUInvocation()
        if let text { try sandboxOption(text, into: &parsed) }
        return (parsed.sandbox ?? defaultOn) ? SandboxPolicy(allowsSpawning: parsed.sandboxAllowsSpawning) : nil
    }

    static func sandboxOption(_ text: String, into result: inout QEMUInvocation) throws(InvocationError) {
        let fields = try KeyValueList(text, implicitKey: "enable", option: "-sandbox")
        for (key, v) in fields.pairs {
            switch key {
            case "enable":
                switch v {
                case "on": result.sandbox = true
                case "off": result.sandbox = false
                default: throw InvocationError("-sandbox \(text): Parameter 'enable' expects 'on' or 'off'")
                }
            case "spawn":
                switch v {
                case "allow": result.sandboxAllowsSpawning = true
                case "deny": result.sandboxAllowsSpawning = false
                default: throw InvocationError("-sandbox \(text): invalid argument for spawn")
                }
            case "obsolete", "elevateprivileges", "resourcecontrol":
                let values = key == "elevateprivileges" ? ["allow", "deny", "children"] : ["allow", "deny"]
                guard values.contains(v) else { throw InvocationError("-sandbox \(text): invalid argument for \(key)") }
                guard v == "deny" else {
                    throw InvocationError("-sandbox \(text): \(key)=\(v) is not supported: Switchyard's allow-lists never include these calls; use \(key)=deny or leave it out")
                }
            default:
                throw InvocationError("-sandbox \(text): Invalid parameter '\(key)'")
            }
        }
    }

    /// `-global DRIVER.PROPERTY=VALUE`: the one global Switchyard models.
    static func acpiHotplugGlobal(_ text: String) throws(InvocationError) -> Bool {
        let name = "ICH9-LPC.acpi-pci-hotplug-with-bridge-support"
        guard let equals = text.firstIndex(of: "="), text[..<equals] == name else {
            throw InvocationError("-global \(text): unsupported; the only global is \(name)=on|off")
        }
        return try flag(String(text[text.index(after: equals)...]), "acpi-pci-hotplug-with-bridge-support", "-global")
    }

    static func flag(_ v: String, _ key: String, _ option: String) throws(InvocationError) -> Bool {
        switch v {
        case "on", "yes", "true", "": return true
        case "off", "no", "false": return false
        default: throw InvocationError("\(option): \(key)=\(v) must be on or off")
        }
    }

    /// `unix:PATH[,server=on|server][,wait=off|nowait]`.
    static func endpoint(_ text: String, option: String) throws(InvocationError) -> SocketEndpoint {
        guard text.hasPrefix("unix:") else {
            throw InvocationError("\(option) \(text): only unix:PATH sockets are supported")
        }
        let fields = text.dropFirst(5).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let path = fields.first, !path.isEmpty else { throw InvocationError("\(option) \(text): empty socket path") }
        var e = SocketEndpoint(path: path)
        for field in fields.dropFirst() {
            let parts = field.split(separator: "=", maxSplits: 1).map(String.init)
            let key = parts.first ?? "", v = parts.count > 1 ? parts[1] : ""
            switch key {
            case "server": e.server = try flag(v, key, option)
            case "wait": e.wait = try flag(v, key, option)
            case "nowait": e.wait = false
            default: throw InvocationError("\(option) \(text): unsupported property '\(field)'")
            }
        }
        return e
    }
}

/// A QEMU option value: `first,key=value,...`, where a first field without '=' is the
/// option's implicit key (`-machine q35` is type=q35).
struct KeyValueList {
    var pairs: [(String, String)] = []

    init(_ text: String, implicitKey: String, option: String) throws(InvocationError) {
        for (i, field) in text.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            if let eq = field.firstIndex(of: "=") {
                pairs.append((String(field[..<eq]), String(field[field.index(after: eq)...])))
            } else if i == 0 && !field.isEmpty {
                pairs.append((implicitKey, String(field)))
            } else if !field.isEmpty {
                pairs.append((String(field), ""))  // a bare flag such as `server`
            } else {
                throw InvocationError("\(option) \(text): empty field")
            }
        }
    }

    subscript(key: String) -> String? { pairs.last { $0.0 == key }?.1 }
}

/// Memory sizes as QEMU writes them: a number with an optional K/M/G/T suffix; a bare
/// number means MiB.
public enum MemorySize {
    public static func parse(_ text: String) -> UInt64? {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        if let last = text.last?.uppercased().first, let unit = units[last], let n = UInt64(text.dropLast()) {
            return n.multipliedReportingOverflow(by: unit).overflow ? nil : n * unit
        }
        guard let n = UInt64(text), !n.multipliedReportingOverflow(by: 1 << 20).overflow else { return nil }
        return n << 20
    }

    /// `-m`'s value (`SIZE` or `size=SIZE`) checked against what the machine can hold, with an
    /// error that names the limit. `switchyard -m` and `switchyard lspci -m` both use it.
    public static func option(_ text: String, layout: Q35Layout = .standard) throws(InvocationError) -> UInt64 {
        let sizeText = text.hasPrefix("size=") ? String(text.dropFirst(5)) : text
        let maximum = layout.maximumRAM
        let digits = sizeText.last.map { $0.isLetter ? String(sizeText.dropLast()) : sizeText } ?? ""
        guard let size = parse(sizeText) else {
            if !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) {
                throw InvocationError("-m \(text): too large; this q35 layout holds at most -m \(memorySizeText(maximum))")
            }
            throw InvocationError("-m \(text): needs a memory size of at least 1M, e.g. -m 512M")
        }
        guard size >= 1 << 20 else { throw InvocationError("-m \(text): needs a memory size of at least 1M, e.g. -m 512M") }
        guard size <= maximum else {
            throw InvocationError("-m \(text): too large; RAM above 4 GiB would reach the 64-bit PCI window at \(memorySizeText(layout.pciMemory64Base)); this q35 layout holds at most -m \(memorySizeText(maximum))")
        }
        return size
    }
}
