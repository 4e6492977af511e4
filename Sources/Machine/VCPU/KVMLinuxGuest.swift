import Chipset
import Firmware
import HostOS
import KVM
import VMMBase

/// Why a KVM guest could not be set up or reset.
public enum KVMGuestError: Error, CustomStringConvertible {
    case load(LinuxLoadError)
    case kvm(SystemError)
    /// Firmware's PCI enumeration failed again after a reset.
    case firmware(EnumerationError)
    /// A vCPU did not leave the guest for a reset.
    case vcpuDidNotStop

    public var description: String {
        switch self {
        case .load(let e): "\(e)"
        case .kvm(let e): "KVM: \(e)"
        case .firmware(let e): "firmware: \(e)"
        case .vcpuDidNotStop: "a vCPU did not leave KVM_RUN within 2 s for the reset"
        }
    }
}

/// A machine running a Linux kernel on KVM: the VM with the in-kernel irqchip (PIC, IOAPIC,
/// local APICs) and PIT, or split (local APICs in the kernel, the machine's IOAPIC, no PIC/PIT), guest RAM in memory slots that follow the platform layer (below the low
/// limit at 0 around the PAM and SMRAM ranges, the rest at 4 GiB),
/// device interrupts routed into the irqchip, and one thread per vCPU whose port and MMIO exits
/// land on the machine.
///
/// ```swift
/// let machine = try Machine(configuration, serialBackend: FileDescriptorSerialBackend())
/// try machine.runFirmware()
/// let guest = try KVMLinuxGuest(machine: machine, kernel: bzImageOrVmlinux, initrd: initrd,
///                               commandLine: "console=ttyS0", vcpuCount: 1)
/// try guest.start()
/// ... until MachineEvent.powerOff, or guest.waitUntilFinished(...)
/// let reasons = guest.stop()
/// ```
///
/// A reset (`reboot`) returns the machine, the irqchip, the PIT and every vCPU to their
/// power-on state and installs the boot image again, as QEMU's system reset does.
public final class KVMLinuxGuest: Sendable {
    public let machine: Machine
    public let virtualMachine: KVMVirtualMachine
    public let interruptSink: KVMInterruptSink
    /// The VM's GSI routes: a PC's wiring, and the GSIs of MSI vectors bound to irqfds.
    public let interruptRoutes: KVMInterruptRoutes
    /// The boot processor's first state (64-bit for a bzImage, 32-bit for PVH), and where the
    /// boot put things at the first boot. The planned writes are not kept: they are in guest RAM,
    /// and a vmlinux's segments are tens of megabytes (a reset plans them again from the image).
    public let bootProcessorState: VCPUBootState
    public let bootRegions: [BootRegion]
    public let runner: VCPURunner

    /// The ACPI tables given to the guest (nil when booted without ACPI).
    public let firmwareTables: FirmwareTables?
    /// Writes to CONFIG_ADDRESS (0xCF8-0xCFB) that KVM queues instead of exiting (nil when this
    /// KVM cannot coalesce port writes): a type 1 config access costs one exit, not two.
    public let coalescedWrites: CoalescedWriteRing?

    /// What a reset installs again, and the state it returns the VM and each vCPU to.
    private let bootImage: any GuestBootImage
    private let vcpuPowerOn: [VCPUPowerOnState]
    /// Guest RAM as KVM memory slots, kept in step with PAM and SMRAM by every commit.
    let memorySlots: KVMMemorySlots
    /// Devices' doorbells (virtio notify addresses) as ioeventfds, following their BARs.
    let doorbells: KVMDoorbells
    private let interruptControllersPowerOn: InterruptControllerPowerOnState

