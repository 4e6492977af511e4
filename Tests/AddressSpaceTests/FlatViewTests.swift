import AddressSpace
import Synchronization
import Testing
import TestRequirements
import VMMBase

/// A handler that records accesses and answers reads with a tag plus the offset, so a test
/// can tell which region (and which offset within it) served an access.
final class Probe: IORegionHandler {
    let tag: UInt64
    let writes = Mutex<[(offset: UInt64, width: Int, value: UInt64)]>([])
    init(_ tag: UInt64) { self.tag = tag }
    func read(offset: UInt64, width: AccessWidth) -> UInt64 { tag << 24 | offset }
    func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        writes.withLock { $0.append((offset, width.bytes, value)) }
    }
}

@Suite struct FlatViewTests {
    @Test func unmappedReadsAllOnesAndWritesAreDropped() {
        let view = FlatView(rendering: .container("root", size: 1 << 16))
        #expect(view.read(at: 0x80, width: .byte) == 0xFF)
        #expect(view.read(at: 0x80, width: .word) == 0xFFFF)
        #expect(view.read(at: 0x80, width: .dword) == 0xFFFF_FFFF)
        #expect(view.read(at: 0x80, width: .qword) == .max)
        view.write(at: 0x80, width: .dword, value: 1)  // must not crash
        #expect(view.entries.isEmpty)
    }

    @Test func higherPriorityWinsAndLowerShowsAroundIt() {
        let low = Probe(1), high = Probe(2)
        var root = Region.container("root", size: 0x10000)
        root.add(.leaf("low", size: 0x1000, handler: low), at: 0x1000, priority: 0)
        root.add(.leaf("high", size: 0x100, handler: high), at: 0x1800, priority: 1)
        let view = FlatView(rendering: root)
        #expect(who(view, 0x17FF) == 1 << 24 | 0x7FF)
        #expect(who(view, 0x1800) == 2 << 24 | 0)
        #expect(who(view, 0x18FF) == 2 << 24 | 0xFF)
        // Below the high region, the low one resumes at the right offset.
        #expect(who(view, 0x1900) == 1 << 24 | 0x900)
        #expect(view.entries.count == 3)
    }

    @Test func equalPriorityLaterAddedWins() {
        let first = Probe(1), second = Probe(2)
        var root = Region.container("root", size: 0x10000)
        root.add(.leaf("first", size: 0x100, handler: first), at: 0)
        root.add(.leaf("second", size: 0x100, handler: second), at: 0x80)
        let view = FlatView(rendering: root)
        #expect(who(view, 0x7F).map { $0 >> 24 } == 1)
        #expect(who(view, 0x80).map { $0 >> 24 } == 2)
    }

    @Test func aliasShowsTargetWindowAtItsOwnOffsets() {
        let device = Probe(7)
        var secondary = Region.container("secondary", size: .max)
        secondary.add(.leaf("bar", size: 0x1000, handler: device), at: 0xC000_0000)
        var root = Region.container("root", size: .max)
        // A bridge window that covers only the first half of the BAR.
        root.add(.alias("window", of: secondary, offset: 0xC000_0000, size: 0x800), at: 0xC000_0000)
        let view = FlatView(rendering: root)
        #expect(view.read(at: 0xC000_0010, width: .dword) == 7 << 24 | 0x10)
        #expect(view.read(at: 0xC000_0800, width: .dword) == 0xFFFF_FFFF)  // outside the window
    }

    @Test func aliasAtDifferentAddressTranslatesOffsets() {
        let device = Probe(3)
        let target = Region.leaf("t", size: 0x100, handler: device)
        var root = Region.container("root", size: 0x10000)
        root.add(.alias("a", of: target, offset: 0x40, size: 0x20), at: 0x2000)
        let view = FlatView(rendering: root)
        #expect(who(view, 0x2000) == 3 << 24 | 0x40)
        #expect(who(view, 0x201F) == 3 << 24 | 0x5F)
        #expect(view.read(at: 0x2020, width: .byte) == 0xFF)
    }

