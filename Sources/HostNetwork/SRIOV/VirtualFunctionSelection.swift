/// Picks the VF a `-netdev macvtap,pf=,vf=` gets: the one asked for, or with vf=auto the first
/// one that has a NIC driver bound (not vfio-pci, which means a guest owns it through VFIO) and
/// that no other Switchyard process holds. The claim is the reservation itself, so two
/// processes starting at once never get the same VF.
public enum VirtualFunctionSelection {
    /// Why a VF cannot be used, nil when it can (before reservation).
    static func obstacle(_ vf: VirtualFunction) -> String? {
        switch vf.driver {
        case nil: "bound to no driver (VF driver not loaded)"
        case "vfio-pci": "bound to vfio-pci (assigned to a guest through VFIO)"
        default: nil
        }
    }

    /// Claims a VF of `pf` with `reserve`, which returns nil when another holder has the VF and
    /// `holder` says who that is. The reservation names the VF (`user.vf`, `user.vfAddress`).
    public static func claim(
        _ choice: VirtualFunctionChoice, of pf: PhysicalFunction,
        reserve: (VirtualFunction) throws(HostNetworkError) -> VirtualFunctionReservation?,
        holder: (VirtualFunction) -> VirtualFunctionUser?
    ) throws(HostNetworkError) -> VirtualFunctionReservation {
        let functions = pf.virtualFunctions
        guard !functions.isEmpty else { throw .noVirtualFunctions(pf: pf.name, totalVFs: pf.totalVFs) }
        switch choice {
        case .index(let index):
            guard let vf = functions.first(where: { $0.index == index }) else {
                throw .virtualFunctionOutOfRange(pf: pf.name, vf: index, numVFs: functions.count)
            }
            if vf.driver == nil { throw .virtualFunctionDriverNotLoaded(pf: pf.name, vf: index, device: vf.pciAddress) }
            if let obstacle = obstacle(vf) { throw .virtualFunctionBusy(pf: pf.name, vf: index, reason: obstacle) }
            guard let reservation = try reserve(vf) else {
                throw .virtualFunctionBusy(pf: pf.name, vf: index, reason: "in use by \(holder(vf).map(\.description) ?? "another switchyard")")
            }
            return reservation
        case .auto:
            var busy: [String] = []
            for vf in functions {
                if let obstacle = obstacle(vf) {
                    busy.append("VF \(vf.index): \(obstacle)")
                } else if let reservation = try reserve(vf) {
                    return reservation
                } else {
                    busy.append("VF \(vf.index): in use by \(holder(vf).map(\.description) ?? "another switchyard")")
                }
            }
            if let first = functions.first, functions.allSatisfy({ $0.driver == nil }) {
                throw .virtualFunctionDriverNotLoaded(pf: pf.name, vf: first.index, device: first.pciAddress)
            }
            throw .noFreeVirtualFunction(pf: pf.name, numVFs: functions.count, busy: busy)
        }
    }
}
