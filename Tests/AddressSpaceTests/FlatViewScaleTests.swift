import AddressSpace
import Testing
import TestRequirements
import VMMBase

/// The flat view of large trees (thousands of leaves, PCI-shaped: buses behind windows, BARs
/// that overlap or share a base, areas over BARs at a higher priority, regions at the top of
/// the address space) against a direct evaluation of the tree at every address where the
/// answer can change, and the linear-time sort it uses against the standard library's sort.
@Suite struct FlatViewScaleTests {
    @Test(arguments: 0..<3) func largeTreesMatchDirectEvaluationAtEveryBoundary(seed: Int) {
        var generator = LargeTreeGenerator(seed: UInt64(seed))
        let root = generator.makeRoot()
        #expect(generator.probes.count >= 2000)
        let view = FlatView(rendering: root)
        let reference = ReferenceTree(root)

        let entries = view.entries
        for (a, b) in zip(entries, entries.dropFirst()) {
            #expect(a.range.last < b.range.base, "entries overlap or are out of order: \(a.range) \(b.range)")
            // Adjacent stretches of one leaf at consecutive offsets are one entry.
            let continues = a.range.last &+ 1 == b.range.base && a.handler === b.handler && a.name == b.name
                && a.handlerOffset &+ (b.range.base &- a.range.base) == b.handlerOffset
            #expect(!continues, "entries \(a.range) and \(b.range) should be one")
        }

        var samples = reference.boundaries()
        for entry in entries {
            samples += [entry.range.base, entry.range.last, entry.range.base &- 1, entry.range.last &+ 1]
        }
        for _ in 0..<2000 { samples.append(generator.rng.next()) }
        var mismatches = 0
        for address in samples {
            let expected = reference.answer(at: address)
            let got = view.entry(containing: address).map { entry in
                Answer(probe: entry.handler as! Probe, offset: address - entry.range.base + entry.handlerOffset,
                       name: entry.name)
            }
            if got != expected {
                mismatches += 1
                if mismatches <= 5 {
                    Issue.record("0x\(String(address, radix: 16)): view \(String(describing: got)), tree \(String(describing: expected))")
                }
            }
        }
        #expect(mismatches == 0, "\(mismatches) of \(samples.count) sampled addresses differ")
    }

    @Test(arguments: 0..<40) func sortByKeyOrdersAsTheStandardSortDoes(seed: Int) {
        var rng = SplitMix64(state: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        let count = seed == 0 ? 0 : seed == 1 ? 1 : Int(rng.next() % 5000)
        // Keys that share high bytes (addresses), repeat, reach UInt64.max, or are all equal.
        let pool: [UInt64] = (0..<max(1, count / 4)).map { _ in rng.next() }
        var items: [KeyedIndex] = (0..<count).map { i in
            let key: UInt64
            switch seed % 4 {
            case 0: key = 0xFEC0_0000 + (rng.next() % 0x1_0000) * 0x1000
            case 1: key = pool[Int(rng.next() % UInt64(pool.count))]
            case 2: key = rng.next() % 3 == 0 ? .max : .max - rng.next() % 16
            default: key = seed % 8 == 3 ? 42 : rng.next()
            }
            return KeyedIndex(key: key, index: i)
        }
        // Indices start ascending and are unique: a stable sort by key is the sort by (key, index).
        let expected = items.sorted { ($0.key, $0.index) < ($1.key, $1.index) }
        items.sortByKey()
        let firstDifference = items.indices.first { $0 >= expected.count || items[$0] != expected[$0] }
        #expect(items.count == expected.count && firstDifference == nil,
                "first difference at \(firstDifference ?? -1): \(firstDifference.map { items[$0] } as Any), expected \(firstDifference.map { expected[$0] } as Any)")
    }
}

/// What serves one address: the leaf's probe, the offset within the leaf, and its name.
struct Answer: Equatable, CustomStringConvertible {
    let probe: Probe
    let offset: UInt64
    let name: String
    static func == (a: Answer, b: Answer) -> Bool { a.probe === b.probe && a.offset == b.offset && a.name == b.name }
    var description: String { "\(name)+0x\(String(offset, radix: 16))" }
}

/// A region tree read directly: at each address, a container's children are tried in
/// precedence order (higher priority, then later added) and the first that answers wins.
/// Deliberately simple (a scan per address), to be obviously right rather than fast.
final class ReferenceTree {
    private indirect enum Node {
        case leaf(Probe, name: String)
        case container([(base: UInt64, size: UInt64, node: Node)])
        case alias(target: Node, targetSize: UInt64, offset: UInt64)
    }
    private let root: Node
    private let rootSize: UInt64
    private let region: Region

    init(_ region: Region) {
        self.region = region
        root = Self.node(region)
        rootSize = region.size
    }

    private static func node(_ region: Region) -> Node {
        switch region.content {
        case .handler(let handler):
            return .leaf(handler as! Probe, name: region.name)
        case .container(let children):
            let ordered = children.enumerated().sorted { a, b in
                a.element.priority != b.element.priority ? a.element.priority > b.element.priority : a.offset > b.offset
            }
            return .container(ordered.map { ($0.element.base, $0.element.region.size, node($0.element.region)) })
        case .alias(let target, let offset):
            return .alias(target: node(target), targetSize: target.size, offset: offset)
        }
    }

