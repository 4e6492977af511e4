import HostOS
import PCI
import PCIPassthrough
import Synchronization
import TestRequirements
import RoutingTwins
import Testing
import VFIO
import VMMBase

/// A placement's interrupt output as the machine gives an assigned function: a kernel INTx line
/// made of real eventfds, the same one on every call (the machine's binds it to a KVM irqfd).
final class RecordingOutput: PCIInterruptOutput {
    final class Line: KernelINTxLine {
        let triggerFD: EventFDBox, resampleFD: EventFDBox
        init() throws { (triggerFD, resampleFD) = (try EventFDBox(), try EventFDBox()) }
        var trigger: Int32 { triggerFD.rawValue }
        var resample: Int32 { resampleFD.rawValue }
    }
    let line: Line
    init() throws { line = try Line() }
    func signal(_ message: MSIMessage) {}
    func setINTx(_ asserted: Bool) {}
    func kernelINTx() throws(KernelINTxError) -> (any KernelINTxLine)? { line }
}

/// An eventfd owned by a class, so tests can share it.
final class EventFDBox: Sendable {
    let fd: EventFD
    init() throws { fd = try EventFD() }
    var rawValue: Int32 { fd.rawValue }
    func count() -> UInt64 { ((try? fd.consume()) ?? nil) ?? 0 }
}

/// QEMU 10's igb behind a root port, as the VFIO twin presents it, assigned.
struct AssignedIGB {
    let twin: VFIOTwinDevice
    let routing = RecordingMessageVectorRouting()
    let output: RecordingOutput
    let function: AssignedPCIFunction

    init(mmap: Bool = true, msixTableTrapped: Bool = true) throws {
        twin = try VFIOTwinDevice(name: "0000:01:00.0", identity: QEMUFixtures.identity("igb"), msixTableTrapped: msixTableTrapped)
        function = try AssignedPCIFunction(name: "nic0", device: twin,
                                           options: AssignmentOptions(mmap: mmap, position: .behindPort(speed: .gt2_5, width: 1)),
                                           quirks: try VFIOQuirkTable.builtIn(), routing: routing)
        // Placed: the machine hands it its interrupt output.
        output = try RecordingOutput()
        function.connect(interrupts: output)
    }

    var irqCalls: [VFIOIRQRequest] {
        twin.log.all.compactMap { if case .setIRQs(_, let request) = $0 { request } else { nil } }
    }

    var msix: Int { function.configSnapshot().capability(.msix)!.offset }

    /// Programs MSI-X table entry `vector` through BAR 3 (the table is at offset 0) and unmasks it.
    func program(vector: Int, message: MSIMessage) {
        let base = UInt64(vector) * 16
        function.barWrite(3, offset: base, width: .dword, value: message.address & 0xFFFF_FFFF)
        function.barWrite(3, offset: base + 4, width: .dword, value: message.address >> 32)
        function.barWrite(3, offset: base + 8, width: .dword, value: UInt64(message.data))
        function.barWrite(3, offset: base + 12, width: .dword, value: 0)
    }

    func setMSIX(enabled: Bool) {
        _ = function.configWrite(msix + 2, width: .word, value: enabled ? 0x8000 : 0)
    }
}

