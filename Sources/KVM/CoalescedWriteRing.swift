import CLinux
import HostOS
import Synchronization
import VMMBase

/// KVM's coalesced MMIO/PIO ring: guest writes to a registered zone do not exit to user space;
/// KVM appends them to a ring shared by the VM's vCPUs (a page of every vCPU's mmap) and the
/// VMM replays them, in order, before it handles the next exit. A write whose only effect is
/// on later accesses (CONFIG_ADDRESS at 0xCF8 is the example: it matters at the next 0xCFC
/// access, which exits) then costs no trip to user space.
///
/// The kernel fills entries and advances `last`; user space replays and advances `first`.
/// Everything read from the shared page is checked: an index past the ring or a length past
/// the entry's data ends the replay with a log line instead of a wild read.
///
/// @unchecked: `page` points into a mapping `owner` keeps alive; the shared indices are read
/// and written with acquire/release atomics, and replays are serialized by a mutex.
public final class CoalescedWriteRing: @unchecked Sendable {
    struct Layout {
        let first: Int, last: Int, entries: Int
        let entrySize: Int, address: Int, length: Int, pio: Int, data: Int, dataSize: Int
        static let current: Layout = {
            let l = sy_kvm_coalesced_layout()
            return Layout(first: Int(l.ring_first), last: Int(l.ring_last), entries: Int(l.ring_entries),
                          entrySize: Int(l.entry_size), address: Int(l.entry_address), length: Int(l.entry_length),
                          pio: Int(l.entry_pio), data: Int(l.entry_data), dataSize: Int(l.entry_data_size))
        }()
    }

    /// One replayed write.
    public struct Write: Hashable, Sendable {
        public var isPortIO: Bool
        public var address: UInt64
        public var bytes: [UInt8]
    }

    private let page: UnsafeMutableRawBufferPointer
    private let owner: AnyObject
    private let layout = Layout.current
    /// Entries in the ring: what fits in the page after the header (KVM_COALESCED_MMIO_MAX).
    public let capacity: Int
    /// Replays run one at a time, from any vCPU thread or the flusher.
    private let replaying = Mutex<UInt64>(0)

    /// `page`: the ring's page inside a vCPU's mmap (at KVM_CAP_COALESCED_MMIO's page offset).
    /// The owner keeps the mapping alive.
    init(page: UnsafeMutableRawBufferPointer, owner: AnyObject) {
        self.page = page
        self.owner = owner
        capacity = max(0, (page.count - layout.entries) / layout.entrySize)
    }

    /// Writes replayed so far.
    public var replayed: UInt64 { replaying.withLock { $0 } }

    /// Whether the kernel queued writes not yet replayed: two atomic loads, no lock, so the
    /// check on every vCPU exit costs next to nothing while the ring is empty.
    public var hasPending: Bool {
        guard let base = page.baseAddress else { return false }
        return sy_atomic_load_u32((base + layout.first).assumingMemoryBound(to: UInt32.self))
            != sy_atomic_load_u32((base + layout.last).assumingMemoryBound(to: UInt32.self))
    }

    /// Replays every pending write into `handler`, oldest first; returns how many.
    @discardableResult
    public func replay(into handler: any VCPUExitHandler) -> Int {
        guard hasPending else { return 0 }
        return replaying.withLock { total in
            let count = replayLocked { write in
                let value = LittleEndian.load(write.bytes, at: 0, count: write.bytes.count)
                let width = AccessWidth(rawValue: write.bytes.count) ?? .byte
                if write.isPortIO {
                    handler.portWrite(UInt16(truncatingIfNeeded: write.address), width: width, value: value)
                } else {
                    handler.mmioWrite(write.address, width: width, value: value)
                }
            }
            total += UInt64(count)
            return count
        }
    }

    /// The pending writes, consumed (tests).
    func take() -> [Write] {
        var writes: [Write] = []
        replaying.withLock { _ in _ = replayLocked { writes.append($0) } }
        return writes
    }

    private func replayLocked(_ body: (Write) -> Void) -> Int {
        guard capacity > 0, let base = page.baseAddress else { return 0 }
        let firstPointer = (base + layout.first).assumingMemoryBound(to: UInt32.self)
        let lastPointer = (base + layout.last).assumingMemoryBound(to: UInt32.self)
        var first = Int(sy_atomic_load_u32(firstPointer))
        let last = Int(sy_atomic_load_u32(lastPointer))
        guard first < capacity, last < capacity else {
            GuestErrorLog.report(device: "kvm", kind: "coalesced-ring", "ring indices first=\(first) last=\(last) exceed its \(capacity) entries; dropped")
            sy_atomic_store_u32(firstPointer, UInt32(last < capacity ? last : 0))
            return 0
        }
        var count = 0
        while first != last {
            let entry = layout.entries + first * layout.entrySize
            let length = Int(page.load(fromByteOffset: entry + layout.length, as: UInt32.self))
            if (1...layout.dataSize).contains(length), [1, 2, 4, 8].contains(length) {
                let data = Array(page[(entry + layout.data)..<(entry + layout.data + length)])
                body(Write(isPortIO: page.load(fromByteOffset: entry + layout.pio, as: UInt32.self) != 0,
                           address: page.load(fromByteOffset: entry + layout.address, as: UInt64.self), bytes: data))
                count += 1
            } else {
                GuestErrorLog.report(device: "kvm", kind: "coalesced-ring", "entry \(first) has length \(length); dropped")
            }
            first = (first + 1) % capacity
            sy_atomic_store_u32(firstPointer, UInt32(first))
        }
        return count
    }
}

extension KVMVirtualMachine {
    /// Asks KVM to coalesce writes to ports `port..<port+size` (KVM_CAP_COALESCED_PIO).
    public func coalescePortWrites(port: UInt16, size: UInt32) throws(SystemError) {
        var zone = kvm_coalesced_mmio_zone()
        sy_kvm_coalesced_zone(&zone, UInt64(port), size, 1)
        try ioctl(fd, KVMRequest.registerCoalescedMMIO, &zone)
    }

    /// Whether this KVM coalesces port writes, and the ring's page offset in a vCPU's mmap.
    public var coalescedPortWriteRingPage: Int? {
        guard let pio = try? checkExtension(.coalescedPIO), pio > 0,
              let page = try? checkExtension(.coalescedMMIO), page > 0 else { return nil }
        return Int(page)
    }
}

extension KVMVCPU {
    /// The coalesced-write ring in this vCPU's mmap (shared by every vCPU of the VM), when
    /// KVM has one there.
    public func coalescedWriteRing() -> CoalescedWriteRing? {
        guard let pageIndex = virtualMachine.coalescedPortWriteRingPage else { return nil }
        let pageSize = 4096
        let bytes = runArea.bytes
        guard bytes.count >= (pageIndex + 1) * pageSize else { return nil }
        return CoalescedWriteRing(page: UnsafeMutableRawBufferPointer(rebasing: bytes[(pageIndex * pageSize)..<((pageIndex + 1) * pageSize)]),
                                  owner: self)
    }
}
