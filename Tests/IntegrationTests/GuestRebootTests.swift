import Chipset
import Control
import Firmware
import Foundation
import HostOS
import KVM
import Machine
import Synchronization
import Testing
import VMMBase

/// Guest reboots on this host's real KVM, through the same path a Linux guest takes
/// (`KVMLinuxGuest.reboot` behind `VMController`), with a real-mode boot image in place of a
/// kernel (this host's KVM runs real-mode code at full speed). Each boot prints on COM1 what it
/// finds, then asks for a reset the way Linux does (RST_CNT at 0xCF9, the i8042 pulse; not a
/// triple fault: this host's KVM does not reach one from real mode, and its protected mode
/// is emulated and fails the sequence). The oracles are the architecture's: a reset must give the entry registers
/// again (AL = 'B'), the installed image again (the byte the last boot overwrote is 'R'
/// again), the x2APIC off and the application processor back in wait-for-INIT (KVM's
/// KVM_MP_STATE_UNINITIALIZED), so that INIT/SIPI starts it again on every boot.
@Suite struct GuestRebootTests {
    static let hasKVM = KVMSystem.isAvailable(path: "/dev/kvm")

    /// The image at 0x7C00: the boot processor's code, a data byte at 0x7C80 (the 'R'), and
    /// the application processor's code at 0x8000 (SIPI vector 8).
    struct RealModeImage: GuestBootImage {
        static let base: UInt64 = 0x7C00
        var bytes: [UInt8]
        /// AL at entry: a register the boot state sets, which each boot overwrites.
        static let entryAL: UInt64 = 0x42  // 'B'

        func install(on machine: Machine, cpuCount: Int) throws(LinuxLoadError) -> InstalledBoot {
            guard machine.guestMemory.isMapped(GuestAddress(Self.base), length: UInt64(bytes.count)) else {
                throw .outsideRAM(address: Self.base, count: UInt64(bytes.count))
            }
            machine.writeMemory(Self.base, bytes)
            return InstalledBoot(vcpu: Self.entryState)
        }

        static var entryState: VCPUBootState {
            func segment(_ type: UInt8, code: Bool = true) -> SegmentDescriptor {
                SegmentDescriptor(base: 0, limit: 0xFFFF, selector: 0, type: type, present: true, dpl: 0,
                                  defaultSize: false, codeOrData: code, long: false, granularity: false)
            }
            var registers = GeneralRegisters()
            registers.rip = base
            registers.rax = entryAL
            return VCPUBootState(registers: registers, cs: segment(0xB), ds: segment(3), es: segment(3), fs: segment(3),
                                 gs: segment(3), ss: segment(3), tr: segment(0xB, code: false), ldt: segment(2, code: false),
                                 gdt: DescriptorTableRegister(base: 0, limit: 0xFFFF),
                                 idt: DescriptorTableRegister(base: 0, limit: 0x3FF),
                                 cr0: VCPUBootState.cr0ET, cr3: 0, cr4: 0, efer: 0)
        }

        static let cmosBootCounter: UInt8 = 0x7E

