import Chipset
import Firmware
import GuestMemory
import Interrupts
import KVM
import Machine
import TestRequirements
import Testing
import VMMBase

/// The KVM Linux boot path's pieces that run without /dev/kvm: the memory layout the machine
/// describes, the plan written into its RAM, the interrupt output's re-pointing, and the vCPU
/// set-up values.
@Suite struct LinuxBootSetupTests {
    /// A synthetic 64-bit bzImage (protocol 2.15, relocatable, 2 MiB aligned, pref 16 MiB).
    static func image(payloadSize: Int = 0x4000) -> [UInt8] {
        let sects = 4
        var b = [UInt8](repeating: 0, count: (sects + 1) * 512 + payloadSize)
        func put(_ v: UInt64, _ width: Int, _ o: Int) {
            for i in 0..<width { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
        }
        put(UInt64(sects), 1, 0x1F1)
        put(UInt64((payloadSize + 15) / 16), 4, 0x1F4)
        put(0xAA55, 2, 0x1FE)
        put(0x6AEB, 2, 0x200)
        put(0x5372_6448, 4, 0x202)
        put(0x020F, 2, 0x206)
        put(0x01, 1, 0x211)
        put(0x10_0000, 4, 0x214)
        put(0x7FFF_FFFF, 4, 0x22C)
        put(0x20_0000, 4, 0x230)
        put(1, 1, 0x234)
        put(21, 1, 0x235)
        put(0x7F, 2, 0x236)
        put(0x7FF, 4, 0x238)
        put(0x100_0000, 8, 0x258)
        put(0x80_0000, 4, 0x260)
        for i in 0..<payloadSize { b[(sects + 1) * 512 + i] = UInt8(truncatingIfNeeded: i &* 7) }
        return b
    }

    func machine(memory: UInt64) throws -> Machine {
        var configuration = MachineConfiguration(devices: [])
        configuration.memorySize = memory
        return try Machine(configuration)
    }

    @Test func layoutSplitsRAMAtTheLowLimit() throws {
        let small = try machine(memory: 512 << 20)
        #expect(small.lowRAMSize == 512 << 20)
        #expect(small.memoryLayoutDescription.highRAMSize == 0)
        let big = try machine(memory: 3 << 30)
        #expect(big.lowRAMSize == 2 << 30)
        let layout = big.memoryLayoutDescription
        #expect(layout.lowRAMTop == 0x8000_0000 && layout.highRAMSize == 1 << 30)
        let e820 = try layout.e820Map()
        #expect(e820.contains { $0.type == .ram && $0.base == 1 << 32 && $0.size == 1 << 30 })
        #expect(e820.contains { $0.type == .reserved && $0.base == 0xB000_0000 && $0.size == 0x1000_0000 })
        #expect(e820.contains { $0.type == .reserved && $0.base == 0xFEC0_0000 })
        #expect(e820.contains { $0.type == .reserved && $0.base == 0xFEE0_0000 })
        // Guest addresses to the one host mapping: low RAM from 0, the rest from 4 GiB.
        let memory = big.guestMemory
        #expect(memory.isMapped(GuestAddress(0x7FFF_FFF0), length: 16))
        #expect(!memory.isMapped(GuestAddress(0x7FFF_FFF0), length: 17))
        #expect(!memory.isMapped(GuestAddress(0x8000_0000), length: 1))
        #expect(memory.isMapped(GuestAddress((1 << 32) + (1 << 30) - 8), length: 8))
        #expect(!memory.isMapped(GuestAddress((1 << 32) + (1 << 30) - 8), length: 9))
        try memory.write(at: GuestAddress(1 << 32), bytes: [0xAB])
        try memory.write(at: GuestAddress(0x1000), bytes: [0xCD])
        #expect(big.ram.mapping.bytes[0x8000_0000] == 0xAB && big.ram.mapping.bytes[0x1000] == 0xCD)
    }

    @Test func planLandsInGuestRAM() throws {
        let m = try machine(memory: 512 << 20)
        let kernel = Self.image()
        let initrd = [UInt8](repeating: 0xA5, count: 10_000)
        let plan = try m.loadLinux(kernel: kernel, initrd: initrd, commandLine: "console=ttyS0 quiet").bzImagePlan
        func read(_ address: UInt64, _ count: Int) -> [UInt8] {
            (0..<count).map { UInt8(m.mmioRead(address + UInt64($0), width: .byte)) }
        }
        // The kernel's protected-mode part at its load address, the initrd where the plan put it.
        #expect(plan.kernelLoadAddress == 0x100_0000)
        #expect(read(plan.kernelLoadAddress, 64) == Array(kernel[(5 * 512)..<(5 * 512 + 64)]))
        let initrdRange = try #require(plan.initrd)
        #expect(read(initrdRange.base, 16) == [UInt8](repeating: 0xA5, count: 16))
        #expect(initrdRange.last < 512 << 20)
        // Command line, NUL-terminated; boot_params with the HdrS magic and the e820 count.
        #expect(read(plan.commandLineAddress, 20) == Array("console=ttyS0 quiet".utf8) + [0])
        #expect(read(plan.bootParamsAddress + 0x202, 4) == Array("HdrS".utf8))
        #expect(read(plan.bootParamsAddress + 0x1E8, 1) == [UInt8(plan.e820.count)])
        // The identity map's first PML4 entry points at the PDPT.
        #expect(m.mmioRead(0x9000, width: .qword) & ~0xFFF == 0xA000)
    }

    @Test func acpiTablesAndThePMBlockAsFirmwareLeavesThem() throws {
        let m = try machine(memory: 512 << 20)
        try m.runFirmware()
        let tables = try m.installACPITables(cpuCount: 2)
        #expect(tables.rsdp.address == 0xE_0000)
        #expect(tables.hpet == nil)  // the machine has no HPET
        // In RAM (KVM maps all low RAM, BIOS area included; the machine's own view of
        // 0xE0000 follows the PAM registers, so read the mapping).
        func ram(_ address: UInt64, _ count: Int) -> [UInt8] {
            (0..<count).map { m.ram.mapping.bytes[Int(address) + $0] }
        }
        #expect(ram(0xE_0000, 8) == Array("RSD PTR ".utf8))
        #expect(ram(tables.dsdt.address, 4) == Array("DSDT".utf8))
        // PMBASE 0x600 with ACPI decoding on: the OS's ACPI_ENABLE through SMI_CMD sets SCI_EN.
        #expect(m.lpc.pmBase == 0x600)
        #expect(m.portRead(0x604, width: .word) & 1 == 0)
        m.portWrite(0xB2, width: .byte, value: 0x02)
        #expect(m.portRead(0x604, width: .word) & 1 == 1)
        // boot_params.acpi_rsdp_addr (0x070) carries the RSDP.
        let plan = try m.loadLinux(kernel: Self.image(), initrd: nil, commandLine: "",
                                   acpiRSDPAddress: tables.rsdp.address).bzImagePlan
        #expect(m.mmioRead(plan.bootParamsAddress + 0x70, width: .qword) == 0xE_0000)
    }

    @Test func pcRoutingSendsThePITToIOAPICPin2() {
        let routes = GSIRouteTable.pc.kvmRoutes
        #expect(routes.count == 15 + 23)
        #expect(routes.contains(.irqchip(gsi: 0, chip: 2, pin: 2)))
        #expect(routes.contains(.irqchip(gsi: 0, chip: 0, pin: 0)))
        #expect(routes.contains(.irqchip(gsi: 9, chip: 1, pin: 1)))
        #expect(routes.contains(.irqchip(gsi: 19, chip: 2, pin: 19)))
        #expect(!routes.contains { if case .irqchip(2, _, _) = $0 { true } else { false } })
    }

    @Test func oversizedKernelIsATypedError() throws {
        let m = try machine(memory: 16 << 20)
        #expect(throws: LinuxLoadError.self) { try m.loadLinux(kernel: Self.image(), initrd: nil, commandLine: "") }
        #expect(throws: LinuxLoadError.self) { try m.loadLinux(kernel: [1, 2, 3], initrd: nil, commandLine: "") }
    }

    @Test func attachedSinkReceivesDeviceInterrupts() throws {
        let m = try machine(memory: 16 << 20)
        let kvm = RecordingSink()
        m.attachInterruptSink(kvm)
        m.setIOAPICInput(9, high: true)
        // COM1 with THR-empty interrupts enabled and OUT2 set raises IRQ 4.
        m.portWrite(0x3F9, width: .byte, value: 0x02)
        m.portWrite(0x3FC, width: .byte, value: 0x08)
        #expect(kvm.isHigh(GSI(9)))
        #expect(kvm.isHigh(GSI(4)))
        #expect(!m.interrupts.isHigh(GSI(9)))
        #expect(!m.interrupts.isHigh(GSI(4)))
    }

    @Test func cpuidCarriesAPICIDsAndTheHypervisorBit() {
        let supported = [
            CPUIDEntry(function: 0, eax: 0x1F),
            CPUIDEntry(function: 1, eax: 0x806F8, ebx: 0xFF01_0800, ecx: 0x7FF8_3203, edx: 0x1789_FBFF),
            CPUIDEntry(function: 0xB, index: 1, flags: 1, eax: 1, ebx: 2, ecx: 0x201, edx: 0),
            CPUIDEntry(function: 0x8000_001E, eax: 0, ebx: 0x100),
        ]
        let one = VCPUSetup.cpuid(supported, apicID: 0, vcpuCount: 1)
        #expect(one[0] == supported[0])
        #expect(one[1].ebx == 0x0001_0800)
        #expect(one[1].ecx & VCPUSetup.hypervisorBit != 0)
        #expect(one[1].edx & VCPUSetup.htt == 0)
        let third = VCPUSetup.cpuid(supported, apicID: 2, vcpuCount: 4)
        #expect(third[1].ebx >> 24 == 2 && (third[1].ebx >> 16) & 0xFF == 4)
        #expect(third[1].edx & VCPUSetup.htt != 0)
        #expect(third[2].edx == 2 && third[2].ecx == 0x201)
        #expect(third[3].eax == 2 && third[3].ebx == 0x100)
    }

    @Test func bootProcessorStateFromThePlan() throws {
        let m = try machine(memory: 512 << 20)
        let plan = try m.loadLinux(kernel: Self.image(), initrd: nil, commandLine: "").bzImagePlan
        var base = SpecialRegisters()
        base.apicBase = 0xFEE0_0900
        let s = VCPUSetup.specialRegisters(plan.vcpu, base: base)
        #expect(s.apicBase == 0xFEE0_0900)  // kept: KVM_SET_SREGS writes it too
        #expect(s.cs.selector == 0x10 && s.cs.long && !s.cs.defaultSize && s.cs.system && s.cs.type == 0xB)
        #expect(s.ds.selector == 0x18 && s.ds.defaultSize && s.ds.limit == 0xFFFF_FFFF)
        #expect(s.tr.selector == 0x20 && !s.tr.system && s.tr.type == 0xB && !s.tr.unusable)
        #expect(s.ldt.unusable)
        #expect(s.cr0 == 0x8000_0011 && s.cr3 == 0x9000 && s.cr4 == 0x20 && s.efer == 0x500)
        #expect(s.gdtBase == 0x500 && s.gdtLimit == 39)
        let r = VCPUSetup.registers(plan.vcpu)
        #expect(r.rip == plan.kernelLoadAddress + 0x200)
        #expect(r.rsi == plan.bootParamsAddress)
        #expect(r.rflags == 2)
    }

    @Test func lintPinsAsFirmwareLeavesThem() {
        var state = LocalAPICState()
        state[register: LocalAPICState.lvtLINT0] = LocalAPICState.masked
        state[register: 0x20] = 0x0100_0000  // APIC ID register untouched
        let bsp = VCPUSetup.localAPIC(state, bootProcessor: true)
        #expect(bsp[register: LocalAPICState.lvtLINT0] == 0x700)
        #expect(bsp[register: LocalAPICState.lvtLINT1] == 0x400)
        #expect(bsp[register: 0x20] == 0x0100_0000)
        #expect(Array(bsp.bytes[0x350..<0x354]) == [0x00, 0x07, 0x00, 0x00])
        let ap = VCPUSetup.localAPIC(state, bootProcessor: false)
        #expect(ap[register: LocalAPICState.lvtLINT0] == 0x1_0700)
    }

    @Test func bootMSRsClearSyscallStateAndEnableMTRRs() {
        let byIndex = Dictionary(uniqueKeysWithValues: VCPUSetup.bootMSRs.map { ($0.index, $0.value) })
        #expect(byIndex[VCPUSetup.MSR.lstar] == 0)
        #expect(byIndex[VCPUSetup.MSR.miscEnable] == 1)
        #expect(byIndex[VCPUSetup.MSR.mtrrDefType] == 0x806)
    }
}

/// The whole set-up against this host's KVM (the guest does not run: this host's KVM runs
/// only real-mode code; the nested rig runs it).
@Suite(.requires(KVMSystem.isAvailable(), "/dev/kvm is absent or not accessible"))
struct KVMLinuxGuestSetupTests {
    @Test func setsUpTheBootProcessor() throws {
        var configuration = MachineConfiguration(devices: [])
        configuration.memorySize = 64 << 20
        let machine = try Machine(configuration)
        try machine.runFirmware()
        let guest = try KVMLinuxGuest(machine: machine, kernel: LinuxBootSetupTests.image(), initrd: [1, 2, 3],
                                      commandLine: "console=ttyS0", vcpuCount: 2)
        // RAM below the VGA/SMRAM hole, 0xC0000-0xEFFFF read/write and the BIOS segment
        // read-only as firmware leaves PAM (without read-only slots that segment exits instead).
        let readOnlySlots = try guest.virtualMachine.checkExtension(.readOnlyMemory) > 0
        let slots: [String] = guest.virtualMachine.memorySlots.map {
            "\(String($0.guestAddress, radix: 16))+\(String($0.size, radix: 16))\($0.readOnly ? " ro" : "")"
        }
        var expected: [String] = ["0+a0000", "c0000+30000"]
        if readOnlySlots { expected.append("f0000+10000 ro") }
        expected.append("100000+3f00000")
        #expect(slots == expected)
        #expect(guest.runner.vcpus.count == 2)
        let bsp = guest.runner.vcpus[0]
        let registers = try bsp.registers()
        // The same plan computed again from the same inputs (planning touches nothing).
        let plan = try LinuxBootPlan.make(kernel: BzImage(bytes: LinuxBootSetupTests.image()), initrd: [1, 2, 3],
                                          commandLine: "console=ttyS0", memory: machine.memoryLayoutDescription,
                                          acpiRSDPAddress: guest.firmwareTables?.rsdp.address)
        #expect(registers.rip == plan.kernelLoadAddress + 0x200)
        #expect(registers.rsi == plan.bootParamsAddress)
        #expect(guest.bootProcessorState == plan.vcpu)
        #expect(guest.bootRegions.contains { $0.name == "kernel" })
        let special = try bsp.specialRegisters()
        #expect(special.efer & 0x500 == 0x500 && special.cr3 == 0x9000 && special.cs.long)
        #expect(special.apicBase & 0xFFFF_F000 == 0xFEE0_0000)
        #expect(try bsp.localAPIC()[register: LocalAPICState.lvtLINT0] == 0x700)
        #expect(try guest.runner.vcpus[1].localAPIC()[register: LocalAPICState.lvtLINT0] == 0x1_0700)
        // Device interrupts now reach KVM, not the recording sink.
        machine.setIOAPICInput(5, high: true)
        machine.setIOAPICInput(5, high: false)
        #expect(machine.interrupts.events.isEmpty)
        #expect(guest.interruptSink.error == nil)
    }
}
