import CLinux
import HostOS
import Synchronization
import VMMBase

/// A KVM virtual machine (the VM fd): memory slots, in-kernel interrupt controllers, GSI
/// routing, irqfd/ioeventfd, and the factory for vCPUs.
///
/// Thread-safe: the slot table is behind a lock; the other calls are single ioctls.
public final class KVMVirtualMachine: Sendable {
    /// Which interrupt controllers KVM emulates in the kernel. Chosen at creation: KVM requires
    /// it before any vCPU exists.
    public enum IRQChipMode: Hashable, Sendable {
        /// None: the VMM emulates PIC, IOAPIC and LAPIC (HLT then exits to user space).
        case none
        /// KVM_CREATE_IRQCHIP: PIC, IOAPIC and local APICs in the kernel.
        case full
        /// KVM_CAP_SPLIT_IRQCHIP: local APICs in the kernel; PIC and IOAPIC in user space,
        /// which reserves `ioapicRoutes` GSI routes for the IOAPIC pins.
        case split(ioapicRoutes: UInt32)
    }

    public struct Options: Hashable, Sendable {
        public var irqchip: IRQChipMode
        /// KVM_CREATE_PIT2 (needs `.full` irqchip).
        public var createPIT: Bool
        /// KVM_SET_TSS_ADDR: three pages Intel VMX needs for real mode (nil: not set).
        public var tssAddress: UInt64?
        /// KVM_SET_IDENTITY_MAP_ADDR: one page for VMX's real-mode identity page table.
        public var identityMapAddress: UInt64?

        /// Defaults: no in-kernel irqchip, no PIT, TSS at 0xFFFBD000 and identity map at
        /// 0xFEFFC000 (just below the BIOS area, as QEMU does).
        public init(irqchip: IRQChipMode = .none, createPIT: Bool = false,
                    tssAddress: UInt64? = 0xFFFB_D000, identityMapAddress: UInt64? = 0xFEFF_C000) {
            self.irqchip = irqchip
            self.createPIT = createPIT
            self.tssAddress = tssAddress
            self.identityMapAddress = identityMapAddress
        }
    }

    /// A registered guest RAM range (KVM_SET_USER_MEMORY_REGION).
    public struct MemorySlot: Hashable, Sendable {
        public let slot: UInt32
        public let guestAddress: UInt64
        public let size: UInt64
        public let hostAddress: UInt
        public let readOnly: Bool
        public var guestRange: Range<UInt64> { guestAddress..<guestAddress + size }
    }

    /// A GSI routing table entry (KVM_SET_GSI_ROUTING).
    public enum GSIRoute: Hashable, Sendable {
        /// `gsi` drives `pin` of an in-kernel irqchip (0: master PIC, 1: slave PIC, 2: IOAPIC).
        case irqchip(gsi: UInt32, chip: UInt32, pin: UInt32)
        /// `gsi` sends an MSI.
        case msi(gsi: UInt32, message: MSIMessage)
    }

    /// The address space an ioeventfd watches.
    public enum IOEventSpace: Hashable, Sendable { case mmio, port }

    let fd: FileDescriptor
    public let options: Options
    /// Size of each vCPU's kvm_run mapping.
    public let runMappingSize: Int
    /// The most memory slots KVM accepts for this VM.
    public let maxMemorySlots: Int

    private struct SlotRecord: Sendable {
        var slot: MemorySlot
        let owner: SharedMapping
    }
    private let slots = Mutex<[UInt32: SlotRecord]>([:])
    private let slotUpdates = Atomic<Int>(0)

