import VMMBase

/// Places naturally aligned requests in a window, largest alignment first, so that power-of-two
/// BARs pack without holes. Pure: returns placements or says what did not fit.
struct ResourceAllocator {
    struct Request: Hashable {
        var id: Int
        var size: UInt64
        var alignment: UInt64
    }

    /// The space the requests need if placed from an address aligned to their largest alignment.
    static func footprint(of requests: [Request]) -> (size: UInt64, alignment: UInt64) {
        let sorted = order(requests)
        var cursor: UInt64 = 0
        for r in sorted { cursor = alignUp(cursor, r.alignment) + r.size }
        return (cursor, sorted.first?.alignment ?? 1)
    }

    /// Addresses for every request inside `window`, or nil if they do not fit.
    static func place(_ requests: [Request], in window: AddressRange) -> [Int: UInt64]? {
        var cursor = window.base
        var placed: [Int: UInt64] = [:]
        for r in order(requests) {
            let start = alignUp(cursor, r.alignment)
            guard start >= cursor, start >= window.base, r.size > 0,
                  start <= window.last, r.size - 1 <= window.last - start else { return nil }
            placed[r.id] = start
            cursor = start + r.size
        }
        return placed
    }

    static func order(_ requests: [Request]) -> [Request] {
        requests.sorted { ($0.alignment, $0.size, -$0.id) > ($1.alignment, $1.size, -$1.id) }
    }

    static func alignUp(_ value: UInt64, _ alignment: UInt64) -> UInt64 {
        guard alignment > 1 else { return value }
        let (sum, overflow) = value.addingReportingOverflow(alignment - 1)
        return overflow ? .max : sum & ~(alignment - 1)
    }
}
