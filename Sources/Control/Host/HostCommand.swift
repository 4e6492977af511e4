import HostDevices
import HostNetwork
import VMMBase

/// `switchyard host ...`: the host's PCI devices and their preparation for assignment.
public enum HostCommand: Hashable, Sendable {
    /// host list [--json]
    case list(json: Bool)
    /// host bind BDF [--group]
    case bind(PCIAddress, wholeGroup: Bool)
    /// host unbind BDF [--group]
    case unbind(PCIAddress, wholeGroup: Bool)
    /// host sriov PF --vfs N [--assign-resources]
    case sriov(PCIAddress, vfs: Int, assignResources: Bool)

    public static let usage = """
          host list [--json]  every host PCI device: names, class, driver, IOMMU group and its
                              members, SR-IOV VFs, reset methods, and whether it can be assigned
                              now (each "no" with its reason and fix)
          host bind BDF [--group]
                              give the device (with --group, every member of its IOMMU group
                              that a host driver holds) to vfio-pci through driver_override; the
                              driver it had is remembered in /run/switchyard/host-drivers
          host unbind BDF [--group]
                              take it from vfio-pci and give back the driver it had before bind
          host sriov PF --vfs N [--assign-resources]
                              enable N VFs (0 disables them); --assign-resources, for NVMe,
                              also gives each VF's secondary controller flexible queues and
                              interrupts and sets it online (NVMe Virtualization Management)
        """

    public struct UsageError: Error, Hashable, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// The arguments after "host".
    public init(arguments: [String]) throws(UsageError) {
        guard let verb = arguments.first else {
            throw UsageError(description: "host needs a command: list, bind, unbind or sriov (see switchyard --help)")
        }
        var rest = Array(arguments.dropFirst())
        func flag(_ name: String) -> Bool {
            guard let i = rest.firstIndex(of: name) else { return false }
            rest.remove(at: i)
            return true
        }
        func address() throws(UsageError) -> PCIAddress {
            guard let text = rest.first, !text.hasPrefix("-") else {
                throw UsageError(description: "host \(verb) needs a PCI address, e.g. host \(verb) 0000:03:00.0 (lspci -D lists them)")
            }
            rest.removeFirst()
            return try Self.parseAddress(text, command: verb)
        }
        func noneLeft() throws(UsageError) {
            if let extra = rest.first {
                throw UsageError(description: "host \(verb): unknown option '\(extra)'; see switchyard --help")
            }
        }
        switch verb {
        case "list":
            let json = flag("--json")
            try noneLeft()
            self = .list(json: json)
        case "bind", "unbind":
            let group = flag("--group")
            let bdf = try address()
            try noneLeft()
            self = verb == "bind" ? .bind(bdf, wholeGroup: group) : .unbind(bdf, wholeGroup: group)
        case "sriov":
            let assign = flag("--assign-resources")
            var count: Int?
            if let i = rest.firstIndex(of: "--vfs") {
                guard i + 1 < rest.count, let n = Int(rest[i + 1]), n >= 0 else {
                    throw UsageError(description: "host sriov: --vfs needs a number of VFs, e.g. --vfs 2 (0 disables them)")
                }
                count = n
                rest.removeSubrange(i...(i + 1))
            }
            let pf = try address()
            try noneLeft()
            guard let count else {
                throw UsageError(description: "host sriov needs --vfs N, e.g. host sriov \(pf) --vfs 2 (0 disables them)")
            }
            self = .sriov(pf, vfs: count, assignResources: assign)
        default:
            throw UsageError(description: "unknown host command '\(verb)'; host commands are list, bind, unbind, sriov")
        }
    }

    /// "0000:03:00.0" or "03:00.0" (segment 0), as lspci and QEMU's host= spell them.
    static func parseAddress(_ text: String, command: String) throws(UsageError) -> PCIAddress {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let shapeOK = (parts.count == 3 && parts[0].count == 4 || parts.count == 2)
            && parts[parts.count - 2].count == 2 && parts[parts.count - 1].count == 4
        guard shapeOK, let address = PCIAddress(parsing: text) else {
            throw UsageError(description: "host \(command): '\(text)' is not a PCI address; "
                + "write it as DDDD:BB:DD.F or BB:DD.F in hexadecimal, e.g. 0000:03:00.0 (lspci -D lists them)")
        }
        return address
    }
}

extension HostCommand {
    /// Runs the command on this host (/sys, /proc, /dev, /run/switchyard) and returns what to print.
    public func run(sysfs: Sysfs = Sysfs(), store: PreviousDriverStore = PreviousDriverStore()) throws -> String {
        var inventory = try HostInventory.host()
        // VFs a running switchyard holds for -netdev macvtap,pf=,vf= (their reservation files).
        for user in VirtualFunctionRegistry.activeUsers(runDirectory: "/run/switchyard") {
            guard let address = PCIAddress(parsing: user.vfAddress) else { continue }
            inventory.uses[address, default: []].append(.switchyard(pid: user.pid, netdev: user.netdevID))
        }
        switch self {
        case .list(let json):
            let listing = HostListing(inventory: inventory)
            return json ? try listing.json() : listing.text()
        case .bind(let address, let group):
            let changes = try HostDriverBinder(sysfs: sysfs, store: store).bind(address, wholeGroup: group, in: inventory)
            return changes.isEmpty ? "\(address) is bound to vfio-pci already\n"
                : changes.map { "bound \($0)\n" }.joined()
        case .unbind(let address, let group):
            return try HostDriverBinder(sysfs: sysfs, store: store).unbind(address, wholeGroup: group, in: inventory)
                .map { "unbound \($0)\n" }.joined()
        case .sriov(let address, let vfs, let assign):
            let outcome = try SRIOVControl(sysfs: sysfs).setVirtualFunctions(address, count: vfs, assignResources: assign,
                                                                              in: inventory)
            var out = "\(address): \(outcome.virtualFunctions.count) VFs enabled"
                + (outcome.virtualFunctions.isEmpty ? "" : ": " + outcome.virtualFunctions.map(\.description).joined(separator: " ")) + "\n"
            for s in outcome.secondaryControllers {
                out += "  VF \(s.virtualFunction): secondary controller \(s.controllerID) \(s.online ? "online" : "offline"), "
                    + "\(s.queues) queues, \(s.interrupts) interrupts\n"
            }
            for note in outcome.notes { out += "note: \(note)\n" }
            return out
        }
    }
}