    init(system: KVMSystem, options: Options) throws(SystemError) {
        fd = FileDescriptor(adopting: try ioctl(system.device, KVMRequest.createVM, 0))
        self.options = options
        runMappingSize = try system.vcpuMmapSize()
        let reported = (try? system.checkExtension(.memorySlotCount)) ?? 0
        maxMemorySlots = reported > 0 ? Int(reported) : 32

        if let address = options.tssAddress { try setTSSAddress(address) }
        if let address = options.identityMapAddress { try setIdentityMapAddress(address) }
        switch options.irqchip {
        case .none: break
        case .full: try ioctl(fd, KVMRequest.createIRQChip)
        case .split(let routes):
            var cap = kvm_enable_cap()
            cap.cap = UInt32(KVM_CAP_SPLIT_IRQCHIP)
            cap.args.0 = UInt64(routes)
            try ioctl(fd, KVMRequest.enableCap, &cap)
        }
        if options.createPIT {
            var config = kvm_pit_config()
            config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
            try ioctl(fd, KVMRequest.createPIT2, &config)
        }
    }

    /// KVM_CHECK_EXTENSION on the VM fd (some answers are per VM).
    public func checkExtension(_ capability: KVMCapability) throws(SystemError) -> Int32 {
        try ioctl(fd, KVMRequest.checkExtension, UInt(capability.rawValue))
    }

    public func setTSSAddress(_ address: UInt64) throws(SystemError) {
        try ioctl(fd, KVMRequest.setTSSAddress, UInt(address))
    }

    public func setIdentityMapAddress(_ address: UInt64) throws(SystemError) {
        var value = address
        try ioctl(fd, KVMRequest.setIdentityMapAddress, &value)
    }

    // MARK: Memory

    /// Maps `size` bytes of `mapping` from `offset` at `guestAddress` in the lowest free slot.
    /// Addresses, offset and size must be page-aligned and inside the mapping; the range must
    /// not overlap another slot (EINVAL / EEXIST otherwise). The slot keeps `mapping` alive.
    @discardableResult
    public func mapMemory(guestAddress: UInt64, mapping: SharedMapping, offset: Int = 0, size: Int? = nil,
                          readOnly: Bool = false) throws(SystemError) -> MemorySlot {
        let size = size ?? (mapping.count - offset)
        let page = 4096
        let context = "guest 0x\(String(guestAddress, radix: 16)), offset \(offset), size \(size)"
        guard size > 0, offset >= 0, offset <= mapping.count, size <= mapping.count - offset,
              offset % page == 0, size % page == 0, guestAddress % UInt64(page) == 0,
              guestAddress <= UInt64.max - UInt64(size)
        else { throw SystemError(.invalidArgument, operation: "map guest memory", context: context) }
        let hostAddress = mapping.hostAddress + UInt(offset)
        let maxSlots = maxMemorySlots

        return try slots.withLock { (table) throws(SystemError) -> MemorySlot in
            let range = guestAddress..<guestAddress + UInt64(size)
            if let clash = table.values.first(where: { $0.slot.guestRange.overlaps(range) }) {
                throw SystemError(.fileExists, operation: "map guest memory",
                                  context: context + ": overlaps slot \(clash.slot.slot)")
            }
            guard let number = (0..<UInt32(maxSlots)).first(where: { table[$0] == nil }) else {
                throw SystemError(.noSpace, operation: "map guest memory", context: context + ": no free slot")
            }
            var region = kvm_userspace_memory_region()
            region.slot = number
            region.flags = readOnly ? UInt32(KVM_MEM_READONLY) : 0
            region.guest_phys_addr = guestAddress
            region.memory_size = UInt64(size)
            region.userspace_addr = UInt64(hostAddress)
            try setRegion(&region)
            let slot = MemorySlot(slot: number, guestAddress: guestAddress, size: UInt64(size),
                                  hostAddress: hostAddress, readOnly: readOnly)
            table[number] = SlotRecord(slot: slot, owner: mapping)
            return slot
        }
    }

