import Foundation
import Testing
import VMMBase
@testable import VirtioNet

/// virtio-net's state as a snapshot carries it is untrusted input: what the device could never
/// hold (QEMU's 64-entry MAC tables, 802.1Q's 12-bit VLAN ids, the offered queue pairs, a MAC
/// that is not six octets) is refused by name, and what it can hold survives JSON.
struct VirtioNetOwnStateTests {
    let device = VirtioNetDevice(name: "net0", mac: MACAddress("52:54:00:12:34:56")!, backend: [], pairs: 2)

    /// The device's state, changed, after a trip through JSON (as a snapshot file gives it).
    func decoded(_ change: (inout [String: Any]) -> Void) throws -> ModelState {
        let taken = try #require(device.snapshotState())
        var json = try #require(try JSONSerialization.jsonObject(with: try JSONEncoder().encode(taken)) as? [String: Any])
        var fields = try #require(json["state"] as? [String: Any])
        change(&fields)
        json["state"] = fields
        return try JSONDecoder().decode(ModelState.self, from: try JSONSerialization.data(withJSONObject: json))
    }

    @Test func aDevicesOwnStateSurvivesJSON() throws {
        let taken = try #require(device.snapshotState())
        let decoded = try JSONDecoder().decode(ModelState.self, from: try JSONEncoder().encode(taken))
        #expect(decoded == taken)
        _ = try device.prepareRestore(decoded)
        // The MAC is written as people read it.
        let object = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(taken)) as? [String: Any]
        #expect((object?["state"] as? [String: Any])?["mac"] as? String == "52:54:00:12:34:56")
    }

    @Test func impossibleValuesAreRefusedByName() throws {
        let entry = "02:00:00:00:00:01"
        let cases: [(String, (inout [String: Any]) -> Void)] = [
            ("unicastTable has 65 entries, more than 64", { $0["unicastTable"] = Array(repeating: entry, count: 65) }),
            ("VLAN id 4096 is past 4095", { $0["vlans"] = [5, 4096] }),
            ("activePairs 3 is not in 1...2", { $0["activePairs"] = 3 }),
        ]
        for (reason, change) in cases {
            #expect(throws: DeviceStateError.invalidValue(device: "net0", reason: reason)) {
                _ = try device.prepareRestore(try decoded(change))
            }
        }
        // What does not decode as the state at all: a short MAC, a missing flag, a VLAN id past 16 bits.
        let undecodable: [(inout [String: Any]) -> Void] = [
            { $0["mac"] = "52:54:00:12:34" }, { $0["promiscuous"] = nil }, { $0["vlans"] = [70000] },
        ]
        for change in undecodable {
            #expect {
                _ = try device.prepareRestore(try decoded(change))
            } throws: { error in
                guard case .invalidValue(let name, let reason)? = error as? DeviceStateError else { return false }
                return name == "net0" && reason.hasPrefix("the virtio-net state does not decode")
            }
        }
        #expect(throws: DeviceStateError.self) { _ = try device.prepareRestore(nil) }
        #expect(throws: DeviceStateError.self) { _ = try device.prepareRestore(ModelState(model: "virtio-blk", [1])) }
    }
}
