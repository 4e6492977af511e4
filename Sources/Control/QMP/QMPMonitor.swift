import Foundation
import Machine
import Synchronization
import VMMBase

/// Switchyard's own version, reported in QEMU's shape by the QMP greeting and query-version.
public enum SwitchyardVersion {
    public static let major: Int64 = 0
    public static let minor: Int64 = 1
    public static let micro: Int64 = 0
    public static var text: String { "\(major).\(minor).\(micro)" }
}

/// A QMP error: QEMU's class names and messages.
public struct QMPError: Error, Hashable, Sendable {
    public enum ErrorClass: String, Sendable {
        case genericError = "GenericError"
        case commandNotFound = "CommandNotFound"
        case deviceNotFound = "DeviceNotFound"
    }

    public var errorClass: ErrorClass
    public var desc: String

    public init(_ errorClass: ErrorClass, _ desc: String) {
        self.errorClass = errorClass
        self.desc = desc
    }

    /// A GenericError.
    public init(_ desc: String) { self.init(.genericError, desc) }

    public var json: JSONValue { ["class": .string(errorClass.rawValue), "desc": .string(desc)] }
}

/// One client of a QMP monitor: it must negotiate capabilities before other commands run,
/// and only negotiated clients receive events.
public final class QMPSession: Sendable {
    let connection: SocketConnection?
    private let negotiated = Mutex(false)
    /// Replies and events for a session without a socket (tests drive the monitor directly).
    private let captured = Mutex<[String]>([])

    init(connection: SocketConnection?) { self.connection = connection }

    public var isNegotiated: Bool { negotiated.withLock { $0 } }
    func setNegotiated() { negotiated.withLock { $0 = true } }

    @discardableResult
    func send(_ value: JSONValue, _ delivery: SocketConnection.Delivery = .reply) -> Bool {
        let line = value.serialized + "\n"
        if let connection { return connection.write(line, delivery) }
        captured.withLock { $0.append(line) }
        return true
    }

    /// Lines sent to a socketless session, taken.
    public func takeOutput() -> [String] { captured.withLock { let o = $0; $0.removeAll(); return o } }
}

/// The QMP monitor (QEMU's docs/interop/qmp-spec.rst): a JSON greeting, capability
/// negotiation, commands with QEMU's argument checking and error classes, and events to every
/// negotiated client. Several clients can be connected at once.
public final class QMPMonitor: Sendable {
    public let controller: VMController
    private let sessions = Mutex<[ObjectIdentifier: QMPSession]>([:])
    private let listenerToken = Mutex<Int?>(nil)
    /// The largest JSON text a client may send.
    public let messageLimit: Int
    /// query-pci answers, shared among clients asking at once.
    let pciQuery: FreshResultSharing<JSONValue>

    public init(controller: VMController, messageLimit: Int = 1 << 20) {
        self.controller = controller
        self.messageLimit = messageLimit
        pciQuery = FreshResultSharing { [machine = controller.machine] in QueryPCI.info(machine) }
        let token = controller.machine.addEventListener { [weak self] event in self?.publish(event) }
        listenerToken.withLock { $0 = token }
        controller.observeResets { [weak self] outcome in self?.publish(outcome) }
        controller.observeRunState { [weak self] old, new in self?.publish(runState: old, new) }
    }

    deinit {
        if let token = listenerToken.withLock({ $0 }) { controller.machine.removeEventListener(token) }
    }

    var machine: Machine { controller.machine }

    // MARK: Sessions

    /// A session not bound to a socket: `handle(_:in:)` and `takeOutput()` drive it.
    public func openSession() -> QMPSession {
        let session = QMPSession(connection: nil)
        sessions.withLock { $0[ObjectIdentifier(session)] = session }
        session.send(greeting)
        return session
    }

    public func closeSession(_ session: QMPSession) {
        _ = sessions.withLock { $0.removeValue(forKey: ObjectIdentifier(session)) }
    }

