import Foundation
import HostNetwork
import HostOS
import KVM
import TestRequirements
import Testing
import VMMBase
@testable import Machine

/// Virtio queue kicks through KVM's ioeventfd. The device is set up over MMIO as a driver
/// would (virtio 1.2, 4.1.4.3 offsets spelled out here); real-mode guest code writes the
/// queue's notify address (BAR 4 + 0x3000 + 4 * queue). Oracles: KVM (whether that write exits
/// to userspace), guest memory (the used ring, the buffer virtio-rng filled) and, for
/// virtio-net, the frame a packet socket on the tap's far side receives.
@Suite(.serialized) struct VirtioKickTests {
    static let devfn: UInt8 = 5 << 3
    static let bar: UInt64 = 0xC000_0000
    static let movedBAR: UInt64 = 0xC010_0000
    // Queue 0's rings and buffers in guest RAM, and the notify area at BAR 4 + 0x3000
    // (queue_notify_off 0).
    static let descriptors: UInt64 = 0x1_0000, available: UInt64 = 0x1_1000, used: UInt64 = 0x1_2000
    static let buffers: UInt64 = 0x2_0000
    static let bufferLength = 64

    /// The driver's side, through the machine's MMIO entry points.
    struct Driver {
        let machine: Machine
        var base: UInt64

        func setCommon(_ offset: UInt64, _ width: AccessWidth, _ value: UInt64) {
            machine.mmioWrite(base + offset, width: width, value: value)
        }
        var status: UInt64 { machine.mmioRead(base + 0x14, width: .byte) }

        /// Reset, empty rings, ACKNOWLEDGE|DRIVER, VERSION_1 only, FEATURES_OK, `queue` (8
        /// entries) at the rings above (INTx, no MSI-X), queue_enable, DRIVER_OK.
        func initialize(queue: UInt64 = 0) throws {
            setCommon(0x14, .byte, 0)
            // Empty rings before DRIVER_OK: nothing is available, whatever kick is answered.
            for offset in [descriptors, available, used] {
                try machine.guestMemory.write(at: GuestAddress(offset), bytes: [UInt8](repeating: 0, count: 0x1000))
            }
            setCommon(0x14, .byte, 3)
            setCommon(0x08, .dword, 1)
            setCommon(0x0C, .dword, 1)  // bit 32: VIRTIO_F_VERSION_1
            setCommon(0x14, .byte, 0xB)
            setCommon(0x16, .word, queue)
            setCommon(0x18, .word, 8)
            setCommon(0x20, .dword, descriptors); setCommon(0x24, .dword, 0)
            setCommon(0x28, .dword, available); setCommon(0x2C, .dword, 0)
            setCommon(0x30, .dword, used); setCommon(0x34, .dword, 0)
            setCommon(0x1C, .word, 1)
            setCommon(0x14, .byte, 0xF)
            try #require(status == 0xF, "the device refused DRIVER_OK")
        }
    }

    /// Makes buffer `n` (64 bytes of 0xAA, device-writable; or `contents`, device-readable)
    /// available as the n-th request.
    static func offer(_ n: Int, in memory: Machine, contents: [UInt8]? = nil) throws {
        let ram = memory.guestMemory
        let address = buffers + UInt64(n) * 0x100
        let bytes = contents ?? [UInt8](repeating: 0xAA, count: bufferLength)
        try ram.write(at: GuestAddress(address), bytes: bytes)
        let descriptor = descriptors + UInt64(n % 8) * 16
        try ram.store(address, at: GuestAddress(descriptor))
        try ram.store(UInt32(bytes.count), at: GuestAddress(descriptor + 8))
        try ram.store(UInt16(contents == nil ? 2 : 0), at: GuestAddress(descriptor + 12))  // VIRTQ_DESC_F_WRITE
        try ram.store(UInt16(n % 8), at: GuestAddress(available + 4 + UInt64(n % 8) * 2))
        try ram.store(UInt16(n + 1), at: GuestAddress(available + 2))
    }

    static func usedIndex(_ machine: Machine) throws -> UInt16 { try machine.guestMemory.load(UInt16.self, at: GuestAddress(used + 2)) }

