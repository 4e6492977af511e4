import Glibc
import GuestMemory

/// Guest RAM below 4 GiB as a machine was built, and putting it back after an input wrote it
/// by any path: the fuzzer's own stores, MMIO and qtest writes, a device's DMA (a virtqueue's
/// buffers may point anywhere in RAM).
///
/// Guest RAM is anonymous private memory the host backs page by page on first touch, so
/// mincore(2) names every page touched since the baseline. Those the machine as built never
/// touched go back with MADV_DONTNEED (zero again and unbacked: the next sweep skips them);
/// those it had touched are compared with their copy. The sweep costs a mincore call plus the
/// built machine's own pages, not all of RAM.
struct RAMBaseline {
    static let pageSize = 4096

    private enum Page {
        /// RAM the host had not backed when the machine was built: zero.
        case untouched
        case bytes([UInt8])
    }

    /// One host-contiguous stretch of RAM and its pages as built.
    private struct Stretch {
        let host: UnsafeMutableRawPointer
        let pages: [Page]
        /// mincore's answer, one byte per page, reused by every sweep.
        var residency: [UInt8]
    }

    private var stretches: [Stretch]

    /// Pages put back by the last `restore` (for figures and tests).
    private(set) var restoredPages = 0

    /// Records the RAM below `limit`; huge pages are turned off there first, so that what the
    /// host backs is what was touched, 4 KiB at a time.
    init?(of memory: GuestMemory, below limit: UInt64 = 1 << 32) {
        var stretches: [Stretch] = []
        for region in memory.regions where region.range.base < limit {
            guard let host = region.host.baseAddress, Int(bitPattern: host) % Self.pageSize == 0,
                  region.range.base % UInt64(Self.pageSize) == 0 else { return nil }
            let length = min(UInt64(region.host.count), limit - region.range.base)
            let pageCount = Int(length) / Self.pageSize
            _ = madvise(host, pageCount * Self.pageSize, MADV_NOHUGEPAGE)
            var residency = [UInt8](repeating: 0, count: pageCount)
            guard mincore(host, pageCount * Self.pageSize, &residency) == 0 else { return nil }
            let pages: [Page] = (0..<pageCount).map { index in
                residency[index] & 1 != 0 ? .bytes(Array(UnsafeRawBufferPointer(start: host + index * Self.pageSize, count: Self.pageSize))) : .untouched
            }
            stretches.append(Stretch(host: host, pages: pages, residency: residency))
        }
        self.stretches = stretches
    }

    /// Puts back every page touched since the baseline. False when mincore failed (the caller
    /// then cannot know the RAM is as built).
    mutating func restore() -> Bool {
        restoredPages = 0
        for which in stretches.indices {
            let pageCount = stretches[which].pages.count
            guard mincore(stretches[which].host, pageCount * Self.pageSize, &stretches[which].residency) == 0 else {
                return false
            }
            let stretch = stretches[which]
            let resident = { (index: Int) in stretch.residency[index] & 1 != 0 }
            // mincore's answer is mostly zero bytes (pages never touched): skip them eight at a time.
            let anyResident = { (index: Int) in
                stretch.residency.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: index, as: UInt64.self) } & 0x0101_0101_0101_0101 != 0
            }
            var index = 0
            while index < pageCount {
                if index + 8 <= pageCount, !anyResident(index) { index += 8; continue }
                guard resident(index) else { index += 1; continue }
                switch stretch.pages[index] {
                case .bytes(let bytes):
                    let page = stretch.host + index * Self.pageSize
                    if memcmp(page, bytes, Self.pageSize) != 0 {
                        bytes.withUnsafeBytes { page.copyMemory(from: $0.baseAddress!, byteCount: Self.pageSize) }
                        restoredPages += 1
                    }
                    index += 1
                case .untouched:
                    // A run of them in one call.
                    var end = index + 1
                    while end < pageCount, resident(end), case .untouched = stretch.pages[end] { end += 1 }
                    guard madvise(stretch.host + index * Self.pageSize, (end - index) * Self.pageSize, MADV_DONTNEED) == 0 else {
                        return false
                    }
                    restoredPages += end - index
                    index = end
                }
            }
        }
        return true
    }
}
