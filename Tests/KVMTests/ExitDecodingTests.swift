import CLinux
import KVM
import Synchronization
import Testing
import VMMBase

/// A zeroed buffer laid out like a kvm_run mapping (kvm_run, then the PIO data page).
private final class FakeRun {
    let bytes: UnsafeMutableRawBufferPointer
    let layout = KVMLayout.current
    var area: KVMRunArea { KVMRunArea(bytes, layout: layout) }

    init(size: Int = 3 * 4096) {
        bytes = .allocate(byteCount: size, alignment: 4096)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
    }
    deinit { bytes.deallocate() }

    func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        bytes.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }

    func portIO(direction: Int32, size: UInt8, port: UInt16, count: UInt32, dataOffset: UInt64) {
        put(UInt32(KVM_EXIT_IO), at: layout.exitReason)
        put(UInt8(direction), at: layout.ioDirection)
        put(size, at: layout.ioSize)
        put(port, at: layout.ioPort)
        put(count, at: layout.ioCount)
        put(dataOffset, at: layout.ioDataOffset)
    }

    func mmio(address: UInt64, length: UInt32, isWrite: Bool, data: UInt64 = 0) {
        put(UInt32(KVM_EXIT_MMIO), at: layout.exitReason)
        put(address, at: layout.mmioAddress)
        put(length, at: layout.mmioLength)
        put(UInt8(isWrite ? 1 : 0), at: layout.mmioIsWrite)
        put(data, at: layout.mmioData)
    }
}

/// Records every access; reads return `readValue`.
private final class Recorder: VCPUExitHandler {
    let readValue: UInt64
    let log = Mutex<[String]>([])
    init(readValue: UInt64 = 0) { self.readValue = readValue }
    var entries: [String] { log.withLock { $0 } }

    func portRead(_ port: UInt16, width: AccessWidth) -> UInt64 {
        log.withLock { $0.append("in \(hex(port)) \(width.bytes)") }
        return readValue
    }
    func portWrite(_ port: UInt16, width: AccessWidth, value: UInt64) {
        log.withLock { $0.append("out \(hex(port)) \(width.bytes) \(hex(value))") }
    }
    func mmioRead(_ address: UInt64, width: AccessWidth) -> UInt64 {
        log.withLock { $0.append("read \(hex(address)) \(width.bytes)") }
        return readValue
    }
    func mmioWrite(_ address: UInt64, width: AccessWidth, value: UInt64) {
        log.withLock { $0.append("write \(hex(address)) \(width.bytes) \(hex(value))") }
    }
}

private func hex(_ value: some BinaryInteger) -> String { "0x" + String(value, radix: 16) }

@Suite struct ExitDecodingTests {
    @Test func portOutIsDecodedAndDelivered() {
        let run = FakeRun()
        run.portIO(direction: KVM_EXIT_IO_OUT, size: 4, port: 0xCF8, count: 1, dataOffset: 4096)
        run.put(UInt32(0x8000_F800), at: 4096)
        let exit = run.area.decodeExit()
        #expect(exit == .portIO(PortIOExit(direction: .write, port: 0xCF8, width: .dword, count: 1, dataOffset: 4096)))
        let recorder = Recorder()
        #expect(run.area.complete(exit, with: recorder))
        #expect(recorder.entries == ["out 0xcf8 4 0x8000f800"])
    }

    @Test func stringPortInFillsEveryItem() {
        let run = FakeRun()
        run.portIO(direction: KVM_EXIT_IO_IN, size: 2, port: 0x1F0, count: 3, dataOffset: 4096)
        let exit = run.area.decodeExit()
        let recorder = Recorder(readValue: 0xABCD_1234)  // truncated to the width
        #expect(run.area.complete(exit, with: recorder))
        #expect(recorder.entries == Array(repeating: "in 0x1f0 2", count: 3))
        #expect(Array(run.bytes[4096..<4104]) == [0x34, 0x12, 0x34, 0x12, 0x34, 0x12, 0, 0])
    }

