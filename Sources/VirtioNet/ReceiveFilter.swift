import VMMBase
/// Which received frames reach the driver: the receive mode, MAC tables and VLAN filter the
/// driver sets through the control queue (virtio 1.x, 5.1.6.5.1-3). Starts promiscuous, as
/// a device that has not been told otherwise forwards everything (QEMU's reset state).
public struct ReceiveFilter: Sendable, Hashable {
    public var promiscuous = true
    public var allMulticast = false
    public var allUnicast = false
    public var noMulticast = false
    public var noUnicast = false
    public var noBroadcast = false
    /// The device's own address (config space mac; MAC_ADDR_SET changes it).
    public var mac: MACAddress
    public var unicastTable: [MACAddress] = []
    public var multicastTable: [MACAddress] = []
    /// VLAN ids the driver added; nil: no VLAN filtering (CTRL_VLAN not negotiated).
    public var vlans: Set<UInt16>?

    /// The most entries a MAC table keeps (QEMU's MAC_TABLE_ENTRIES); a longer table
    /// overflows into accepting all addresses of its kind, as QEMU's does.
    public static let tableLimit = 64
    public var unicastOverflow = false
    public var multicastOverflow = false

    public init(mac: MACAddress, filtersVLANs: Bool = false) {
        self.mac = mac
        self.vlans = filtersVLANs ? [] : nil
    }

    /// Whether a frame whose Ethernet header is `frame` (at least 14 bytes) reaches the driver.
    public func accepts(_ frame: some RandomAccessCollection<UInt8>) -> Bool {
        // Read in place: this runs for every received frame.
        guard frame.count >= 14 else { return false }
        func byte(_ i: Int) -> UInt8 { frame[frame.index(frame.startIndex, offsetBy: i)] }
        if let vlans, byte(12) == 0x81, byte(13) == 0x00, frame.count >= 16 {
            let vid = (UInt16(byte(14)) << 8 | UInt16(byte(15))) & 0x0FFF
            if !vlans.contains(vid) { return false }
        }
        if promiscuous { return true }
        // The destination compared where it lies (a MACAddress would be an allocation per frame).
        let destination = frame.prefix(6)
        func isDestination(_ address: MACAddress) -> Bool { address.bytes.elementsEqual(destination) }
        if destination.allSatisfy({ $0 == 0xFF }) { return !noBroadcast }
        if byte(0) & 1 != 0 {
            if noMulticast { return false }
            return allMulticast || multicastOverflow || multicastTable.contains(where: isDestination)
        }
        if noUnicast { return false }
        return allUnicast || unicastOverflow || isDestination(mac) || unicastTable.contains(where: isDestination)
    }
}
