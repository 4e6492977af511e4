import CLinux
import Glibc

/// Which files each thread kind may still open (or remove) once the sandbox is locked down,
/// enforced by Landlock on top of the system-call lists: the paths are decided at set-up from
/// the command line, and are data like the lists. Any other open fails with EACCES, which the
/// caller reports as any failed open. Reading links, stat and descriptors opened before
/// lock-down are not affected.
public struct SandboxFileAccess: Sendable, Hashable {
    public enum Access: Sendable, Hashable {
        /// Open for reading.
        case read
        /// Open for reading and writing.
        case readWrite
        /// Remove files in a directory (the unlink of a socket file at quit).
        case removeFiles
        /// List the directories beneath (sysfs lookups of a device being assigned).
        case listDirectories
    }

    public struct Grant: Sendable, Hashable {
        public let path: String
        public let access: Access
        public let kinds: Set<SandboxThreadKind>
        /// Why the grant is there, for the reviewed list.
        public let reason: String

        public init(_ path: String, _ access: Access, kinds: Set<SandboxThreadKind>, reason: String) {
            self.path = path
            self.access = access
            self.kinds = kinds
            self.reason = reason
        }
    }

    public var grants: [Grant]
    /// What only the main thread adds: after lock-down it waits for the end and tears down.
    public var teardown: [Grant]

    public init(grants: [Grant] = [], teardown: [Grant] = []) {
        self.grants = grants
        self.teardown = teardown
    }

    /// The main thread's grants: every kind's (a thread it starts confines itself within the
    /// main thread's ruleset too, so that must hold what any kind holds) and the teardown's.
    public var mainThreadGrants: [Grant] { grants + teardown }

    /// A machine's grants:
    /// - the boot images (-kernel, -initrd) a reboot reads again, for every kind that can start
    ///   one (a vCPU's reset write, the flusher's replayed write, QMP system_reset);
    /// - /dev/vfio and /dev/iommu for control threads: device_add vfio-pci opens /dev/vfio/vfio
    ///   and the group's /dev/vfio/N, or under iommufd /dev/iommu and /dev/vfio/devices/vfioN
    ///   (its sysfs lookups are link reads, and listings of the device's and the group's
    ///   directories: the cdev's name, the members on host drivers);
    /// - the directories of the monitor sockets, where a control thread removes its socket
    ///   file at quit;
    /// - for the main thread's teardown, when the machine leases SR-IOV VFs (`-netdev
    ///   macvtap,pf=`): the VF's driver rebound through sysfs (`driver/unbind`, `drivers/D/bind`
    ///   under /sys/bus/pci/drivers) and its reservation file removed (RUN/vf).
    public static func machine(bootImages: [String], socketPaths: [String], leasesVirtualFunctions: Bool = false,
                               runDirectory: String = "/run/switchyard") -> SandboxFileAccess {
        var grants = bootImages.map {
            Grant($0, .read, kinds: [.vcpu, .io, .control], reason: "a reboot re-reads the boot images")
        }
        grants.append(Grant("/dev/vfio", .readWrite, kinds: [.control], reason: "device_add vfio-pci opens the container and the group (or the device's cdev)"))
        grants.append(Grant("/dev/iommu", .readWrite, kinds: [.control], reason: "device_add vfio-pci under iommufd opens /dev/iommu"))
        grants.append(Grant("/sys/devices", .listDirectories, kinds: [.control],
                            reason: "device_add vfio-pci under iommufd finds the device's cdev (BDF/vfio-dev/vfioN)"))
        grants.append(Grant("/sys/kernel/iommu_groups", .listDirectories, kinds: [.control],
                            reason: "device_add vfio-pci names the group's members still on host drivers"))
        for directory in Set(socketPaths.map(Self.directory(of:))).sorted() {
            grants.append(Grant(directory, .removeFiles, kinds: [.control], reason: "a monitor's socket file is removed at quit"))
        }
        var teardown: [Grant] = []
        if leasesVirtualFunctions {
            teardown.append(Grant("/sys/bus/pci/drivers", .readWrite, kinds: [],
                                  reason: "a leased VF's driver is rebound at exit (unbind, bind)"))
            teardown.append(Grant(runDirectory + "/vf", .removeFiles, kinds: [], reason: "a leased VF's reservation file is removed at exit"))
        }
        return SandboxFileAccess(grants: grants, teardown: teardown)
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    public func grants(for kind: SandboxThreadKind) -> [Grant] { grants.filter { $0.kinds.contains(kind) } }
}

/// One Landlock ruleset per thread kind, made at set-up (when opening the granted paths is
/// still allowed); a thread confines itself to its kind's as it starts.
struct LandlockRulesets: Sendable {
    let rulesets: [SandboxThreadKind: Int32]
    /// The main thread's, which it takes at lock-down.
    let mainThread: Int32

    /// The Landlock ABI version, or why the kernel has none.
    static func version() -> Result<Int32, SandboxError> {
        let abi = sy_landlock_abi()
        if abi > 0 { return .success(abi) }
        let reason = -abi == ENOSYS ? "the kernel is built without Landlock"
            : -abi == EOPNOTSUPP ? "Landlock is disabled at boot (add landlock to the kernel's lsm= list)"
            : "\(Errno(rawValue: -abi))"
        return .failure(SandboxError(reason))
    }

    /// Builds every kind's ruleset; a granted path that does not exist is left out (nothing
    /// there to open: /dev/vfio on a host without VFIO).
    init(_ access: SandboxFileAccess, abi: Int32) throws(SandboxError) {
        var made: [SandboxThreadKind?: Int32] = [:]
        // nil: the main thread.
        for kind in SandboxThreadKind.allCases.map(Optional.some) + [nil] {
            let ruleset = sy_landlock_ruleset(abi)
            guard ruleset >= 0 else {
                for fd in made.values { close(fd) }
                throw SandboxError("cannot make a Landlock ruleset: \(Errno(rawValue: -ruleset))")
            }
            made[kind] = ruleset
            for grant in kind.map(access.grants(for:)) ?? access.mainThreadGrants {
                let rights: UInt64 = switch grant.access {
                case .read: sy_landlock_read_file()
                case .readWrite: sy_landlock_read_file() | sy_landlock_write_file()
                case .removeFiles: sy_landlock_remove_file()
                case .listDirectories: sy_landlock_read_dir()
                }
                let rc = sy_landlock_allow(ruleset, abi, grant.path, rights)
                guard rc == 0 || -rc == ENOENT else {
                    for fd in made.values { close(fd) }
                    throw SandboxError("cannot grant \(grant.path) to \(kind?.rawValue ?? "the main") threads: \(Errno(rawValue: -rc))")
                }
            }
        }
        mainThread = made.removeValue(forKey: nil) ?? -1
        rulesets = Dictionary(uniqueKeysWithValues: made.compactMap { key, value in key.map { ($0, value) } })
    }

    /// Confines the calling thread to `kind`'s ruleset, or the main thread's (nil).
    func confine(_ kind: SandboxThreadKind?) throws(SandboxError) {
        guard let ruleset = kind.map({ rulesets[$0] }) ?? mainThread else { return }
        let rc = sy_landlock_restrict_self(ruleset)
        guard rc == 0 else { throw SandboxError("Landlock refused to confine the thread: \(Errno(rawValue: -rc))") }
    }
}