    /// Loads the kernel (a bzImage, or an ELF vmlinux booted through PVH) into the machine's RAM
    /// and sets up the VM and its vCPUs (not started). With `acpi`, the machine's ACPI tables go
    /// into RAM first (run `runFirmware()` before) and the kernel finds them through boot_params
    /// or hvm_start_info. The machine's interrupts go to KVM from here on.
    public convenience init(machine: Machine, kernel: [UInt8], initrd: [UInt8]?, commandLine: String,
                            vcpuCount: Int = 1, acpi: Bool = true, irqchip: KernelIRQChip = .on,
                            kvmPath: String = KVMSystem.defaultPath) throws(KVMGuestError) {
        try self.init(machine: machine, boot: LinuxKernelImage(kernel: kernel, initrd: initrd, commandLine: commandLine, acpi: acpi),
                      vcpuCount: vcpuCount, irqchip: irqchip, kvmPath: kvmPath)
    }

    /// Installs `boot` into the machine's RAM (run `runFirmware()` before) and sets up the VM
    /// and its vCPUs (not started). A triple fault asks the machine for a reset
    /// (`MachineEvent.resetRequested(.processorShutdown)`); `reboot` carries it out. With
    /// `irqchip` `.split` the machine's IOAPIC takes the levels and KVM has no PIC or PIT.
    public init(machine: Machine, boot: some GuestBootImage, vcpuCount: Int = 1, irqchip: KernelIRQChip = .on,
                kvmPath: String = KVMSystem.defaultPath) throws(KVMGuestError) {
        self.machine = machine
        bootImage = boot
        let installed: InstalledBoot
        do {
            installed = try boot.install(on: machine, cpuCount: max(vcpuCount, 1))
        } catch {
            throw .load(error)
        }
        firmwareTables = installed.firmwareTables
        bootProcessorState = installed.vcpu
        bootRegions = installed.regions
        do throws(SystemError) {
            let system = try KVMSystem(path: kvmPath)
            let split = irqchip == .split
            let vm = try system.createVirtualMachine(split
                ? .init(irqchip: .split(ioapicRoutes: UInt32(IOAPICRegisters.pins)), createPIT: false)
                : .init(irqchip: .full, createPIT: true))
            interruptControllersPowerOn = try vm.captureInterruptControllers()
            // CONFIG_ADDRESS only matters at the next CONFIG_DATA access, which exits and
            // replays the queue first. QEMU coalesces it on i440fx but not on q35. A byte
            // write to 0xCF9 (reset control) in the same zone waits for the runner's flusher.
            let coalesce = vm.coalescedPortWriteRingPage != nil
            if coalesce { try vm.coalescePortWrites(port: UInt16(ConfigAddressPort.port), size: 4) }
            let routes = split ? try KVMInterruptRoutes.split(vm, ioapic: machine.ioapic)
                : try KVMInterruptRoutes(virtualMachine: vm, table: .pc)
            machine.attachInterruptRoutes(routes)
            memorySlots = machine.followMemorySlots(in: vm)
            doorbells = machine.followDoorbells(in: vm)
            let sink = KVMInterruptSink(virtualMachine: vm)
            if split {
                machine.attachInterruptSink(SplitIRQChipSink(ioapic: machine.ioapic, localAPICs: sink))
            } else {
                machine.attachInterruptSink(PIRQSteeringSink(downstream: sink, lpc: machine.lpc))
            }

            let supported = try system.supportedCPUID()
            var vcpus: [KVMVCPU] = []
            var powerOn: [VCPUPowerOnState] = []
            for index in 0..<max(vcpuCount, 1) {
                let vcpu = try vm.createVCPU(id: UInt32(index))
                try Self.prepare(vcpu, index: index, count: vcpuCount, supportedCPUID: supported,
                                 boot: index == 0 ? bootProcessorState : nil)
                powerOn.append(try vcpu.capturePowerOnState(msrs: VCPUSetup.resetMSRs))
                vcpus.append(vcpu)
            }
            virtualMachine = vm
            interruptSink = sink
            interruptRoutes = routes
            vcpuPowerOn = powerOn
            coalescedWrites = coalesce ? vcpus.first?.coalescedWriteRing() : nil
            let ioapicEOI: @Sendable (UInt8) -> Void = { [machine] vector in machine.ioapic.endOfInterrupt(vector: vector) }
            runner = try VCPURunner(vcpus: vcpus, handler: machine,
                                    options: .init(stopOnHalt: false, coalescedWrites: coalescedWrites,
                                                   onResetRequest: { [machine] in machine.requestReset(.processorShutdown) },
                                                   onIOAPICEOI: split ? ioapicEOI : nil))
        } catch {
            throw .kvm(error)
        }
    }