    func answer(at address: UInt64) -> Answer? {
        address < rootSize ? Self.answer(root, address) : nil
    }

    /// `address` is already known to lie inside the node.
    private static func answer(_ node: Node, _ address: UInt64) -> Answer? {
        switch node {
        case .leaf(let probe, let name):
            return Answer(probe: probe, offset: address, name: name)
        case .container(let children):
            for child in children where address >= child.base && address - child.base < child.size {
                if let hit = answer(child.node, address - child.base) { return hit }
            }
            return nil
        case .alias(let target, let targetSize, let offset):
            let (inTarget, overflow) = address.addingReportingOverflow(offset)
            return !overflow && inTarget < targetSize ? answer(target, inTarget) : nil
        }
    }

    /// Every absolute address where some region of the tree starts or ends, and the address
    /// before it: the answer can change only there.
    func boundaries() -> [UInt64] {
        var points: [UInt64] = []
        Self.collect(region, origin: 0, into: &points)
        return points
    }

    private static func collect(_ region: Region, origin: UInt64, into points: inout [UInt64]) {
        for edge in [origin, origin &+ region.size] { points += [edge, edge &- 1] }
        switch region.content {
        case .handler: break
        case .container(let children):
            for child in children { collect(child.region, origin: origin &+ child.base, into: &points) }
        case .alias(let target, let offset):
            collect(target, origin: origin &- offset, into: &points)
        }
    }
}

/// A PCI-shaped tree: buses (containers spanning the whole space) holding clustered BARs, each
/// bus shown through one or two windows (aliases, some translating), leaves at the root, a
/// low-priority leaf under much of it, and regions at the very top of the space.
struct LargeTreeGenerator {
    var rng: SplitMix64
    private(set) var probes: [Probe] = []

    init(seed: UInt64) { rng = SplitMix64(state: seed &* 0x2545_F491_4F6C_DD1D &+ 7) }

    private mutating func leaf(size: UInt64) -> Region {
        let probe = Probe(UInt64(probes.count + 1))
        probes.append(probe)
        // Some names repeat, so equal names of different handlers must not merge entries.
        let name = rng.next() % 8 == 0 ? "shared" : "p\(probe.tag)"
        return .leaf(name, size: size, handler: probe)
    }

    private mutating func size() -> UInt64 {
        switch rng.next() % 5 {
        case 0: return 0x10
        case 1: return 0x100
        case 2: return 0x1000
        case 3: return 0x4000
        default: return 1 + rng.next() % 0x8000
        }
    }

    private mutating func priority() -> Int { [0, 0, 0, 1, -1][Int(rng.next() % 5)] }

    /// BARs clustered in [window, window + 0x80000): bases repeat and ranges overlap. Every
    /// other bus has only priority 0, as a bus with no areas over its BARs has.
    private mutating func bus(window: UInt64, bars: Int, depth: Int) -> Region {
        var bus = Region.container("bus", size: .max)
        let mixed = rng.next() % 2 == 0
        for _ in 0..<bars {
            let base = window + (rng.next() % 0x80) * 0x1000
            let barSize = size()
            bus.add(leaf(size: barSize), at: base, priority: mixed ? priority() : 0)
            if mixed, rng.next() % 10 == 0, barSize >= 0x100 {  // an area over the BAR, above it
                bus.add(leaf(size: barSize / 4), at: base + barSize / 2, priority: 1)
            }
        }
        if depth < 1, rng.next() % 2 == 0 {  // a bridge behind this bus
            let inner = window + 0x40000
            bus.add(.alias("sub window", of: self.bus(window: inner, bars: 50, depth: depth + 1),
                           offset: inner, size: 0x20000), at: inner)
        }
        return bus
    }

    mutating func makeRoot() -> Region {
        var root = Region.container("root", size: .max)
        root.add(leaf(size: 0x1_0000_0000), at: 0xC000_0000, priority: -1)
        for b in 0..<12 {
            let window = 0xE000_0000 + UInt64(b) * 0x60000
            let bus = self.bus(window: window, bars: 180, depth: 0)
            root.add(.alias("window", of: bus, offset: window, size: 0x50000 + rng.next() % 0x30000), at: window)
            if b % 3 == 0 {  // a second window showing part of the bus at a translated address
                root.add(.alias("moved window", of: bus, offset: window + 0x8000, size: 0x10000),
                         at: 0x8_0000_0000 + UInt64(b) * 0x10000)
            }
        }
        for _ in 0..<500 {
            let base = 0xE000_0000 + (rng.next() % 0x600) * 0x800
            root.add(leaf(size: size()), at: base, priority: priority())
        }
        // At the top: one leaf reaching the root's last address, one whose own range ends at
        // UInt64.max (clipped by the root), and overlapping ones below them.
        root.add(leaf(size: 0x100), at: UInt64.max - 0x100)
        root.add(leaf(size: 0x80), at: UInt64.max - 0x7F)
        for _ in 0..<20 {
            root.add(leaf(size: size()), at: UInt64.max - 0x10000 + rng.next() % 0x8000, priority: priority())
        }
        return root
    }
}
