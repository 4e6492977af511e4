import Glibc
import HostOS

/// A VF made ready for a passthru macvtap: reserved for this process, given the MAC, VLAN,
/// spoof-check and trust settings asked for through its PF, and with its network interface up
/// in sysfs. `release` puts the VF's previous settings back and drops the reservation.
struct VirtualFunctionLease: ~Copyable {
    let reservation: VirtualFunctionReservation
    let pfIndex: Int32
    /// The settings to put back at release (only the fields that were changed).
    let restore: VirtualFunctionSettings
    /// The VF's driver, rebound after a MAC change so it takes the new address at probe.
    let rebindDriver: String?
    let sysfs: String
    /// The VF's network interface, the lower device of the passthru macvtap.
    let netdev: String
    /// The interface's index when the lease set it up (a VF's interface starts down, and a
    /// passthru macvtap on a lower that is down carries nothing: "lowerlayerdown").
    let broughtUp: Int32?

    var vf: Int { reservation.user.vf }

    static func acquire(pf name: String, choice: VirtualFunctionChoice, options: MacvtapNetdevOptions,
                        socket: borrowing RouteSocket, environment: HostNetworkEnvironment) throws(HostNetworkError) -> VirtualFunctionLease {
        let pf = try PhysicalFunction.read(named: name, sysfs: environment.sysfs)
        let pfLink = try MacvtapBackend.lookUp(name, in: socket)
        let runDirectory = environment.runDirectory
        let reservation = try VirtualFunctionSelection.claim(choice, of: pf, reserve: { (vf) throws(HostNetworkError) in
            try VirtualFunctionRegistry.reserve(
                VirtualFunctionUser(pid: getpid(), netdevID: options.id, pf: name, vf: vf.index, vfAddress: vf.pciAddress),
                runDirectory: runDirectory)
        }, holder: { VirtualFunctionRegistry.holder(of: $0.pciAddress, runDirectory: runDirectory) })
        let index = reservation.user.vf
        let driver = pf.virtualFunctions.first { $0.index == index }?.driver
        let requested = VirtualFunctionSettings(mac: options.mac, vlan: options.vlan,
                                                spoofCheck: options.spoofCheck, trust: options.trust)
        var restore = VirtualFunctionSettings()
        var broughtUp: Int32?
        do throws(HostNetworkError) {
            if !requested.isEmpty {
                let previous: VirtualFunctionSettings?
                do { previous = try socket.virtualFunctionSettings(pfIndex: pfLink.index, vf: index) } catch { throw .netlink(error) }
                do { try socket.setVirtualFunction(pfIndex: pfLink.index, vf: index, requested) } catch { throw .netlink(error) }
                if let previous { restore = requested.restoring(from: previous) }
                if requested.mac != nil, let driver, previous?.mac != requested.mac {
                    try rebind(vfAddress: reservation.user.vfAddress, driver: driver, pf: name, vf: index, sysfs: environment.sysfs)
                }
            }
            let netdev = try waitForNetdev(pf: name, vf: index, driver: driver ?? "none",
                                           sysfs: environment.sysfs, timeout: environment.virtualFunctionNetdevTimeout)
            let link = try MacvtapBackend.lookUp(netdev, in: socket)
            if !link.isUp {
                do { try socket.setLink(index: link.index, up: true) } catch { throw .netlink(error) }
                broughtUp = link.index
            }
            return VirtualFunctionLease(reservation: reservation, pfIndex: pfLink.index, restore: restore,
                                        rebindDriver: requested.mac != nil ? driver : nil, sysfs: environment.sysfs,
                                        netdev: netdev, broughtUp: broughtUp)
        } catch {
            if let broughtUp { try? socket.setLink(index: broughtUp, up: false) }
            if !restore.isEmpty { try? socket.setVirtualFunction(pfIndex: pfLink.index, vf: index, restore) }
            reservation.release()
            throw error
        }
    }

    /// Restores the VF's previous settings and drops the reservation; returns the first failure.
    consuming func release(socket: borrowing RouteSocket) -> HostNetworkError? {
        var failure: HostNetworkError?
        if let broughtUp {
            // Gone already when the VF went away meanwhile: nothing to put back then.
            do throws(NetlinkError) { try socket.setLink(index: broughtUp, up: false) } catch {
                if !error.isNotFound { failure = .netlink(error) }
            }
        }
        do throws(NetlinkError) {
            try socket.setVirtualFunction(pfIndex: pfIndex, vf: vf, restore)
        } catch {
            failure = .netlink(error)
        }
        if let driver = rebindDriver, restore.mac != nil {
            do throws(HostNetworkError) {
                try Self.rebind(vfAddress: reservation.user.vfAddress, driver: driver, pf: reservation.user.pf, vf: vf, sysfs: sysfs)
            } catch {
                failure = failure ?? error
            }
        }
        reservation.release()
        return failure
    }

    /// Unbinds the VF from its driver and binds it again (sysfs `driver/unbind`, `drivers/D/bind`).
    static func rebind(vfAddress: String, driver: String, pf: String, vf: Int, sysfs: String) throws(HostNetworkError) {
        let directory = PhysicalFunction.directory(ofVF: vf, pf: pf, sysfs: sysfs)
        do throws(SystemError) {
            try FileSystem.writeFile("\(directory)/driver/unbind", vfAddress.utf8)
            try FileSystem.writeFile("\(sysfs)/bus/pci/drivers/\(driver)/bind", vfAddress.utf8)
        } catch {
            throw .system(error)
        }
    }

    /// Polls the VF's `net/` directory until its interface appears (a driver probe, or udev's
    /// rename, takes a moment after a rebind).
    static func waitForNetdev(pf: String, vf: Int, driver: String, sysfs: String, timeout: Double) throws(HostNetworkError) -> String {
        let directory = PhysicalFunction.directory(ofVF: vf, pf: pf, sysfs: sysfs)
        let interval = 0.05
        var waited = 0.0
        while true {
            if let name = (try? FileSystem.listDirectory("\(directory)/net"))?.first { return name }
            if !FileSystem.exists("\(directory)/driver") {
                throw .virtualFunctionDriverNotLoaded(pf: pf, vf: vf, device: lastComponent((try? FileSystem.readLink(directory)) ?? directory))
            }
            if waited >= timeout { throw .virtualFunctionNetdevTimeout(pf: pf, vf: vf, driver: driver, seconds: timeout) }
            usleep(UInt32(interval * 1_000_000))
            waited += interval
        }
    }
}
