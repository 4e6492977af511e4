import AddressSpace
import HostOS
import KVM
import Synchronization
import VMMBase

/// A region a hypervisor can map straight into the guest: a stretch of guest RAM, whole or
/// read-only (reads from RAM, writes exit to the VMM, which drops them).
protocol RAMBackedHandler: IORegionHandler {
    var ram: RAMHandler { get }
    /// Offset into `ram` of the handler's own offset 0.
    var ramOffset: UInt64 { get }
    /// Nil when every access must exit to the VMM (the handler decides per access).
    var directAccess: DirectAccess? { get }
}

enum DirectAccess: Sendable { case readWrite, readOnly }

extension RAMHandler: RAMBackedHandler {
    var ram: RAMHandler { self }
    var ramOffset: UInt64 { 0 }
    var directAccess: DirectAccess? { .readWrite }
}

/// Keeps a KVM VM's memory slots in step with a layer's memory view: each entry served by RAM
/// becomes one slot (read-only where the view says so and KVM can), and so does each entry
/// served by host memory (an assigned device's mmap'd BAR area, in the PCI layer); every
/// other entry (PAM write-only and disabled segments, closed SMRAM, TSEG, MMIO) has no slot,
/// so accesses exit and dispatch through the view. A commit deletes the slots of removed
/// entries, then creates those of added ones, before the vCPU that caused it resumes.
final class KVMMemorySlots: AddressSpaceListener {
    let virtualMachine: KVMVirtualMachine
    private let readOnlySlots: Bool
    private static let page: UInt64 = 4096
    /// Slot number by guest base address of the entry it maps.
    private let slots = Mutex<[UInt64: UInt32]>([:])

    /// The same VM's slots for the PCI layer (each layer's listener keeps its own table).
    private let companion: KVMMemorySlots?
    var pciLayer: KVMMemorySlots { companion ?? self }

    init(virtualMachine: KVMVirtualMachine) {
        self.virtualMachine = virtualMachine
        readOnlySlots = ((try? virtualMachine.checkExtension(.readOnlyMemory)) ?? 0) > 0
        companion = KVMMemorySlots(virtualMachine: virtualMachine, readOnlySlots: readOnlySlots)
    }

    private init(virtualMachine: KVMVirtualMachine, readOnlySlots: Bool) {
        self.virtualMachine = virtualMachine
        self.readOnlySlots = readOnlySlots
        companion = nil
    }

    func commit(_ diff: FlatViewDiff, in space: AddressSpaceKind, view: FlatView) {
        guard space == .memory else { return }
        slots.withLock { slots in
            for entry in diff.removed {
                guard let slot = slots.removeValue(forKey: entry.range.base) else { continue }
                do {
                    try virtualMachine.unmapMemory(slot: slot)
                } catch {
                    GuestErrorLog.report(device: "kvm-memory-slots", kind: "delete", "deleting slot \(slot) at \(entry.range) failed: \(error)")
                }
            }
            for entry in diff.added {
                guard let plan = slotPlan(for: entry) else { continue }
                do {
                    let made = try virtualMachine.mapMemory(guestAddress: entry.range.base, mapping: plan.mapping,
                                                            offset: Int(plan.offset), size: Int(plan.size),
                                                            readOnly: plan.readOnly)
                    slots[entry.range.base] = made.slot
                } catch {
                    // Without a slot the range still works, through exits.
                    GuestErrorLog.report(device: "kvm-memory-slots", kind: "create", "no slot for \(entry.name) at \(entry.range): \(error)")
                }
            }
        }
    }

    private func slotPlan(for entry: FlatView.Entry) -> (mapping: SharedMapping, offset: UInt64, size: UInt64, readOnly: Bool)? {
        guard let size = entry.range.size, size % Self.page == 0, entry.range.base % Self.page == 0 else { return nil }
        let mapping: SharedMapping, start: UInt64, access: DirectAccess
        if let backed = entry.handler as? any RAMBackedHandler, let direct = backed.directAccess {
            (mapping, start, access) = (backed.ram.mapping, backed.ramOffset, direct)
        } else if let host = entry.handler as? HostMemoryHandler, let owner = host.owner as? SharedMapping,
                  host.hostAddress >= owner.hostAddress {
            (mapping, start, access) = (owner, UInt64(host.hostAddress - owner.hostAddress), .readWrite)
        } else {
            return nil
        }
        guard access == .readWrite || readOnlySlots else { return nil }
        let (offset, overflow) = start.addingReportingOverflow(entry.handlerOffset)
        let available = UInt64(mapping.count)
        guard !overflow, offset % Self.page == 0, offset <= available, size <= available - offset,
              offset <= UInt64(Int.max), size <= UInt64(Int.max) else { return nil }
        return (mapping, offset, size, access == .readOnly)
    }
}

extension Machine {
    /// Maps guest RAM into `virtualMachine` as memory slots that follow every later commit of
    /// the platform layer (PAM, SMRAM, TSEG), and assigned devices' host-memory BAR areas as
    /// slots that follow the PCI layer (BARs moving, decoding off), until `stopFollowing`.
    func followMemorySlots(in virtualMachine: KVMVirtualMachine) -> KVMMemorySlots {
        let slots = KVMMemorySlots(virtualMachine: virtualMachine)
        spaces.platform.addListener(slots)
        spaces.pci.addListener(slots.pciLayer)
        return slots
    }

    func stopFollowing(_ slots: KVMMemorySlots) {
        spaces.platform.removeListener(slots)
        spaces.pci.removeListener(slots.pciLayer)
    }

    /// How many KVM_SET_USER_MEMORY_REGION calls `body` costs while a fresh KVM VM's slots
    /// follow this machine (what a BAR move or a PAM write costs a running guest): for
    /// benchmarks and diagnostics.
    public func kvmMemorySlotUpdates(during body: () -> Void) throws(KVMRunError) -> Int {
        let vm: KVMVirtualMachine
        do { vm = try KVMSystem().createVirtualMachine() } catch { throw .kvm(error) }
        let slots = followMemorySlots(in: vm)
        defer { stopFollowing(slots) }
        let before = vm.memorySlotUpdates
        body()
        return vm.memorySlotUpdates - before
    }
}
