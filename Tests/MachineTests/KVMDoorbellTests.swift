import HostOS
import KVM
import PCI
import Synchronization
import TestRequirements
import Testing
import VMMBase
@testable import Machine

/// A memory BAR with two doorbells: any dword write at 0x40, and a word write of 7 at 0x80.
/// Every write that reaches the device (a trapped one) is recorded.
private final class DoorbellEndpoint: DoorbellBARs {
    let name = "doorbell-endpoint"
    private let config: Mutex<ConfigSpace>
    let kick: EventFD
    let matched: EventFD
    let trappedWrites = Mutex<[(offset: UInt64, value: UInt64)]>([])

    init() throws {
        var cs = ConfigSpace(layout: .endpoint, express: false)
        try cs.defineBAR(0, BARDescriptor(.memory32(prefetchable: false), size: 0x1000))
        cs.captureResetState()
        config = Mutex(cs)
        kick = try EventFD()
        matched = try EventFD()
    }

    func configRead(_ offset: Int, width: AccessWidth) -> UInt32 { config.withLock { $0.read(offset, width: width) } }
    func configWrite(_ offset: Int, width: AccessWidth, value: UInt32) -> ConfigWriteEffects {
        config.withLock { $0.write(offset, width: width, value: value) }
    }
    func configSnapshot() -> ConfigSpace { config.withLock { $0 } }
    func reset() { config.withLock { $0.reset() } }
    func barWrite(_ index: Int, offset: UInt64, width: AccessWidth, value: UInt64) {
        trappedWrites.withLock { $0.append((offset, value)) }
    }
    func doorbells(ofBAR index: Int) -> [Doorbell] {
        guard index == 0 else { return [] }
        return [Doorbell(offset: 0x40, length: 4, eventDescriptor: kick.rawValue),
                Doorbell(offset: 0x80, length: 2, dataMatch: 7, eventDescriptor: matched.rawValue)]
    }
}

/// Passes every exit to the machine and records the MMIO writes that reached userspace.
final class ExitRecorder: VCPUExitHandler {
    let machine: Machine
    let mmioWrites = Mutex<[UInt64]>([])
    init(_ machine: Machine) { self.machine = machine }
    func portRead(_ port: UInt16, width: AccessWidth) -> UInt64 { machine.portRead(port, width: width) }
    func portWrite(_ port: UInt16, width: AccessWidth, value: UInt64) { machine.portWrite(port, width: width, value: value) }
    func mmioRead(_ address: UInt64, width: AccessWidth) -> UInt64 { machine.mmioRead(address, width: width) }
    func mmioWrite(_ address: UInt64, width: AccessWidth, value: UInt64) {
        mmioWrites.withLock { $0.append(address) }
        machine.mmioWrite(address, width: width, value: value)
    }
}

/// Doorbells become KVM ioeventfds at the BAR's current address. The oracle is KVM itself:
/// whether a guest store reaches userspace as an MMIO exit, and the eventfd's counter.
@Suite struct KVMDoorbellTests {
    static let hasKVM = KVMSystem.isAvailable(path: "/dev/kvm")
    static let devfn: UInt8 = 3 << 3

    /// Real-mode code with a flat 4 GiB DS (set by the test): `mov [address], value` with
    /// address- and operand-size prefixes as needed, then HLT.
    /// Runs real-mode `program` at 0x7C00 to its HLT on `vcpu`; the guest addresses whose
    /// writes exited to userspace.
    static func runToHalt(_ program: [UInt8], on vcpu: KVMVCPU, of machine: Machine) throws -> [UInt64] {
        try machine.guestMemory.write(at: GuestAddress(0x7C00), bytes: program)
        var registers = Registers()
        registers.rip = 0x7C00
        registers.rflags = 2
        try vcpu.setRegisters(registers)
        let recorder = ExitRecorder(machine)
        let runner = try VCPURunner(vcpus: [vcpu], handler: recorder)
        try runner.start()
        let finished = runner.waitUntilFinished(timeoutMilliseconds: 5000)
        if !finished { runner.requestStop() }
        let stops = runner.join()
        try #require(finished, "the guest did not halt within 5 s")
        #expect(stops == [.halted])
        return recorder.mmioWrites.withLock { $0 }
    }

