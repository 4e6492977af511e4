/// A part of a snapshot whose type the container does not know (a virtio device's own state
/// inside the transport's snapshot): JSON's kinds with exact integers, so it encodes as
/// readable JSON and decodes without knowing the model. The model converts it to and from
/// its own type and refuses what it could never hold.
public indirect enum StateValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case integer(Int64)
    /// Past Int64's range only (a 64-bit address, an all-ones mask).
    case unsigned(UInt64)
    case double(Double)
    case string(String)
    case array([StateValue])
    case object([String: StateValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(UInt64.self) {
            self = .unsigned(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([StateValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: StateValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .unsigned(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Bytes as an array of integers.
    public static func bytes(_ bytes: [UInt8]) -> StateValue { .array(bytes.map { .integer(Int64($0)) }) }

    /// Reads a value back, naming what does not fit for `device`'s refusal.
    public struct Reader {
        public let value: StateValue
        public let device: String
        let path: String

        public init(_ value: StateValue, device: String) {
            self.init(value, device: device, path: "state")
        }

        init(_ value: StateValue, device: String, path: String) {
            self.value = value
            self.device = device
            self.path = path
        }

        func refuse(_ expected: String) -> DeviceStateError { .invalidValue(device: device, reason: "\(path) is not \(expected)") }

        /// The field `key` of an object.
        public func field(_ key: String) throws(DeviceStateError) -> Reader {
            guard case .object(let fields) = value else { throw refuse("an object") }
            guard let field = fields[key] else { throw .invalidValue(device: device, reason: "\(path).\(key) is missing") }
            return Reader(field, device: device, path: "\(path).\(key)")
        }

        /// The field `key` of an object, nil when it has none.
        public func fieldIfPresent(_ key: String) throws(DeviceStateError) -> Reader? {
            guard case .object(let fields) = value else { throw refuse("an object") }
            return fields[key] == nil ? nil : try field(key)
        }

        public func bool() throws(DeviceStateError) -> Bool {
            guard case .bool(let flag) = value else { throw refuse("true or false") }
            return flag
        }

        /// An integer in `range`.
        public func integer(in range: ClosedRange<Int>) throws(DeviceStateError) -> Int {
            guard case .integer(let number) = value, let exact = Int(exactly: number), range.contains(exact) else {
                throw refuse("an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return exact
        }

        public func array() throws(DeviceStateError) -> [Reader] {
            guard case .array(let elements) = value else { throw refuse("an array") }
            return elements.enumerated().map { Reader($0.element, device: device, path: "\(path)[\($0.offset)]") }
        }

        /// An array of `count` bytes (any count when nil).
        public func bytes(count: Int? = nil) throws(DeviceStateError) -> [UInt8] {
            var bytes: [UInt8] = []
            for element in try array() { bytes.append(UInt8(try element.integer(in: 0...255))) }
            if let count, bytes.count != count { throw refuse("\(count) bytes") }
            return bytes
        }
    }
}
