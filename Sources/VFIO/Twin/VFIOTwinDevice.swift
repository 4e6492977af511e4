import CLinux
import Glibc
import HostOS
import Synchronization
import VMMBase

/// A simulated vfio-pci device built from an identity: regions laid out as vfio-pci lays them
/// out (index << 40), memory BARs backed by anonymous shared memory (a memfd) so pread, pwrite
/// and mmap see the same bytes, config space as plain memory, interrupts that fire the eventfds
/// the caller assigned. Every call is recorded in `log`.
public final class VFIOTwinDevice: VFIODeviceIO {
    public let name: String
    public let identity: VFIOTwinIdentity
    public let log: VFIOTwinLog
    /// The hot-reset set: this device's group and any other functions on its bus.
    public let hotResetDependencies: [VFIOHotResetDependency]
    /// VFIO_DEVICE_FLAGS_RESET: the device has a function reset (FLR, PM, or its bus alone).
    public let supportsReset: Bool
    /// Whether the MSI-X table is left out of the mappable areas (the kernel without
    /// VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) or mappable (x86 with interrupt remapping).
    public let msixTableTrapped: Bool

    /// vfio-pci's VFIO_PCI_OFFSET_SHIFT: region N starts at N << 40 in the device fd.
    public static let regionShift: UInt64 = 40

    struct IRQState {
        var triggers: [UInt32: [Int32?]] = [:]
        var intxMasked = false
        var intxPending = false
        var resample: Int32?
    }

    private let backings: [UInt32: Backing]
    private let config: Mutex<[UInt8]>
    private let irqs = Mutex(IRQState())

    /// Functions a bus reset reaches that are not bound to vfio-pci on the "host".
    public let functionsOffVFIO: Set<PCIAddress>

    public init(name: String, identity: VFIOTwinIdentity, log: VFIOTwinLog = VFIOTwinLog(),
                hotResetDependencies: [VFIOHotResetDependency] = [], functionsOffVFIO: Set<PCIAddress> = [],
                msixTableTrapped: Bool = false, supportsReset: Bool = true) throws(SystemError) {
        self.name = name
        self.functionsOffVFIO = functionsOffVFIO
        self.supportsReset = supportsReset
        self.identity = identity
        self.log = log
        self.hotResetDependencies = hotResetDependencies
        self.msixTableTrapped = msixTableTrapped
        config = Mutex(identity.config)
        var backings: [UInt32: Backing] = [:]
        for bar in identity.bars where bar.kind != .io {
            let fd = try valueOrThrow("memfd_create", name) { sy_memfd_create("vfio-twin-\(name)-bar\(bar.index)") }
            let file = FileDescriptor(adopting: fd)
            try file.truncate(to: Int64(bar.size))
            backings[UInt32(bar.index)] = Backing(file)
        }
        self.backings = backings
    }

    // MARK: Info

    public func info() throws(VFIOError) -> VFIODeviceInfo {
        VFIODeviceInfo(supportsReset: supportsReset, isPCI: true, regionCount: 9, irqCount: 5)
    }

    public func regionInfo(_ index: UInt32) throws(VFIOError) -> VFIORegionInfo {
        let offset = UInt64(index) << Self.regionShift
        switch index {
        case 0..<6:
            guard let bar = identity.bar(Int(index)) else { return VFIORegionInfo(index: index, readable: false, writable: false, mappable: false, size: 0, offset: offset) }
            let memory = bar.kind != .io
            var info = VFIORegionInfo(index: index, readable: true, writable: true, mappable: memory, size: bar.size, offset: offset)
            if memory, let table = identity.msixTable, table.bar == bar.index {
                if msixTableTrapped {
                    info.sparseAreas = Self.areas(of: bar.size, without: table.offset, table.size)
                } else {
                    info.msixMappable = true
                }
            }
            return info
        case VFIOPCIRegion.rom:
            return VFIORegionInfo(index: index, readable: identity.romSize > 0, writable: false, mappable: false,
                                  size: identity.romSize, offset: offset)
        case VFIOPCIRegion.config:
            return VFIORegionInfo(index: index, readable: true, writable: true, mappable: false,
                                  size: UInt64(identity.config.count), offset: offset)
        case VFIOPCIRegion.vga:
            return VFIORegionInfo(index: index, readable: false, writable: false, mappable: false, size: 0, offset: offset)
        default:
            throw refuse(.invalidArgument, "VFIO_DEVICE_GET_REGION_INFO(\(index))")
        }
    }

    /// The BAR minus the pages holding the MSI-X table, as vfio-pci's sparse-mmap capability gives it.
    static func areas(of size: UInt64, without start: UInt64, _ length: UInt64) -> [VFIOMappableArea] {
        let page: UInt64 = 4096
        let first = start & ~(page - 1)
        let end = min(size, (start + length + page - 1) & ~(page - 1))
        return [VFIOMappableArea(offset: 0, size: first), VFIOMappableArea(offset: end, size: size - end)].filter { $0.size > 0 }
    }

