import GuestMemory
import Testing
import VMMBase

/// Host memory for a region, with guard bytes on both sides that must never change.
private final class GuardedBuffer: @unchecked Sendable {
    static let guardSize = 64
    static let guardByte: UInt8 = 0xA5
    let whole: UnsafeMutableRawBufferPointer
    let size: Int

    init(size: Int, fill: UInt8 = 0) {
        self.size = size
        whole = .allocate(byteCount: size + 2 * Self.guardSize, alignment: 64)
        whole.initializeMemory(as: UInt8.self, repeating: Self.guardByte)
        UnsafeMutableRawBufferPointer(rebasing: whole[Self.guardSize..<Self.guardSize + size])
            .initializeMemory(as: UInt8.self, repeating: fill)
    }

    var region: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: whole[Self.guardSize..<Self.guardSize + size])
    }

    var guardsIntact: Bool {
        whole[..<Self.guardSize].allSatisfy { $0 == Self.guardByte }
            && whole[(Self.guardSize + size)...].allSatisfy { $0 == Self.guardByte }
    }

    deinit { whole.deallocate() }
}

/// Two regions: [0x1000, 0x3000) and [0x10000, 0x11000), a gap between.
private func twoRegions() throws -> (GuestMemory, GuardedBuffer, GuardedBuffer) {
    let low = GuardedBuffer(size: 0x2000)
    let high = GuardedBuffer(size: 0x1000)
    let memory = try GuestMemory(regions: [
        GuestMemoryRegion(guestBase: GuestAddress(0x10000), host: high.region, owner: high),
        GuestMemoryRegion(guestBase: GuestAddress(0x1000), host: low.region, owner: low),
    ])
    return (memory, low, high)
}

@Suite struct GuestMemoryRegionTests {
    @Test func regionsAreSortedAndFound() throws {
        let (memory, _, _) = try twoRegions()
        #expect(memory.regions.map(\.range.base) == [0x1000, 0x10000])
        #expect(memory.totalSize == 0x3000)
        #expect(memory.region(containing: GuestAddress(0x1000))?.range.base == 0x1000)
        #expect(memory.region(containing: GuestAddress(0x2FFF))?.range.base == 0x1000)
        #expect(memory.region(containing: GuestAddress(0x3000)) == nil)
        #expect(memory.region(containing: GuestAddress(0xFFF)) == nil)
        #expect(memory.region(containing: GuestAddress(0x10FFF))?.range.base == 0x10000)
        #expect(memory.region(containing: GuestAddress(.max)) == nil)
    }

    @Test func overlappingRegionsAreRejected() throws {
        let a = GuardedBuffer(size: 0x1000), b = GuardedBuffer(size: 0x1000)
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(regions: [
                GuestMemoryRegion(guestBase: GuestAddress(0x0), host: a.region, owner: a),
                GuestMemoryRegion(guestBase: GuestAddress(0xFFF), host: b.region, owner: b),
            ])
        }
        // Adjacent is fine.
        let m = try GuestMemory(regions: [
            GuestMemoryRegion(guestBase: GuestAddress(0x0), host: a.region, owner: a),
            GuestMemoryRegion(guestBase: GuestAddress(0x1000), host: b.region, owner: b),
        ])
        #expect(m.regions.count == 2)
    }

    @Test func emptyAndWrappingRegionsAreRejected() {
        let a = GuardedBuffer(size: 0x1000)
        #expect(throws: GuestMemoryError.self) {
            try GuestMemoryRegion(guestBase: GuestAddress(0), host: UnsafeMutableRawBufferPointer(rebasing: a.region[0..<0]), owner: a)
        }
        #expect(throws: GuestMemoryError.self) {
            try GuestMemoryRegion(guestBase: GuestAddress(UInt64.max - 0xFFE), host: a.region, owner: a)
        }
    }

    @Test func ownerIsKeptAlive() throws {
        weak var weakOwner: GuardedBuffer?
        let memory: GuestMemory
        do {
            let buffer = GuardedBuffer(size: 0x1000)
            weakOwner = buffer
            memory = try GuestMemory(regions: [GuestMemoryRegion(guestBase: GuestAddress(0), host: buffer.region, owner: buffer)])
        }
        #expect(weakOwner != nil)
        try memory.store(UInt32(7), at: GuestAddress(0))
        #expect(try memory.load(UInt32.self, at: GuestAddress(0)) == 7)
    }
}