    /// Removes a slot (memory_size 0) and releases its mapping.
    public func unmapMemory(slot number: UInt32) throws(SystemError) {
        try slots.withLock { (table) throws(SystemError) in
            guard let record = table[number] else {
                throw SystemError(.invalidArgument, operation: "unmap guest memory", context: "no slot \(number)")
            }
            var region = kvm_userspace_memory_region()
            region.slot = number
            region.flags = record.slot.readOnly ? UInt32(KVM_MEM_READONLY) : 0
            region.guest_phys_addr = record.slot.guestAddress
            region.memory_size = 0
            region.userspace_addr = UInt64(record.slot.hostAddress)
            try setRegion(&region)
            table[number] = nil
        }
    }

    /// The registered slots, by guest address.
    public var memorySlots: [MemorySlot] {
        slots.withLock { $0.values.map(\.slot) }.sorted { $0.guestAddress < $1.guestAddress }
    }

    // MARK: Interrupts

    /// KVM_IRQ_LINE: sets an in-kernel irqchip input (a GSI) high or low.
    public func setIRQLine(_ gsi: UInt32, level: Bool) throws(SystemError) {
        var irqLevel = kvm_irq_level()
        irqLevel.irq = gsi
        irqLevel.level = level ? 1 : 0
        try ioctl(fd, KVMRequest.irqLine, &irqLevel)
    }

    /// KVM_SIGNAL_MSI: injects one MSI. Returns false when the guest blocked it (KVM returns 0).
    @discardableResult
    public func signalMSI(_ message: MSIMessage) throws(SystemError) -> Bool {
        var msi = kvm_msi()
        msi.address_lo = UInt32(truncatingIfNeeded: message.address)
        msi.address_hi = UInt32(truncatingIfNeeded: message.address >> 32)
        msi.data = message.data
        return try ioctl(fd, KVMRequest.signalMSI, &msi) > 0
    }

    /// KVM_SET_GSI_ROUTING: replaces the whole routing table.
    public func setGSIRouting(_ routes: [GSIRoute]) throws(SystemError) {
        let layout = KVMLayout.current
        let size = layout.routingHeader + routes.count * layout.routingEntrySize
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        buffer.storeBytes(of: UInt32(routes.count), as: UInt32.self)
        for (i, route) in routes.enumerated() {
            let entry = (buffer.baseAddress! + layout.routingHeader + i * layout.routingEntrySize)
                .assumingMemoryBound(to: kvm_irq_routing_entry.self)
            switch route {
            case .irqchip(let gsi, let chip, let pin): sy_kvm_routing_irqchip(entry, gsi, chip, pin)
            case .msi(let gsi, let message): sy_kvm_routing_msi(entry, gsi, message.address, message.data)
            }
        }
        try ioctl(fd, KVMRequest.setGSIRouting, buffer.baseAddress)
    }

    /// KVM_IRQFD: a write to `eventfd` raises `gsi` (edge, or an MSI route).
    public func registerIRQFD(_ eventfd: borrowing EventFD, gsi: UInt32) throws(SystemError) {
        try irqfd(eventfd.rawValue, gsi: gsi, flags: 0, resample: 0)
    }

    /// KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE: a level-triggered line that KVM lowers when the
    /// guest acknowledges it, then signals `resample` so the device can re-assert it.
    public func registerIRQFD(_ eventfd: borrowing EventFD, gsi: UInt32,
                              resample: borrowing EventFD) throws(SystemError) {
        try irqfd(eventfd.rawValue, gsi: gsi, flags: UInt32(KVM_IRQFD_FLAG_RESAMPLE), resample: resample.rawValue)
    }

    public func unregisterIRQFD(_ eventfd: borrowing EventFD, gsi: UInt32) throws(SystemError) {
        try irqfd(eventfd.rawValue, gsi: gsi, flags: UInt32(KVM_IRQFD_FLAG_DEASSIGN), resample: 0)
    }

