import AddressSpace
import Chipset
import PCI
import HostOS
import Synchronization
import VMMBase

/// Serves accesses to one BAR of one function, while the committed views show it: a commit
/// that drops the BAR retires the handler, which waits for calls in progress (the grace
/// period) and refuses new ones (reads all-ones) from stale views until a commit shows it again.
final class BARHandler: RetirableHandler {
    let function: any PCIFunction
    let index: Int
    /// "name@bb.f BARi": made once, not on every commit that shows the BAR.
    let name: String
    /// The function, if it maps host memory over its BARs: cast once, not on every commit.
    let directlyMapped: (any DirectlyMappedBARs)?
    /// Called after each write, for functions whose BAR writes can have platform effects
    /// (a hot-plug controller's registers).
    let afterWrite: (@Sendable (any PCIFunction) -> Void)?
    /// Accesses take no lock: they count themselves in `inFlight`, then check `live` (both
    /// sequentially consistent, so a retire that cleared `live` either sees the count or the
    /// access sees the cleared flag and backs out). `liveSince` orders revive against retire.
    private let live = Atomic<Bool>(true)
    private let inFlight = Atomic<Int>(0)
    private let liveSince = Mutex(0)

    init(function: any PCIFunction, index: Int, devfn: UInt8, afterWrite: (@Sendable (any PCIFunction) -> Void)?) {
        self.function = function
        self.index = index
        name = "\(PCIMappings.label(function, at: devfn)) BAR\(index)"
        directlyMapped = function as? any DirectlyMappedBARs
        self.afterWrite = afterWrite
    }

    func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        guard enter() else { return width.allOnes }
        defer { leave() }
        return function.barRead(index, offset: offset, width: width)
    }

    func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard enter() else { return }
        function.barWrite(index, offset: offset, width: width, value: value)
        leave()
        afterWrite?(function)
    }

    func revive(generation: Int) {
        liveSince.withLock {
            $0 = max($0, generation)
            live.store(true, ordering: .sequentiallyConsistent)
        }
    }

    func retire(generation: Int) {
        let retired = liveSince.withLock { since -> Bool in
            // A later commit showed this BAR again before this retire ran.
            guard since <= generation else { return false }
            live.store(false, ordering: .sequentiallyConsistent)
            return true
        }
        guard retired else { return }
        while inFlight.load(ordering: .sequentiallyConsistent) > 0 { HostClock.sleep(milliseconds: 1) }
    }

    private func enter() -> Bool {
        inFlight.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if live.load(ordering: .sequentiallyConsistent) { return true }
        leave()
        return false
    }

    private func leave() { inFlight.wrappingSubtract(1, ordering: .sequentiallyConsistent) }
}

/// The BAR handlers of one bus as one build of it takes them: one per (slot, BAR) and
/// function, the handler the last build gave when the same function still holds the slot, a
/// new one otherwise. Handlers sit in devfn and BAR order: a build walks them in order, where a
/// hash table of thousands of BARs costs a cache miss per lookup. Those the build did not take
/// are dropped with the last build's table.
struct BARHandlerTable {
    private static let barsPerFunction = 6

    private let previous: [BARHandler?]
    private(set) var slots: [BARHandler?]
    private let afterWrite: @Sendable (any PCIFunction) -> Void

    init(previous: [BARHandler?], afterWrite: @escaping @Sendable (any PCIFunction) -> Void) {
        self.previous = previous
        self.afterWrite = afterWrite
        slots = []
        slots.reserveCapacity(previous.count)
    }

    mutating func handler(for function: any PCIFunction, at devfn: UInt8, bar index: Int) -> BARHandler {
        precondition(index < Self.barsPerFunction)
        let slot = Int(devfn) * Self.barsPerFunction + index
        // A table grows to the highest devfn used: a root port's bus has one device.
        if slots.count <= slot { slots.append(contentsOf: repeatElement(nil, count: slot + 1 - slots.count)) }
        if slot < previous.count, let known = previous[slot], known.function === function {
            slots[slot] = known
            return known
        }
        let made = BARHandler(function: function, index: index, devfn: devfn,
                              afterWrite: function is any HotPlugController ? afterWrite : nil)
        slots[slot] = made
        return made
    }
}

/// Builds the memory and I/O region trees of a PCI hierarchy from its live config spaces:
/// each decoded BAR is a leaf on its bus, and each bridge window is an alias of the
/// secondary bus's tree, so an access reaches a device only through the windows above it.
enum PCIMappings {
    static let wholeSpace: UInt64 = .max

    /// The trees of the hierarchy below `root`, building again only the buses `cache` holds
    /// no current trees for.
    static func compose(root: PCIBus, cache: BusTreeCache) -> (memory: Region, io: Region) {
        cache.composing { composition in
            let trees = trees(of: root, under: nil, in: composition, cache: cache).trees
            return (trees.memory, trees.io)
        }
    }

    private static func trees(of bus: PCIBus, under parent: PCIBus?, in composition: Int,
                              cache: BusTreeCache) -> (trees: BusTreeCache.Trees, buses: [ObjectIdentifier]) {
        cache.trees(of: bus, under: parent, in: composition) { handlers in
            build(bus: bus, handlers: &handlers, in: composition, cache: cache)
        }
    }