@Suite struct GuestMemoryAccessTests {
    @Test func integersAreLittleEndianAndMayBeUnaligned() throws {
        let (memory, low, _) = try twoRegions()
        try memory.store(UInt64(0x0102_0304_0506_0708), at: GuestAddress(0x1003))
        #expect(Array(low.region[3..<11]) == [8, 7, 6, 5, 4, 3, 2, 1])
        #expect(try memory.load(UInt64.self, at: GuestAddress(0x1003)) == 0x0102_0304_0506_0708)
        #expect(try memory.load(UInt16.self, at: GuestAddress(0x1004)) == 0x0607)
        #expect(try memory.load(Int8.self, at: GuestAddress(0x1003)) == 8)
        try memory.store(Int32(-2), at: GuestAddress(0x2FFC))          // last 4 bytes of the region
        #expect(try memory.load(UInt32.self, at: GuestAddress(0x2FFC)) == 0xFFFF_FFFE)
        #expect(low.guardsIntact)
    }

    @Test func bytesRoundTrip() throws {
        let (memory, _, high) = try twoRegions()
        try memory.write(at: GuestAddress(0x10FFE), bytes: [1, 2])
        #expect(try memory.read(at: GuestAddress(0x10FFE), count: 2) == [1, 2])
        try memory.fill(at: GuestAddress(0x10000), count: 0x1000, with: 0xEE)
        #expect(high.region.allSatisfy { $0 == 0xEE })
        #expect(high.guardsIntact)
    }

