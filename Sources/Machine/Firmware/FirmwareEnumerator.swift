import PCI
import VMMBase

/// What firmware does to PCI before an OS runs, using nothing but config cycles: walks the
/// buses depth first, numbers the buses behind bridges, sizes every BAR with the all-ones
/// protocol, places BARs and bridge windows in the platform's windows, and enables decoding.
public struct FirmwareEnumerator {
    public struct Windows: Sendable {
        public var io: AddressRange
        public var memory32: AddressRange
        public var memory64: AddressRange

        public init(io: AddressRange, memory32: AddressRange, memory64: AddressRange) {
            self.io = io
            self.memory32 = memory32
            self.memory64 = memory64
        }
    }

    let cycles: any ConfigCycles
    let windows: Windows

    public init(cycles: any ConfigCycles, windows: Windows) {
        self.cycles = cycles
        self.windows = windows
    }

    public func run() throws(EnumerationError) -> EnumerationReport {
        var scan = BusScan(cycles: cycles)
        do {
            return try run(&scan)
        } catch {
            // Nothing was programmed but bus numbers (BAR probes restore as they go): undo them,
            // so a failed enumeration leaves the machine as it was.
            scan.undoBusNumbers()
            throw error
        }
    }

    private func run(_ scan: inout BusScan) throws(EnumerationError) -> EnumerationReport {
        let root = try scan.scan(bus: 0)
        // Bottom-up sizes, then top-down addresses.
        var report = EnumerationReport(buses: scan.nextBus)
        var assigned: [Int: UInt64] = [:]
        do {
            do {
                try placeAll(root, withIO: true, optionalIO: true, into: &assigned)
            } catch .windowExhausted(kind: .io, _, _) {
                // No room for the optional hot-plug I/O windows: the BARs come first.
                assigned = [:]
                try placeAll(root, withIO: true, optionalIO: false, into: &assigned)
            }
        } catch .windowExhausted(kind: .io, let needed, let window) {
            // Like PC firmware, give up on I/O rather than on the machine: PCI Express devices
            // must work without their I/O BARs, and the guest OS can still try to place them.
            assigned = [:]
            try placeAll(root, withIO: false, optionalIO: false, into: &assigned)
            let skipped = countIOBARs(root)
            report.warnings.append("I/O space exhausted (0x\(String(needed, radix: 16)) bytes wanted, window \(window)): "
                                   + "\(skipped) I/O BARs left unassigned")
        }
        program(root, assigned: assigned, report: &report)
        return report
    }

    private func placeAll(_ root: BusNode, withIO: Bool, optionalIO: Bool,
                          into assigned: inout [Int: UInt64]) throws(EnumerationError) {
        items.list.removeAll()
        includeIO = withIO
        items.includeOptionalIO = optionalIO
        let rootRequests = requests(of: root)
        try place(rootRequests, windows: windows, into: &assigned)
    }

    private func countIOBARs(_ bus: BusNode) -> Int {
        bus.functions.reduce(0) { sum, f in
            sum + f.bars.filter { $0.kind == .io }.count + (f.secondary.map(countIOBARs) ?? 0)
        }
    }

    // MARK: Sizing

    /// Each request gets an id: its index in `items`, which records what it stands for.
    private final class Items {
        enum Item {
            case bar(FunctionNode, BARProbe)
            case rom(FunctionNode, size: UInt64)
            case window(FunctionNode, ResourceKind)
        }
        var list: [Item] = []
        var includeIO = true
        var includeOptionalIO = true
        func add(_ item: Item) -> Int {
            list.append(item)
            return list.count - 1
        }
    }
    private let items = Items()
    private var includeIO: Bool {
        get { items.includeIO }
        nonmutating set { items.includeIO = newValue }
    }

    private func requests(of bus: BusNode) -> [ResourceKind: [ResourceAllocator.Request]] {
        var out: [ResourceKind: [ResourceAllocator.Request]] = [:]
        for function in bus.functions {
            for bar in function.bars where includeIO || bar.kind != .io {
                let id = items.add(.bar(function, bar))
                out[bar.kind, default: []].append(.init(id: id, size: bar.size, alignment: bar.size))
            }
            if let rom = function.romSize {
                let id = items.add(.rom(function, size: rom))
                out[.memory, default: []].append(.init(id: id, size: rom, alignment: rom))
            }
            if let child = function.secondary {
                let childRequests = requests(of: child)
                for kind in ResourceKind.allCases where includeIO || kind != .io {
                    let list = childRequests[kind] ?? []
                    let reserve = function.reservation?.size(of: kind, optionalIO: items.includeOptionalIO) ?? 0
                    guard !list.isEmpty || reserve > 0 else { continue }
                    let footprint = ResourceAllocator.footprint(of: list)
                    let granule = kind.bridgeGranularity
                    let size = ResourceAllocator.alignUp(max(footprint.size, reserve), granule)
                    let id = items.add(.window(function, kind))
                    function.windowRequests[kind] = list
                    function.windowSizes[kind] = size
                    out[kind, default: []].append(.init(id: id, size: size, alignment: max(granule, footprint.alignment)))
                }
            }
        }
        return out
    }

