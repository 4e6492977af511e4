import VMMBase

/// The header in front of every frame in a virtqueue buffer, and on the tap (virtio 1.x,
/// 5.1.6: struct virtio_net_hdr with num_buffers; 12 bytes, little-endian).
public struct VirtioNetHeader: Sendable, Hashable {
    public static let size = 12

    public var flags: UInt8
    public var gsoType: UInt8
    public var headerLength: UInt16
    public var gsoSize: UInt16
    public var checksumStart: UInt16
    public var checksumOffset: UInt16
    /// How many buffers a received frame fills (mergeable buffers; else 1 in virtio 1.x).
    public var bufferCount: UInt16

    public static let needsChecksum: UInt8 = 1
    public static let dataValid: UInt8 = 2

    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoECN: UInt8 = 0x80

    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0, bufferCount: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
        self.bufferCount = bufferCount
    }

    /// Decodes the first 12 bytes; nil when there are fewer.
    public init?(_ bytes: some Collection<UInt8>) {
        guard let header = Array(bytes.prefix(Self.size)).withUnsafeBytes({ Self($0) }) else { return nil }
        self = header
    }

    /// Decodes the first 12 bytes in place (the transmit path: no copy).
    public init?(_ raw: UnsafeRawBufferPointer) {
        guard raw.count >= Self.size else { return nil }
        func u16(_ i: Int) -> UInt16 { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt16.self)) }
        self.init(flags: raw[0], gsoType: raw[1], headerLength: u16(2), gsoSize: u16(4),
                  checksumStart: u16(6), checksumOffset: u16(8), bufferCount: u16(10))
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = [flags, gsoType]
        for field in [headerLength, gsoSize, checksumStart, checksumOffset, bufferCount] {
            out.append(UInt8(truncatingIfNeeded: field))
            out.append(UInt8(truncatingIfNeeded: field >> 8))
        }
        return out
    }

    /// Why the driver may not send a frame with this header under `negotiated` features
    /// (a partial checksum without CSUM, a GSO kind it did not negotiate), or nil when it may.
    public func transmitViolation(_ negotiated: VirtioNetFeatures) -> String? {
        if flags & Self.needsChecksum != 0 && !negotiated.contains(.checksum) {
            return "a frame asks for checksum offload (VIRTIO_NET_HDR_F_NEEDS_CSUM) but CSUM was not negotiated"
        }
        let kind = gsoType & ~Self.gsoECN
        let needed: VirtioNetFeatures? = switch kind {
        case Self.gsoNone: nil
        case Self.gsoTCPv4: .hostTSO4
        case Self.gsoTCPv6: .hostTSO6
        case Self.gsoUDP: .hostUFO
        default: []
        }
        if let needed {
            if needed.isEmpty || !negotiated.contains(needed) {
                return "a frame has gso_type \(gsoType), which the negotiated features do not allow"
            }
            if gsoType & Self.gsoECN != 0 && !negotiated.contains(.hostECN) {
                return "a frame has GSO_ECN set but HOST_ECN was not negotiated"
            }
        }
        return nil
    }
}
