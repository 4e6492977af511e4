import AddressSpace
import Synchronization
import Testing
import VMMBase

/// Records every diff a layer hands out, as "+name@base" / "-name@base" lines.
final class DiffRecorder: AddressSpaceListener {
    let lines = Mutex<[String]>([])
    func commit(_ diff: FlatViewDiff, in space: AddressSpaceKind, view: FlatView) {
        let tag = space == .io ? "io " : ""
        lines.withLock {
            $0 += diff.removed.map { "\(tag)-\($0.name)@\(String($0.range.base, radix: 16))" }
            $0 += diff.added.map { "\(tag)+\($0.name)@\(String($0.range.base, radix: 16))" }
        }
    }
    func take() -> [String] { lines.withLock { lines in defer { lines = [] }; return lines } }
}

@Suite struct CommitTests {
    @Test func aDiffListsOnlyWhatMoved() {
        let ram = Probe(1), bar = Probe(2), fixed = Probe(3)
        func view(barAt base: UInt64) -> FlatView {
            var root = Region.container("root", size: 1 << 32)
            root.add(.leaf("ram", size: 0x1000, handler: ram), at: 0)
            root.add(.leaf("fixed", size: 0x10, handler: fixed), at: 0x8000)
            root.add(.leaf("bar", size: 0x100, handler: bar), at: base)
            return FlatView(rendering: root)
        }
        let diff = FlatViewDiff(from: view(barAt: 0x4000), to: view(barAt: 0x9000))
        #expect(diff.removed.map(\.name) == ["bar"] && diff.removed.map(\.range.base) == [0x4000])
        #expect(diff.added.map(\.name) == ["bar"] && diff.added.map(\.range.base) == [0x9000])
        #expect(FlatViewDiff(from: view(barAt: 0x4000), to: view(barAt: 0x4000)).isEmpty)
    }

    @Test func aBAROverRAMSplitsItAndTheDiffSaysSo() {
        let ram = Probe(1), bar = Probe(2)
        var before = Region.container("root", size: 1 << 32)
        before.add(.leaf("ram", size: 0x10000, handler: ram), at: 0)
        var after = before
        after.add(.leaf("bar", size: 0x1000, handler: bar), at: 0x4000, priority: 1)
        let diff = FlatViewDiff(from: FlatView(rendering: before), to: FlatView(rendering: after))
        #expect(diff.removed.map { "\($0.range)" } == ["\(AddressRange(base: 0, last: 0xFFFF)!)"])
        #expect(diff.added.map { "\($0.name) \($0.range) +\($0.handlerOffset)" } == [
            "ram \(AddressRange(base: 0, last: 0x3FFF)!) +0",
            "bar \(AddressRange(base: 0x4000, last: 0x4FFF)!) +0",
            "ram \(AddressRange(base: 0x5000, last: 0xFFFF)!) +20480",
        ])
    }

    @Test func listenersGetTheCurrentViewsThenEachCommitsDiff() {
        let base = Mutex<UInt64>(0x4000)
        let bar = Probe(2)
        let layer = CommittedLayer {
            var memory = Region.container("mem", size: 1 << 32)
            memory.add(.leaf("bar", size: 0x100, handler: bar), at: base.withLock { $0 })
            var io = Region.container("io", size: 1 << 16)
            io.add(.leaf("port", size: 4, handler: bar), at: 0xCF8)
            return (memory, io)
        }
        let recorder = DiffRecorder()
        layer.addListener(recorder)
        #expect(recorder.take() == ["+bar@4000", "io +port@cf8"])
        base.withLock { $0 = 0x8000 }
        layer.commit()
        #expect(recorder.take() == ["-bar@4000", "+bar@8000"])
        layer.commit()  // nothing changed: no diff to hand out
        #expect(recorder.take() == [])
        #expect(layer.view(.memory).read(at: 0x8000, width: .dword) == 2 << 24)
        #expect(layer.view(.memory).read(at: 0x4000, width: .dword) == 0xFFFF_FFFF)
    }
}
