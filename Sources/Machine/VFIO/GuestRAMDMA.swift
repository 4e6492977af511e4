import AddressSpace
import VFIO
import Synchronization
import VMMBase

/// Guest RAM as the IOMMU must map it for assigned devices: one DMA mapping per RAM bank the
/// committed memory view shows (IOVA = guest-physical address, identity as on a host without a
/// guest IOMMU). A bank is found from the view's RAM-backed entries, grouped by which RAM they
/// show and at what displacement; a known bank is mapped whole, so PAM, SMRAM and TSEG
/// overlays, which hide parts of a bank from the CPU without changing RAM, never change the
/// maps. RAM the machine did not start with (a hot-added bank) maps as the span its entries cover.
enum GuestRAMDMA {
    static let page: UInt64 = 4096

    static func mappings(in view: FlatView, knownBanks: [RAMBank], of ram: RAMHandler) -> [VFIODMAMapping] {
        struct Group { var ram: RAMHandler; var first: UInt64; var last: UInt64 }
        var groups: [Key: Group] = [:]
        for entry in view.entries {
            guard let backed = entry.handler as? any RAMBackedHandler else { continue }
            let (start, overflow) = backed.ramOffset.addingReportingOverflow(entry.handlerOffset)
            guard !overflow, start < backed.ram.size else { continue }
            let key = Key(ram: ObjectIdentifier(backed.ram), displacement: entry.range.base &- start)
            if var g = groups[key] {
                g.first = min(g.first, entry.range.base)
                g.last = max(g.last, entry.range.last)
                groups[key] = g
            } else {
                groups[key] = Group(ram: backed.ram, first: entry.range.base, last: entry.range.last)
            }
        }
        var result: [VFIODMAMapping] = []
        for (key, group) in groups {
            var first = group.first, last = group.last
            if group.ram === ram, let bank = knownBanks.first(where: {
                $0.guestBase &- $0.offset == key.displacement && $0.guestBase <= last && first - $0.guestBase < $0.size
            }) {
                first = bank.guestBase
                last = bank.guestBase + bank.size - 1
            }
            // Whole pages only, inside the RAM mapping.
            let base = (first + page - 1) & ~(page - 1)
            let (endPlusOne, overflow) = last.addingReportingOverflow(1)
            let end = overflow ? UInt64.max & ~(page - 1) : endPlusOne & ~(page - 1)
            guard end > base else { continue }
            let offset = base &- key.displacement
            guard offset < group.ram.size, end - base <= group.ram.size - offset else { continue }
            result.append(VFIODMAMapping(iova: base, size: end - base, hostAddress: group.ram.mapping.hostAddress + UInt(offset)))
        }
        return result.sorted { $0.iova < $1.iova }
    }

    private struct Key: Hashable {
        let ram: ObjectIdentifier
        let displacement: UInt64
    }
}

/// Keeps a DMA mirror equal to guest RAM as a layer commits it. A commit cannot fail, so an
/// update the IOMMU refuses (a hot-added bank past the DMA-entry limit) is logged, rate-limited,
/// and kept in `lastError`; the maps that were made stay.
final class GuestRAMDMAListener: AddressSpaceListener {
    let mirror: VFIODMAMirror
    private let knownBanks: [RAMBank]
    private let ram: RAMHandler
    private let failure = Mutex<VFIOError?>(nil)

    init(mirror: VFIODMAMirror, knownBanks: [RAMBank], ram: RAMHandler) {
        self.mirror = mirror
        self.knownBanks = knownBanks
        self.ram = ram
    }

    var lastError: VFIOError? { failure.withLock { $0 } }

    /// Brings the maps to `view` now, reporting a refusal (the first sync, before listening).
    func sync(to view: FlatView) throws(VFIOError) {
        try mirror.update(to: GuestRAMDMA.mappings(in: view, knownBanks: knownBanks, of: ram))
    }

    func commit(_ diff: FlatViewDiff, in space: AddressSpaceKind, view: FlatView) {
        guard space == .memory else { return }
        do {
            try sync(to: view)
        } catch {
            failure.withLock { $0 = error }
            GuestErrorLog.report(device: "vfio-dma", kind: "map", "\(error)")
        }
    }
}
