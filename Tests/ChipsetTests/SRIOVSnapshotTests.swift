import Chipset
import Foundation
import PCI
import Testing
import VMMBase

/// SR-IOV state through snapshot and restore: a PF restored into a fresh instance brings its
/// VFs back at the same routing IDs, each with the config and BAR state the guest left in it.
@Suite struct SRIOVSnapshotTests {
    /// Everything a guest can read from the PF's link: which routing offsets answer, and each
    /// answering function's config dwords and scratch BAR, read through the guest's accessors.
    func linkView(_ pf: PCITestDevice) -> [String] {
        (0..<16).map { offset in
            guard let function = offset == 0 ? pf : pf.virtualFunction(atRoutingOffset: offset) else { return "\(offset): none" }
            return "\(offset): " + answers(function, everyConfigDword(function) + everyBARDword(0, size: 256)).joined(separator: ",")
        } + pf.enabledVirtualFunctions.map { "VF \($0.index) at +\($0.routingOffset)" }
    }

    /// NumVFs 5 of 8 enabled with VF memory space on and VF BAR 0 placed; VFs 1, 3 and 5 have
    /// their own command register and scratch bytes written.
    @Test func enabledVirtualFunctionsComeBackWithTheirState() throws {
        let make = { PCITestDevice(name: "pf", sriovMaxVFs: 8) }
        let original = make()
        let sriov = try #require(original.configSnapshot().capability(.extended(ExtendedCapabilityID.sriov))).offset
        _ = answers(original, [.configWrite(sriov + 0x10, .word, 5), .configWrite(sriov + 0x24, .dword, 0xFE00_0000),
                               .configWrite(sriov + 8, .word, 0x19)])  // VF Enable, VF MSE, ARI hierarchy
        for (offset, value) in [(1, 0x11), (3, 0x33), (5, 0x55)] {
            let vf = try #require(original.virtualFunction(atRoutingOffset: offset))
            _ = answers(vf, [.configWrite(Reg.command, .word, 0x0006), .barWrite(0, 0x10, .dword, UInt64(value)),
                             .barWrite(0, 0xFC, .byte, UInt64(value))])
        }
        let before = linkView(original)
        #expect(before.contains { $0.hasPrefix("5: ") && !$0.hasSuffix("none") } && before.contains("6: none"))

        let fresh = make()
        try fresh.restore(try transported(original.snapshot()))
        #expect(linkView(fresh) == linkView(original))

        // The same further accesses act alike: a VF's FLR-free command change, then NumVFs
        // lowered to 2 with VF Enable cycled (dropped VFs come back fresh on both).
        let further: [FunctionAccess] = [.configWrite(sriov + 8, .word, 0x18), .configWrite(sriov + 0x10, .word, 2),
                                         .configWrite(sriov + 8, .word, 0x19)]
        for pf in [original, fresh] {
            _ = pf.virtualFunction(atRoutingOffset: 2).map { answers($0, [.configWrite(Reg.command, .word, 0x0002)]) }
        }
        #expect(linkView(fresh) == linkView(original))
        #expect(answers(fresh, further) == answers(original, further))
        #expect(linkView(fresh) == linkView(original))
        #expect(fresh.enabledVirtualFunctions.map(\.routingOffset) == [1, 2])
    }

    /// A snapshot whose VF states do not match the VFs its SR-IOV registers enable is refused
    /// and the PF, VFs included, stays as it was.
    @Test func aSnapshotWithTheWrongVirtualFunctionCountIsRefused() throws {
        let source = PCITestDevice(name: "a", sriovMaxVFs: 4), target = PCITestDevice(name: "b", sriovMaxVFs: 4)
        let sriov = try #require(source.configSnapshot().capability(.extended(ExtendedCapabilityID.sriov))).offset
        _ = answers(source, [.configWrite(sriov + 0x10, .word, 3), .configWrite(sriov + 8, .word, 0x11)])
        _ = answers(target, [.configWrite(sriov + 0x10, .word, 1), .configWrite(sriov + 8, .word, 0x11)])
        _ = target.virtualFunction(atRoutingOffset: 1).map { answers($0, [.barWrite(0, 0, .dword, 7)]) }
        let before = linkView(target)
        // The PF of another size makes VF states that do not fit: 3 enabled, 2 carried.
        let other = PCITestDevice(name: "c", sriovMaxVFs: 4)
        _ = answers(other, [.configWrite(sriov + 0x10, .word, 2), .configWrite(sriov + 8, .word, 0x11)])
        var json = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(source.snapshot())) as? [String: Any])
        let otherJSON = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(other.snapshot())) as? [String: Any])
        json["virtualFunctions"] = otherJSON["virtualFunctions"]
        let mismatched = try JSONDecoder().decode(PCITestDevice.Snapshot.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(throws: DeviceStateError.self) { try target.restore(mismatched) }
        #expect(linkView(target) == before)
    }
}
