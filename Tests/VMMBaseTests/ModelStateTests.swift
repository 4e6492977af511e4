import Foundation
import Testing
import VMMBase

/// A model's state through `ModelState` and JSON. Oracle: Foundation's JSONDecoder decoding
/// the same JSON straight into the snapshot type; a decoded state must come back as that.
struct ModelStateTests {
    /// The shapes device snapshots use: 64-bit values past Int64, optionals in arrays and
    /// fields, enums with payloads, nested structs, byte arrays, dictionaries, sets.
    struct Snapshot: Sendable, Hashable, Codable {
        enum Kind: Sendable, Hashable, Codable { case off, on(vector: UInt16), masked(UInt64, Bool) }
        struct Cursor: Sendable, Hashable, Codable { var next: UInt16; var wrapped: Bool }
        var address: UInt64
        var signed: Int32
        var ratio: Double
        var name: String
        var bytes: [UInt8]
        var cursors: [Cursor?]
        var optional: Cursor?
        var kinds: [Kind]
        var byIndex: [Int: String]
        var ids: Set<UInt16>
    }

    static let sample = Snapshot(address: 0xFFFF_FFFF_FFFF_F000, signed: -7, ratio: 0.25, name: "rp1", bytes: [0, 0x80, 0xFF],
                                 cursors: [Cursor(next: 3, wrapped: false), nil, Cursor(next: 0xFFFF, wrapped: true)],
                                 optional: nil, kinds: [.off, .on(vector: 2), .masked(UInt64.max, true)],
                                 byIndex: [1: "a", 40: "b"], ids: [5, 4095])
    typealias Cursor = Snapshot.Cursor

    @Test func aDecodedStateRestoresAsWhatFoundationDecodes() throws {
        let state = ModelState(model: "test-model", Self.sample)
        let json = try JSONEncoder().encode(state)
        let decoded = try JSONDecoder().decode(ModelState.self, from: json)
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        let direct = try JSONDecoder().decode(Snapshot.self, from: try JSONSerialization.data(withJSONObject: try #require(object["state"])))
        #expect(direct == Self.sample)
        #expect(try decoded.snapshot(as: Snapshot.self, model: "test-model", device: "d") == direct)
        #expect(decoded == state && state == decoded && decoded.hashValue == state.hashValue)
        var other = Self.sample
        other.cursors[1] = Cursor(next: 1, wrapped: false)
        #expect(decoded != ModelState(model: "test-model", other))
        // Encoded again, the decoded form gives the same JSON value.
        let again = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(decoded)) as? NSDictionary
        #expect(again == object as NSDictionary)
    }

    @Test func anotherModelsOrABrokenStateIsRefused() throws {
        let state = ModelState(model: "test-model", Self.sample)
        #expect(throws: DeviceStateError.layoutMismatch(device: "d", reason: "a snapshot of a test-model, this is a other-model")) {
            _ = try state.snapshot(as: Snapshot.self, model: "other-model", device: "d")
        }
        var json = try #require(try JSONSerialization.jsonObject(with: try JSONEncoder().encode(state)) as? [String: Any])
        var fields = try #require(json["state"] as? [String: Any])
        fields["bytes"] = [1, 256]  // not a byte
        json["state"] = fields
        let broken = try JSONDecoder().decode(ModelState.self, from: try JSONSerialization.data(withJSONObject: json))
        #expect {
            _ = try broken.snapshot(as: Snapshot.self, model: "test-model", device: "d")
        } throws: { error in
            guard case .invalidValue(let device, _)? = error as? DeviceStateError else { return false }
            return device == "d"
        }
    }
}
