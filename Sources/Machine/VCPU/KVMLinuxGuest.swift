import Chipset
import Firmware
import HostOS
import KVM
import VMMBase

/// Why a KVM guest could not be set up.
public enum KVMGuestError: Error, CustomStringConvertible {
    case load(LinuxLoadError)
    case kvm(SystemError)

    public var description: String {
        switch self {
        case .load(let e): "\(e)"
        case .kvm(let e): "KVM: \(e)"
        }
    }
}

/// A machine running a Linux kernel on KVM: the VM with the in-kernel irqchip (PIC, IOAPIC,
/// local APICs) and PIT, guest RAM in two slots (below the low limit at 0, the rest at 4 GiB),
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
public final class KVMLinuxGuest: Sendable {
    public let machine: Machine
    public let virtualMachine: KVMVirtualMachine
    public let interruptSink: KVMInterruptSink
    /// The boot processor's first state (64-bit for a bzImage, 32-bit for PVH), and where the
    /// boot put things. The loaded bytes themselves are not kept: they are in guest RAM, and a
    /// vmlinux's segments are tens of megabytes.
    public let bootProcessorState: VCPUBootState
    public let bootRegions: [BootRegion]
    public let runner: VCPURunner

    /// The ACPI tables given to the guest (nil when booted without ACPI).
    public let firmwareTables: FirmwareTables?
    /// Writes to CONFIG_ADDRESS (0xCF8-0xCFB) that KVM queues instead of exiting (nil when this
    /// KVM cannot coalesce port writes): a type 1 config access costs one exit, not two.
    public let coalescedWrites: CoalescedWriteRing?

    /// Loads the kernel (a bzImage, or an ELF vmlinux booted through PVH) into the machine's RAM
    /// and sets up the VM and its vCPUs (not started). With `acpi`, the machine's ACPI tables go
    /// into RAM first (run `runFirmware()` before) and the kernel finds them through boot_params
    /// or hvm_start_info. The machine's interrupts go to KVM from here on.
    public init(machine: Machine, kernel: [UInt8], initrd: [UInt8]?, commandLine: String,
                vcpuCount: Int = 1, acpi: Bool = true, kvmPath: String = KVMSystem.defaultPath) throws(KVMGuestError) {
        self.machine = machine
        do {
            firmwareTables = acpi ? try machine.installACPITables(cpuCount: max(vcpuCount, 1)) : nil
            let boot = try machine.loadLinux(kernel: kernel, initrd: initrd, commandLine: commandLine,
                                             acpiRSDPAddress: firmwareTables?.rsdp.address)
            bootProcessorState = boot.vcpu
            bootRegions = boot.regions
        } catch {
            throw .load(error)
        }
        do throws(SystemError) {
            let system = try KVMSystem(path: kvmPath)
            let vm = try system.createVirtualMachine(.init(irqchip: .full, createPIT: true))
            // CONFIG_ADDRESS only matters at the next CONFIG_DATA access, which exits and
            // replays the queue first. QEMU coalesces it on i440fx but not on q35. A byte
            // write to 0xCF9 (reset control) in the same zone waits for the runner's flusher.
            let coalesce = vm.coalescedPortWriteRingPage != nil
            if coalesce { try vm.coalescePortWrites(port: UInt16(ConfigAddressPort.port), size: 4) }
            try vm.setGSIRouting(Self.pcRouting)
            let low = Int(machine.lowRAMSize)
            try vm.mapMemory(guestAddress: 0, mapping: machine.ram.mapping, offset: 0, size: low)
            if machine.ram.size > UInt64(low) {
                try vm.mapMemory(guestAddress: 1 << 32, mapping: machine.ram.mapping, offset: low,
                                 size: Int(machine.ram.size) - low)
            }
            let sink = KVMInterruptSink(virtualMachine: vm)
            machine.attachInterruptSink(PIRQSteeringSink(downstream: sink, lpc: machine.lpc))

            let supported = try system.supportedCPUID()
            var vcpus: [KVMVCPU] = []
            for index in 0..<max(vcpuCount, 1) {
                let vcpu = try vm.createVCPU(id: UInt32(index))
                try Self.prepare(vcpu, index: index, count: vcpuCount, supportedCPUID: supported,
                                 boot: index == 0 ? bootProcessorState : nil)
                vcpus.append(vcpu)
            }
            virtualMachine = vm
            interruptSink = sink
            coalescedWrites = coalesce ? vcpus.first?.coalescedWriteRing() : nil
            runner = try VCPURunner(vcpus: vcpus, handler: machine,
                                    options: .init(stopOnHalt: false, coalescedWrites: coalescedWrites))
        } catch {
            throw .kvm(error)
        }
    }

    /// QEMU's GSI routing for a PC with the in-kernel irqchip: GSIs 0-15 drive the PIC inputs
    /// of the same number (except the cascade, 2) and IOAPIC pins 0-23 drive the pin of the
    /// same number, except GSI 0, which drives IOAPIC pin 2: the PIT's IRQ 0 arrives where the
    /// MADT's interrupt source override (IRQ 0 -> GSI 2) says.
    public static let pcRouting: [KVMVirtualMachine.GSIRoute] = {
        var routes: [KVMVirtualMachine.GSIRoute] = []
        for gsi: UInt32 in 0..<16 where gsi != 2 {
            routes.append(.irqchip(gsi: gsi, chip: gsi < 8 ? 0 : 1, pin: gsi % 8))
        }
        for gsi: UInt32 in 0..<24 where gsi != 2 {
            routes.append(.irqchip(gsi: gsi, chip: 2, pin: gsi == 0 ? 2 : gsi))
        }
        return routes
    }()

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
}
