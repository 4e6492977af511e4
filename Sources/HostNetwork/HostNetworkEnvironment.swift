/// Where the host's kernel interfaces are. The defaults are the real ones; tests point them at
/// a sysfs mounted inside a network namespace, or at a fake sysfs tree.
public struct HostNetworkEnvironment: Hashable, Sendable {
    /// sysfs root; `class/net` and the PCI devices behind it are read from here.
    public var sysfs: String
    /// Where udev or devtmpfs put `tapN` nodes.
    public var devDirectory: String
    /// Switchyard's run-time state: private device nodes and VF reservations.
    public var runDirectory: String
    /// How long to wait for a VF's network interface after its settings changed.
    public var virtualFunctionNetdevTimeout: Double

    public init(sysfs: String = "/sys", devDirectory: String = "/dev", runDirectory: String = "/run/switchyard",
                virtualFunctionNetdevTimeout: Double = 10) {
        self.sysfs = sysfs
        self.devDirectory = devDirectory
        self.runDirectory = runDirectory
        self.virtualFunctionNetdevTimeout = virtualFunctionNetdevTimeout
    }

    var sysfsNet: String { "\(sysfs)/class/net" }
    var privateDeviceDirectory: String { "\(runDirectory)/dev" }
    var virtualFunctionReservations: String { "\(runDirectory)/vf" }
}