    public func irqInfo(_ index: UInt32) throws(VFIOError) -> VFIOIRQInfo {
        switch index {
        case VFIOPCIIRQ.intx:
            VFIOIRQInfo(index: index, count: identity.intxCount, eventfd: true, maskable: true, automasked: true, noResize: false)
        case VFIOPCIIRQ.msi:
            VFIOIRQInfo(index: index, count: identity.msiCount, eventfd: true, maskable: false, automasked: false, noResize: true)
        case VFIOPCIIRQ.msix:
            VFIOIRQInfo(index: index, count: identity.msixCount, eventfd: true, maskable: false, automasked: false, noResize: true)
        case VFIOPCIIRQ.error:
            VFIOIRQInfo(index: index, count: identity.isExpress ? 1 : 0, eventfd: true, maskable: false, automasked: false, noResize: true)
        case VFIOPCIIRQ.request:
            VFIOIRQInfo(index: index, count: 1, eventfd: true, maskable: false, automasked: false, noResize: true)
        default:
            throw refuse(.invalidArgument, "VFIO_DEVICE_GET_IRQ_INFO(\(index))")
        }
    }

    // MARK: Interrupts

    /// Validates as vfio-pci does: the range inside the index's count, mask/unmask for INTx only.
    public func setIRQs(_ request: VFIOIRQRequest) throws(VFIOError) {
        log.record(.setIRQs(device: name, request))
        let operation = "VFIO_DEVICE_SET_IRQS"
        let available = try irqInfo(request.index).count
        let (end, overflow) = request.start.addingReportingOverflow(request.count)
        guard !overflow, end <= available || request.operation == .disable else { throw refuse(.invalidArgument, operation) }
        let isINTx = request.index == VFIOPCIIRQ.intx
        try irqs.withLock { (s) throws(VFIOError) in
            switch request.operation {
            case .trigger(let fds):
                var vectors = s.triggers[request.index] ?? []
                if vectors.count < Int(end) { vectors += [Int32?](repeating: nil, count: Int(end) - vectors.count) }
                for (i, fd) in fds.enumerated() { vectors[Int(request.start) + i] = fd }
                s.triggers[request.index] = vectors
            case .disable:
                s.triggers[request.index] = nil
                if isINTx { s.intxMasked = false; s.intxPending = false; s.resample = nil }
            case .mask:
                guard isINTx else { throw refuse(.invalidArgument, operation) }
                s.intxMasked = true
            case .unmask:
                guard isINTx else { throw refuse(.invalidArgument, operation) }
                Self.unmaskINTx(&s)
            case .unmaskOnEventfd(let fd):
                guard isINTx else { throw refuse(.invalidArgument, operation) }
                s.resample = fd
            }
        }
    }

    /// The device raises vector `vector` of `index`: its eventfd is signalled. INTx masks itself
    /// when it fires (automasked) and stays pending until unmasked. Returns whether an eventfd was signalled.
    @discardableResult
    public func raise(index: UInt32, vector: Int = 0) -> Bool {
        irqs.withLock { s in
            if index == VFIOPCIIRQ.intx {
                guard !s.intxMasked else { s.intxPending = true; return false }
                s.intxMasked = true
            }
            guard let vectors = s.triggers[index], vector < vectors.count, let fd = vectors[vector] else { return false }
            return Self.signal(fd)
        }
    }

    /// Reads the resample eventfd (KVM signals it on the guest's EOI) and unmasks INTx when it fired.
    public func serviceResample() {
        irqs.withLock { s in
            guard let fd = s.resample else { return }
            var counter: UInt64 = 0
            if Glibc.read(fd, &counter, 8) == 8, counter > 0 { Self.unmaskINTx(&s) }
        }
    }

    public var intxMasked: Bool { irqs.withLock { $0.intxMasked } }
    /// The eventfds assigned per vector of `index` (nil: none).
    public func triggers(_ index: UInt32) -> [Int32?] { irqs.withLock { $0.triggers[index] ?? [] } }

    private static func unmaskINTx(_ s: inout IRQState) {
        s.intxMasked = false
        if s.intxPending, let fd = s.triggers[VFIOPCIIRQ.intx]?.first ?? nil {
            s.intxPending = false
            s.intxMasked = true
            _ = signal(fd)
        }
    }

    private static func signal(_ fd: Int32) -> Bool {
        var one: UInt64 = 1
        return Glibc.write(fd, &one, 8) == 8
    }

    // MARK: Resets

    /// Config space back to the identity's, INTx unmasked; BAR memory is kept (a device's
    /// registers would reset, but the twin's BAR memory is plain storage).
    public func reset() throws(VFIOError) {
        log.record(.reset(device: name))
        config.withLock { $0 = identity.config }
        irqs.withLock { $0 = IRQState() }
    }