    @Test func straddlingAccessIsSplitIntoBytes() {
        let a = Probe(1)
        var root = Region.container("root", size: 0x10000)
        root.add(.leaf("a", size: 2, handler: a), at: 0x10)
        let view = FlatView(rendering: root)
        // Bytes 0x0F (unmapped), 0x10, 0x11 (a), 0x12 (unmapped).
        let v = view.read(at: 0x0F, width: .dword)
        #expect(v & 0xFF == 0xFF)
        #expect((v >> 8) & 0xFF == 0x00)   // a's byte at offset 0: tag<<24|0 truncated to a byte
        #expect((v >> 16) & 0xFF == 0x01)  // offset 1
        #expect(v >> 24 == 0xFF)
        view.write(at: 0x0F, width: .dword, value: 0x4433_2211)
        let writes = a.writes.withLock { $0 }
        #expect(writes.map(\.offset) == [0, 1])
        #expect(writes.map(\.value) == [0x22, 0x33])
    }

    @Test func regionAtTopOfAddressSpaceDoesNotOverflow() {
        let top = Probe(9)
        var root = Region.container("root", size: .max)
        root.add(.leaf("top", size: 0x10, handler: top), at: 0xFFFF_FFFF_FFFF_FFE0)
        let view = FlatView(rendering: root)
        #expect(who(view, 0xFFFF_FFFF_FFFF_FFE8) == 9 << 24 | 8)
        #expect(view.read(at: 0xFFFF_FFFF_FFFF_FFFC, width: .qword) == .max)
    }

    /// Random trees of containers, leaves and aliases: the flat view must answer every
    /// address exactly as a direct walk of the tree does.
    @Test(arguments: 0..<150) func matchesTreeWalkOnRandomTrees(seed: Int) {
        var rng = SplitMix64(state: UInt64(seed) &+ 0x9E37_79B9_7F4A_7C15)
        var handlers: [Probe] = []
        let tree = randomRegion(depth: 0, size: 0x400, rng: &rng, handlers: &handlers)
        var root = Region.container("root", size: 0x800)
        root.add(tree, at: 0x100)
        let view = FlatView(rendering: root)
        for address in stride(from: UInt64(0), to: 0x800, by: 1) {
            let expected = walk(root, address).map { $0.tag << 24 | $0.offset }
            let got = who(view, address)
            #expect(got == expected, "address 0x\(String(address, radix: 16))\n\(view.summary)")
            if got != expected { return }
        }
    }
}

/// Which probe serves `address`, and at which offset, as tag << 24 | offset.
func who(_ view: FlatView, _ address: UInt64) -> UInt64? {
    view.entry(containing: address).map { e in
        (e.handler as! Probe).tag << 24 | (address - e.range.base + e.handlerOffset)
    }
}

/// Direct evaluation of a tree for one address: precedence by priority, then later-added.
func walk(_ region: Region, _ address: UInt64) -> (tag: UInt64, offset: UInt64)? {
    guard address < region.size else { return nil }
    switch region.content {
    case .handler(let h): return ((h as! Probe).tag, address)
    case .container(let children):
        let ordered = children.enumerated().sorted {
            $0.element.priority != $1.element.priority ? $0.element.priority > $1.element.priority : $0.offset > $1.offset
        }
        for (_, child) in ordered where address >= child.base && address - child.base < child.region.size {
            if let hit = walk(child.region, address - child.base) { return hit }
        }
        return nil
    case .alias(let target, let offset):
        return walk(target, address + offset)
    }
}

func randomRegion(depth: Int, size: UInt64, rng: inout SplitMix64, handlers: inout [Probe]) -> Region {
    let choice = depth >= 3 ? 0 : rng.next() % 3
    switch choice {
    case 0:
        let probe = Probe(UInt64(handlers.count + 1))
        handlers.append(probe)
        return .leaf("h\(probe.tag)", size: size, handler: probe)
    case 1:
        var c = Region.container("c", size: size)
        for _ in 0..<(1 + rng.next() % 5) {
            let childSize = 1 + rng.next() % size
            let base = rng.next() % size
            c.add(randomRegion(depth: depth + 1, size: childSize, rng: &rng, handlers: &handlers), at: base,
                  priority: Int(rng.next() % 3) - 1)
        }
        return c
    default:
        let targetSize = 1 + rng.next() % 0x400
        let target = randomRegion(depth: depth + 1, size: targetSize, rng: &rng, handlers: &handlers)
        return .alias("a", of: target, offset: rng.next() % targetSize, size: size)
    }
}