    /// One bus's trees: its functions' BARs, and its bridges' windows as aliases of the trees
    /// of the buses behind them.
    private static func build(bus: PCIBus, handlers: inout BARHandlerTable, in composition: Int,
                              cache: BusTreeCache) -> BusTreeCache.Built {
        var memory = Region.container("pci-mem(\(bus.name))", size: wholeSpace)
        var io = Region.container("pci-io(\(bus.name))", size: 1 << 32)
        var placed = PlacedBARs()
        var buses = [ObjectIdentifier(bus)]
        var functions: [ObjectIdentifier] = []
        for (devfn, function) in bus.functions {
            functions.append(ObjectIdentifier(function))
            let config = function.decodeSnapshot()
            for (index, bar) in config.bars.enumerated() {
                guard let bar, let range = config.decodedBARRange(index), let size = range.size else { continue }
                let handler = handlers.handler(for: function, at: devfn, bar: index)
                placed.add(handler.name, range, io: bar.isIO)
                let leaf = Region.leaf(handler.name, size: size, handler: handler)
                if bar.isIO { io.add(leaf, at: range.base) } else { memory.add(leaf, at: range.base) }
                if !bar.isIO, let direct = handler.directlyMapped {
                    addDirectAreas(direct.directAreas(ofBAR: index), of: handler.name, at: range.base,
                                   size: size, to: &memory)
                }
            }
            // The config-space checks come first: they save two dynamic casts per function.
            if let sriov = config.sriovState, sriov.vfMemorySpaceEnabled,
               let pf = function as? any SRIOVPhysicalFunction, pf.isSRIOVCapable {
                addVirtualFunctionBARs(of: pf, at: devfn, sriov: sriov, on: bus, to: &memory)
            }
            if config.layout == .bridge, let bridge = function as? any PCIBridgeFunction {
                let windows = config.decodedWindows
                let label = label(function, at: devfn)
                let (behind, behindBuses) = trees(of: bridge.secondary, under: bus, in: composition, cache: cache)
                buses += behindBuses
                for (name, window) in [("mem", windows.memory), ("pref", windows.prefetchable)] {
                    if let window, let size = window.size {
                        memory.add(.alias("\(label) \(name) window", of: behind.memory, offset: window.base, size: size),
                                   at: window.base)
                    }
                }
                if let window = windows.io, let size = window.size, window.last < 1 << 32 {
                    io.add(.alias("\(label) io window", of: behind.io, offset: window.base, size: size), at: window.base)
                }
            }
        }
        placed.reportOverlaps(bus: bus.name)
        return BusTreeCache.Built(trees: BusTreeCache.Trees(memory: memory, io: io), buses: buses, functions: functions)
    }

    /// "name@bb.f", how regions of a function are named.
    static func label(_ function: any PCIFunction, at devfn: UInt8) -> String {
        "\(function.name)@\(hex(devfn >> 3, 2)).\(devfn & 7)"
    }

    /// The BARs decoded on one bus: a guest that programs two of them over each other gets a
    /// guest-error line (the one placed later answers there: equal-priority regions). Checked
    /// once per bus by a linear-time sort, so a commit stays linear in the number of BARs.
    private struct PlacedBARs {
        var memory: [(name: String, range: AddressRange)] = []
        var io: [(name: String, range: AddressRange)] = []

        mutating func add(_ name: String, _ range: AddressRange, io isIO: Bool) {
            if isIO { io.append((name, range)) } else { memory.append((name, range)) }
        }

        /// Rate-limited per bus, so a guest with thousands of functions cannot turn one
        /// commit into thousands of lines.
        func reportOverlaps(bus: String) {
            for placed in [memory, io] where placed.count > 1 {
                var reach: (name: String, range: AddressRange)?
                var order = placed.indices.map { KeyedIndex(key: placed[$0].range.base, index: $0) }
                order.sortByKey()
                for entry in order.lazy.map({ placed[$0.index] }) {
                    if let widest = reach, entry.range.base <= widest.range.last {
                        GuestErrorLog.report(device: "pci bus \(bus)", kind: "bar-overlap",
                                             "\(entry.name) at \(entry.range) overlaps \(widest.name) at \(widest.range); the one placed later answers where they overlap")
                    }
                    if reach.map({ entry.range.last > $0.range.last }) ?? true { reach = entry }
                }
            }
        }
    }

    /// Host-memory areas over a decoded BAR (above its handler, which serves the rest).
    private static func addDirectAreas(_ areas: [DirectBARArea], of label: String, at base: UInt64, size: UInt64,
                                       to memory: inout Region) {
        for area in areas {
            let (end, overflow) = area.offset.addingReportingOverflow(area.handler.size)
            guard area.handler.size > 0, !overflow, end <= size else { continue }
            memory.add(.leaf("\(label) direct+0x\(String(area.offset, radix: 16))", size: area.handler.size, handler: area.handler),
                       at: base + area.offset, priority: 1)
        }
    }

    /// VF n's share of each VF BAR aperture (SR-IOV 1.1, 3.3.14: aperture + n * per-VF size),
    /// for the enabled VFs that answer at their routing IDs on the PF's bus.
    private static func addVirtualFunctionBARs(of pf: any SRIOVPhysicalFunction, at devfn: UInt8, sriov: SRIOVState,
                                               on bus: PCIBus, to memory: inout Region) {
        for vf in pf.enabledVirtualFunctions {
            guard let vfDevfn = PCIBus.devfn(of: devfn, plus: vf.routingOffset), bus.occupant(at: vfDevfn) == nil else { continue }
            for index in sriov.vfBARs.keys.sorted() {
                guard let range = sriov.vfBARRange(index, vf: vf.index), let size = range.size else { continue }
                let handler = BARHandler(function: vf.function, index: index, devfn: vfDevfn, afterWrite: nil)
                memory.add(.leaf(handler.name, size: size, handler: handler), at: range.base)
            }
        }
    }
}
