import Testing
import VMMBase

@Suite struct VMMBaseTests {
    @Test func addressRangeRejectsWrapAndEmpty() {
        #expect(AddressRange(base: 0, size: 0) == nil)
        #expect(AddressRange(base: .max, size: 2) == nil)
        let top = AddressRange(base: .max, size: 1)!
        #expect(top.last == .max)
        #expect(AddressRange(base: 0, last: .max)!.size == nil)
        #expect(AddressRange(base: 5, last: 4) == nil)
    }

    @Test func addressRangeContainment() {
        let r = AddressRange(base: 0x1000, size: 0x100)!
        #expect(r.contains(0x10FF))
        #expect(!r.contains(0x1100))
        #expect(r.contains(0x10FC, length: 4))
        #expect(!r.contains(0x10FD, length: 4))
        #expect(!r.contains(0x1000, length: 0))
        #expect(r.overlaps(AddressRange(base: 0x10FF, size: 1)!))
        #expect(!r.overlaps(AddressRange(base: 0x1100, size: 1)!))
        #expect(r.intersection(AddressRange(base: 0x1080, size: 0x1000)!) == AddressRange(base: 0x1080, last: 0x10FF))
        #expect(r.shifted(by: .max) == nil)
    }

    @Test func pciAddressFormatsAndParses() {
        let a = PCIAddress(bus: 0, device: 0x1F, function: 3)!
        #expect(a.description == "0000:00:1f.3")
        #expect(a.shortDescription == "00:1f.3")
        #expect(a.devfn == 0xFB)
        #expect(PCIAddress(parsing: "0000:00:1f.3") == a)
        #expect(PCIAddress(parsing: "00:1f.3") == a)
        #expect(PCIAddress(bus: 0, device: 32, function: 0) == nil)
        #expect(PCIAddress(parsing: "00:20.0") == nil)
        #expect(PCIAddress(parsing: "zz:00.0") == nil)
    }

    @Test func littleEndianRoundTrip() {
        var bytes = [UInt8](repeating: 0, count: 8)
        LittleEndian.store(0x1122_3344_5566_7788, into: &bytes, at: 0, count: 8)
        #expect(bytes == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
        #expect(LittleEndian.load(bytes, at: 2, count: 2) == 0x5566)
        #expect(AccessWidth.word.allOnes == 0xFFFF)
        #expect(AccessWidth.qword.allOnes == .max)
    }

    @Test func msiMessageFields() {
        let m = MSIMessage(address: 0xFEE0_1000, data: 0x4031)
        #expect(m.targetsInterruptWindow)
        #expect(m.vector == 0x31)
        #expect(!m.isRemappableFormat)
        #expect(!MSIMessage(address: 0xFED0_0000, data: 0).targetsInterruptWindow)
    }
}

@Suite struct GuestErrorLogTests {
    @Test func reportsAreRateLimitedPerKind() {
        let lines = LineCollector()
        GuestErrorLog.setSink { lines.append($0) }
        defer { GuestErrorLog.setSink(nil) }
        for i in 0..<25 { GuestErrorLog.report(device: "logtest", kind: "flood", "bad write \(i)") }
        GuestErrorLog.report(device: "logtest", kind: "other", "a different problem")
        let seen = lines.lines
        #expect(seen.count == GuestErrorLog.limitPerKind + 1)
        #expect(seen.first == "switchyard: guest error: logtest: bad write 0")
        #expect(seen[GuestErrorLog.limitPerKind - 1].hasSuffix("(further 'flood' reports from logtest suppressed)"))
        #expect(seen.last == "switchyard: guest error: logtest: a different problem")
    }
}

final class LineCollector: @unchecked Sendable {
    // Only touched from the reporting thread in these tests.
    private(set) var lines: [String] = []
    func append(_ line: String) { lines.append(line) }
}