    @Test func hostilePortIOIsRejectedWithoutTouchingAnything() {
        let size = 3 * 4096
        let layout = KVMLayout.current
        let cases: [(UInt8, UInt32, UInt64, KVMExitError)] = [
            (1, 1, UInt64(size), .portIODataOutOfBounds(offset: UInt64(size), size: 1, count: 1, mappingSize: size)),
            (4, 1, UInt64(size - 2), .portIODataOutOfBounds(offset: UInt64(size - 2), size: 4, count: 1, mappingSize: size)),
            (1, 1, .max, .portIODataOutOfBounds(offset: .max, size: 1, count: 1, mappingSize: size)),
            (4, .max, 4096, .portIODataOutOfBounds(offset: 4096, size: 4, count: .max, mappingSize: size)),
            (4, 0x4000_0001, 4096, .portIODataOutOfBounds(offset: 4096, size: 4, count: 0x4000_0001, mappingSize: size)),
            // Data may not overlap struct kvm_run itself (immediate_exit lives there).
            (1, 1, 0, .portIODataOutOfBounds(offset: 0, size: 1, count: 1, mappingSize: size)),
            (1, 1, UInt64(layout.immediateExit), .portIODataOutOfBounds(offset: UInt64(layout.immediateExit), size: 1,
                                                                       count: 1, mappingSize: size)),
            (3, 1, 4096, .invalidPortIOSize(3)),
            (8, 1, 4096, .invalidPortIOSize(8)),
            (0, 1, 4096, .invalidPortIOSize(0)),
            (1, 0, 4096, .invalidPortIOCount(0)),
        ]
        for (width, count, offset, expected) in cases {
            let run = FakeRun(size: size)
            run.portIO(direction: KVM_EXIT_IO_IN, size: width, port: 0x60, count: count, dataOffset: offset)
            let before = Array(run.bytes)
            let exit = run.area.decodeExit()
            #expect(exit == .malformed(expected))
            let recorder = Recorder(readValue: .max)
            run.area.complete(exit, with: recorder)
            #expect(recorder.entries.isEmpty)
            #expect(Array(run.bytes) == before)
        }

        let run = FakeRun()
        run.portIO(direction: 7, size: 1, port: 0x60, count: 1, dataOffset: 4096)
        #expect(run.area.decodeExit() == .malformed(.invalidPortIODirection(7)))
    }

    @Test func aFabricatedPortExitIsCheckedAgainWhenCompleted() {
        let run = FakeRun()
        let recorder = Recorder(readValue: 0xFF)
        let outside = VCPUExit.portIO(PortIOExit(direction: .read, port: 0x60, width: .dword, count: 2,
                                                 dataOffset: run.bytes.count - 4))
        #expect(!run.area.complete(outside, with: recorder))
        let negative = VCPUExit.portIO(PortIOExit(direction: .read, port: 0x60, width: .byte, count: 1, dataOffset: -1))
        #expect(!run.area.complete(negative, with: recorder))
        #expect(recorder.entries.isEmpty)
    }

    @Test func mmioReadsAndWritesMoveTheRightBytes() {
        let run = FakeRun()
        run.mmio(address: 0xFED0_0000, length: 4, isWrite: true, data: 0xFFFF_FFFF_1234_5678)
        let write = run.area.decodeExit()
        #expect(write == .mmio(MMIOExit(address: 0xFED0_0000, length: 4, isWrite: true, data: 0x1234_5678)))
        let recorder = Recorder(readValue: 0x1122_3344_5566_7788)
        run.area.complete(write, with: recorder)

        run.mmio(address: 0xFED0_0010, length: 2, isWrite: false)
        run.area.complete(run.area.decodeExit(), with: recorder)
        #expect(Array(run.bytes[run.layout.mmioData..<run.layout.mmioData + 8]) == [0x88, 0x77, 0, 0, 0, 0, 0, 0])
        #expect(recorder.entries == ["write 0xfed00000 4 0x12345678", "read 0xfed00010 2"])
    }

