import Synchronization

/// A packed ring's side of `VirtQueue` (virtio 1.2, 2.8): chains taken in ring order where
/// their first descriptor's flags say available, used descriptors written back over them.
/// Called with the cursor locked.
extension VirtQueue {
    /// The chain at the device's position, when its first descriptor is available (2.8.1):
    /// consecutive descriptors while NEXT is set (wrapping at the ring's end, no more than the
    /// queue size), or a lone INDIRECT descriptor and its table. The buffer id is the last
    /// descriptor's (2.8.6).
    func takePacked(_ c: inout Cursor, _ sink: (GuestBuffer, _ isWritable: Bool) throws(VirtQueueError) -> Void)
        throws(VirtQueueError) -> WalkedChain? {
        let first = try packedDescriptor(c.nextAvailable)
        guard PackedRing.isAvailable(flags: first.flags, wrap: c.availableWrap) else { return nil }
        // The rest of the descriptor, and the chain's others, are read after the flags that
        // made it available (the driver wrote them first).
        atomicMemoryFence(ordering: .acquiring)
        var rules = ChainRules(limit: Int(size))
        var position = c.nextAvailable, wrap = c.availableWrap, slots: UInt16 = 0
        var d = try packedDescriptor(position)
        while true {
            slots += 1
            position += 1
            if position == size {
                position = 0
                wrap.toggle()
            }
            if d.isIndirect {
                guard indirect else { throw .badIndirectDescriptor("INDIRECT_DESC was not negotiated") }
                guard !d.hasNext, slots == 1 else { throw .badIndirectDescriptor("INDIRECT in a chain of several descriptors") }
                try walkPackedIndirect(d, &rules, sink)
                break
            }
            try sink(try rules.admit(address: d.address, length: d.length, isWritable: d.isWritable), d.isWritable)
            guard d.hasNext else { break }
            // A chain no longer than the queue (2.8.6): its next descriptor would be its first again.
            guard slots < size else { throw .chainTooLong(limit: Int(size)) }
            d = try packedDescriptor(position)
        }
        // Unlike a split ring's avail_event, the device's event structure is not moved on per
        // chain: its flags say ENABLE until the device asks otherwise, and a device that waits
        // for kicks asks with its position then (`setPackedNotifications`), as QEMU does.
        c.nextAvailable = position
        c.availableWrap = wrap
        return WalkedChain(id: d.id, slots: slots, readable: Int(rules.readable), writable: Int(rules.writable))
    }

    /// An indirect table's descriptors, in table order: every one is a buffer, and only its
    /// WRITE flag counts (2.8.8: the others are reserved and ignored, NEXT too).
    private func walkPackedIndirect(_ table: PackedDescriptor, _ rules: inout ChainRules,
                                    _ sink: (GuestBuffer, Bool) throws(VirtQueueError) -> Void) throws(VirtQueueError) {
        let count = try indirectTableCount(address: table.address, length: table.length)
        for index in 0..<UInt16(count) {
            let d = try descriptorBytes(index, tableAddress: table.address, tableSize: count) { PackedDescriptor(bytes: $0) }
            try sink(try rules.admit(address: d.address, length: d.length, isWritable: d.isWritable), d.isWritable)
        }
    }

    private func packedDescriptor(_ position: UInt16) throws(VirtQueueError) -> PackedDescriptor {
        try descriptorBytes(position, tableAddress: addresses.descriptorTable, tableSize: Int(size)) { PackedDescriptor(bytes: $0) }
    }

