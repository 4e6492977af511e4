import VMMBase

/// A region tree flattened into disjoint, sorted ranges, each served by one handler.
/// Immutable once built: dispatch is a binary search, and a new tree gives a new view.
public struct FlatView: Sendable {
    public struct Entry: Sendable {
        public let range: AddressRange
        /// Offset, within the handler's own region, of `range.base`.
        public let handlerOffset: UInt64
        public let handler: any IORegionHandler
        public let name: String
    }

    /// Both arrays in one object, so that taking a view out of a lock (every access does) is
    /// one reference-count operation, not one per array.
    private final class Storage: Sendable {
        let entries: [Entry]
        let bases: [UInt64]
        init(entries: [Entry]) {
            self.entries = entries
            bases = entries.map(\.range.base)
        }
    }
    private let storage: Storage

    public var entries: [Entry] { storage.entries }

    public init(rendering root: Region) {
        var leaves: [Leaf] = []
        if let all = AddressRange(base: 0, last: root.size == 0 ? 0 : root.size - 1), root.size > 0 {
            collectLeaves(of: root, localClip: all, delta: 0, into: &leaves)
        }
        storage = Storage(entries: resolveOverlaps(leaves))
    }

    /// The entry containing `address`, if any.
    public func entry(containing address: UInt64) -> Entry? {
        entryIndex(containing: address).map { storage.entries[$0] }
    }

    private func entryIndex(containing address: UInt64) -> Int? {
        let low = storage.bases.withUnsafeBufferPointer { bases in
            // Last entry whose base <= address.
            var low = 0, high = bases.count
            while low < high {
                let mid = (low + high) / 2
                if bases[mid] <= address { low = mid + 1 } else { high = mid }
            }
            return low
        }
        return low > 0 && storage.entries[low - 1].range.contains(address) ? low - 1 : nil
    }

    /// Reads `width` bytes at `address`. Bytes that hit no region read as all-ones; an access
    /// that straddles two regions is split into byte accesses.
    public func read(at address: UInt64, width: AccessWidth) -> UInt64 {
        // An unmapped start may still straddle into a region: split into bytes.
        readIfMapped(at: address, width: width) ?? readSplit(at: address, width: width)
    }

    /// Like `read`, but nil when no region contains `address` itself: one lookup for callers
    /// that fall through to another view.
    public func readIfMapped(at address: UInt64, width: AccessWidth) -> UInt64? {
        guard let i = entryIndex(containing: address) else { return nil }
        // The entry is used in place (not copied out), which saves reference counting per access.
        let value = storage.entries.withUnsafeBufferPointer { entries -> UInt64? in
            guard entries[i].range.contains(address, length: UInt64(width.bytes)) else { return nil }
            return width.truncate(entries[i].handler.read(offset: address - entries[i].range.base + entries[i].handlerOffset,
                                                          width: width))
        }
        return value ?? readSplit(at: address, width: width)
    }

    private func readSplit(at address: UInt64, width: AccessWidth) -> UInt64 {
        guard width != .byte else { return 0xFF }
        var value: UInt64 = 0
        for i in 0..<UInt64(width.bytes) {
            let (a, overflow) = address.addingReportingOverflow(i)
            let byte = overflow ? 0xFF : read(at: a, width: .byte)
            value |= byte << (8 * i)
        }
        return value
    }

    /// Writes `width` bytes at `address`; bytes that hit no region are dropped.
    public func write(at address: UInt64, width: AccessWidth, value: UInt64) {
        if !writeIfMapped(at: address, width: width, value: value) {
            writeSplit(at: address, width: width, value: value)  // an unmapped start may straddle into a region
        }
    }

    /// Like `write`, but returns false (and writes nothing) when no region contains
    /// `address` itself.
    @discardableResult
    public func writeIfMapped(at address: UInt64, width: AccessWidth, value: UInt64) -> Bool {
        guard let i = entryIndex(containing: address) else { return false }
        let written = storage.entries.withUnsafeBufferPointer { entries -> Bool in
            guard entries[i].range.contains(address, length: UInt64(width.bytes)) else { return false }
            entries[i].handler.write(offset: address - entries[i].range.base + entries[i].handlerOffset, width: width,
                                     value: width.truncate(value))
            return true
        }
        if !written { writeSplit(at: address, width: width, value: value) }
        return true
    }

    private func writeSplit(at address: UInt64, width: AccessWidth, value: UInt64) {
        guard width != .byte else { return }
        for i in 0..<UInt64(width.bytes) {
            let (a, overflow) = address.addingReportingOverflow(i)
            if !overflow { write(at: a, width: .byte, value: (value >> (8 * i)) & 0xFF) }
        }
    }

    /// One line per entry, for debugging and tests: "[0xcf8-0xcfb] pci-conf-addr".
    public var summary: String {
        entries.map { "\($0.range) \($0.name)" }.joined(separator: "\n")
    }
}

/// A leaf clipped by its ancestors, with its precedence: lower rank wins.
private struct Leaf {
    var range: AddressRange
    var handlerOffset: UInt64
    var handler: any IORegionHandler
    var name: String
}

