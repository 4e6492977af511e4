import VMMBase

/// Placement rules both boot plans (bzImage and PVH) follow; each plan throws its own error.
enum BootPlacement {
    /// Where an initrd of `size` bytes goes: the highest page-aligned range inside `window` and
    /// guest RAM, clear of everything placed so far (Linux's loaders put it as high as allowed).
    static func initrd(size: Int, window: AddressRange?, ram: [AddressRange], avoiding placed: [AddressRange]) -> AddressRange? {
        guard let window else { return nil }
        return highestFit(size: UInt64(size), alignment: 0x1000,
                          in: ram.compactMap { $0.intersection(window) }, avoiding: placed)
    }

    /// The first pair of named ranges that overlap, in placement order.
    static func firstOverlap<Name>(_ regions: [(name: Name, range: AddressRange)]) -> (Name, Name)? {
        for i in regions.indices {
            for j in regions.indices where j > i && regions[i].range.overlaps(regions[j].range) {
                return (regions[i].name, regions[j].name)
            }
        }
        return nil
    }

    /// The RSDP must lie in memory the kernel will not reuse: inside an e820 entry that is not RAM.
    static func rsdpIsReserved(_ address: UInt64, e820: [E820Entry]) -> Bool {
        guard let r = AddressRange(base: address, size: LinuxBootPlan.rsdpSize) else { return false }
        return e820.contains { $0.type != .ram && $0.range.contains(r) }
    }

    /// The highest `alignment`-aligned range of `size` bytes inside one of `free` that overlaps
    /// none of `avoiding`.
    static func highestFit(size: UInt64, alignment: UInt64, in free: [AddressRange],
                           avoiding taken: [AddressRange]) -> AddressRange? {
        // Split every free range around the taken ones, then try each piece's top.
        var pieces = free
        for t in taken {
            pieces = pieces.flatMap { p -> [AddressRange] in
                guard p.overlaps(t) else { return [p] }
                var out: [AddressRange] = []
                if t.base > p.base { out.append(AddressRange(base: p.base, last: t.base - 1)!) }
                if t.last < p.last { out.append(AddressRange(base: t.last + 1, last: p.last)!) }
                return out
            }
        }
        var best: AddressRange?
        for p in pieces {
            guard let pieceSize = p.size, pieceSize >= size else { continue }
            let start = (p.last - size + 1) & ~(alignment - 1)
            guard start >= p.base, let r = AddressRange(base: start, size: size) else { continue }
            if best.map({ r.base > $0.base }) ?? true { best = r }
        }
        return best
    }
}