    @Test func accessesAcrossEdgesAndGapsThrowAndTouchNothing() throws {
        let (memory, low, high) = try twoRegions()
        let cases: [(UInt64, Int)] = [
            (0x0FFF, 2),          // starts before the first region
            (0x2FFF, 2),          // runs off the end of the first region
            (0x2FF9, 8),
            (0x3000, 1),          // first byte after it
            (0x8000, 4),          // in the gap
            (0x2000, 0xE001),     // spans the gap into the second region
            (0x10FFF, 2),         // runs off the second region
            (0x0, 0x20000),       // covers everything
        ]
        for (address, count) in cases {
            #expect(throws: GuestMemoryError.unmapped(address: address, length: UInt64(count))) {
                try memory.write(at: GuestAddress(address), bytes: [UInt8](repeating: 0xFF, count: count))
            }
            #expect(throws: GuestMemoryError.self) { try memory.read(at: GuestAddress(address), count: count) }
            #expect(throws: GuestMemoryError.self) { try memory.fill(at: GuestAddress(address), count: UInt64(count)) }
            #expect(!memory.isMapped(GuestAddress(address), length: UInt64(count)))
        }
        #expect(throws: GuestMemoryError.self) { try memory.store(UInt64.max, at: GuestAddress(0x2FFA)) }
        #expect(throws: GuestMemoryError.self) { try memory.load(UInt32.self, at: GuestAddress(0x10FFD)) }
        #expect(low.region.allSatisfy { $0 == 0 })
        #expect(high.region.allSatisfy { $0 == 0 })
        #expect(low.guardsIntact && high.guardsIntact)
    }

    @Test func addressesNearTheTopOfTheSpace() throws {
        let (memory, _, _) = try twoRegions()
        #expect(throws: GuestMemoryError.addressOverflow(address: .max, length: 2)) {
            try memory.write(at: GuestAddress(.max), bytes: [1, 2])
        }
        #expect(throws: GuestMemoryError.unmapped(address: .max, length: 1)) {
            try memory.write(at: GuestAddress(.max), bytes: [1])
        }
        #expect(throws: GuestMemoryError.addressOverflow(address: .max - 3, length: 8)) {
            try memory.load(UInt64.self, at: GuestAddress(.max - 3))
        }
        #expect(throws: GuestMemoryError.self) { try memory.fill(at: GuestAddress(0x1000), count: .max) }
        #expect(throws: GuestMemoryError.self) { try memory.fill(at: GuestAddress(0x1001), count: .max) }
    }

    @Test func aRegionThatEndsAtTheTopOfTheSpace() throws {
        let top = GuardedBuffer(size: 0x1000)
        let memory = try GuestMemory(regions: [
            GuestMemoryRegion(guestBase: GuestAddress(UInt64.max - 0xFFF), host: top.region, owner: top),
        ])
        try memory.store(UInt8(0x5A), at: GuestAddress(.max))
        #expect(top.region[0xFFF] == 0x5A)
        try memory.store(UInt64(1), at: GuestAddress(.max - 7))
        #expect(throws: GuestMemoryError.addressOverflow(address: .max - 6, length: 8)) {
            try memory.store(UInt64(1), at: GuestAddress(.max - 6))
        }
        #expect(throws: GuestMemoryError.self) { try memory.read(at: GuestAddress(.max - 0x1000), count: 2) }
        #expect(try memory.read(at: GuestAddress(.max - 0xFFF), count: 0x1000).count == 0x1000)
        #expect(top.guardsIntact)
    }

    @Test func zeroLengthAccessesAreNoOps() throws {
        let (memory, low, high) = try twoRegions()
        for address: UInt64 in [0, 0x1000, 0x3000, 0x8000, .max] {
            try memory.write(at: GuestAddress(address), bytes: [])
            #expect(try memory.read(at: GuestAddress(address), count: 0) == [])
            try memory.fill(at: GuestAddress(address), count: 0)
            #expect(!memory.isMapped(GuestAddress(address), length: 0))
        }
        #expect(low.guardsIntact && high.guardsIntact)
    }

    @Test func emptyMemoryRefusesEverything() throws {
        let memory = try GuestMemory(regions: [])
        #expect(throws: GuestMemoryError.unmapped(address: 0, length: 1)) { try memory.load(UInt8.self, at: GuestAddress(0)) }
        #expect(memory.region(containing: GuestAddress(0)) == nil)
    }
}

/// A toy IOMMU: maps bus page n to guest page `pages[n]`, read-only pages refuse writes.
private struct PageTableTranslator: AddressTranslator {
    var pages: [UInt64: UInt64]
    var readOnly: Set<UInt64> = []
    var calls: UInt64 = 0

    func translate(_ address: UInt64, length: UInt64, write: Bool) -> Result<UInt64, TranslationFault> {
        let page = address >> 12
        // The access never crosses a granule: the contract TranslatedMemory keeps.
        guard (address + (length - 1)) >> 12 == page else {
            return .failure(TranslationFault(.other, address: address, isWrite: write, code: 0xBAD))
        }
        guard let target = pages[page] else {
            return .failure(TranslationFault(.notPresent, address: address, isWrite: write, code: 1))
        }
        if write && readOnly.contains(page) {
            return .failure(TranslationFault(.permissionDenied, address: address, isWrite: true, code: 2))
        }
        return .success(target << 12 | (address & 0xFFF))
    }
}

@Suite struct IOMemoryTests {
    @Test func guestMemoryIsIOMemoryWithIdentityTranslation() throws {
        let (memory, _, _) = try twoRegions()
        let io: any IOMemory = memory
        try io.store(UInt32(0xCAFE_F00D), at: 0x1010)
        #expect(try memory.load(UInt32.self, at: GuestAddress(0x1010)) == 0xCAFE_F00D)
        #expect(try io.read(at: 0x1010, count: 2) == [0x0D, 0xF0])

        let identity = TranslatedMemory(memory: memory, translator: IdentityTranslator())
        #expect(try identity.load(UInt32.self, at: 0x1010) == 0xCAFE_F00D)
        #expect(throws: GuestMemoryError.unmapped(address: 0x8000, length: 4)) { try identity.load(UInt32.self, at: 0x8000) }
        #expect(throws: GuestMemoryError.addressOverflow(address: .max, length: 4)) { try identity.load(UInt32.self, at: .max) }
    }