    static func store(_ value: UInt64, bytes: Int, at address: UInt32) -> [UInt8] {
        let disp = withUnsafeBytes(of: address.littleEndian, Array.init)
        let imm = withUnsafeBytes(of: value.littleEndian) { Array($0.prefix(bytes)) }
        let operandSize: [UInt8] = bytes == 4 ? [0x66] : []
        return [0x67] + operandSize + [0xC7, 0x05] + disp + imm + [0xF4]
    }

    @Test(.requires(hasKVM, "no usable /dev/kvm on this host"))
    func aDoorbellWriteSignalsItsEventfdWithoutAnExitAndFollowsTheBAR() throws {
        let machine = try Machine(MachineConfiguration(memorySize: 16 << 20))
        let device = try DoorbellEndpoint()
        try machine.rootBus.attach(device, at: Self.devfn)
        let cycles = PortConfigCycles(machine)
        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x10, width: .dword, value: 0xC000_0000)
        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x04, width: .word, value: 0x0002)

        let vm = try KVMSystem().createVirtualMachine()
        let slots = machine.followMemorySlots(in: vm)
        defer { machine.stopFollowing(slots) }
        let doorbells = machine.followDoorbells(in: vm)
        defer { machine.stopFollowing(doorbells) }
        let vcpu = try vm.createVCPU(id: 0)
        var special = try vcpu.specialRegisters()
        special.cs = .realMode(selector: 0, code: true)
        special.ds = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0, type: 0x3, granularity: true)
        try vcpu.setSpecialRegisters(special)

        func run(_ program: [UInt8]) throws -> [UInt64] { try Self.runToHalt(program, on: vcpu, of: machine) }
        func kicks() throws -> UInt64 { try device.kick.consume() ?? 0 }
        func matches() throws -> UInt64 { try device.matched.consume() ?? 0 }

        // At 0xC000_0000: the kick is caught in the kernel; the device sees no write.
        #expect(try run(Self.store(0x1234, bytes: 4, at: 0xC000_0040)) == [])
        #expect(try kicks() == 1)
        // The data-matched doorbell rings only for its value; another value exits to the device.
        #expect(try run(Self.store(7, bytes: 2, at: 0xC000_0080)) == [])
        #expect(try matches() == 1)
        #expect(try run(Self.store(8, bytes: 2, at: 0xC000_0080)) == [0xC000_0080])
        #expect(try matches() == 0)
        #expect(device.trappedWrites.withLock { $0.map(\.offset) } == [0x80])

        // Moved to 0xC010_0000: the old address is an ordinary (unassigned) exit, the new one rings.
        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x10, width: .dword, value: 0xC010_0000)
        #expect(try run(Self.store(0x1234, bytes: 4, at: 0xC000_0040)) == [0xC000_0040])
        #expect(try kicks() == 0)
        #expect(try run(Self.store(0x1234, bytes: 4, at: 0xC010_0040)) == [])
        #expect(try kicks() == 1)

        // Memory decode off: nothing rings; the write exits and reaches no device.
        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x04, width: .word, value: 0)
        #expect(try run(Self.store(0x1234, bytes: 4, at: 0xC010_0040)) == [0xC010_0040])
        #expect(try kicks() == 0)
        #expect(doorbells.registrations.isEmpty)
        // On again: it rings again at the BAR's address.
        cycles.write(bus: 0, devfn: Self.devfn, offset: 0x04, width: .word, value: 0x0002)
        #expect(try run(Self.store(0x1234, bytes: 4, at: 0xC010_0040)) == [])
        #expect(try kicks() == 1)
        #expect(device.trappedWrites.withLock { $0.map(\.offset) } == [0x80])
    }
}
