import HostOS
import VMMBase

/// What `host sriov` did.
public struct SRIOVOutcome: Hashable, Sendable {
    public var physicalFunction: PCIAddress
    public var virtualFunctions: [PCIAddress]
    /// NVMe with resource assignment: the secondary controllers of the enabled VFs afterwards.
    public var secondaryControllers: [SecondaryController]
    /// What the user should know (e.g. that NVMe VFs need flexible resources).
    public var notes: [String]
}

/// `host sriov PF --vfs N`: sriov_numvfs through sysfs (the PF's driver creates the VFs), and
/// for NVMe controllers, on request, the Virtualization Management sequence that gives the VFs'
/// secondary controllers their queues and interrupts.
public struct SRIOVControl<Files: SysfsReader & SysfsWriter>: Sendable {
    public let sysfs: Files
    /// The /dev directory holding the NVMe controllers' character devices.
    public let devices: String

    public init(sysfs: Files, devices: String = "/dev") {
        self.sysfs = sysfs
        self.devices = devices
    }

    public func setVirtualFunctions(_ address: PCIAddress, count: Int, assignResources: Bool,
                                    in inventory: HostInventory) throws(HostDeviceControlError) -> SRIOVOutcome {
        guard let pf = inventory.device(at: address) else { throw .noSuchDevice(address) }
        if pf.isHostBridge { throw .hostBridge(address) }
        guard let sriov = pf.sriov else { throw .noSRIOV(address) }
        guard count >= 0, count <= sriov.totalVFs else { throw .tooManyVFs(address, asked: count, total: sriov.totalVFs) }
        if assignResources && !pf.isNVMeController { throw .notNVMe(address) }
        let dir = "bus/pci/devices/\(address)"
        var notes: [String] = []
        var secondaries: [SecondaryController] = []

        if count != sriov.enabledVFs || (assignResources && count > 0) {
            guard pf.driver != nil else { throw .noPhysicalFunctionDriver(address) }
            // The kernel changes the count only from or to zero.
            if sriov.enabledVFs != 0 && (count != sriov.enabledVFs || assignResources) {
                try write(dir + "/sriov_numvfs", "0")
            }
            if assignResources && count > 0 {
                (secondaries, notes) = try enableNVMe(pf, count: count)
            } else if count != 0 {
                try write(dir + "/sriov_numvfs", String(count))
            }
        }
        if pf.isNVMeController && count > 0 && !assignResources {
            notes.append("NVMe VFs stay unusable until their secondary controllers get flexible queue and interrupt "
                + "resources and are set online (NVMe Virtualization Management); run switchyard host sriov \(address) "
                + "--vfs \(count) --assign-resources to do that")
        }
        let scanner = SysfsPCIScanner(reader: sysfs)
        var refreshed = pf
        do { try scanner.addDetails(to: &refreshed) } catch { throw .discovery(error) }
        return SRIOVOutcome(physicalFunction: address, virtualFunctions: refreshed.virtualFunctions,
                            secondaryControllers: secondaries, notes: notes)
    }

    /// The sequence that worked on QEMU's emulated NVMe (Tests/Rig host-tools): the primary gives
    /// its flexible resources back and is reset, the VFs are created without a driver probing
    /// them (their controllers are offline until assigned), then each secondary is assigned and
    /// set online. The VFs stay without a driver: bind one with `host bind`.
    private func enableNVMe(_ pf: HostPCIDevice, count: Int)
        throws(HostDeviceControlError) -> (secondaries: [SecondaryController], notes: [String]) {
        let dir = "bus/pci/devices/\(pf.address)"
        let controllers = try listing(dir + "/nvme")
        guard let controller = controllers.first else {
            throw .nvme(pf.address, "no NVMe controller device under /sys/\(dir)/nvme: is the nvme driver bound to it?")
        }
        let resources = NVMeFlexibleResources(channel: NVMeCharacterDevice(path: devices + "/" + controller))
        let caps = try nvme(pf.address, "Identify (Primary Controller Capabilities)") { () throws(SystemError) in
            try resources.primaryCapabilities()
        }
        let share = NVMeFlexibleResources.share(of: caps, vfs: count)
        guard share.queues >= 2, share.interrupts >= 1 else {
            throw .nvme(pf.address, "its flexible resources (\(caps.queuesTotal) queues, \(caps.interruptsTotal) interrupts) "
                + "do not give \(count) VFs 2 queues and 1 interrupt each; ask for fewer VFs")
        }
        let reset = try nvme(pf.address, "Virtualization Management (primary flexible allocation)") { () throws(SystemError) in
            try resources.releasePrimary(caps)
        }
        var notes: [String] = []
        if reset {
            notes.append("the primary controller gave back its \(caps.queuesOnPrimary) flexible queues and "
                + "\(caps.interruptsOnPrimary) flexible interrupts and was reset")
            try write(dir + "/reset", "1")
            // The nvme driver brings the controller back asynchronously after the reset.
            var ready = false
            for _ in 0..<100 where !ready {
                ready = (try? resources.primaryCapabilities()) != nil
                if !ready { HostClock.sleep(milliseconds: 100) }
            }
            guard ready else { throw .nvme(pf.address, "the controller did not answer Identify within 10 s of its reset") }
        } else {
            notes.append("the primary controller held no flexible resources: no reset needed")
        }
        let autoprobe = try attribute(dir + "/sriov_drivers_autoprobe")
        try write(dir + "/sriov_drivers_autoprobe", "0")
        try write(dir + "/sriov_numvfs", String(count))
        if let autoprobe { try write(dir + "/sriov_drivers_autoprobe", autoprobe) }
        let secondaries = try nvme(pf.address, "Virtualization Management (secondary assign and online)") {
            () throws(SystemError) in try resources.assignAndOnline(vfs: count, caps: caps)
        }
        return (secondaries, notes)
    }

    private func nvme<T>(_ address: PCIAddress, _ what: String,
                         _ body: () throws(SystemError) -> T) throws(HostDeviceControlError) -> T {
        do { return try body() } catch { throw .nvme(address, "\(what) failed: \(error)") }
    }

    private func write(_ path: String, _ value: String) throws(HostDeviceControlError) {
        do { try sysfs.write(path, value) } catch { throw .system("writing '\(value)' to /sys/\(path)", error) }
    }

    private func attribute(_ path: String) throws(HostDeviceControlError) -> String? {
        do { return try sysfs.attribute(path) } catch { throw .system("reading /sys/\(path)", error) }
    }

    private func listing(_ path: String) throws(HostDeviceControlError) -> [String] {
        do { return try sysfs.entries(path) } catch { throw .system("listing /sys/\(path)", error) }
    }
}