    @Test func translatedAccessesSplitAtPagesAndLandInPlace() throws {
        let (memory, low, high) = try twoRegions()
        // Bus pages 0x100, 0x101 map to guest pages 0x10 and 0x1 (reversed, discontiguous).
        let io = TranslatedMemory(memory: memory, translator: PageTableTranslator(pages: [0x100: 0x10, 0x101: 0x1]))
        let bytes = (0..<8).map { UInt8($0 + 1) }
        try io.write(at: 0x10_0FFC, bytes: bytes)                // 4 bytes on each page
        #expect(Array(high.region[0xFFC...]) == [1, 2, 3, 4])
        #expect(Array(low.region[0..<4]) == [5, 6, 7, 8])
        #expect(try io.read(at: 0x10_0FFC, count: 8) == bytes)
        #expect(try io.load(UInt64.self, at: 0x10_0FFC) == 0x0807_0605_0403_0201)
        #expect(low.guardsIntact && high.guardsIntact)
    }

    @Test func faultsAreReportedAndWriteNothing() throws {
        let (memory, low, high) = try twoRegions()
        let io = TranslatedMemory(memory: memory, translator: PageTableTranslator(
            pages: [0x100: 0x10, 0x101: 0x1, 0x200: 0x2, 0x300: 0x5], readOnly: [0x200]))

        // Second page not present: nothing written on the first.
        #expect(throws: GuestMemoryError.translationFault(TranslationFault(.notPresent, address: 0x10_2000, isWrite: true, code: 1))) {
            try io.write(at: 0x10_1FFE, bytes: [1, 2, 3, 4])
        }
        #expect(Array(low.region[0xFFE..<0x1000]) == [0, 0])

        // Read-only page: reads work, writes fault.
        #expect(try io.load(UInt32.self, at: 0x20_0000) == 0)
        #expect(throws: GuestMemoryError.translationFault(TranslationFault(.permissionDenied, address: 0x20_0000, isWrite: true, code: 2))) {
            try io.store(UInt32(1), at: 0x20_0000)
        }

        // Translates fine but to a guest page with no RAM behind it (0x5000 is in the gap).
        #expect(throws: GuestMemoryError.unmapped(address: 0x5000, length: 1)) { try io.write(at: 0x30_0000, bytes: [9]) }
        // ...and a two-page write whose second page has no RAM writes nothing on the first.
        let io2 = TranslatedMemory(memory: memory, translator: PageTableTranslator(pages: [0x1: 0x10, 0x2: 0x5]))
        #expect(throws: GuestMemoryError.unmapped(address: 0x5000, length: 2)) { try io2.write(at: 0x1FFE, bytes: [1, 2, 3, 4]) }
        #expect(Array(high.region[0xFFE...]) == [0, 0])

        // Bus addresses near the top of the space.
        #expect(throws: GuestMemoryError.addressOverflow(address: .max - 1, length: 4)) { try io.load(UInt32.self, at: .max - 1) }
        #expect(throws: GuestMemoryError.self) { try io.load(UInt8.self, at: .max) }

        // Zero-length accesses do not translate at all.
        try io.write(at: 0xDEAD_0000, bytes: [])
        #expect(try io.read(at: .max, count: 0) == [])
        #expect(low.guardsIntact && high.guardsIntact)
    }

    @Test func aTranslatorThatWrapsIsRefused() throws {
        struct Wrapping: AddressTranslator {
            func translate(_ address: UInt64, length: UInt64, write: Bool) -> Result<UInt64, TranslationFault> {
                .success(.max - 1)
            }
        }
        let (memory, _, _) = try twoRegions()
        let io = TranslatedMemory(memory: memory, translator: Wrapping())
        #expect(throws: GuestMemoryError.addressOverflow(address: .max - 1, length: 4)) { try io.load(UInt32.self, at: 0) }
    }
}
