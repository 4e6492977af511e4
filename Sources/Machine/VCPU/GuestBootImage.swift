import Firmware

/// What a guest boots from: written into guest RAM (firmware having run) before the first
/// start and again after every platform reset, since the guest may have overwritten it.
public protocol GuestBootImage: Sendable {
    /// Writes the boot's bytes into `machine`'s RAM for `cpuCount` processors; returns the
    /// boot processor's entry state and what went where.
    func install(on machine: Machine, cpuCount: Int) throws(LinuxLoadError) -> InstalledBoot
}

/// The result of `GuestBootImage.install`.
public struct InstalledBoot: Sendable {
    public var vcpu: VCPUBootState
    public var regions: [BootRegion]
    /// The ACPI tables given to the guest (nil without ACPI).
    public var firmwareTables: FirmwareTables?

    public init(vcpu: VCPUBootState, regions: [BootRegion] = [], firmwareTables: FirmwareTables? = nil) {
        self.vcpu = vcpu
        self.regions = regions
        self.firmwareTables = firmwareTables
    }
}

/// A Linux kernel (a bzImage, or an ELF vmlinux booted through PVH), its initrd and command
/// line, QEMU's -kernel/-initrd/-append. With `acpi`, the machine's ACPI tables go in first and
/// the kernel finds them through boot_params or hvm_start_info.
public struct LinuxKernelImage: GuestBootImage {
    /// Reads the kernel and initrd, at every install: a reset loads them again (QEMU keeps
    /// them in memory; reading the files again keeps a vmlinux's tens of megabytes out of ours).
    public typealias Files = @Sendable () throws(LinuxLoadError) -> (kernel: [UInt8], initrd: [UInt8]?)

    public let files: Files
    public var commandLine: String
    public var acpi: Bool

    public init(commandLine: String, acpi: Bool = true, files: @escaping Files) {
        self.files = files
        self.commandLine = commandLine
        self.acpi = acpi
    }

    /// Kernel and initrd given as bytes, kept for every reset.
    public init(kernel: [UInt8], initrd: [UInt8]?, commandLine: String, acpi: Bool = true) {
        self.init(commandLine: commandLine, acpi: acpi) { () throws(LinuxLoadError) in (kernel, initrd) }
    }

    public func install(on machine: Machine, cpuCount: Int) throws(LinuxLoadError) -> InstalledBoot {
        machine.programPAMAsFirmwareLeavesIt()
        let tables = acpi ? try machine.installACPITables(cpuCount: cpuCount) : nil
        let (kernel, initrd) = try files()
        let boot = try machine.loadLinux(kernel: kernel, initrd: initrd, commandLine: commandLine,
                                         acpiRSDPAddress: tables?.rsdp.address)
        return InstalledBoot(vcpu: boot.vcpu, regions: boot.regions, firmwareTables: tables)
    }
}