/// Walks the tree in precedence order (higher priority first, later-added first among equals),
/// so a leaf's position in `leaves` is its rank. `localClip` is in the region's own
/// coordinates; `delta` converts them to absolute addresses (wrapping add).
private func collectLeaves(of region: Region, localClip: AddressRange, delta: UInt64, into leaves: inout [Leaf]) {
    guard region.size > 0, let own = AddressRange(base: 0, size: region.size),
          let clip = own.intersection(localClip) else { return }
    switch region.content {
    case .handler(let handler):
        // `delta` may be "negative" (wrapped) below an alias; modular arithmetic gives the
        // true address as long as the range itself does not wrap.
        let absBase = clip.base &+ delta, absLast = clip.last &+ delta
        guard let range = AddressRange(base: absBase, last: absLast) else { return }
        leaves.append(Leaf(range: range, handlerOffset: clip.base, handler: handler,
                           name: region.name))
    case .container(let children):
        for index in precedenceOrder(children) {
            let child = children[index]
            guard child.region.size > 0,
                  let childRange = AddressRange(base: child.base, size: child.region.size),
                  let visible = childRange.intersection(clip),
                  let childClip = AddressRange(base: visible.base - child.base, last: visible.last - child.base)
            else { continue }
            collectLeaves(of: child.region, localClip: childClip, delta: delta &+ child.base, into: &leaves)
        }
    case .alias(let target, let offset):
        guard let targetClip = clip.shifted(by: offset) else { return }
        collectLeaves(of: target, localClip: targetClip, delta: delta &- offset, into: &leaves)
    }
}

/// Sweeps the leaves' boundaries and keeps, for every stretch, the leaf of lowest rank. Leaves
/// are handled by index (a leaf's index is its rank), so sorting and the heap move integers,
/// not values holding references.
private func resolveOverlaps(_ leaves: [Leaf]) -> [FlatView.Entry] {
    guard !leaves.isEmpty else { return [] }
    // Every leaf's start (with its rank) and the address after its end (index -1), in address
    // order: the stretches between consecutive points have one winner each.
    var points: [KeyedIndex] = []
    points.reserveCapacity(leaves.count * 2)
    for (rank, leaf) in leaves.enumerated() {
        points.append(KeyedIndex(key: leaf.range.base, index: rank))
        if leaf.range.last < .max { points.append(KeyedIndex(key: leaf.range.last + 1, index: -1)) }
    }
    points.sortByKey()
    var heap = RankHeap()
    var out: [FlatView.Entry] = []
    var i = 0
    while i < points.count {
        let point = points[i].key
        while i < points.count && points[i].key == point {
            if points[i].index >= 0 { heap.push(points[i].index) }
            i += 1
        }
        while let top = heap.top, leaves[top].range.last < point { heap.pop() }
        guard let rank = heap.top else { continue }
        let top = leaves[rank]
        let stretchLast = i < points.count ? points[i].key - 1 : top.range.last
        let last = min(stretchLast, top.range.last)
        let offset = top.handlerOffset + (point - top.range.base)
        if let prev = out.last, prev.name == top.name, prev.handler === top.handler,
           prev.range.last &+ 1 == point, prev.handlerOffset + (point - prev.range.base) == offset {
            out[out.count - 1] = FlatView.Entry(range: AddressRange(base: prev.range.base, last: last)!,
                                                handlerOffset: prev.handlerOffset, handler: top.handler, name: top.name)
        } else {
            out.append(FlatView.Entry(range: AddressRange(base: point, last: last)!,
                                      handlerOffset: offset, handler: top.handler, name: top.name))
        }
    }
    return out
}

/// A container's children in precedence order: higher priority first, later-added first among
/// equals. Priorities are the VMM's (not a guest's) and take a few values (nearly all 0; 1 for
/// areas over a BAR), so the children are bucketed by priority, one pass per value: linear in
/// the children, where a comparison sort costs O(n log n) per container on every commit.
private func precedenceOrder(_ children: [Subregion]) -> [Int] {
    let fewValues = 8
    var priorities: [Int] = []
    for child in children where !priorities.contains(child.priority) {
        priorities.append(child.priority)
        if priorities.count > fewValues {  // not seen in practice: a comparison sort is still right
            return children.indices.sorted {
                children[$0].priority != children[$1].priority ? children[$0].priority > children[$1].priority : $0 > $1
            }
        }
    }
    guard priorities.count > 1 else { return Array(children.indices.reversed()) }
    var order: [Int] = []
    order.reserveCapacity(children.count)
    for priority in priorities.sorted(by: >) {
        for index in children.indices.reversed() where children[index].priority == priority { order.append(index) }
    }
    return order
}

/// A binary min-heap of ranks (leaf indices).
private struct RankHeap {
    private var items: [Int] = []
    var top: Int? { items.first }

    mutating func push(_ rank: Int) {
        items.append(rank)
        var c = items.count - 1
        while c > 0 {
            let p = (c - 1) / 2
            guard items[c] < items[p] else { break }
            items.swapAt(c, p)
            c = p
        }
    }

    mutating func pop() {
        guard !items.isEmpty else { return }
        items.swapAt(0, items.count - 1)
        items.removeLast()
        var p = 0
        while true {
            let l = 2 * p + 1, r = l + 1
            var m = p
            if l < items.count && items[l] < items[m] { m = l }
            if r < items.count && items[r] < items[m] { m = r }
            if m == p { break }
            items.swapAt(p, m)
            p = m
        }
    }
}