    private func irqfd(_ eventfd: Int32, gsi: UInt32, flags: UInt32, resample: Int32) throws(SystemError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventfd)
        request.gsi = gsi
        request.flags = flags
        request.resamplefd = UInt32(bitPattern: resample)
        try ioctl(fd, KVMRequest.irqfd, &request)
    }

    /// KVM_IOEVENTFD: a guest write of `length` bytes (1, 2, 4 or 8; 0 for any on MMIO) to
    /// `address` signals `eventfd` instead of exiting; with `dataMatch`, only writes of that value.
    public func registerIOEventFD(_ eventfd: borrowing EventFD, space: IOEventSpace, address: UInt64,
                                  length: UInt32, dataMatch: UInt64? = nil) throws(SystemError) {
        try ioeventfd(eventfd.rawValue, space: space, address: address, length: length, dataMatch: dataMatch,
                      deassign: false)
    }

    /// Removes a registration made with the same arguments.
    public func unregisterIOEventFD(_ eventfd: borrowing EventFD, space: IOEventSpace, address: UInt64,
                                    length: UInt32, dataMatch: UInt64? = nil) throws(SystemError) {
        try ioeventfd(eventfd.rawValue, space: space, address: address, length: length, dataMatch: dataMatch,
                      deassign: true)
    }

    /// The same, for an eventfd a device owns and lends by descriptor (a `Doorbell`'s).
    public func registerIOEventFD(descriptor: Int32, space: IOEventSpace, address: UInt64,
                                  length: UInt32, dataMatch: UInt64? = nil) throws(SystemError) {
        try ioeventfd(descriptor, space: space, address: address, length: length, dataMatch: dataMatch, deassign: false)
    }

    public func unregisterIOEventFD(descriptor: Int32, space: IOEventSpace, address: UInt64,
                                    length: UInt32, dataMatch: UInt64? = nil) throws(SystemError) {
        try ioeventfd(descriptor, space: space, address: address, length: length, dataMatch: dataMatch, deassign: true)
    }

    /// KVM_SET_USER_MEMORY_REGION calls made so far (slot creations and deletions).
    public var memorySlotUpdates: Int { slotUpdates.load(ordering: .relaxed) }

    private func setRegion(_ region: inout kvm_userspace_memory_region) throws(SystemError) {
        slotUpdates.add(1, ordering: .relaxed)
        do throws(SystemError) {
            try ioctl(fd, KVMRequest.setUserMemoryRegion, &region)
        } catch {
            throw SystemError(error.errno, operation: "KVM_SET_USER_MEMORY_REGION",
                              context: "slot \(region.slot), guest 0x\(String(region.guest_phys_addr, radix: 16))")
        }
    }

    private func ioeventfd(_ eventfd: Int32, space: IOEventSpace, address: UInt64, length: UInt32,
                           dataMatch: UInt64?, deassign: Bool) throws(SystemError) {
        var request = kvm_ioeventfd()
        request.addr = address
        request.len = length
        request.fd = eventfd
        var flags: UInt32 = 0
        if space == .port { flags |= ioeventfdPort }
        if let dataMatch {
            flags |= ioeventfdDataMatch
            request.datamatch = dataMatch
        }
        if deassign { flags |= ioeventfdDeassign }
        request.flags = flags
        try ioctl(fd, KVMRequest.ioeventfd, &request)
    }

    // MARK: vCPUs

    /// KVM_CREATE_VCPU and its kvm_run mapping.
    public func createVCPU(id: UInt32) throws(SystemError) -> KVMVCPU {
        let vcpuFD = FileDescriptor(adopting: try ioctl(fd, KVMRequest.createVCPU, UInt(id)))
        return try KVMVCPU(id: id, virtualMachine: self, fd: vcpuFD, runMappingSize: runMappingSize)
    }
}

// The ioeventfd flags are defined from an enum in <linux/kvm.h>, which Swift does not import
// as macros.
private let ioeventfdDataMatch: UInt32 = 1 << 0
private let ioeventfdPort: UInt32 = 1 << 1
private let ioeventfdDeassign: UInt32 = 1 << 2