    /// Serves one client until it disconnects (or the controller asks to exit). Garbage gets
    /// one error per line or JSON text; a client that sends nothing but garbage for
    /// `garbageLimit` messages in a row, or more than four message limits of it, is disconnected.
    public func serve(_ connection: SocketConnection) {
        let session = QMPSession(connection: connection)
        sessions.withLock { $0[ObjectIdentifier(session)] = session }
        defer { closeSession(session) }
        guard session.send(greeting) else { return }
        var splitter = JSONStreamSplitter(limit: messageLimit)
        var garbage = 0
        while let bytes = connection.read() {
            splitter.append(bytes)
            while let item = splitter.next() {
                let reply: JSONValue?
                switch item {
                case .error(let message):
                    garbage += 1
                    reply = ["error": QMPError(.genericError, "JSON parse error, \(message)").json]
                case .text(let text):
                    switch Result(catching: { () throws(JSONParseError) in try JSONParser.parse(text) }) {
                    case .success(let request):
                        garbage = 0
                        reply = handle(request, in: session)
                    case .failure(let error):
                        garbage += 1
                        splitter.skipLine()
                        reply = ["error": QMPError(.genericError, "JSON parse error, \(error.description)").json]
                    }
                }
                if let reply, !session.send(reply) { return }
                if garbage >= garbageLimit || splitter.discardedBytes > 4 * messageLimit {
                    session.send(["error": QMPError(.genericError, "too much invalid input; closing the connection").json])
                    connection.flush()
                    return
                }
            }
        }
    }

    /// Garbage messages in a row that end a connection.
    public static let garbageLimit = 16
    var garbageLimit: Int { Self.garbageLimit }

    /// The greeting QEMU sends first: version and offered capabilities (none: no OOB).
    public var greeting: JSONValue {
        ["QMP": ["version": versionInfo, "capabilities": []]]
    }

    var versionInfo: JSONValue {
        ["qemu": ["micro": .int(SwitchyardVersion.micro), "minor": .int(SwitchyardVersion.minor),
                  "major": .int(SwitchyardVersion.major)],
         "package": .string("switchyard \(SwitchyardVersion.text)")]
    }

    // MARK: Events

    /// Sends an event in QEMU's shape to every negotiated client.
    public func emit(_ name: String, data: JSONValue? = nil) {
        let now = Date().timeIntervalSince1970
        let seconds = Int64(now)
        var members: [(String, JSONValue)] = [
            ("timestamp", ["seconds": .int(seconds), "microseconds": .int(Int64((now - Double(seconds)) * 1_000_000))]),
            ("event", .string(name)),
        ]
        if let data { members.append(("data", data)) }
        let event = JSONValue.object(members)
        // Never waits: a client that stopped reading is dropped, not waited for.
        for session in sessions.withLock({ Array($0.values) }) where session.isNegotiated {
            session.send(event, .unsolicited)
        }
    }

    func publish(_ event: MachineEvent) {
        switch event {
        case .deviceDeleted(let id, let path):
            // QEMU leaves `device` out for a device that had no id.
            var data: [(String, JSONValue)] = id.map { [("device", .string($0))] } ?? []
            data.append(("path", .string(path)))
            emit("DEVICE_DELETED", data: .object(data))
        case .resetRequested:
            break  // the controller carries it out, then reports the outcome
        case .powerOff:
            emit("SHUTDOWN", data: ["guest": .bool(true), "reason": .string("guest-shutdown")])
        case .assignedDeviceFailed:
            break  // the controller stops the VM: a run-state change, below
        }
    }

    /// STOP and RESUME for every change of the run state, whoever made it (a monitor's `stop`
    /// or `cont`, the controller on an assigned device's error), to every monitor's clients.
    func publish(runState old: RunState, _ new: RunState) {
        if old == .running && new == .paused {
            emit("STOP")
        } else if old != .running && old != .shutdown && new == .running {
            emit("RESUME")
        }
    }

    /// QEMU's events for a reset request: RESET once done, or SHUTDOWN when it ends the session.
    func publish(_ outcome: ResetOutcome) {
        switch outcome {
        case .reset(let cause):
            emit("RESET", data: ["guest": .bool(cause.byGuest), "reason": .string(cause.qmpReason)])
        case .shutdown(let cause):
            emit("SHUTDOWN", data: ["guest": .bool(cause.byGuest), "reason": .string(cause.qmpReason)])
        }
    }

    // MARK: Dispatch

    /// Handles one JSON text: the reply to send, or nil for none.
    public func handle(text: some Collection<UInt8>, in session: QMPSession) -> JSONValue? {
        let request: JSONValue
        do {
            request = try JSONParser.parse(text)
        } catch {
            return ["error": QMPError(.genericError, "JSON parse error, \(error.description)").json]
        }
        return handle(request, in: session)
    }