    @Test func oddSizedMMIOFragmentsGoByteByByte() {
        let run = FakeRun()
        run.mmio(address: 0x1000_0FFD, length: 3, isWrite: true, data: 0xAA_BBCCDD)
        let recorder = Recorder(readValue: 0x5A)
        run.area.complete(run.area.decodeExit(), with: recorder)
        run.mmio(address: 0x2000, length: 3, isWrite: false)
        run.area.complete(run.area.decodeExit(), with: recorder)
        #expect(recorder.entries == ["write 0x10000ffd 1 0xdd", "write 0x10000ffe 1 0xcc", "write 0x10000fff 1 0xbb",
                                     "read 0x2000 1", "read 0x2001 1", "read 0x2002 1"])
        #expect(Array(run.bytes[run.layout.mmioData..<run.layout.mmioData + 4]) == [0x5A, 0x5A, 0x5A, 0])
    }

    @Test func badMMIOLengthsAreRejected() {
        for length: UInt32 in [0, 9, 16, .max] {
            let run = FakeRun()
            run.mmio(address: 0, length: length, isWrite: true)
            #expect(run.area.decodeExit() == .malformed(.invalidMMIOLength(length)))
        }
    }

    @Test func otherExitReasons() {
        let run = FakeRun()
        let layout = run.layout
        run.put(UInt32(KVM_EXIT_HLT), at: layout.exitReason)
        #expect(run.area.decodeExit() == .halt)
        run.put(UInt32(KVM_EXIT_SHUTDOWN), at: layout.exitReason)
        #expect(run.area.decodeExit() == .shutdown)
        run.put(UInt32(KVM_EXIT_INTR), at: layout.exitReason)
        #expect(run.area.decodeExit() == .interrupted)

        run.put(UInt32(KVM_EXIT_SYSTEM_EVENT), at: layout.exitReason)
        run.put(UInt32(KVM_SYSTEM_EVENT_RESET), at: layout.systemEventType)
        run.put(UInt32(1), at: layout.systemEventDataCount)
        run.put(UInt64(42), at: layout.systemEventData)
        #expect(run.area.decodeExit() == .systemEvent(SystemEvent(kind: .reset, data: [42])))
        // A huge ndata is clamped to the array's 16 entries.
        run.put(UInt32.max, at: layout.systemEventDataCount)
        if case .systemEvent(let event) = run.area.decodeExit() { #expect(event.data.count == 16) } else {
            Issue.record("not a system event")
        }

        run.put(UInt32(KVM_EXIT_INTERNAL_ERROR), at: layout.exitReason)
        run.put(UInt32(KVM_INTERNAL_ERROR_EMULATION), at: layout.internalSuberror)
        run.put(UInt32(0xFFFF_FFFF), at: layout.internalDataCount)
        if case .internalError(let suberror, let data) = run.area.decodeExit() {
            #expect(suberror == UInt32(KVM_INTERNAL_ERROR_EMULATION))
            #expect(data.count == layout.internalDataCapacity)
        } else { Issue.record("not an internal error") }

        run.put(UInt32(KVM_EXIT_FAIL_ENTRY), at: layout.exitReason)
        run.put(UInt64(0x80000021), at: layout.failEntryReason)
        run.put(UInt32(1), at: layout.failEntryCPU)
        #expect(run.area.decodeExit() == .failEntry(hardwareReason: 0x80000021, cpu: 1))

        run.put(UInt32(9999), at: layout.exitReason)
        #expect(run.area.decodeExit() == .other(reason: 9999))
    }

    @Test func aMappingSmallerThanKVMRunIsRejected() {
        let run = FakeRun(size: 64)
        #expect(run.area.decodeExit() == .malformed(.runAreaTooSmall(size: 64, needed: run.layout.runSize)))
        // Completing or kicking through it touches nothing it does not have.
        #expect(!run.area.complete(.mmio(MMIOExit(address: 0, length: 4, isWrite: false, data: 0)), with: Recorder()))
    }

    @Test func immediateExitFlag() {
        let run = FakeRun()
        #expect(!run.area.immediateExit)
        run.area.setImmediateExit(true)
        #expect(run.area.immediateExit)
        #expect(run.bytes[run.layout.immediateExit] == 1)
        run.area.setImmediateExit(false)
        #expect(!run.area.immediateExit)
    }

    @Test func layoutMatchesTheKernelABI() {
        // struct kvm_run's fixed offsets (Documentation/virt/kvm/api.rst).
        let layout = KVMLayout.current
        #expect(layout.exitReason == 8)
        #expect(layout.immediateExit == 1)
        #expect(layout.ioDirection == 32 && layout.ioSize == 33 && layout.ioPort == 34)
        #expect(layout.ioCount == 36 && layout.ioDataOffset == 40)
        #expect(layout.mmioAddress == 32 && layout.mmioData == 40 && layout.mmioLength == 48 && layout.mmioIsWrite == 52)
    }
}
