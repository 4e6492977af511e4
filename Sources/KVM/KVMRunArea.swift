import CLinux
import VMMBase

/// What a vCPU's port and MMIO exits are delivered to. Switchyard's `Machine` implements it.
/// Called from vCPU threads, concurrently when there are several vCPUs.
public protocol VCPUExitHandler: Sendable {
    func portRead(_ port: UInt16, width: AccessWidth) -> UInt64
    func portWrite(_ port: UInt16, width: AccessWidth, value: UInt64)
    func mmioRead(_ address: UInt64, width: AccessWidth) -> UInt64
    func mmioWrite(_ address: UInt64, width: AccessWidth, value: UInt64)
}

/// A view of a vCPU's kvm_run mapping (or of any buffer laid out like one, for tests): decodes
/// exits and moves their data, checking every offset against the buffer's size.
///
/// It does not own the memory; the vCPU (or the test) keeps it alive.
public struct KVMRunArea: @unchecked Sendable {
    public let bytes: UnsafeMutableRawBufferPointer
    public let layout: KVMLayout

    public init(_ bytes: UnsafeMutableRawBufferPointer, layout: KVMLayout = .current) {
        self.bytes = bytes
        self.layout = layout
    }

    // MARK: Decoding

    /// Decodes the exit KVM_RUN left. Hostile or corrupt values give `.malformed`.
    public func decodeExit() -> VCPUExit {
        guard bytes.count >= layout.runSize else {
            return .malformed(.runAreaTooSmall(size: bytes.count, needed: layout.runSize))
        }
        let reason = load(UInt32.self, layout.exitReason)
        switch Int32(bitPattern: reason) {
        case KVM_EXIT_IO: return decodePortIO()
        case KVM_EXIT_MMIO: return decodeMMIO()
        case KVM_EXIT_HLT: return .halt
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_INTR: return .interrupted
        case KVM_EXIT_SYSTEM_EVENT:
            let count = min(Int(load(UInt32.self, layout.systemEventDataCount)), 16)
            let data = (0..<count).map { load(UInt64.self, layout.systemEventData + 8 * $0) }
            return .systemEvent(SystemEvent(rawType: load(UInt32.self, layout.systemEventType), data: data))
        case KVM_EXIT_INTERNAL_ERROR:
            let count = min(Int(load(UInt32.self, layout.internalDataCount)), layout.internalDataCapacity)
            let data = (0..<count).map { load(UInt64.self, layout.internalData + 8 * $0) }
            return .internalError(suberror: load(UInt32.self, layout.internalSuberror), data: data)
        case KVM_EXIT_FAIL_ENTRY:
            return .failEntry(hardwareReason: load(UInt64.self, layout.failEntryReason),
                              cpu: load(UInt32.self, layout.failEntryCPU))
        case KVM_EXIT_IOAPIC_EOI:
            return .ioapicEOI(vector: load(UInt8.self, layout.ioapicEOIVector))
        case KVM_EXIT_UNKNOWN:
            return .unknown(hardwareReason: load(UInt64.self, layout.hardwareExitReason))
        default:
            return .other(reason: reason)
        }
    }

    private func decodePortIO() -> VCPUExit {
        let rawDirection = load(UInt8.self, layout.ioDirection)
        let direction: PortIOExit.Direction
        switch Int32(rawDirection) {
        case KVM_EXIT_IO_IN: direction = .read
        case KVM_EXIT_IO_OUT: direction = .write
        default: return .malformed(.invalidPortIODirection(rawDirection))
        }
        let rawSize = load(UInt8.self, layout.ioSize)
        guard rawSize == 1 || rawSize == 2 || rawSize == 4, let width = AccessWidth(bytes: Int(rawSize)) else {
            return .malformed(.invalidPortIOSize(rawSize))
        }
        let count = load(UInt32.self, layout.ioCount)
        guard count > 0 else { return .malformed(.invalidPortIOCount(count)) }
        let offset = load(UInt64.self, layout.ioDataOffset)
        guard dataRange(offset: offset, size: width.bytes, count: count) != nil else {
            return .malformed(.portIODataOutOfBounds(offset: offset, size: width.bytes, count: count,
                                                     mappingSize: bytes.count))
        }
        return .portIO(PortIOExit(direction: direction, port: load(UInt16.self, layout.ioPort), width: width,
                                  count: count, dataOffset: Int(offset)))
    }

