import Foundation
import PCI
import Testing
import VMMBase
@testable import Virtio

/// The virtio transport through snapshot and restore, checked differentially: a device set up
/// as Linux's driver does, with buffers already used, is snapshotted, its guest RAM copied (as
/// migration carries memory), and a fresh function restored; both must then answer every
/// register read alike and serve the next buffer into the same used slot with the same
/// interrupt decisions.
@Suite(.serialized) struct VirtioSnapshotTests {
    /// Every register a driver can read without side effects: config space, common config
    /// (for each queue through queue_select), the device configuration, MSI-X table and PBA.
    func registerView(_ h: VirtioDriverHarness) -> [UInt64] {
        let config = stride(from: 0, to: h.function.configSnapshot().size, by: 4).map { UInt64(h.function.configRead($0, width: .dword)) }
        let commonFields: [(UInt64, AccessWidth)] = [(0x00, .dword), (0x08, .dword), (0x10, .word), (0x12, .word), (0x14, .byte),
                                                     (0x15, .byte), (0x16, .word)]
        let queueFields: [(UInt64, AccessWidth)] = [(0x18, .word), (0x1A, .word), (0x1C, .word), (0x1E, .word), (0x20, .dword),
                                                    (0x24, .dword), (0x28, .dword), (0x2C, .dword), (0x30, .dword), (0x34, .dword)]
        let selector = h.common(0x16, .word)
        var common = commonFields.map { h.common($0.0, $0.1) }
        for featureSelect in 0..<2 as Range<UInt64> {
            h.setCommon(0x00, .dword, featureSelect); h.setCommon(0x08, .dword, featureSelect)
            common += [h.common(0x04, .dword), h.common(0x0C, .dword)]
        }
        for queue in 0..<h.function.device.queueMaximumSizes.count {
            h.setCommon(0x16, .word, UInt64(queue))
            common += queueFields.map { h.common($0.0, $0.1) }
        }
        h.setCommon(0x16, .word, selector)
        let device = (0..<h.function.device.configurationSize).map { h.function.barRead(4, offset: 0x2000 + UInt64($0), width: .byte) }
        let msix = stride(from: UInt64(0), to: 0x40, by: 4).map { h.function.barRead(1, offset: $0, width: .dword) }
            + [h.function.barRead(1, offset: 0x800, width: .qword)]
        return config + common + device + msix
    }

    /// The rings as the device left them: used index and elements, and avail_event.
    func rings(_ h: VirtioDriverHarness) -> [UInt64] {
        [UInt64(h.usedIndex), UInt64(h.availableEvent)]
            + (0..<Int(h.queueSize)).flatMap { [UInt64(h.usedElement($0).id), UInt64(h.usedElement($0).length)] }
    }

    @Test(arguments: ["rng", "reply"])
    func aRestoredDeviceContinuesFromTheSameQueuePosition(device kind: String) throws {
        let make = { () throws -> VirtioDriverHarness in
            try VirtioDriverHarness(device: kind == "rng" ? VirtioEntropyDevice(name: "rng") : ReplyDevice(replyLength: 12))
        }
        let original = try make(), fresh = try make()
        #expect(original.initialize() == 0xF)
        for i in 0..<4 { original.writeDescriptor(i, address: original.buffers + UInt64(i) * 64, length: 64, flags: 2) }
        // Two buffers used; EVENT_IDX asks for an interrupt only past used entry 2.
        original.makeAvailable(0)
        original.kick()
        original.setUsedEvent(2)
        original.makeAvailable(1)
        original.kick()
        #expect(original.usedIndex == 2 && original.interrupts.messages.count == 1)
        setConfigGenerationAndSelectors(original)

        fresh.makeAvailable(0); fresh.makeAvailable(1)  // the driver's own count of what it posted
        fresh.ram.bytes.copyMemory(from: UnsafeRawBufferPointer(original.ram.bytes))
        try fresh.function.restore(try transported(original.function.snapshot()))
        #expect(registerView(fresh) == registerView(original))
        #expect(rings(fresh) == rings(original))

        // The driver took buffers 0 and 1 (marks them), then posts the next one having asked
        // for an interrupt only past used entry 5: no interrupt for used entry 3 (EVENT_IDX
        // state carried over), the same used slot (2), buffers 0 and 1 left alone.
        let sentBefore = (original.interrupts.messages.count, fresh.interrupts.messages.count)
        for h in [original, fresh] {
            h.ram.store(UInt64(0xEEEE_EEEE_EEEE_EEEE), at: h.buffers)
            h.ram.store(UInt64(0xEEEE_EEEE_EEEE_EEEE), at: h.buffers + 64)
            h.setUsedEvent(5)
            h.makeAvailable(2)
            h.kick()
        }
        #expect(fresh.usedIndex == 3 && fresh.usedElement(2) == original.usedElement(2))
        #expect(rings(fresh) == rings(original))
        #expect(fresh.ram.load(UInt64.self, at: fresh.buffers) == 0xEEEE_EEEE_EEEE_EEEE)
        #expect(fresh.ram.load(UInt64.self, at: fresh.buffers + 64) == 0xEEEE_EEEE_EEEE_EEEE)
        #expect(fresh.ram.read(fresh.buffers + 128, 12).contains { $0 != 0 })
        #expect(fresh.interrupts.messages.count == sentBefore.1 && original.interrupts.messages.count == sentBefore.0)
        // used_event 3 is passed by the fourth: both interrupt through the same vector.
        for h in [original, fresh] {
            h.setUsedEvent(3)
            h.makeAvailable(3)
            h.kick()
        }
        #expect(rings(fresh) == rings(original))
        #expect(Array(fresh.interrupts.messages.dropFirst(sentBefore.1)) == Array(original.interrupts.messages.dropFirst(sentBefore.0)))
        #expect(fresh.interrupts.messages.count == sentBefore.1 + 1)
        if kind == "reply" {
            let sameRAM = fresh.ram.read(0, TestRAM.size) == original.ram.read(0, TestRAM.size)
            #expect(sameRAM, "a deterministic device leaves the same guest RAM")
        }
        #expect(fresh.readISR() == original.readISR())
        #expect(registerView(fresh) == registerView(original))
    }

