/// One device model's snapshot where the container holds models of every kind (a machine's
/// placed functions): the model's tag and its `DeviceStateSnapshotting.Snapshot`, encoded as
/// that snapshot's own form under "state". Taken and restored in one process it stays the
/// typed value (nothing is encoded); decoded, it holds the state as a `StateValue` until the
/// model that knows its type restores it.
public struct ModelState: Sendable, Hashable, Codable {
    /// Which model took it ("pci-testdev", "virtio-pci" ...); a restore refuses another's.
    public let model: String
    private let payload: Payload

    private enum Payload: Sendable {
        case typed(any Sendable & Hashable & Codable)
        case decoded(StateValue)
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
                return try Snapshot(from: StateValueDecoder(value: value, codingPath: []))
            } catch {
                throw .invalidValue(device: device, reason: "the \(model) state does not decode: \(error)")
            }
        }
    }

    private enum CodingKeys: String, CodingKey { case model, state }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        model = try container.decode(String.self, forKey: .model)
        payload = .decoded(try container.decode(StateValue.self, forKey: .state))
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
        case (.decoded(let a), .decoded(let b)): return a == b
        case (.typed(let a), .decoded(let b)), (.decoded(let b), .typed(let a)): return Self.decoded(b, equals: a)
        }
    }

    private static func decoded<T: Hashable & Decodable>(_ value: StateValue, equals typed: T) -> Bool {
        (try? T(from: StateValueDecoder(value: value, codingPath: []))) == typed
    }

    /// By model only: a decoded state and its typed twin must hash alike.
    public func hash(into hasher: inout Hasher) { hasher.combine(model) }
}

/// Decodes any `Decodable` from a `StateValue` (what a decoded `ModelState` holds).
struct StateValueDecoder: Decoder {
    let value: StateValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy _: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let fields) = value else { throw mismatch([String: StateValue].self, value, codingPath) }
        return KeyedDecodingContainer(Keyed<Key>(fields: fields, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else { throw mismatch([StateValue].self, value, codingPath) }
        return Unkeyed(elements: elements, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { Single(value: value, codingPath: codingPath) }

    private struct Index: CodingKey {
        let intValue: Int?
        var stringValue: String { "\(intValue ?? 0)" }
        init(_ index: Int) { intValue = index }
        init?(stringValue: String) { nil }
        init?(intValue: Int) { self.intValue = intValue }
    }

    private struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let fields: [String: StateValue]
        let codingPath: [any CodingKey]
        var allKeys: [Key] { fields.keys.compactMap { Key(stringValue: $0) } }

        func contains(_ key: Key) -> Bool { fields[key.stringValue] != nil }

        func child(_ key: Key) throws -> StateValueDecoder {
            guard let field = fields[key.stringValue] else {
                throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no \(key.stringValue)"))
            }
            return StateValueDecoder(value: field, codingPath: codingPath + [key])
        }

        func decodeNil(forKey key: Key) throws -> Bool { try child(key).value == .null }
        func decode<T: Decodable>(_: T.Type, forKey key: Key) throws -> T { try T(from: child(key)) }
        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type,
                                                   forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try child(key).container(keyedBy: type)
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer { try child(key).unkeyedContainer() }
        func superDecoder() throws -> any Decoder { try child(Key(stringValue: "super")!) }
        func superDecoder(forKey key: Key) throws -> any Decoder { try child(key) }
    }

    private struct Unkeyed: UnkeyedDecodingContainer {
        let elements: [StateValue]
        let codingPath: [any CodingKey]
        var currentIndex = 0
        var count: Int? { elements.count }
        var isAtEnd: Bool { currentIndex >= elements.count }

        init(elements: [StateValue], codingPath: [any CodingKey]) {
            self.elements = elements
            self.codingPath = codingPath
        }

        mutating func next() throws -> StateValueDecoder {
            guard !isAtEnd else {
                throw DecodingError.valueNotFound(StateValue.self, .init(codingPath: codingPath, debugDescription: "past the array's end"))
            }
            defer { currentIndex += 1 }
            return StateValueDecoder(value: elements[currentIndex], codingPath: codingPath + [Index(currentIndex)])
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, elements[currentIndex] == .null else { return false }
            currentIndex += 1
            return true
        }
        mutating func decode<T: Decodable>(_: T.Type) throws -> T { try T(from: next()) }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            try next().container(keyedBy: type)
        }
        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
        mutating func superDecoder() throws -> any Decoder { try next() }
    }

    private struct Single: SingleValueDecodingContainer {
        let value: StateValue
        let codingPath: [any CodingKey]

        func decodeNil() -> Bool { value == .null }
        func decode(_: Bool.Type) throws -> Bool {
            guard case .bool(let flag) = value else { throw mismatch(Bool.self, value, codingPath) }
            return flag
        }
        func decode(_: String.Type) throws -> String {
            guard case .string(let text) = value else { throw mismatch(String.self, value, codingPath) }
            return text
        }
        func decode(_: Double.Type) throws -> Double {
            switch value {
            case .double(let number): return number
            case .integer(let number): return Double(number)
            case .unsigned(let number): return Double(number)
            default: throw mismatch(Double.self, value, codingPath)
            }
        }
        func decode(_: Float.Type) throws -> Float { Float(try decode(Double.self)) }
        func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
            let exact: T? = switch value {
            case .integer(let number): T(exactly: number)
            case .unsigned(let number): T(exactly: number)
            default: nil
            }
            guard let exact else { throw mismatch(T.self, value, codingPath) }
            return exact
        }
        func decode(_ type: Int.Type) throws -> Int { try integer(type) }
        func decode(_ type: Int8.Type) throws -> Int8 { try integer(type) }
        func decode(_ type: Int16.Type) throws -> Int16 { try integer(type) }
        func decode(_ type: Int32.Type) throws -> Int32 { try integer(type) }
        func decode(_ type: Int64.Type) throws -> Int64 { try integer(type) }
        func decode(_ type: UInt.Type) throws -> UInt { try integer(type) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { try integer(type) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { try integer(type) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { try integer(type) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { try integer(type) }
        func decode<T: Decodable>(_: T.Type) throws -> T { try T(from: StateValueDecoder(value: value, codingPath: codingPath)) }
    }
}

private func mismatch(_ type: Any.Type, _ value: StateValue, _ codingPath: [any CodingKey]) -> DecodingError {
    .typeMismatch(type, .init(codingPath: codingPath, debugDescription: "found \(value)"))
}