    public func handle(_ request: JSONValue, in session: QMPSession) -> JSONValue? {
        let id = request["id"]
        func reply(_ result: Result<JSONValue, QMPError>) -> JSONValue {
            var members: [(String, JSONValue)]
            switch result {
            case .success(let value): members = [("return", value)]
            case .failure(let error): members = [("error", error.json)]
            }
            if let id { members.append(("id", id)) }
            return .object(members)
        }
        guard let members = request.objectValue else {
            return reply(.failure(QMPError("QMP input must be a JSON object")))
        }
        var command: String?
        var arguments: [(String, JSONValue)] = []
        for (key, value) in members {
            switch key {
            case "execute":
                guard let name = value.stringValue else {
                    return reply(.failure(QMPError("QMP input member 'execute' must be a string")))
                }
                command = name
            case "arguments":
                guard let args = value.objectValue else {
                    return reply(.failure(QMPError("QMP input member 'arguments' must be an object")))
                }
                arguments = args
            case "id":
                continue
            case "exec-oob":
                return reply(.failure(QMPError("QMP input member 'exec-oob' is unexpected")))
            default:
                return reply(.failure(QMPError("QMP input member '\(key)' is unexpected")))
            }
        }
        guard let command else { return reply(.failure(QMPError("QMP input lacks member 'execute'"))) }

        if !session.isNegotiated {
            guard command == "qmp_capabilities" else {
                return reply(.failure(QMPError(.commandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'")))
            }
        } else if command == "qmp_capabilities" {
            return reply(.failure(QMPError(.commandNotFound, "Capabilities negotiation is already complete, command ignored")))
        }
        guard let handler = QMPCommands.table[command] else {
            return reply(.failure(QMPError(.commandNotFound, "The command \(command) has not been found")))
        }
        let result = Result { () throws(QMPError) -> JSONValue in
            let args = try QMPArguments(arguments, schema: handler.schema)
            return try handler.run(self, session, args)
        }
        let response = reply(result)
        if case .success = result, let after = handler.after {
            // Events a command causes go out before its reply, as QEMU orders them; actions
            // that end the process come after the reply is sent.
            session.send(response)
            session.connection?.flush()
            after(self)
            return nil
        }
        return response
    }
}

/// A command's arguments checked against its schema with QEMU's messages.
struct QMPArguments {
    enum Kind { case string, int, bool, stringArray, any }
    struct Field {
        let name: String
        let kind: Kind
        let required: Bool
    }
    enum Schema {
        case fields([Field])
        /// Any members, each a scalar (device_add: properties pass through).
        case open(required: [Field])
    }

    let values: [(String, JSONValue)]

    init(_ values: [(String, JSONValue)], schema: Schema) throws(QMPError) {
        self.values = values
        let fields: [Field]
        var open = false
        switch schema {
        case .fields(let f): fields = f
        case .open(let f): fields = f; open = true
        }
        for (name, value) in values {
            if let field = fields.first(where: { $0.name == name }) {
                try Self.check(value, as: field.kind, name: name)
            } else if !open {
                throw QMPError("Parameter '\(name)' is unexpected")
            } else {
                switch value {
                case .string, .int, .unsigned, .bool, .double: break
                default: throw QMPError("Invalid parameter type for '\(name)', expected: string")
                }
            }
        }
        for field in fields where field.required && !values.contains(where: { $0.0 == field.name }) {
            throw QMPError("Parameter '\(field.name)' is missing")
        }
    }

    private static func check(_ value: JSONValue, as kind: Kind, name: String) throws(QMPError) {
        switch (kind, value) {
        case (.string, .string), (.int, .int), (.bool, .bool), (.any, _): return
        case (.stringArray, .array(let items)):
            for (i, item) in items.enumerated() where item.stringValue == nil {
                throw QMPError("Invalid parameter type for '\(name)[\(i)]', expected: string")
            }
        case (.string, _): throw QMPError("Invalid parameter type for '\(name)', expected: string")
        case (.int, _): throw QMPError("Invalid parameter type for '\(name)', expected: integer")
        case (.bool, _): throw QMPError("Invalid parameter type for '\(name)', expected: boolean")
        case (.stringArray, _): throw QMPError("Invalid parameter type for '\(name)', expected: array")
        }
    }

    subscript(name: String) -> JSONValue? { values.last { $0.0 == name }?.1 }
}
