/// An index into some array, ordered by a 64-bit key (an address).
public struct KeyedIndex: Sendable, Equatable, BitwiseCopyable {
    public var key: UInt64
    public var index: Int

    public init(key: UInt64, index: Int) {
        self.key = key
        self.index = index
    }
}

extension Array where Element == KeyedIndex {
    /// Sorts by key in linear time, stably (equal keys keep their order): a least-significant-
    /// digit radix sort with 8-bit digits that skips every digit all keys share, as the high
    /// bytes of addresses usually are. A commit sorts every boundary of a view, so a comparison
    /// sort would make its cost grow as n log n in the number of regions.
    public mutating func sortByKey() {
        guard count > 1 else { return }
        let first = self[0].key
        var differing: UInt64 = 0
        for item in self { differing |= item.key ^ first }
        guard differing != 0 else { return }
        var scratch = [KeyedIndex](repeating: KeyedIndex(key: 0, index: 0), count: count)
        var counts = [Int](repeating: 0, count: 256)
        for shift in stride(from: UInt64(0), to: 64, by: 8) where (differing >> shift) & 0xFF != 0 {
            withUnsafeMutableBufferPointer { source in
                scratch.withUnsafeMutableBufferPointer { target in
                    counts.withUnsafeMutableBufferPointer { counts in
                        counts.update(repeating: 0)
                        for item in source { counts[Int(truncatingIfNeeded: item.key >> shift) & 0xFF] += 1 }
                        var start = 0
                        for digit in 0..<256 {
                            let n = counts[digit]
                            counts[digit] = start
                            start += n
                        }
                        for item in source {
                            let digit = Int(truncatingIfNeeded: item.key >> shift) & 0xFF
                            target[counts[digit]] = item
                            counts[digit] += 1
                        }
                    }
                }
            }
            swap(&self, &scratch)
        }
    }
}