    public func hotResetInfo() throws(VFIOError) -> [VFIOHotResetDependency] { hotResetDependencies }

    public func hotReset(groups: [any VFIOGroupIO]) throws(VFIOError) {
        let numbers = groups.map(\.number)
        log.record(.hotReset(device: name, groups: numbers))
        // Group ownership is proven by the fds passed; a cdev's by its iommufd, as the kernel decided.
        let proven = hotResetDependencies.allSatisfy { dependency in
            switch dependency.owner {
            case .group(let id): numbers.contains(id)
            case .iommufd(let owned): owned && numbers.isEmpty
            }
        }
        guard proven else { throw refuse(.notPermitted, "VFIO_DEVICE_PCI_HOT_RESET") }
        // vfio-pci resets a bus only when its dev_set holds every function on it (6.1's
        // vfio_pci_dev_set_resettable): one on another driver, or none, gets EINVAL.
        guard hotResetDependencies.allSatisfy({ !functionsOffVFIO.contains($0.address) }) else {
            throw refuse(.invalidArgument, "VFIO_DEVICE_PCI_HOT_RESET")
        }
        try reset()
    }

    // MARK: Region access

    private func locate(_ offset: UInt64, _ count: Int, _ operation: String) throws(VFIOError) -> (VFIORegionInfo, UInt64) {
        let index = UInt32(truncatingIfNeeded: offset >> Self.regionShift)
        guard offset >> Self.regionShift < 9 else { throw refuse(.invalidArgument, operation) }
        let region = try regionInfo(index)
        let inside = offset - region.offset
        let (end, overflow) = inside.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= region.size else { throw refuse(.invalidArgument, operation) }
        return (region, inside)
    }

    public func read(atDeviceOffset offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VFIOError) -> Int {
        let (region, inside) = try locate(offset, buffer.count, "pread")
        log.record(.read(device: name, region: region.index, offset: inside, count: buffer.count))
        if region.index == VFIOPCIRegion.config {
            config.withLock { bytes in
                for i in 0..<buffer.count { buffer[i] = bytes[Int(inside) + i] }
            }
            return buffer.count
        }
        guard let backing = backings[region.index] else {  // I/O BARs read as all ones, as nothing answers
            for i in 0..<buffer.count { buffer[i] = 0xff }
            return buffer.count
        }
        do { return try backing.file.read(fromAbsoluteOffset: Int64(inside), into: buffer) } catch {
            throw VFIOError(.kernel, operation: "pread", subject: "twin device \(name)", system: error)
        }
    }

    public func write(atDeviceOffset offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(VFIOError) -> Int {
        let (region, inside) = try locate(offset, buffer.count, "pwrite")
        log.record(.write(device: name, region: region.index, offset: inside, bytes: Array(buffer)))
        if region.index == VFIOPCIRegion.config {
            config.withLock { bytes in
                for i in 0..<buffer.count { bytes[Int(inside) + i] = buffer[i] }
            }
            return buffer.count
        }
        guard let backing = backings[region.index] else { return buffer.count }
        do { return try backing.file.write(toAbsoluteOffset: Int64(inside), buffer) } catch {
            throw VFIOError(.kernel, operation: "pwrite", subject: "twin device \(name)", system: error)
        }
    }

    public func map(atDeviceOffset offset: UInt64, size: Int, protection: MemoryMapping.Protection) throws(VFIOError) -> MemoryMapping {
        let (region, inside) = try locate(offset, size, "mmap")
        log.record(.map(device: name, region: region.index, offset: inside, size: size))
        guard let backing = backings[region.index], region.mappable, inside % 4096 == 0,
              region.mappableAreas.contains(where: { inside >= $0.offset && inside + UInt64(size) <= $0.offset + $0.size })
        else { throw refuse(.invalidArgument, "mmap") }
        do { return try MemoryMapping(mapping: backing.file, offset: Int64(inside), count: size, protection: protection) } catch {
            throw VFIOError(.kernel, operation: "mmap", subject: "twin device \(name)", system: error)
        }
    }

    private func refuse(_ errno: Errno, _ operation: String) -> VFIOError {
        VFIOError(.kernel, operation: operation, subject: "twin device \(name)", system: SystemError(errno, operation: operation))
    }
}

/// A BAR's memory: a memfd, so pread/pwrite and mmap reach the same pages.
private final class Backing: Sendable {
    let file: FileDescriptor
    init(_ file: consuming FileDescriptor) { self.file = file }
}

private func valueOrThrow(_ operation: String, _ context: String, _ body: () -> Int32) throws(SystemError) -> Int32 {
    let value = body()
    guard value >= 0 else { throw SystemError.current(operation, context) }
    return value
}
