import Foundation

/// One device model's snapshot where the container holds models of every kind (a machine's
/// placed functions): the model's tag and its `DeviceStateSnapshotting.Snapshot`, encoded as
/// that snapshot's own form under "state". Taken and restored in one process it stays the
/// typed value (nothing is encoded); decoded, it holds the state as JSON until the model that
/// knows its type decodes it with Foundation's decoder.
public struct ModelState: Sendable, Hashable, Codable {
    /// Which model took it ("pci-testdev", "virtio-pci" ...); a restore refuses another's.
    public let model: String
    private let payload: Payload

    private enum Payload: Sendable {
        case typed(any Sendable & Hashable & Codable)
        case decoded(JSONValue)
    }

    public init<Snapshot: Sendable & Hashable & Codable>(model: String, _ snapshot: Snapshot) {
        self.model = model
        payload = .typed(snapshot)
    }

    /// The snapshot as `Snapshot`, for a model tagged `model` (`device` names it in a refusal).
    public func snapshot<Snapshot: Sendable & Hashable & Codable>(as _: Snapshot.Type, model expected: String,
                                                                  device: String) throws(DeviceStateError) -> Snapshot {
        guard model == expected else {
            throw .layoutMismatch(device: device, reason: "a snapshot of a \(model), this is a \(expected)")
        }
        switch payload {
        case .typed(let value):
            guard let snapshot = value as? Snapshot else { throw .layoutMismatch(device: device, reason: "another \(model) snapshot type") }
            return snapshot
        case .decoded(let value):
            do {
                return try Self.decode(Snapshot.self, from: value)
            } catch {
                throw .invalidValue(device: device, reason: "the \(model) state does not decode: \(error)")
            }
        }
    }

    private enum CodingKeys: String, CodingKey { case model, state }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        model = try container.decode(String.self, forKey: .model)
        payload = .decoded(try container.decode(JSONValue.self, forKey: .state))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(model, forKey: .model)
        switch payload {
        case .typed(let value): try value.encode(to: container.superEncoder(forKey: .state))
        case .decoded(let value): try container.encode(value, forKey: .state)
        }
    }

    /// Equal when the same model's states are: a decoded state is compared as the type of a
    /// typed one (two decoded ones as their values).
    public static func == (lhs: ModelState, rhs: ModelState) -> Bool {
        guard lhs.model == rhs.model else { return false }
        switch (lhs.payload, rhs.payload) {
        case (.typed(let a), .typed(let b)): return AnyHashable(a) == AnyHashable(b)
        case (.decoded(let a), .decoded(let b)): return Self.canonical(a) == Self.canonical(b)
        case (.typed(let a), .decoded(let b)), (.decoded(let b), .typed(let a)): return Self.decoded(b, equals: a)
        }
    }

    private static func decoded<T: Hashable & Decodable>(_ value: JSONValue, equals typed: T) -> Bool {
        (try? decode(T.self, from: value)) == typed
    }

    /// The JSON text again, for Foundation's decoder: the decoding rules stay Foundation's.
    private static func decode<T: Decodable>(_: T.Type, from value: JSONValue) throws -> T {
        try JSONDecoder().decode(T.self, from: JSONEncoder().encode(value))
    }

    /// Members in one order, so two decodings of the same state compare equal.
    private static func canonical(_ value: JSONValue) -> Data? {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return try? encoder.encode(value)
    }

    /// By model only: a decoded state and its typed twin must hash alike.
    public func hash(into hasher: inout Hasher) { hasher.combine(model) }
}
