import Foundation
import Testing
import VMMBase
@testable import VirtioNet

/// virtio-net's state as a snapshot carries it is untrusted input: what the device could never
/// hold (QEMU's 64-entry MAC tables, 802.1Q's 12-bit VLAN ids, the offered queue pairs) is
/// refused by name, and what it can hold survives JSON.
struct VirtioNetStateValueTests {
    let device = VirtioNetDevice(name: "net0", mac: MACAddress("52:54:00:12:34:56")!, backend: [], pairs: 2)

    func state(_ change: (inout [String: StateValue]) -> Void) throws -> StateValue {
        guard case .object(var fields) = try #require(device.snapshotState()) else { throw TestFailure("not an object") }
        change(&fields)
        return .object(fields)
    }

    struct TestFailure: Error { let reason: String; init(_ reason: String) { self.reason = reason } }

    @Test func aDevicesOwnStateSurvivesJSON() throws {
        let taken = try #require(device.snapshotState())
        let decoded = try JSONDecoder().decode(StateValue.self, from: try JSONEncoder().encode(taken))
        #expect(decoded == taken)
        _ = try device.prepareRestore(decoded)
    }

    @Test func impossibleValuesAreRefusedByName() throws {
        let entry = StateValue.bytes([0x02, 0, 0, 0, 0, 1])
        let cases: [(String, (inout [String: StateValue]) -> Void)] = [
            ("unicastTable has 65 entries, more than 64", { $0["unicastTable"] = .array(Array(repeating: entry, count: 65)) }),
            ("state.vlans[0] is not an integer in 0...4095", { $0["vlans"] = .array([.integer(4096)]) }),
            ("state.activePairs is not an integer in 1...2", { $0["activePairs"] = .integer(3) }),
            ("state.mac is not 6 bytes", { $0["mac"] = .bytes([1, 2, 3]) }),
            ("state.promiscuous is missing", { $0["promiscuous"] = nil }),
        ]
        for (reason, change) in cases {
            #expect(throws: DeviceStateError.invalidValue(device: "net0", reason: reason)) {
                _ = try device.prepareRestore(try state(change))
            }
        }
        #expect(throws: DeviceStateError.self) { _ = try device.prepareRestore(nil) }
    }
}