    /// Leaves non-default selectors and a driver feature word behind, as a driver mid-probe.
    func setConfigGenerationAndSelectors(_ h: VirtioDriverHarness) {
        h.setCommon(0x00, .dword, 1)
        h.setCommon(0x08, .dword, 1)
        h.setCommon(0x16, .word, 0)
    }

    /// A snapshot taken before DRIVER_OK (features accepted, queue programmed but not
    /// enabled) comes back stopped, and the driver can finish the setup on the restored one.
    @Test func aDeviceMidSetupComesBackMidSetup() throws {
        let original = try VirtioDriverHarness(device: ReplyDevice(replyLength: 8))
        let fresh = try VirtioDriverHarness(device: ReplyDevice(replyLength: 8))
        original.setCommon(0x14, .byte, 1)
        original.setCommon(0x14, .byte, 3)
        original.setCommon(0x18, .word, 4)
        original.setCommon(0x20, .dword, original.descriptors)
        try fresh.function.restore(try transported(original.function.snapshot()))
        #expect(registerView(fresh) == registerView(original))
        for h in [original, fresh] {
            h.writeDescriptor(0, address: h.buffers, length: 16, flags: 2)
            h.makeAvailable(0)
            #expect(h.initialize(queueSize: 4) == 0xF)
            h.kick()
        }
        #expect(rings(fresh) == rings(original) && fresh.usedIndex == 1)
    }

    /// Another device type, another transport layout, or a queue size no split ring can have:
    /// refused, and the function stays as it was.
    @Test func foreignOrImpossibleSnapshotsAreRefused() throws {
        let target = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"))
        #expect(target.initialize() == 0xF)
        let before = registerView(target)
        let reply = try VirtioDriverHarness(device: ReplyDevice(replyLength: 1))
        let conventional = try VirtioDriverHarness(device: VirtioEntropyDevice(name: "rng"), express: false)
        #expect(throws: DeviceStateError.self) { try target.function.restore(reply.function.snapshot()) }
        #expect(throws: DeviceStateError.self) { try target.function.restore(conventional.function.snapshot()) }
        let encoded = try JSONEncoder().encode(target.function.snapshot())
        var json = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        var common = try #require(json["common"] as? [String: Any])
        var queues = try #require(common["queues"] as? [[String: Any]])
        queues[0]["size"] = 6
        common["queues"] = queues
        json["common"] = common
        let impossible = try JSONDecoder().decode(VirtioPCIFunction.Snapshot.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(throws: DeviceStateError.invalidValue(device: "vdev", reason: "queue 0 size 6 is not a power of two up to 8")) {
            try target.function.restore(impossible)
        }
        #expect(registerView(target) == before)
    }
}

func transported<S: Codable>(_ snapshot: S) throws -> S {
    try JSONDecoder().decode(S.self, from: try JSONEncoder().encode(snapshot))
}