    private func decodeMMIO() -> VCPUExit {
        let length = load(UInt32.self, layout.mmioLength)
        guard (1...8).contains(length) else { return .malformed(.invalidMMIOLength(length)) }
        let isWrite = load(UInt8.self, layout.mmioIsWrite) != 0
        let data = isWrite ? loadLittleEndian(at: layout.mmioData, count: Int(length)) : 0
        return .mmio(MMIOExit(address: load(UInt64.self, layout.mmioAddress), length: Int(length),
                              isWrite: isWrite, data: data))
    }

    /// The byte range of `count` items of `size` bytes at `offset`, when it lies after struct
    /// kvm_run and inside the mapping; nil otherwise (including arithmetic overflow).
    func dataRange(offset: UInt64, size: Int, count: UInt32) -> Range<Int>? {
        guard offset >= UInt64(layout.runSize), offset <= UInt64(bytes.count) else { return nil }
        let (total, overflow) = UInt64(size).multipliedReportingOverflow(by: UInt64(count))
        guard !overflow, total <= UInt64(bytes.count) - offset else { return nil }
        return Int(offset)..<Int(offset + total)
    }

    // MARK: Completing

    /// Carries out a port or MMIO exit against `handler`: writes go to the handler, reads come
    /// back into kvm_run for the next KVM_RUN to finish the instruction. Other exits are
    /// ignored. Returns false (touching nothing) when the exit's data is out of bounds.
    @discardableResult
    public func complete(_ exit: VCPUExit, with handler: some VCPUExitHandler) -> Bool {
        guard bytes.count >= layout.runSize else { return false }
        switch exit {
        case .portIO(let io):
            guard io.dataOffset >= 0,
                  let range = dataRange(offset: UInt64(io.dataOffset), size: io.width.bytes, count: io.count)
            else { return false }
            let size = io.width.bytes
            for itemOffset in stride(from: range.lowerBound, to: range.upperBound, by: size) {
                switch io.direction {
                case .write:
                    handler.portWrite(io.port, width: io.width, value: loadLittleEndian(at: itemOffset, count: size))
                case .read:
                    let value = io.width.truncate(handler.portRead(io.port, width: io.width))
                    storeLittleEndian(value, at: itemOffset, count: size)
                }
            }
            return true
        case .mmio(let mmio):
            guard (1...8).contains(mmio.length) else { return false }
            if let width = AccessWidth(bytes: mmio.length) {
                if mmio.isWrite {
                    handler.mmioWrite(mmio.address, width: width, value: width.truncate(mmio.data))
                } else {
                    let value = width.truncate(handler.mmioRead(mmio.address, width: width))
                    storeLittleEndian(value, at: layout.mmioData, count: mmio.length)
                }
            } else {
                // Odd-sized fragment (3, 5, 6 or 7 bytes): byte by byte, in address order.
                var value: UInt64 = 0
                for i in 0..<mmio.length {
                    let address = mmio.address &+ UInt64(i)
                    if mmio.isWrite {
                        handler.mmioWrite(address, width: .byte, value: (mmio.data >> (8 * UInt64(i))) & 0xFF)
                    } else {
                        value |= (handler.mmioRead(address, width: .byte) & 0xFF) << (8 * UInt64(i))
                    }
                }
                if !mmio.isWrite { storeLittleEndian(value, at: layout.mmioData, count: mmio.length) }
            }
            return true
        default:
            return true
        }
    }

    // MARK: immediate_exit

    /// kvm_run.immediate_exit: while set, KVM_RUN returns EINTR at once. Written with a release
    /// store, so another thread may set it to kick the vCPU.
    public func setImmediateExit(_ on: Bool) {
        guard bytes.count > layout.immediateExit else { return }
        sy_atomic_store_u8((bytes.baseAddress! + layout.immediateExit).assumingMemoryBound(to: UInt8.self),
                           on ? 1 : 0)
    }

    public var immediateExit: Bool {
        bytes.count > layout.immediateExit && bytes[layout.immediateExit] != 0
    }

    // MARK: Raw access (offsets already checked by the callers)

    private func load<T: FixedWidthInteger>(_ type: T.Type, _ offset: Int) -> T {
        T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    private func loadLittleEndian(at offset: Int, count: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<count { value |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        return value
    }

    private func storeLittleEndian(_ value: UInt64, at offset: Int, count: Int) {
        for i in 0..<count { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
}