        /// `resetRequest`: the code that asks for the reset; `startAP`: send INIT/SIPI first
        /// (x2APIC ICR writes, possible from real mode) and wait until the AP has run.
        /// The last boot (`boots`, counted in CMOS RAM) asks for no reset and stays.
        static func make(resetRequest: [UInt8], startAP: Bool, boots: UInt8) -> RealModeImage {
            var code: [UInt8] = [
                0xBA, 0xF8, 0x03,              // mov dx, 0x3F8
                0xEE,                          // out dx, al         ; 'B' from the entry state
                0xA0, 0x80, 0x7C,              // mov al, [0x7C80]   ; 'R' as installed
                0xEE,                          // out dx, al
                0xC6, 0x06, 0x80, 0x7C, 0x58,  // mov byte [0x7C80], 'X'
                0xC6, 0x06, 0x00, 0x7E, 0x00,  // mov byte [0x7E00], 0  ; the AP's flag
            ]
            if startAP {
                code += [
                    0x66, 0xB9, 0x1B, 0x00, 0x00, 0x00,  // mov ecx, IA32_APIC_BASE
                    0x0F, 0x32,                          // rdmsr
                    0x66, 0x0D, 0x00, 0x0C, 0x00, 0x00,  // or eax, 0xC00 (enable, x2APIC)
                    0x0F, 0x30,                          // wrmsr
                    0x66, 0xB9, 0x30, 0x08, 0x00, 0x00,  // mov ecx, 0x830 (x2APIC ICR)
                    0x66, 0xBA, 0x01, 0x00, 0x00, 0x00,  // mov edx, 1 (APIC ID 1)
                    0x66, 0xB8, 0x00, 0x45, 0x00, 0x00,  // mov eax, 0x4500 (INIT, assert)
                    0x0F, 0x30,                          // wrmsr
                    0x66, 0xB8, 0x08, 0x46, 0x00, 0x00,  // mov eax, 0x4608 (SIPI, vector 8)
                    0x0F, 0x30,                          // wrmsr
                    0x80, 0x3E, 0x00, 0x7E, 0x00,        // wait: cmp byte [0x7E00], 0
                    0x74, 0xF9,                          // je wait
                ]
            }
            code += [                                    // CMOS RAM survives a reset: count boots there
                0xB0, cmosBootCounter,                   // mov al, 0x7E
                0xE6, 0x70,                              // out 0x70, al
                0xE4, 0x71,                              // in al, 0x71
                0xFE, 0xC0,                              // inc al
                0xE6, 0x71,                              // out 0x71, al
                0x3C, boots,                             // cmp al, boots
                0x73, UInt8(resetRequest.count),         // jae over the request: the last boot stays
            ]
            code += resetRequest + [0xEB, 0xFE]          // jmp $ (a reset takes the vCPU away)
            precondition(code.count <= 0x80)
            var bytes = code + [UInt8](repeating: 0x90, count: 0x80 - code.count)
            bytes += [0x52] + [UInt8](repeating: 0, count: 0x400 - 0x81)   // 0x7C80: 'R'
            bytes += [                                   // 0x8000, the AP (CS = 0x800)
                0xBA, 0xF8, 0x03,                        // mov dx, 0x3F8
                0xB0, 0x41,                              // mov al, 'A'
                0xEE,                                    // out dx, al
                0xC6, 0x06, 0x00, 0x7E, 0x01,            // mov byte [0x7E00], 1
                0xF4,                                    // hlt
                0xEB, 0xFD,                              // jmp hlt
            ]
            return RealModeImage(bytes: bytes)
        }
    }

    static let resetControl: [UInt8] = [0xBA, 0xF9, 0x0C, 0xB0, 0x06, 0xEE]   // mov dx, 0xCF9; mov al, 6; out dx, al
    static let keyboardController: [UInt8] = [0xB0, 0xFE, 0xE6, 0x64]        // mov al, 0xFE; out 0x64, al

    struct Booted {
        let guest: KVMLinuxGuest
        let controller: VMController
        let serial: CaptureSerialBackend
        let outcomes: OutcomeLog
    }

    final class OutcomeLog: Sendable {
        private let log = Mutex<[ResetOutcome]>([])
        func append(_ outcome: ResetOutcome) { log.withLock { $0.append(outcome) } }
        var all: [ResetOutcome] { log.withLock { $0 } }
    }

    static func boot(_ image: RealModeImage, vcpus: Int) throws -> Booted {
        let serial = CaptureSerialBackend()
        var configuration = MachineConfiguration(devices: [])
        configuration.memorySize = 64 << 20
        let machine = try Machine(configuration, serialBackend: serial)
        try machine.runFirmware()
        let guest = try KVMLinuxGuest(machine: machine, boot: image, vcpuCount: vcpus)
        let controller = VMController(machine: machine, startPaused: false)
        controller.setResetAction({ try guest.reboot() }, stopNow: { guest.runner.holdForReset() })
        let outcomes = OutcomeLog()
        controller.observeResets { outcome in outcomes.append(outcome) }
        try guest.start()
        return Booted(guest: guest, controller: controller, serial: serial, outcomes: outcomes)
    }

