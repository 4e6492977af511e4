import VMMBase

/// One function as `switchyard lspci` shows it: its address, its configuration space as the
/// guest reads it, and optionally what the guest kernel would report beside it (BAR sizes,
/// IRQ), which lspci takes from sysfs rather than from config space.
public struct LspciFunction: Sendable, Hashable {
    /// What a Linux guest's sysfs reports that config space alone cannot tell.
    public struct KernelResources: Sendable, Hashable {
        /// By BAR index (6 for type 0, 2 for type 1); 0 where the BAR is absent or is the
        /// upper half of a 64-bit BAR.
        public var barSizes: [UInt64]
        /// 0 when the function has no expansion ROM.
        public var romSize: UInt64
        /// The IRQ the kernel reports; nil means the Interrupt Line register.
        public var irq: Int?
        /// Vendor and device ID as sysfs reports them, where they differ from config space:
        /// an SR-IOV VF reads FFFFh there, and Linux gives it the PF's Vendor ID and the PF's
        /// VF Device ID (drivers/pci/iov.c), which lspci takes from sysfs.
        public var identity: Identity?

        public init(barSizes: [UInt64], romSize: UInt64 = 0, irq: Int? = nil, identity: Identity? = nil) {
            self.barSizes = barSizes
            self.romSize = romSize
            self.irq = irq
            self.identity = identity
        }
    }

    public struct Identity: Sendable, Hashable {
        public var vendorID: UInt16
        public var deviceID: UInt16

        public init(vendorID: UInt16, deviceID: UInt16) {
            self.vendorID = vendorID
            self.deviceID = deviceID
        }
    }

    public var address: PCIAddress
    /// Config space bytes, 4096 for a whole function (zeros past 256 for conventional ones);
    /// shorter arrays are the bytes a dump held.
    public var config: [UInt8]
    public var resources: KernelResources?
    /// How many bytes of config space the guest can read: 4096 when Linux would expose the
    /// extended space, else 256 (or what `config` holds, if less).
    public var readableSize: Int

    public init(address: PCIAddress, config: [UInt8], resources: KernelResources? = nil) {
        self.address = address
        // Fewer than 64 bytes cannot hold a header; absent bytes read as all-ones, as a
        // master-aborted config read would.
        self.config = config.count >= 64 ? config : config + [UInt8](repeating: 0xFF, count: 64 - config.count)
        self.resources = resources
        self.readableSize = Self.linuxReadableSize(self.config)
    }

    /// The vendor and device ID lspci shows: the kernel's in the guest view, else config space's.
    func identity(in view: LspciRenderer.View) -> Identity {
        if view == .guestKernel, let identity = resources?.identity { return identity }
        return Identity(vendorID: UInt16(config[0]) | UInt16(config[1]) << 8, deviceID: UInt16(config[2]) | UInt16(config[3]) << 8)
    }

    /// Linux's `pci_cfg_space_size`: the extended space exists for host bridges, PCI Express
    /// functions and PCI-X 266/533 functions whose dword at 0x100 reads as something other
    /// than all-ones. Everything else gets 256 bytes.
    static func linuxReadableSize(_ config: [UInt8]) -> Int {
        guard config.count >= 4096 else { return min(config.count, 256) }
        let view = ConfigBytes(config, readable: 256)
        let classCode = view.word(0x0A)
        var extended = classCode == 0x0600 || view.findCapability(0x10) != nil
        if !extended, let pcix = view.findCapability(0x07) {
            let status = view.long(pcix + 4)
            extended = status & (1 << 30 | 1 << 31) != 0
        }
        guard extended else { return 256 }
        return ConfigBytes(config, readable: 4096).long(0x100) == 0xFFFF_FFFF ? 256 : 4096
    }
}

/// Little-endian reads over a function's bytes, bounded by what the guest can read.
struct ConfigBytes {
    let bytes: [UInt8]
    let readable: Int

    init(_ bytes: [UInt8], readable: Int) {
        self.bytes = bytes
        self.readable = min(readable, bytes.count)
    }

    /// lspci's `config_fetch`: whether `length` bytes at `offset` can be read.
    func canRead(_ offset: Int, _ length: Int) -> Bool { offset >= 0 && offset + length <= readable }

    func byte(_ offset: Int) -> UInt32 { canRead(offset, 1) ? UInt32(bytes[offset]) : 0xFF }
    func word(_ offset: Int) -> UInt32 { byte(offset) | byte(offset + 1) << 8 }
    func long(_ offset: Int) -> UInt32 { word(offset) | word(offset + 2) << 16 }

    var headerType: UInt32 { byte(0x0E) & 0x7F }

    /// Offset of the first standard capability with `id`, walking the list as libpci does.
    func findCapability(_ id: UInt32) -> Int? {
        guard word(0x06) & 0x10 != 0 else { return nil }
        let pointerOffset = headerType == 2 ? 0x14 : 0x34
        var seen = Set<Int>()
        var offset = Int(byte(pointerOffset) & ~3)
        while offset != 0, canRead(offset, 4), seen.insert(offset).inserted {
            if byte(offset) == 0xFF { return nil }
            if byte(offset) == id { return offset }
            offset = Int(byte(offset + 1) & ~3)
        }
        return nil
    }
}
