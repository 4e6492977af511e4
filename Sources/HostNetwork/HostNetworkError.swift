import HostOS

/// Everything that can go wrong setting up a host network backend. Each description names the
/// problem and what to do about it.
public enum HostNetworkError: Error, Hashable, Sendable, CustomStringConvertible {
    case netlink(NetlinkError)
    case system(SystemError)
    /// A `-netdev` option is missing, unknown or malformed (text in QEMU's spelling).
    case invalidOption(String)
    case noSuchLink(String)
    case notMacvtap(link: String, reason: String)
    /// The PF's sysfs device has no SR-IOV (no sriov_totalvfs).
    case notSRIOVCapable(pf: String)
    case noVirtualFunctions(pf: String, totalVFs: Int)
    case noFreeVirtualFunction(pf: String, numVFs: Int, busy: [String])
    case virtualFunctionOutOfRange(pf: String, vf: Int, numVFs: Int)
    case virtualFunctionBusy(pf: String, vf: Int, reason: String)
    case virtualFunctionDriverNotLoaded(pf: String, vf: Int, device: String)
    case virtualFunctionNetdevTimeout(pf: String, vf: Int, driver: String, seconds: Double)

    public var description: String {
        switch self {
        case .netlink(let error): "\(error)"
        case .system(let error): "\(error)"
        case .invalidOption(let text): text
        case .noSuchLink(let name):
            "network interface '\(name)' does not exist: pick one that `ip link show` lists"
        case .notMacvtap(let link, let reason):
            "'\(link)' is not a usable macvtap link (\(reason)): create one with `ip link add link LOWER name \(link) type macvtap`, or use link=LOWER instead of ifname="
        case .notSRIOVCapable(let pf):
            "'\(pf)' is not an SR-IOV physical function (its device has no sriov_totalvfs): name the PF's netdev in pf="
        case .noVirtualFunctions(let pf, let total):
            "PF \(pf) has no VFs enabled: sriov_numvfs is 0; enable them with `echo N > /sys/class/net/\(pf)/device/sriov_numvfs` (N up to \(total))"
        case .noFreeVirtualFunction(let pf, let numVFs, let busy):
            "PF \(pf) has no free VF: sriov_numvfs is \(numVFs), \(numVFs == busy.count && numVFs == 2 ? "both" : numVFs == busy.count ? "all" : "\(busy.count)") in use (\(busy.joined(separator: "; "))); raise sriov_numvfs or stop a user"
        case .virtualFunctionOutOfRange(let pf, let vf, let numVFs):
            "PF \(pf) has no VF \(vf): sriov_numvfs is \(numVFs) (VFs 0-\(max(numVFs - 1, 0))); use vf=auto or a smaller index"
        case .virtualFunctionBusy(let pf, let vf, let reason):
            "VF \(vf) of PF \(pf) is \(reason): use vf=auto or another VF"
        case .virtualFunctionDriverNotLoaded(let pf, let vf, let device):
            "VF driver not loaded: VF \(vf) of PF \(pf) (\(device)) is bound to no driver; load the VF driver of the NIC (for example `modprobe igbvf`, `modprobe iavf`)"
        case .virtualFunctionNetdevTimeout(let pf, let vf, let driver, let seconds):
            "VF \(vf) of PF \(pf) has no network interface after \(seconds) s although driver \(driver) is bound: check `dmesg` for its probe error"
        }
    }
}
