@testable import KVM
import HostOS
import Testing
import VMMBase

/// The ring page is shared with the kernel, and a buggy or hostile writer must not make the
/// replay read outside it or dispatch nonsense: bad lengths and bad indices are dropped.
@Suite struct CoalescedRingParsingTests {
    final class Page {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        init() { bytes.initializeMemory(as: UInt8.self, repeating: 0) }
        deinit { bytes.deallocate() }
        let layout = CoalescedWriteRing.Layout.current

        func set(first: UInt32, last: UInt32) {
            bytes.storeBytes(of: first, toByteOffset: layout.first, as: UInt32.self)
            bytes.storeBytes(of: last, toByteOffset: layout.last, as: UInt32.self)
        }
        var first: UInt32 { bytes.load(fromByteOffset: layout.first, as: UInt32.self) }
        func entry(_ index: Int, address: UInt64, length: UInt32, pio: Bool, data: [UInt8]) {
            let base = layout.entries + index * layout.entrySize
            bytes.storeBytes(of: address, toByteOffset: base + layout.address, as: UInt64.self)
            bytes.storeBytes(of: length, toByteOffset: base + layout.length, as: UInt32.self)
            bytes.storeBytes(of: pio ? 1 : 0, toByteOffset: base + layout.pio, as: UInt32.self)
            for (i, b) in data.enumerated() { bytes[base + layout.data + i] = b }
        }
    }

    @Test func replaysInOrderAndWrapsAround() {
        let page = Page()
        let ring = CoalescedWriteRing(page: page.bytes, owner: page)
        #expect(ring.capacity == (4096 - page.layout.entries) / page.layout.entrySize)
        let lastSlot = ring.capacity - 1
        page.entry(lastSlot, address: 0xCF8, length: 4, pio: true, data: [0x00, 0x08, 0x00, 0x80])
        page.entry(0, address: 0xFEB0_0000, length: 2, pio: false, data: [0x34, 0x12])
        page.set(first: UInt32(lastSlot), last: 1)
        let writes = ring.take()
        #expect(writes == [
            .init(isPortIO: true, address: 0xCF8, bytes: [0x00, 0x08, 0x00, 0x80]),
            .init(isPortIO: false, address: 0xFEB0_0000, bytes: [0x34, 0x12]),
        ])
        #expect(page.first == 1)
        #expect(ring.take().isEmpty)
    }

    @Test func badLengthsAreDroppedAndTheRingMovesOn() {
        let page = Page()
        let ring = CoalescedWriteRing(page: page.bytes, owner: page)
        page.entry(0, address: 0xCF8, length: 0, pio: true, data: [])
        page.entry(1, address: 0xCF8, length: 3, pio: true, data: [1, 2, 3])
        page.entry(2, address: 0xCF8, length: 4096, pio: true, data: [])
        page.entry(3, address: 0xCF8, length: 1, pio: true, data: [7])
        page.set(first: 0, last: 4)
        #expect(ring.take() == [.init(isPortIO: true, address: 0xCF8, bytes: [7])])
        #expect(page.first == 4)
    }

    @Test func indicesPastTheRingAreNotFollowed() {
        let page = Page()
        let ring = CoalescedWriteRing(page: page.bytes, owner: page)
        page.set(first: 0, last: 0xFFFF_FFF0)
        #expect(ring.take().isEmpty)
        page.set(first: 0xFFFF_FFF0, last: 2)
        #expect(ring.take().isEmpty)
        #expect(page.first == 2)  // resynchronized with the kernel's index
    }
}
