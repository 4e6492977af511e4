import Foundation
import PCI
import PCIPassthrough
import Testing
import VFIO
import VMMBase

/// The passthrough overlay through snapshot and restore, over the VFIO twin: an igb whose
/// guest placed its BARs, enabled decoding and bus mastering, programmed MSI-X vectors and
/// masked one, restored into a fresh assignment of another twin of the same device, answers
/// every config dword and every MSI-X table and PBA read as the original, and VFIO gets the
/// same interrupt set-up the guest's own writes gave the original.
@Suite("an assigned igb's overlay through snapshot and restore")
struct AssignedPCIFunctionSnapshotTests {
    /// What the guest reads: every config dword (4 KiB), the MSI-X table (10 entries) and PBA.
    func guestView(_ igb: AssignedIGB) -> [UInt64] {
        stride(from: 0, to: 4096, by: 4).map { UInt64(igb.function.configRead($0, width: .dword)) }
            + stride(from: UInt64(0), to: 0xA0, by: 4).map { igb.function.barRead(3, offset: $0, width: .dword) }
            + [igb.function.barRead(3, offset: 0x2000, width: .qword)]
    }

    /// VFIO's requests with eventfd numbers replaced by their kind (each twin has its own fds).
    func requestShapes(_ requests: some Sequence<VFIOIRQRequest>) -> [String] {
        requests.map { r in
            switch r.operation {
            case .trigger(let fds): "\(r.index) trigger \(fds.count)"
            case .unmaskOnEventfd: "\(r.index) resample"
            default: "\(r.index) \(r.operation)"
            }
        }
    }

    /// The routes' last word per vector: message and mask.
    func routes(_ igb: AssignedIGB) throws -> [String] {
        let vectors = try #require(igb.routing.lastVectors)
        let updates = vectors.updates
        return (0..<vectors.fds.count).map { v in
            updates.last { $0.vector == v }.map { "\(v): \($0.message) masked \($0.masked)" } ?? "\(v): none"
        }
    }

    @Test("a restored overlay answers as the original and VFIO's interrupts follow it")
    func restoredOverlayAnswersAsTheOriginal() throws {
        let original = try AssignedIGB(), fresh = try AssignedIGB()
        let f = original.function
        _ = f.configWrite(Reg.bar0, width: .dword, value: 0xFE00_0000)
        _ = f.configWrite(Reg.bar0 + 12, width: .dword, value: 0xFE04_0000)  // BAR 3, the MSI-X BAR
        _ = f.configWrite(Reg.interruptLine, width: .byte, value: 10)
        _ = f.configWrite(Reg.command, width: .word, value: 0x0006)
        original.program(vector: 2, message: MSIMessage(address: 0xFEE0_1000, data: 0x42))
        original.program(vector: 5, message: MSIMessage(address: 0xFEE0_2000, data: 0x45))
        f.barWrite(3, offset: 5 * 16 + 12, width: .dword, value: 1)  // vector 5 masked
        original.setMSIX(enabled: true)
        let beforeRestore = fresh.irqCalls.count

        try fresh.function.restore(try transported(original.function.snapshot()))
        #expect(guestView(fresh) == guestView(original))
        #expect(try routes(fresh) == routes(original))
        #expect(requestShapes(fresh.irqCalls.dropFirst(beforeRestore)) == requestShapes(original.irqCalls.suffix(2)))

        // The same further writes act alike: unmask 5, mask 2, then MSI-X off (INTx back).
        for igb in [original, fresh] {
            igb.function.barWrite(3, offset: 5 * 16 + 12, width: .dword, value: 0)
            igb.function.barWrite(3, offset: 2 * 16 + 12, width: .dword, value: 1)
        }
        #expect(try routes(fresh) == routes(original))
        let callsBefore = (original.irqCalls.count, fresh.irqCalls.count)
        for igb in [original, fresh] { igb.setMSIX(enabled: false) }
        #expect(requestShapes(fresh.irqCalls.dropFirst(callsBefore.1)) == requestShapes(original.irqCalls.dropFirst(callsBefore.0)))
        #expect(guestView(fresh) == guestView(original))
    }

    @Test("a snapshot of another layout is refused and the overlay stays as it was")
    func anotherLayoutIsRefused() throws {
        let igb = try AssignedIGB()
        _ = igb.function.configWrite(Reg.command, width: .word, value: 0x0002)
        let before = guestView(igb)
        let encoded = try JSONEncoder().encode(igb.function.snapshot())
        var json = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        var other = try #require(json["cells"] as? [String: Any])
        other["size"] = 256
        json["cells"] = other
        if let foreign = try? JSONDecoder().decode(AssignedPCIFunction.Snapshot.self, from: JSONSerialization.data(withJSONObject: json)) {
            #expect(throws: DeviceStateError.self) { try igb.function.restore(foreign) }
        } else {
            Issue.record("the edited snapshot should still decode")
        }
        #expect(guestView(igb) == before)
    }
}

func transported<S: Codable>(_ snapshot: S) throws -> S {
    try JSONDecoder().decode(S.self, from: try JSONEncoder().encode(snapshot))
}
