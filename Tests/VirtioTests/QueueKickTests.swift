import Foundation
import HostOS
import Testing
import VMMBase
@testable import Virtio

/// Kick eventfds without KVM: the test signals a queue's eventfd where KVM would, so the path
/// from the eventfd to the device (the shared kick thread, the transport's notify rules) is
/// checked here and the KVM registration in MachineTests' VirtioKickTests.
@Suite(.serialized) struct QueueKickTests {
    /// Signals the eventfd KVM would for a 2-byte write at BAR 4 offset `offset`.
    static func ring(_ function: VirtioPCIFunction, at offset: UInt64) throws {
        let doorbell = try #require(function.doorbells(ofBAR: 4).first { $0.offset == offset })
        var one: UInt64 = 1
        #expect(write(doorbell.eventDescriptor, &one, 8) == 8)
    }

    static func waitForUsed(_ harness: VirtioDriverHarness, _ index: UInt16, seconds: Double = 2) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if harness.usedIndex == index { return true }
            usleep(1000)
        }
        return false
    }

    /// The doorbells sit where a driver computes each queue's notify address (4.1.4.4):
    /// the notify capability's offset plus queue_notify_off times notify_off_multiplier, all
    /// read from config space and common config as Linux's virtio_pci_modern reads them.
    @Test func oneTwoByteDoorbellPerQueueAtTheNotifyAddressADriverComputes() throws {
        let harness = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"))
        let f = harness.function
        var at = Int(f.configRead(0x34, width: .byte))
        var notify: (offset: UInt64, multiplier: UInt64)?
        while at != 0 {
            if f.configRead(at, width: .byte) == 0x09, f.configRead(at + 3, width: .byte) == 2 {  // vendor, VIRTIO_PCI_CAP_NOTIFY_CFG
                #expect(f.configRead(at + 4, width: .byte) == 4)  // bar
                notify = (UInt64(f.configRead(at + 8, width: .dword)), UInt64(f.configRead(at + 16, width: .dword)))
            }
            at = Int(f.configRead(at + 1, width: .byte))
        }
        let cap = try #require(notify)
        harness.setCommon(0x16, .word, 0)  // queue_select
        let expected = cap.offset + harness.common(0x1E, .word) * cap.multiplier  // queue_notify_off
        let doorbells = f.doorbells(ofBAR: 4)
        #expect(doorbells.map(\.offset) == [expected])
        #expect(doorbells.allSatisfy { $0.length == 2 && $0.dataMatch == nil && $0.eventDescriptor >= 0 })
        #expect(f.doorbells(ofBAR: 1).isEmpty && f.doorbells(ofBAR: 0).isEmpty)
    }

    /// virtio-rng's kick eventfd is answered by the shared kick thread from DRIVER_OK: the
    /// buffer is filled; after a reset the same signal serves nothing and the buffer waits.
    @Test func aSignalledKickIsServedOnlyWhileTheQueueIsLive() throws {
        let harness = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"))
        try #require(harness.initialize(msix: false) & 4 != 0, "DRIVER_OK refused")
        harness.writeDescriptor(0, address: harness.buffers, length: 32, flags: 2)
        harness.makeAvailable(0)
        try Self.ring(harness.function, at: 0x3000)
        #expect(Self.waitForUsed(harness, 1))
        #expect(harness.usedElement(0) == (id: 0, length: 32))

        harness.setCommon(0x14, .byte, 0)
        harness.writeDescriptor(1, address: harness.buffers + 0x100, length: 32, flags: 2)
        harness.makeAvailable(1)
        try Self.ring(harness.function, at: 0x3000)
        #expect(!Self.waitForUsed(harness, 2, seconds: 0.2))
        #expect(harness.usedIndex == 1)
    }

    /// A function that goes away while its kicks are watched takes its watches with it: a
    /// signal on another, live function is still answered (the thread survived).
    @Test func aFunctionReleasedWhileWatchedLeavesTheKickThreadWorking() throws {
        weak var released: VirtioPCIFunction?
        do {
            let gone = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "gone"))
            try #require(gone.initialize(msix: false) & 4 != 0, "DRIVER_OK refused")
            try Self.ring(gone.function, at: 0x3000)
            released = gone.function
        }
        usleep(50_000)  // a kick being answered holds the function briefly
        #expect(released == nil)
        let harness = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"))
        try #require(harness.initialize(msix: false) & 4 != 0, "DRIVER_OK refused")
        harness.writeDescriptor(0, address: harness.buffers, length: 16, flags: 2)
        harness.makeAvailable(0)
        try Self.ring(harness.function, at: 0x3000)
        #expect(Self.waitForUsed(harness, 1))
    }
}