    /// CPUID first (KVM checks later state against it), then MSRs, FPU, LINT pins and, for the
    /// boot processor, the kernel's entry state (64-bit for a bzImage, 32-bit for PVH). Application processors keep KVM's reset state
    /// (wait-for-SIPI with an in-kernel LAPIC).
    static func prepare(_ vcpu: KVMVCPU, index: Int, count: Int, supportedCPUID: [CPUIDEntry],
                        boot: VCPUBootState?) throws(SystemError) {
        try vcpu.setCPUID(VCPUSetup.cpuid(supportedCPUID, apicID: UInt32(index), vcpuCount: count))
        do throws(SystemError) {
            try vcpu.setMSRs(VCPUSetup.bootMSRs)
        } catch {
            // Some hosts refuse an MSR (MISC_ENABLE on AMD, MTRRs without MTRR in CPUID): set
            // what they take, one by one.
            for entry in VCPUSetup.bootMSRs { try? vcpu.setMSRs([entry]) }
        }
        try vcpu.setFPU(.initial)
        try vcpu.setLocalAPIC(VCPUSetup.localAPIC(try vcpu.localAPIC(), bootProcessor: index == 0))
        if let boot {
            try vcpu.setSpecialRegisters(VCPUSetup.specialRegisters(boot, base: try vcpu.specialRegisters()))
            try vcpu.setRegisters(VCPUSetup.registers(boot))
        }
    }

    public func start() throws(SystemError) { try runner.start() }

    /// A platform reset and a new boot, as QEMU's system reset with a directly booted kernel:
    /// every vCPU leaves the guest; devices and chipset return to power-on state (hot-plugged
    /// devices stay plugged), firmware runs again; the irqchip, PIT and vCPUs return to the
    /// state they had before the first run (the application processors wait for INIT/SIPI
    /// again); the boot image (ACPI tables, kernel, initrd, boot parameters) is written again;
    /// then the vCPUs run, unless they were paused before (a VM stopped by QMP stays stopped).
    /// RAM elsewhere keeps its contents, as on QEMU. Not from a vCPU thread.
    public func reboot() throws(KVMGuestError) {
        let keepPaused = runner.isPaused
        guard runner.pause() else {
            if !keepPaused { runner.resume() }
            throw .vcpuDidNotStop
        }
        defer {
            runner.resetCompleted()
            if !keepPaused { runner.resume() }
        }
        // Writes KVM queued before the reset belong to the old boot.
        coalescedWrites?.replay(into: machine)
        machine.reset()
        do throws(SystemError) {
            try virtualMachine.restore(interruptControllersPowerOn)
        } catch {
            throw .kvm(error)
        }
        do {
            try machine.runFirmware()
        } catch {
            throw .firmware(error)
        }
        let installed: InstalledBoot
        do {
            installed = try bootImage.install(on: machine, cpuCount: runner.vcpus.count)
        } catch {
            throw .load(error)
        }
        do throws(SystemError) {
            for (index, vcpu) in runner.vcpus.enumerated() {
                var state = vcpuPowerOn[index]
                if index == 0 {
                    state.special = VCPUSetup.specialRegisters(installed.vcpu, base: state.special)
                    state.registers = VCPUSetup.registers(installed.vcpu)
                }
                try vcpu.restore(state)
            }
        } catch {
            throw .kvm(error)
        }
    }

    /// True once every vCPU thread ended (the guest shut down or failed) within the timeout.
    public func waitUntilFinished(timeoutMilliseconds: Int) -> Bool {
        runner.waitUntilFinished(timeoutMilliseconds: timeoutMilliseconds)
    }

    /// Stops every vCPU and returns why each ended.
    @discardableResult
    public func stop() -> [VCPURunner.StopReason] {
        runner.requestStop()
        return runner.join()
    }

    deinit {
        machine.stopFollowing(doorbells)
        machine.stopFollowing(memorySlots)
    }
}
