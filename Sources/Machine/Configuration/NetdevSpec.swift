import HostNetwork
/// A host network backend as QEMU's `-netdev TYPE,id=ID,...` spells it. The type's own
/// properties stay in `properties` (as `DeviceSpec` keeps a driver's), checked per type
/// when the spec is parsed, so a bad option fails at start-up with QEMU's wording.
public struct NetdevSpec: Sendable, Hashable {
    public var type: String
    public var id: String
    public var properties: [String: String]

    /// The backend types `-netdev` accepts.
    public static let types = ["tap", "macvtap"]

    public init(type: String, id: String, properties: [String: String] = [:]) {
        self.type = type
        self.id = id
        self.properties = properties
    }

    /// Parses `TYPE,id=ID[,PROP=VALUE...]` and checks the type's properties.
    public init(parsing text: String) throws(MachineConfigurationError) {
        let fields = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        var type: String?, id: String?
        var properties: [String: String] = [:]
        for (i, field) in fields.enumerated() {
            if let eq = field.firstIndex(of: "=") {
                let key = String(field[..<eq]), value = String(field[field.index(after: eq)...])
                switch key {
                case "type": type = value
                case "id": id = value
                default: properties[key] = value
                }
            } else if i == 0 && !field.isEmpty {
                type = field
            } else {
                throw .netdev(text, reason: "'\(field)' is not of the form name=value")
            }
        }
        guard let type, !type.isEmpty else { throw .netdev(text, reason: "Parameter 'type' is missing") }
        guard Self.types.contains(type) else {
            throw .netdev(text, reason: "Parameter 'type' does not accept value '\(type)'; Switchyard's netdev types: \(Self.types.joined(separator: ", "))")
        }
        guard let id else { throw .netdev(text, reason: "Parameter 'id' is missing") }
        do {
            try DeviceID.validate(id)
        } catch {
            throw .netdev(text, reason: "\(error)")
        }
        self.init(type: type, id: id, properties: properties)
        switch type {
        case "tap":
            do { _ = try TapNetdevOptions(properties) } catch { throw .netdev(text, reason: error.reason) }
        case "macvtap":
            do { _ = try MacvtapNetdevOptions(properties: macvtapProperties) } catch { throw .netdev(text, reason: "\(error)") }
        default: break
        }
    }
}

extension NetdevSpec {
    /// The whole option as HostNetwork's macvtap parser takes it (id and type included).
    var macvtapProperties: [String: String] {
        properties.merging(["id": id, "type": type]) { own, _ in own }
    }
}

/// `-netdev tap`'s properties, checked: which tap queues to attach and how many.
public struct TapNetdevOptions: Sendable, Hashable {
    public enum Source: Sendable, Hashable {
        /// Open (or create) tap `name` through /dev/net/tun; an empty name lets the kernel
        /// pick tapN.
        case interface(name: String)
        /// Queues already open in this process (fd=N, fds=N:M:...): passed by the caller.
        case descriptors([Int32])
    }

    public var source: Source
    /// Queue pairs: one tap queue each (IFF_MULTI_QUEUE when more than one).
    public var queues: Int
    /// vhost=on asks for the in-kernel datapath (the userspace one is used, with a log line,
    /// where /dev/vhost-net is missing).
    public var vhost: Bool

    /// The most queue pairs a tap netdev takes here.
    public static let maximumQueues = 64

    public struct Problem: Error, Hashable {
        public let reason: String
    }

    public init(_ properties: [String: String]) throws(Problem) {
        func fail(_ reason: String) -> Problem { Problem(reason: reason) }
        func bool(_ key: String) throws(Problem) -> Bool? {
            guard let value = properties[key] else { return nil }
            guard let on = DeviceSpec.parseBool(value) else { throw fail("Parameter '\(key)' expects 'on' or 'off'") }
            return on
        }
        for key in properties.keys.sorted() {
            switch key {
            case "ifname", "fd", "fds", "queues", "vhost", "vnet_hdr", "script", "downscript": continue
            default:
                throw fail("Invalid parameter '\(key)'; a tap netdev takes ifname=, fd=, fds=, queues=, vhost=, vnet_hdr=on and script=no/downscript=no")
            }
        }
        for key in ["script", "downscript"] {
            if let value = properties[key], !["no", ""].contains(value) {
                throw fail("\(key)=\(value): Switchyard runs no scripts; set the tap up beforehand and give \(key)=no")
            }
        }
        if try bool("vnet_hdr") == false {
            throw fail("vnet_hdr=off is not supported: virtio-net passes checksum and segmentation offloads in the vnet header; drop vnet_hdr=off")
        }
        vhost = try bool("vhost") ?? false
        var queueCount: Int?
        if let text = properties["queues"] {
            guard let n = Int(text), (1...Self.maximumQueues).contains(n) else {
                throw fail("queues=\(text) must be a number from 1 to \(Self.maximumQueues)")
            }
            queueCount = n
        }
        let fd = properties["fd"], fds = properties["fds"]
        if fd != nil || fds != nil {
            guard fd == nil || fds == nil else { throw fail("fd= and fds= are mutually exclusive") }
            for key in ["ifname", "queues"] where properties[key] != nil {
                throw fail("ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, and vhostfds= are invalid with fd=; drop \(key)=")
            }
            let texts = fd.map { [$0] } ?? fds!.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            var numbers: [Int32] = []
            for text in texts {
                guard let n = Int32(text), n >= 0 else { throw fail("'\(text)' is not a file descriptor number") }
                numbers.append(n)
            }
            guard (1...Self.maximumQueues).contains(numbers.count), Set(numbers).count == numbers.count else {
                throw fail("fds= needs 1 to \(Self.maximumQueues) distinct file descriptors")
            }
            source = .descriptors(numbers)
            queues = numbers.count
        } else {
            source = .interface(name: properties["ifname"] ?? "")
            queues = queueCount ?? 1
        }
    }
}