    /// Writes used descriptors at the device's used position, each skipping the ring slots of
    /// its chain (2.8.7): ids and lengths first, then the flags that hand them to the driver,
    /// the first one's last, so the driver sees the whole batch or none of it.
    func publishPacked(_ count: Int, _ element: (Int) -> UsedElement, _ c: inout Cursor) throws(VirtQueueError) {
        var position = c.nextUsed, wrap = c.usedWrap
        var first: (offset: UInt64, flags: UInt16)?
        for i in 0..<count {
            let used = element(i)
            let at = UInt64(position) * UInt64(PackedRing.descriptorSize)
            try store(used.id, .descriptors, offset: at + UInt64(PackedRing.idOffset))
            try store(used.written, .descriptors, offset: at + UInt64(PackedRing.lengthOffset))
            let flags = PackedRing.usedFlags(wrap: wrap, wroteBytes: used.written > 0)
            if first == nil {
                first = (at + UInt64(PackedRing.flagsOffset), flags)
            } else {
                // Its id and length are visible before the flags that hand it over.
                atomicMemoryFence(ordering: .releasing)
                try store(flags, .descriptors, offset: at + UInt64(PackedRing.flagsOffset))
            }
            let next = Int(position) + Int(used.slots)
            position = UInt16(next % Int(size))
            if next >= Int(size) { wrap.toggle() }
        }
        if let first {
            atomicMemoryFence(ordering: .releasing)
            try store(first.flags, .descriptors, offset: first.offset)
        }
        c.nextUsed = position
        c.usedWrap = wrap
    }

    /// The driver's event suppression (2.8.10): interrupts enabled, disabled, or wanted once
    /// the used position passes the descriptor it names (EVENT_IDX). `usedAtLastSignal` keeps
    /// position and wrap counter as off_wrap does, so a full turn of the ring is news.
    func packedInterruptNeeded(_ c: inout Cursor) throws(VirtQueueError) -> Bool {
        let new = PackedRing.offsetWrap(c.nextUsed, wrap: c.usedWrap)
        guard c.usedAtLastSignal != new, c.nextUsed != 0 || !c.usedWrap || c.usedAtLastSignal != nil else { return false }
        let old = c.usedAtLastSignal
        c.usedAtLastSignal = new
        let flags: UInt16 = try load(.driver, offset: PackedRing.eventFlags)
        switch flags {
        case PackedRing.eventEnable: return true
        case PackedRing.eventDescriptor where eventIndex:
            guard let old else { return true }
            // Positions as a 16-bit count of slots: a wrap counter other than the device's puts
            // the event a ring's length back (QEMU's vring_packed_need_event does the same).
            let event: UInt16 = try load(.driver, offset: PackedRing.eventOffsetWrap)
            var offset = Int(event & ~PackedRing.wrapBit)
            if (event & PackedRing.wrapBit != 0) != c.usedWrap { offset -= Int(size) }
            return SplitRing.needsEvent(event: UInt16(truncatingIfNeeded: offset), new: c.nextUsed, old: old & ~PackedRing.wrapBit)
        default:
            // DISABLE, the reserved value 3, and DESC without EVENT_IDX: no interrupt.
            return false
        }
    }

    /// Publishes the device's wish for kicks (2.8.10): DISABLE, or ENABLE, or (EVENT_IDX) a kick
    /// for the descriptor at the device's position; then whether one is already available.
    func setPackedNotifications(_ enabled: Bool, _ c: inout Cursor) throws(VirtQueueError) -> Bool {
        guard enabled else {
            try store(PackedRing.eventDisable, .device, offset: PackedRing.eventFlags)
            return false
        }
        if eventIndex {
            try store(PackedRing.offsetWrap(c.nextAvailable, wrap: c.availableWrap), .device, offset: PackedRing.eventOffsetWrap)
            try store(PackedRing.eventDescriptor, .device, offset: PackedRing.eventFlags)
        } else {
            try store(PackedRing.eventEnable, .device, offset: PackedRing.eventFlags)
        }
        // Re-read the next descriptor's flags after publishing the request, so a racing addition is seen.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let flags: UInt16 = try load(.descriptors, offset: UInt64(c.nextAvailable) * UInt64(PackedRing.descriptorSize) + UInt64(PackedRing.flagsOffset))
        return PackedRing.isAvailable(flags: flags, wrap: c.availableWrap)
    }
}
