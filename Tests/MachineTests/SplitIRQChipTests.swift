import Chipset
import HostOS
import Interrupts
import KVM
@testable import Machine
import TestRequirements
import Testing
import VMMBase

/// The split irqchip on this host's KVM: the machine's userspace IOAPIC in front of KVM's
/// local APICs. The oracle is the kernel's local APIC (KVM_GET_LAPIC), read at the register
/// offsets of the Intel SDM vol. 3, 11.4.1 (TMR at 0x180, IRR at 0x200, SVR at 0xF0), and the
/// redirection-entry and MSI layouts of the 82093AA datasheet and SDM 11.11, written out here.
@Suite(.serialized) struct SplitIRQChipTests {
    static let irr = 0x200, tmr = 0x180, spuriousVector = 0xF0

    /// One VM with a split irqchip, vCPU 0 (APIC ID 0) software-enabled, the routes and the
    /// userspace half wired as a KVM guest wires them.
    struct SplitVM {
        let vm: KVMVirtualMachine
        let vcpu: KVMVCPU
        let ioapic: IOAPIC
        let routes: KVMInterruptRoutes
        let levels: SplitIRQChipSink

        init() throws {
            vm = try KVMSystem().createVirtualMachine(.init(irqchip: .split(ioapicRoutes: 24)))
            vcpu = try vm.createVCPU(id: 0)
            var lapic = try vcpu.localAPIC()
            lapic[register: SplitIRQChipTests.spuriousVector] = 0x1FF  // APIC software enable, vector 0xFF
            try vcpu.setLocalAPIC(lapic)
            let localAPICs = KVMInterruptSink(virtualMachine: vm)
            ioapic = IOAPIC(output: localAPICs)
            routes = try KVMInterruptRoutes.split(vm, ioapic: ioapic)
            levels = SplitIRQChipSink(ioapic: ioapic, localAPICs: localAPICs)
        }

        /// A guest's two dword writes to redirection entry `pin` (IOREGSEL, then IOWIN).
        func program(pin: Int, low: UInt32, high: UInt32 = 0) {
            for (index, value) in [(0x10 + 2 * pin + 1, high), (0x10 + 2 * pin, low)] {
                ioapic.write(offset: 0x00, width: .dword, value: UInt64(index))
                ioapic.write(offset: 0x10, width: .dword, value: UInt64(value))
            }
        }

        func localAPICBit(_ base: Int, vector: UInt8) throws -> Bool {
            let lapic = try vcpu.localAPIC()
            return lapic[register: base + Int(vector / 32) * 0x10] & (1 << UInt32(vector % 32)) != 0
        }
    }

    @Test(.requires(KVMSystem.isAvailable(), "no usable /dev/kvm"))
    func ioapicPinsReachTheKernelsLocalAPIC() throws {
        let split = try SplitVM()
        defer { withExtendedLifetime(split) {} }
        let edgeVector: UInt8 = 0x34, levelVector: UInt8 = 0x59
        // Pin 4 (COM1) edge, pin 9 (SCI) level, active high, fixed, physical destination 0.
        split.program(pin: 4, low: UInt32(edgeVector))
        split.program(pin: 9, low: UInt32(levelVector) | 1 << 15)
        #expect(try !split.localAPICBit(Self.irr, vector: edgeVector))

        split.levels.setLevel(GSI(4), high: true)
        split.levels.setLevel(GSI(9), high: true)

        #expect(try split.localAPICBit(Self.irr, vector: edgeVector))
        #expect(try split.localAPICBit(Self.irr, vector: levelVector))
        #expect(try split.localAPICBit(Self.tmr, vector: levelVector))
        #expect(try !split.localAPICBit(Self.tmr, vector: edgeVector))
        // The level entry now holds Remote IRR until the local APIC's EOI comes back.
        #expect(split.ioapic.registers.entries[9] & 1 << 14 != 0)
    }

    @Test(.requires(KVMSystem.isAvailable(), "no usable /dev/kvm"))
    func pinRoutesFollowRedirectionWrites() throws {
        let split = try SplitVM()
        defer { withExtendedLifetime(split) {} }
        // Out of reset every entry is masked with vector 0: data 0, destination 0.
        #expect(Array(split.routes.kernelRoutes.prefix(24))
            == (0..<24).map { .msi(gsi: UInt32($0), message: MSIMessage(address: 0xFEE0_0000, data: 0)) })

        // Pin 16 (PIRQA): vector 0x61, lowest priority (1), logical, level, destination 0x03.
        split.program(pin: 16, low: 0x61 | 1 << 8 | 1 << 11 | 1 << 15, high: 0x03 << 24)
        let routes = split.routes.kernelRoutes
        #expect(routes[16] == .msi(gsi: 16, message: MSIMessage(address: 0xFEE0_3004, data: 0x8161)))
        #expect(routes.prefix(24).enumerated().allSatisfy { index, route in
            index == 16 || route == .msi(gsi: UInt32(index), message: MSIMessage(address: 0xFEE0_0000, data: 0))
        })

        // An allocated MSI GSI stays where it was; a reset puts the pins back.
        let group = try split.routes.makeMSIGroup(vectors: 1)
        try group.update(vector: 0, message: MSIMessage(address: 0xFEE0_0000, data: 0x42), masked: false)
        split.ioapic.reset()
        #expect(split.routes.kernelRoutes[16] == .msi(gsi: 16, message: MSIMessage(address: 0xFEE0_0000, data: 0)))
        #expect(split.routes.kernelRoutes.last == .msi(gsi: 24, message: MSIMessage(address: 0xFEE0_0000, data: 0x42)))
        try group.release()
    }
}
