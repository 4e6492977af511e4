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

/// Keeps a KVM VM's memory slots in step with the platform layer's memory view: each entry
/// served by RAM becomes one slot (read-only where the view says so and KVM can); every
/// other entry (PAM write-only and disabled segments, closed SMRAM, TSEG, MMIO) has no slot,
/// so accesses exit and dispatch through the view. A commit deletes the slots of removed
/// entries, then creates those of added ones, before the vCPU that caused it resumes.
final class KVMMemorySlots: AddressSpaceListener {
    let virtualMachine: KVMVirtualMachine
    private let readOnlySlots: Bool
    private static let page: UInt64 = 4096
    /// Slot number by guest base address of the entry it maps.
    private let slots = Mutex<[UInt64: UInt32]>([:])

    init(virtualMachine: KVMVirtualMachine) {
        self.virtualMachine = virtualMachine
        readOnlySlots = ((try? virtualMachine.checkExtension(.readOnlyMemory)) ?? 0) > 0
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
                    let made = try virtualMachine.mapMemory(guestAddress: entry.range.base, mapping: plan.ram.mapping,
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

    private func slotPlan(for entry: FlatView.Entry) -> (ram: RAMHandler, offset: UInt64, size: UInt64, readOnly: Bool)? {
        guard let backed = entry.handler as? any RAMBackedHandler, let access = backed.directAccess,
              access == .readWrite || readOnlySlots,
              let size = entry.range.size, size % Self.page == 0, entry.range.base % Self.page == 0 else { return nil }
        let (offset, overflow) = backed.ramOffset.addingReportingOverflow(entry.handlerOffset)
        guard !overflow, offset % Self.page == 0, offset <= backed.ram.size, size <= backed.ram.size - offset,
              offset <= UInt64(Int.max), size <= UInt64(Int.max) else { return nil }
        return (backed.ram, offset, size, access == .readOnly)
    }
}

extension Machine {
    /// Maps guest RAM into `virtualMachine` as memory slots that follow every later commit of
    /// the platform layer (PAM, SMRAM, TSEG) until `stopFollowing`.
    func followMemorySlots(in virtualMachine: KVMVirtualMachine) -> KVMMemorySlots {
        let slots = KVMMemorySlots(virtualMachine: virtualMachine)
        spaces.platform.addListener(slots)
        return slots
    }

    func stopFollowing(_ slots: KVMMemorySlots) { spaces.platform.removeListener(slots) }
}
