import Chipset
import KVM
import TestRequirements
import Testing
import VMMBase
@testable import Machine

/// KVM memory slots follow the platform layer: DRAM ranges as the MCH datasheet maps them for
/// non-SMM accesses (PAM 11 normal, 01 read-only, 00/10 not DRAM for reads; 0xA0000-0xBFFFF DRAM
/// only with SMRAM open), each commit costing only the slot ioctls of what changed.
@Suite struct KVMMemorySlotTests {
    static let hasKVM = KVMSystem.isAvailable(path: "/dev/kvm")

    static func layout(_ vm: KVMVirtualMachine) -> [String] {
        vm.memorySlots.map {
            "\(String($0.guestAddress, radix: 16))-\(String($0.guestAddress + $0.size - 1, radix: 16)) \($0.readOnly ? "ro" : "rw")"
        }
    }

    @Test(.requires(hasKVM, "no usable /dev/kvm on this host"))
    func slotsFollowPAMAndSMRAM() throws {
        let machine = try Machine(MachineConfiguration(memorySize: 64 << 20))
        let vm = try KVMSystem().createVirtualMachine()
        let slots = machine.followMemorySlots(in: vm)
        defer { machine.stopFollowing(slots) }
        let readOnlySlots = try vm.checkExtension(.readOnlyMemory) > 0
        let cycles = PortConfigCycles(machine)

        // Power-on: every PAM field 00 and SMRAM closed: nothing from 0xA0000 to 0xFFFFF is DRAM.
        #expect(Self.layout(vm) == ["0-9ffff rw", "100000-3ffffff rw"])

        // SeaBIOS's hand-over: 0xC0000-0xEFFFF normal, 0xF0000-0xFFFFF read-only.
        machine.programPAMAsFirmwareLeavesIt()
        #expect(Self.layout(vm) == ["0-9ffff rw", "c0000-effff rw"] + (readOnlySlots ? ["f0000-fffff ro"] : [])
                + ["100000-3ffffff rw"])

        // PAM0 11: 0xC0000 up to the top of RAM is one DRAM range, one slot replacing three.
        let before = vm.memorySlotUpdates
        cycles.write(bus: 0, devfn: 0, offset: 0x90, width: .byte, value: 0x30)
        #expect(Self.layout(vm) == ["0-9ffff rw", "c0000-3ffffff rw"])
        #expect(vm.memorySlotUpdates - before == (readOnlySlots ? 4 : 3))

        // PAM1 10 (write only) for 0xC0000-0xC3FFF: reads must exit, so no slot there.
        cycles.write(bus: 0, devfn: 0, offset: 0x91, width: .byte, value: 0x32)
        #expect(Self.layout(vm) == ["0-9ffff rw", "c4000-3ffffff rw"])

        // SMRAM open (D_OPEN, G_SMRAME): 0xA0000-0xBFFFF is DRAM to non-SMM code.
        cycles.write(bus: 0, devfn: 0, offset: 0x9D, width: .byte, value: 0x4A)
        #expect(Self.layout(vm) == ["0-bffff rw", "c4000-3ffffff rw"])
        // Closed again: hidden.
        cycles.write(bus: 0, devfn: 0, offset: 0x9D, width: .byte, value: 0x0A)
        #expect(Self.layout(vm) == ["0-9ffff rw", "c4000-3ffffff rw"])
    }
}