    /// Waits up to `seconds` for used.idx to reach `index` (the kick thread answers
    /// asynchronously, within milliseconds; a wait that must fail is kept short).
    static func waitForUsed(_ index: UInt16, _ machine: Machine, seconds: Double = 2) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try usedIndex(machine) == index { return true }
            usleep(1000)
        }
        return false
    }

    /// BAR 4 of the function at 00:05.0 placed at `address`, memory decode and bus master on.
    static func placeBAR(_ machine: Machine, at address: UInt64) {
        let cycles = PortConfigCycles(machine)
        cycles.write(bus: 0, devfn: devfn, offset: 0x20, width: .dword, value: UInt32(truncatingIfNeeded: address))
        cycles.write(bus: 0, devfn: devfn, offset: 0x24, width: .dword, value: UInt32(address >> 32))
        cycles.write(bus: 0, devfn: devfn, offset: 0x04, width: .word, value: 0x0006)
    }

    /// A KVM VM over the machine's RAM with its doorbells registered, and one real-mode vCPU
    /// with a flat 4 GiB DS that runs one store and HLT at a time.
    final class KickingGuest {
        let machine: Machine
        let vm: KVMVirtualMachine
        let slots: KVMMemorySlots
        let doorbells: KVMDoorbells
        let vcpu: KVMVCPU

        init(_ machine: Machine) throws {
            self.machine = machine
            vm = try KVMSystem().createVirtualMachine()
            slots = machine.followMemorySlots(in: vm)
            doorbells = machine.followDoorbells(in: vm)
            vcpu = try vm.createVCPU(id: 0)
            var special = try vcpu.specialRegisters()
            special.cs = .realMode(selector: 0, code: true)
            special.ds = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0, type: 0x3, granularity: true)
            try vcpu.setSpecialRegisters(special)
        }

        func stop() {
            machine.stopFollowing(doorbells)
            machine.stopFollowing(slots)
        }

        /// Runs a 2-byte store of `queue` at `address` to its HLT; the guest addresses whose
        /// writes exited to userspace.
        func kick(queue: UInt64, at address: UInt64) throws -> [UInt64] {
            try KVMDoorbellTests.runToHalt(KVMDoorbellTests.store(queue, bytes: 2, at: UInt32(address)), on: vcpu, of: machine)
        }
    }

    @Test(.requires(KVMDoorbellTests.hasKVM, "no usable /dev/kvm on this host"))
    func aKickThroughTheIOEventFDFillsTheBufferWithoutAnExit() throws {
        let machine = try Machine(MachineConfiguration(memorySize: 16 << 20, devices: [
            DeviceSpec(parsing: "virtio-rng-pci-non-transitional,id=rng,addr=5"),
        ]))
        func placeBAR(at address: UInt64) { Self.placeBAR(machine, at: address) }
        placeBAR(at: Self.bar)
        var driver = Driver(machine: machine, base: Self.bar)
        try driver.initialize()

        let guest = try KickingGuest(machine)
        defer { guest.stop() }
        let doorbells = guest.doorbells
        func kick(at address: UInt64) throws -> [UInt64] { try guest.kick(queue: 0, at: address) }
        func buffer(_ n: Int) throws -> [UInt8] {
            try machine.guestMemory.read(at: GuestAddress(Self.buffers + UInt64(n) * 0x100), count: Self.bufferLength)
        }
        func usedLength(_ n: Int) throws -> UInt32 {
            try machine.guestMemory.load(UInt32.self, at: GuestAddress(Self.used + 4 + UInt64(n % 8) * 8 + 4))
        }

        // The notify address at BAR 4 + 0x3000 is caught by KVM: no exit; the device answers
        // on its own thread and fills the buffer.
        #expect(doorbells.registrations.map(\.address) == [Self.bar + 0x3000])
        try Self.offer(0, in: machine)
        #expect(try kick(at: Self.bar + 0x3000) == [])
        #expect(try Self.waitForUsed(1, machine))
        #expect(try usedLength(0) == UInt32(Self.bufferLength))
        #expect(try buffer(0) != [UInt8](repeating: 0xAA, count: Self.bufferLength))

        // BAR 4 moved: the old notify address is an ordinary exit that reaches no device (the
        // buffer waits); the new one kicks without an exit.
        placeBAR(at: Self.movedBAR)
        driver.base = Self.movedBAR
        try Self.offer(1, in: machine)
        #expect(try kick(at: Self.bar + 0x3000) == [Self.bar + 0x3000])
        #expect(try !Self.waitForUsed(2, machine, seconds: 0.3))
        #expect(try kick(at: Self.movedBAR + 0x3000) == [])
        #expect(try Self.waitForUsed(2, machine))
        #expect(try buffer(1) != [UInt8](repeating: 0xAA, count: Self.bufferLength))

        // Reset (status 0): a kick still rings the eventfd but serves nothing; the queue's
        // request waits. The driver sets the device up again: served once it is live.
        driver.setCommon(0x14, .byte, 0)
        try Self.offer(2, in: machine)
        #expect(try kick(at: Self.movedBAR + 0x3000) == [])
        #expect(try !Self.waitForUsed(3, machine, seconds: 0.3))
        #expect(try buffer(2) == [UInt8](repeating: 0xAA, count: Self.bufferLength))
        try driver.initialize()
        try Self.offer(0, in: machine)
        #expect(try kick(at: Self.movedBAR + 0x3000) == [])
        #expect(try Self.waitForUsed(1, machine))
        #expect(try buffer(0) != [UInt8](repeating: 0xAA, count: Self.bufferLength))

        // NEEDS_RESET (queue_enable written with 0, a guest error): a kick is dropped.
        driver.setCommon(0x1C, .word, 0)
        #expect(driver.status & 0x40 != 0)
        try Self.offer(1, in: machine)
        #expect(try kick(at: Self.movedBAR + 0x3000) == [])
        #expect(try !Self.waitForUsed(2, machine, seconds: 0.3))
    }

    /// virtio-net-pci on a tap in a namespace the test makes: a kick of the transmit queue
    /// (queue 1) through the ioeventfd is answered on the device's I/O thread and the frame
    /// reaches the tap's far side, read by a packet socket there (the kernel's view).
    @Test(.requires(KVMDoorbellTests.hasKVM, "no usable /dev/kvm on this host"),
          .requires(TestNetworkNamespace.available, TestNetworkNamespace.unavailable),
          .timeLimit(.minutes(1)))
    func aTransmitKickThroughTheIOEventFDSendsTheFrame() throws {
        let namespace = try TestNetworkNamespace()
        let built = try NetworkNamespace.run(in: namespace.name) {
            Result { () throws -> Machine in
                var configuration = MachineConfiguration(memorySize: 16 << 20,
                                                         devices: [try DeviceSpec(parsing: "virtio-net-pci,netdev=n0,id=nic0,addr=5")])
                configuration.netdevs = [try NetdevSpec(parsing: "tap,id=n0,ifname=sykick0,script=no,downscript=no")]
                return try Machine(configuration)
            }
        }
        let machine = try built.get()
        try namespace.ip("link", "set", "sykick0", "up")
        let peer = try NetworkNamespace.run(in: namespace.name) {
            Result { () throws(SystemError) in try PacketSocket(interfaceName: "sykick0") }
        }.get()
        Self.placeBAR(machine, at: Self.bar)
        let driver = Driver(machine: machine, base: Self.bar)
        try driver.initialize(queue: 1)
        let guest = try KickingGuest(machine)
        defer { guest.stop() }

        // A broadcast frame with the local experimental EtherType 0x88B5, behind the 12-byte
        // virtio-net header (5.1.6, all zero: no offloads).
        let frame = [UInt8](repeating: 0xFF, count: 6) + [0x02, 0, 0, 0, 0, 1, 0x88, 0xB5] + (0..<46).map { UInt8($0) }
        try Self.offer(0, in: machine, contents: [UInt8](repeating: 0, count: 12) + frame)
        #expect(try guest.kick(queue: 1, at: Self.bar + 0x3000 + 4) == [])
        #expect(try peer.receive(timeoutMilliseconds: 3000) { $0.count > 14 && $0[12] == 0x88 && $0[13] == 0xB5 } == frame)
        #expect(try Self.waitForUsed(1, machine))
    }
}