    private func place(_ requests: [ResourceKind: [ResourceAllocator.Request]], windows: Windows,
                       into assigned: inout [Int: UInt64]) throws(EnumerationError) {
        for kind in ResourceKind.allCases {
            guard let list = requests[kind], !list.isEmpty else { continue }
            let window = kind == .io ? windows.io : kind == .memory ? windows.memory32 : windows.memory64
            try place(list, kind: kind, in: window, into: &assigned)
        }
    }

    private func place(_ list: [ResourceAllocator.Request], kind: ResourceKind, in window: AddressRange,
                       into assigned: inout [Int: UInt64]) throws(EnumerationError) {
        guard let placed = ResourceAllocator.place(list, in: window) else {
            throw .windowExhausted(kind: kind, needed: ResourceAllocator.footprint(of: list).size, window: window)
        }
        for (id, address) in placed {
            assigned[id] = address
            if case .window(let bridge, let k) = items.list[id], let children = bridge.windowRequests[k], !children.isEmpty {
                let size = bridge.windowSizes[k] ?? 0
                try place(children, kind: k, in: AddressRange(base: address, size: size)!, into: &assigned)
            }
        }
    }

    // MARK: Programming

    private func program(_ bus: BusNode, assigned: [Int: UInt64], report: inout EnumerationReport) {
        var byFunction: [ObjectIdentifier: [(Items.Item, UInt64)]] = [:]
        for (id, address) in assigned {
            let item = items.list[id]
            let owner: FunctionNode
            switch item {
            case .bar(let f, _), .rom(let f, _), .window(let f, _): owner = f
            }
            byFunction[ObjectIdentifier(owner), default: []].append((item, address))
        }
        programBus(bus, byFunction: byFunction, report: &report)
    }

    private func programBus(_ bus: BusNode, byFunction: [ObjectIdentifier: [(Items.Item, UInt64)]],
                            report: inout EnumerationReport) {
        for function in bus.functions {
            var command = CommandBits()
            var record = EnumeratedFunction(address: function.address, vendorID: function.vendorID,
                                            deviceID: function.deviceID, classCode: function.classCode,
                                            isBridge: function.secondary != nil, slotPath: function.slotPath,
                                            interruptPin: function.interruptPin)
            var open: Set<ResourceKind> = []
            for (item, address) in byFunction[ObjectIdentifier(function)] ?? [] {
                switch item {
                case .bar(_, let bar):
                    let offset = ConfigSpace.barOffset(bar.index)
                    write(function, offset, .dword, UInt32(truncatingIfNeeded: address) | bar.flagBits)
                    if bar.is64Bit { write(function, offset + 4, .dword, UInt32(truncatingIfNeeded: address >> 32)) }
                    command.insert(bar.kind == .io ? .io : .memory)
                    record.bars.append(AssignedBAR(index: bar.index, kind: bar.kind, is64Bit: bar.is64Bit,
                                                   range: AddressRange(base: address, size: bar.size)!))
                case .rom(let f, let size):
                    write(function, f.romOffset, .dword, UInt32(truncatingIfNeeded: address))
                    record.rom = AddressRange(base: address, size: size)
                case .window(let f, let kind):
                    let range = AddressRange(base: address, size: f.windowSizes[kind] ?? 0)!
                    programWindow(function, kind: kind, range: range)
                    open.insert(kind)
                    command.insert(kind == .io ? .io : .memory)
                    record.windows[kind] = range
                }
            }
            if let child = function.secondary {
                for kind in ResourceKind.allCases where !open.contains(kind) { closeWindow(function, kind: kind) }
                command.insert(.busMaster)
                record.busNumbers = BridgeBusNumbers(primary: bus.number, secondary: child.number,
                                                     subordinate: child.subordinate)
                programBus(child, byFunction: byFunction, report: &report)
            } else if !command.isEmpty {
                command.insert(.busMaster)
            }
            if !command.isEmpty {
                let current = read(function, Reg.command, .word)
                write(function, Reg.command, .word, current | UInt32(command.rawValue))
            }
            record.bars.sort { $0.index < $1.index }
            report.functions.append(record)
        }
        report.functions.sort { $0.address < $1.address }
    }

