import AddressSpace
import KVM
import PCI
import Synchronization
import VMMBase

/// Keeps a KVM VM's ioeventfds in step with the PCI layer: each doorbell of a BAR the view
/// shows is registered at its current guest address, so a write there signals the device's
/// eventfd without an exit. Diff-based, as the memory slots: a BAR that moves or stops
/// decoding is a removed entry (its doorbells are deregistered) and, where it lands, an added
/// one (registered there); a BAR that stayed costs nothing.
final class KVMDoorbells: AddressSpaceListener {
    let virtualMachine: KVMVirtualMachine

    struct Registration: Hashable {
        var space: KVMVirtualMachine.IOEventSpace
        var address: UInt64
        var doorbell: Doorbell
    }
    private let registered = Mutex<Set<Registration>>([])

    init(virtualMachine: KVMVirtualMachine) { self.virtualMachine = virtualMachine }

    /// What is registered now, for tests and debugging.
    var registrations: Set<Registration> { registered.withLock { $0 } }

    func commit(_ diff: FlatViewDiff, in space: AddressSpaceKind, view: FlatView) {
        let kvmSpace: KVMVirtualMachine.IOEventSpace = space == .io ? .port : .mmio
        registered.withLock { table in
            for entry in diff.removed {
                for r in Self.registrations(in: entry, space: kvmSpace) where table.remove(r) != nil {
                    unregister(r, of: entry.name)
                }
            }
            for entry in diff.added {
                for r in Self.registrations(in: entry, space: kvmSpace) where !table.contains(r) {
                    do {
                        try virtualMachine.registerIOEventFD(descriptor: r.doorbell.eventDescriptor, space: r.space,
                                                             address: r.address, length: r.doorbell.length,
                                                             dataMatch: r.doorbell.dataMatch)
                        table.insert(r)
                    } catch {
                        // Without it the doorbell still works, through exits and barWrite.
                        GuestErrorLog.report(device: "kvm-doorbells", kind: "assign", "ioeventfd at 0x\(String(r.address, radix: 16)) (\(entry.name)): \(error)")
                    }
                }
            }
        }
    }

    /// Takes every registration back (the listener no longer follows the layer).
    func unregisterAll() {
        registered.withLock { table in
            for r in table { unregister(r, of: "stopped following") }
            table.removeAll()
        }
    }

    private func unregister(_ r: Registration, of name: String) {
        do {
            try virtualMachine.unregisterIOEventFD(descriptor: r.doorbell.eventDescriptor, space: r.space,
                                                   address: r.address, length: r.doorbell.length,
                                                   dataMatch: r.doorbell.dataMatch)
        } catch {
            GuestErrorLog.report(device: "kvm-doorbells", kind: "deassign", "ioeventfd at 0x\(String(r.address, radix: 16)) (\(name)): \(error)")
        }
    }

    /// The doorbells of the BAR `entry` serves that lie wholly inside the entry's stretch of it
    /// (a host-memory area laid over part of a BAR splits it into several entries).
    static func registrations(in entry: FlatView.Entry, space: KVMVirtualMachine.IOEventSpace) -> [Registration] {
        guard let bar = entry.handler as? BARHandler, let function = bar.function as? any DoorbellBARs,
              let size = entry.range.size else { return [] }
        return function.doorbells(ofBAR: bar.index).compactMap { doorbell in
            guard [1, 2, 4, 8].contains(doorbell.length), doorbell.offset >= entry.handlerOffset else { return nil }
            let into = doorbell.offset - entry.handlerOffset
            guard into < size, UInt64(doorbell.length) <= size - into else { return nil }
            return Registration(space: space, address: entry.range.base + into, doorbell: doorbell)
        }
    }
}

extension Machine {
    /// Registers the doorbells of every decoded BAR as ioeventfds of `virtualMachine`, at the
    /// BARs' current addresses, following every later PCI commit until `stopFollowing`.
    func followDoorbells(in virtualMachine: KVMVirtualMachine) -> KVMDoorbells {
        let doorbells = KVMDoorbells(virtualMachine: virtualMachine)
        spaces.pci.addListener(doorbells)
        return doorbells
    }

    func stopFollowing(_ doorbells: KVMDoorbells) {
        spaces.pci.removeListener(doorbells)
        doorbells.unregisterAll()
    }
}