    /// Waits until COM1 shows `count` boots of `perBoot` characters and nothing more comes
    /// for 200 ms (the last boot stays), then stops the vCPUs; returns COM1's text.
    static func run(_ booted: Booted, boots count: Int, perBoot: Int) throws -> String {
        let deadline = HostClock.monotonicNanoseconds() + 20_000_000_000
        var last = "", stableSince = HostClock.monotonicNanoseconds()
        while HostClock.monotonicNanoseconds() < deadline && !booted.controller.exitRequested {
            let text = booted.serial.text
            if text != last { last = text; stableSince = HostClock.monotonicNanoseconds() }
            if text.count >= count * perBoot && HostClock.monotonicNanoseconds() - stableSince > 200_000_000 { break }
            HostClock.sleep(milliseconds: 5)
        }
        booted.controller.withoutResetInProgress { booted.guest.runner.pause() }
        let reasons = booted.guest.stop()
        #expect(!booted.controller.exitRequested, "a reset failed")
        #expect(reasons.allSatisfy { $0 == .stopRequested }, "\(reasons)")
        return booted.serial.text
    }

    @Test(.enabled(if: hasKVM, "no usable /dev/kvm on this host"), .timeLimit(.minutes(1)),
          arguments: [("0xCF9", resetControl), ("i8042", keyboardController)])
    func eachResetRequestBootsTheGuestAgain(name: String, request: [UInt8]) throws {
        let booted = try Self.boot(.make(resetRequest: request, startAP: false, boots: 4), vcpus: 1)
        let text = try Self.run(booted, boots: 4, perBoot: 2)
        // Every boot starts from the entry state and the freshly installed image.
        #expect(text == "BRBRBRBR", "\(name): '\(text.prefix(40))'")
        #expect(booted.outcomes.all == Array(repeating: .reset(.guest), count: 3), "\(name)")
    }

    @Test(.enabled(if: hasKVM, "no usable /dev/kvm on this host"), .timeLimit(.minutes(1)))
    func theApplicationProcessorWaitsForINITAgainAfterAReset() throws {
        let booted = try Self.boot(.make(resetRequest: Self.resetControl, startAP: true, boots: 3), vcpus: 2)
        let text = try Self.run(booted, boots: 3, perBoot: 3)
        // Each boot: the BSP's "BR", then the AP's "A" once INIT/SIPI started it.
        #expect(text == "BRABRABRA", "'\(text.prefix(40))'")
        #expect(booted.outcomes.all == [.reset(.guest), .reset(.guest)])
        let bsp = booted.guest.runner.vcpus[0], ap = booted.guest.runner.vcpus[1]
        // As the last boot left them: x2APIC on, the AP started (halted).
        #expect(try bsp.specialRegisters().apicBase & 0x400 != 0)
        #expect(try ap.mpState() != .uninitialized)
        try booted.guest.reboot()
        // IA32_APIC_BASE at power-on: 0xFEE00000, global enable (bit 11), BSP (bit 8); x2APIC (bit 10) off.
        #expect(try bsp.specialRegisters().apicBase == 0xFEE0_0900)
        #expect(try ap.specialRegisters().apicBase == 0xFEE0_0800)
        #expect(try ap.mpState() == .uninitialized)
        #expect(try bsp.mpState() == .runnable)
        let registers = try bsp.registers()
        #expect(registers.rip == 0x7C00 && registers.rax == RealModeImage.entryAL)
        #expect(booted.guest.machine.readMemory(0x7C80, count: 1) == [0x52])
    }
}