    private func programWindow(_ f: FunctionNode, kind: ResourceKind, range: AddressRange) {
        switch kind {
        case .io:
            write(f, Reg.ioBase, .byte, UInt32(range.base >> 8 & 0xF0))
            write(f, Reg.ioLimit, .byte, UInt32(range.last >> 8 & 0xF0))
            write(f, Reg.ioBaseUpper, .word, UInt32(range.base >> 16 & 0xFFFF))
            write(f, Reg.ioLimitUpper, .word, UInt32(range.last >> 16 & 0xFFFF))
        case .memory:
            write(f, Reg.memoryBase, .word, UInt32(range.base >> 16 & 0xFFF0))
            write(f, Reg.memoryLimit, .word, UInt32(range.last >> 16 & 0xFFF0))
        case .prefetchable:
            write(f, Reg.prefetchBase, .word, UInt32(range.base >> 16 & 0xFFF0))
            write(f, Reg.prefetchLimit, .word, UInt32(range.last >> 16 & 0xFFF0))
            write(f, Reg.prefetchBaseUpper, .dword, UInt32(truncatingIfNeeded: range.base >> 32))
            write(f, Reg.prefetchLimitUpper, .dword, UInt32(truncatingIfNeeded: range.last >> 32))
        }
    }

    /// A closed window has its base above its limit.
    private func closeWindow(_ f: FunctionNode, kind: ResourceKind) {
        switch kind {
        case .io:
            write(f, Reg.ioBase, .byte, 0xF0)
            write(f, Reg.ioLimit, .byte, 0x00)
            write(f, Reg.ioBaseUpper, .word, 0)
            write(f, Reg.ioLimitUpper, .word, 0)
        case .memory:
            write(f, Reg.memoryBase, .word, 0xFFF0)
            write(f, Reg.memoryLimit, .word, 0)
        case .prefetchable:
            write(f, Reg.prefetchBase, .word, 0xFFF0)
            write(f, Reg.prefetchLimit, .word, 0)
            write(f, Reg.prefetchBaseUpper, .dword, 0)
            write(f, Reg.prefetchLimitUpper, .dword, 0)
        }
    }

    private func read(_ f: FunctionNode, _ offset: Int, _ width: AccessWidth) -> UInt32 {
        cycles.read(bus: f.address.bus, devfn: f.address.devfn, offset: offset, width: width)
    }

    private func write(_ f: FunctionNode, _ offset: Int, _ width: AccessWidth, _ value: UInt32) {
        cycles.write(bus: f.address.bus, devfn: f.address.devfn, offset: offset, width: width, value: value)
    }
}

/// The three kinds of address space a bridge forwards.
public enum ResourceKind: Int, Sendable, CaseIterable, CustomStringConvertible {
    case io, memory, prefetchable

    /// Bridge windows are granular: 4 KiB for I/O, 1 MiB for memory.
    var bridgeGranularity: UInt64 { self == .io ? 0x1000 : 0x10_0000 }

    public var description: String { ["I/O", "memory", "prefetchable memory"][rawValue] }
}

public enum EnumerationError: Error, Hashable, CustomStringConvertible {
    case busNumbersExhausted(at: PCIAddress)
    case windowExhausted(kind: ResourceKind, needed: UInt64, window: AddressRange)

    public var description: String {
        switch self {
        case .busNumbersExhausted(let address):
            "bus numbers exhausted at bridge \(address): a segment has 256 buses"
        case .windowExhausted(let kind, let needed, let window):
            "\(kind) window \(window) cannot hold the 0x\(String(needed, radix: 16)) bytes its devices need"
        }
    }
}

public struct AssignedBAR: Sendable, Hashable {
    public let index: Int
    public let kind: ResourceKind
    public let is64Bit: Bool
    public let range: AddressRange
}

public struct EnumeratedFunction: Sendable {
    public let address: PCIAddress
    public let vendorID: UInt16
    public let deviceID: UInt16
    public let classCode: UInt32
    public let isBridge: Bool
    /// Device numbers from the function's slot up to its root-bus slot (for INTx routing).
    public let slotPath: [UInt8]
    /// Interrupt Pin register: 0 none, 1-4 INTA-INTD.
    public let interruptPin: UInt8
    public var bars: [AssignedBAR] = []
    public var rom: AddressRange?
    public var busNumbers: BridgeBusNumbers?
    public var windows: [ResourceKind: AddressRange] = [:]
}

public struct EnumerationReport: Sendable {
    /// Buses in use: bus 0 plus one per bridge.
    public let buses: Int
    public var functions: [EnumeratedFunction] = []
    /// What firmware had to give up on, in words (e.g. I/O BARs left unassigned).
    public var warnings: [String] = []

    init(buses: Int) { self.buses = buses }

    public var summary: String {
        let bars = functions.flatMap(\.bars)
        let io = bars.filter { $0.kind == .io }.count
        let mem64 = bars.filter(\.is64Bit).count
        return "\(functions.count) functions on \(buses) bus\(buses == 1 ? "" : "es"), "
            + "\(functions.filter(\.isBridge).count) bridges; \(bars.count) BARs assigned "
            + "(\(io) I/O, \(bars.count - io - mem64) 32-bit memory, \(mem64) 64-bit memory)"
    }
}