@Suite("an igb assigned through the VFIO twin")
struct AssignedPCIFunctionTests {
    @Test("memory BARs are mmap'd where VFIO allows, minus the MSI-X table and PBA pages; INTx is a resampled eventfd pair")
    func realize() throws {
        let igb = try AssignedIGB()
        let maps = igb.twin.log.all.compactMap { call -> [UInt64]? in
            if case .map(_, let region, let offset, let size) = call { [UInt64(region), offset, UInt64(size)] } else { nil }
        }
        // BAR 0 and 1: 128 KiB each, whole. BAR 3 (16 KiB): the kernel's sparse areas leave
        // out the table page (0x0000); the PBA page (0x2000) is ours to cut. BAR 2 is I/O.
        #expect(maps == [[0, 0, 0x20000], [1, 0, 0x20000], [3, 0x1000, 0x1000], [3, 0x3000, 0x1000]])
        let intx = igb.output.line
        #expect(igb.irqCalls == [VFIOIRQRequest(index: VFIOPCIIRQ.intx, .trigger(eventfds: [intx.trigger])),
                                 VFIOIRQRequest(index: VFIOPCIIRQ.intx, .unmaskOnEventfd(intx.resample))])
        // The device asserting its pin signals our trigger eventfd, once, until the resample.
        #expect(igb.twin.raise(index: VFIOPCIIRQ.intx))
        #expect(intx.triggerFD.count() == 1)
        #expect(!igb.twin.raise(index: VFIOPCIIRQ.intx))
    }

    @Test("x-no-mmap maps nothing; the BARs are reached through the region")
    func noMmap() throws {
        let igb = try AssignedIGB(mmap: false)
        #expect(!igb.twin.log.all.contains { if case .map = $0 { true } else { false } })
        igb.function.barWrite(0, offset: 0x100, width: .dword, value: 0xC0FFEE)
        #expect(igb.twin.log.all.contains(.write(device: "0000:01:00.0", region: 0, offset: 0x100, bytes: [0xEE, 0xFF, 0xC0, 0])))
        #expect(igb.function.barRead(0, offset: 0x100, width: .dword) == 0xC0FFEE)
    }

    @Test("BAR data goes through the mapping to the same device memory pread sees")
    func mappedDataPath() throws {
        let igb = try AssignedIGB()
        igb.function.barWrite(0, offset: 0x2040, width: .qword, value: 0x1122_3344_5566_7788)
        let region = try igb.twin.regionInfo(0)
        #expect(try igb.twin.readLittleEndian(region: region, at: 0x2040, size: 8) == 0x1122_3344_5566_7788)
        #expect(!igb.twin.log.all.contains { if case .write(_, 0, _, _) = $0 { true } else { false } })
    }

    @Test("enabling MSI-X turns INTx off and hands VFIO one eventfd per vector; the routes carry the table's messages")
    func msixEnable() throws {
        let igb = try AssignedIGB()
        let message = MSIMessage(address: 0xFEE0_0000, data: 0x41)
        igb.program(vector: 2, message: message)
        igb.setMSIX(enabled: true)
        let vectors = try #require(igb.routing.lastVectors)
        #expect(vectors.fds.count == 10)  // igb's MSI-X Table Size + 1
        #expect(Array(igb.irqCalls.suffix(2)) == [VFIOIRQRequest(index: VFIOPCIIRQ.intx, .disable),
                                                  VFIOIRQRequest(index: VFIOPCIIRQ.msix, .trigger(eventfds: vectors.eventFDs))])
        let updates = vectors.updates
        #expect(updates.count == 10)
        #expect(updates.contains { $0.vector == 2 && $0.message == message && !$0.masked })
        #expect(updates.filter { $0.vector != 2 }.allSatisfy { $0.masked })
        // The device's vector 2 signals our eventfd: no userspace hop in between.
        #expect(igb.twin.raise(index: VFIOPCIIRQ.msix, vector: 2))
        #expect(vectors.signals(of: 2) == 1)

        // Masking a vector only updates its route.
        let calls = igb.irqCalls.count
        igb.function.barWrite(3, offset: 2 * 16 + 12, width: .dword, value: 1)
        #expect(igb.irqCalls.count == calls)
        #expect(vectors.updates.last.map { $0.vector == 2 && $0.masked } == true)

        // Disabling: MSI-X off in VFIO, vectors released, INTx back.
        igb.setMSIX(enabled: false)
        #expect(vectors.released)
        let intx = igb.output.line
        #expect(Array(igb.irqCalls.suffix(3)) == [VFIOIRQRequest(index: VFIOPCIIRQ.msix, .disable),
                                                  VFIOIRQRequest(index: VFIOPCIIRQ.intx, .trigger(eventfds: [intx.trigger])),
                                                  VFIOIRQRequest(index: VFIOPCIIRQ.intx, .unmaskOnEventfd(intx.resample))])
    }

    @Test("MSI asking for more vectors than the device has gets the device's count (igb: 1)")
    func msiVectorCount() throws {
        let igb = try AssignedIGB()
        let msi = try #require(igb.function.configSnapshot().capability(.msi)).offset
        _ = igb.function.configWrite(msi + 4, width: .dword, value: 0xFEE0_0000)
        _ = igb.function.configWrite(msi + 2, width: .word, value: 0x5 << 4 | 1)  // 32 vectors, enable
        let vectors = try #require(igb.routing.lastVectors)
        #expect(vectors.fds.count == 1)
        #expect(igb.irqCalls.last == VFIOIRQRequest(index: VFIOPCIIRQ.msi, .trigger(eventfds: vectors.eventFDs)))
        #expect(igb.function.configRead(msi + 2, width: .word) >> 4 & 7 == 0)  // Multiple Message Enable reads 1 vector
    }

    @Test("accesses past the MSI-X table go to the device, past a BAR are dropped with a guest error, never a crash")
    func hostileAccesses() throws {
        let igb = try AssignedIGB()
        igb.setMSIX(enabled: true)
        let vectors = try #require(igb.routing.lastVectors)
        let before = vectors.updates.count
        // Past the table's 10 entries (0xA0 bytes): not a vector; the rest of the trapped page is
        // the device's, reached through the region. (Misaligned table and PBA writes are
        // MSIXTable's, tested in PCITests.)
        igb.function.barWrite(3, offset: 0xA0, width: .dword, value: 0xFFFF_FFFF)
        igb.function.barWrite(3, offset: 10 * 16 + 12, width: .dword, value: 0)  // "unmask" vector 10
        #expect(vectors.updates.count == before)
        #expect(igb.twin.log.all.contains(.write(device: "0000:01:00.0", region: 3, offset: 0xA0, bytes: [0xFF, 0xFF, 0xFF, 0xFF])))
        #expect(igb.function.barRead(3, offset: 0x2000, width: .qword) == 0)  // nothing pending
        #expect(igb.function.barRead(2, offset: 0x1_0000, width: .dword) == 0xFFFF_FFFF)  // past the I/O region
        igb.function.barWrite(2, offset: 0x1_0000, width: .dword, value: 1)
        let lines = GuestErrorLog.recent.map(\.message)
        #expect(lines.contains { $0.contains("BAR2+0x10000") })
    }

    @Test("a machine reset turns interrupts off, resets the device through VFIO and the emulated registers")
    func reset() throws {
        let igb = try AssignedIGB()
        _ = igb.function.configWrite(0x10, width: .dword, value: 0xFE00_0000)
        igb.setMSIX(enabled: true)
        igb.twin.log.clear()
        igb.function.reset()
        let calls = igb.twin.log.all
        let msixOff = try #require(calls.firstIndex(of: .setIRQs(device: "0000:01:00.0", VFIOIRQRequest(index: VFIOPCIIRQ.msix, .disable))))
        let reset = try #require(calls.firstIndex(of: .reset(device: "0000:01:00.0")))
        #expect(msixOff < reset)
        #expect(igb.function.configRead(0x10, width: .dword) == 0)
        #expect(igb.function.configSnapshot().msixControl?.enabled == false)
        // INTx is wired again after the reset.
        #expect(igb.irqCalls.suffix(2).map(\.index) == [VFIOPCIIRQ.intx, VFIOPCIIRQ.intx])
    }
}
