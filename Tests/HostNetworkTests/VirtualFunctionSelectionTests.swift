import VMMBase
import Foundation
import Glibc
@testable import HostNetwork
import HostOS
import Testing

/// VF selection over a fake sysfs tree laid out as Documentation/ABI/testing/sysfs-bus-pci and
/// sysfs-class-net describe it (class/net/PF/device -> the PF's PCI directory, with
/// sriov_totalvfs, sriov_numvfs and virtfnN -> each VF's directory, whose `driver` links to the
/// bound driver and whose `net/` lists its interface), since this host has no SR-IOV NIC. PCI
/// addresses follow the igb (82576) in RIG-RECIPES.md: VF offset 128, stride 2.
struct VirtualFunctionSelectionTests {
    /// A fake sysfs root and a run directory, removed at the end of the test.
    final class FakeHost {
        let root = NSTemporaryDirectory() + "sy-vf-\(getpid())-\(UUID().uuidString.prefix(8))"
        var sysfs: String { root + "/sys" }
        var run: String { root + "/run" }
        let manager = FileManager.default

        /// A PF `name` with `drivers.count` enabled VFs; nil driver: none bound; netdev only when
        /// the driver is a NIC driver.
        func addPF(_ name: String, bus: Int, totalVFs: Int? = 8, drivers: [String?]) throws {
            let pciRoot = sysfs + "/devices/pci0000:00/0000:00:02.0"
            let pf = String(format: "0000:%02x:00.0", bus)
            let pfDirectory = pciRoot + "/" + pf
            try manager.createDirectory(atPath: pfDirectory + "/net/" + name, withIntermediateDirectories: true)
            try manager.createDirectory(atPath: sysfs + "/class/net", withIntermediateDirectories: true)
            try manager.createSymbolicLink(atPath: sysfs + "/class/net/" + name,
                                           withDestinationPath: "../../devices/pci0000:00/0000:00:02.0/\(pf)/net/\(name)")
            try manager.createSymbolicLink(atPath: pfDirectory + "/net/\(name)/device", withDestinationPath: "../../../\(pf)")
            if let totalVFs { try "\(totalVFs)\n".write(toFile: pfDirectory + "/sriov_totalvfs", atomically: false, encoding: .utf8) }
            try "\(drivers.count)\n".write(toFile: pfDirectory + "/sriov_numvfs", atomically: false, encoding: .utf8)
            for (index, driver) in drivers.enumerated() {
                let vf = String(format: "0000:%02x:%02x.%d", bus, 0x10 + index / 4, (index % 4) * 2)
                let vfDirectory = pciRoot + "/" + vf
                try manager.createDirectory(atPath: vfDirectory, withIntermediateDirectories: true)
                try manager.createSymbolicLink(atPath: pfDirectory + "/virtfn\(index)", withDestinationPath: "../\(vf)")
                if let driver {
                    try manager.createDirectory(atPath: sysfs + "/bus/pci/drivers/" + driver, withIntermediateDirectories: true)
                    try manager.createSymbolicLink(atPath: vfDirectory + "/driver", withDestinationPath: "../../../../bus/pci/drivers/\(driver)")
                    if driver != "vfio-pci" {
                        try manager.createDirectory(atPath: vfDirectory + "/net/\(name)v\(index)", withIntermediateDirectories: true)
                    }
                }
            }
        }

        func claim(_ choice: VirtualFunctionChoice, of pfName: String, netdev: String = "n0") throws(HostNetworkError) -> VirtualFunctionReservation {
            let pf = try PhysicalFunction.read(named: pfName, sysfs: sysfs)
            let run = self.run
            return try VirtualFunctionSelection.claim(choice, of: pf, reserve: { (vf) throws(HostNetworkError) in
                try VirtualFunctionRegistry.reserve(VirtualFunctionUser(pid: getpid(), netdevID: netdev, pf: pfName, vf: vf.index,
                                                                        vfAddress: vf.pciAddress), runDirectory: run)
            }, holder: { VirtualFunctionRegistry.holder(of: $0.pciAddress, runDirectory: run) })
        }

        deinit { try? manager.removeItem(atPath: root) }
    }

    @Test func sysfsGivesTheVFsTheirAddressesDriversAndInterfaces() throws {
        let host = FakeHost()
        try host.addPF("enp1s0", bus: 1, drivers: ["igbvf", "vfio-pci", nil])
        let pf = try PhysicalFunction.read(named: "enp1s0", sysfs: host.sysfs)
        #expect(pf.pciAddress == "0000:01:00.0")
        #expect(pf.totalVFs == 8)
        #expect(pf.virtualFunctions == [
            VirtualFunction(index: 0, pciAddress: "0000:01:10.0", driver: "igbvf", netdevs: ["enp1s0v0"]),
            VirtualFunction(index: 1, pciAddress: "0000:01:10.2", driver: "vfio-pci", netdevs: []),
            VirtualFunction(index: 2, pciAddress: "0000:01:10.4", driver: nil, netdevs: []),
        ])
    }

    @Test func autoTakesTheFirstFreeVFAndSkipsVFIOAndDriverlessOnes() throws {
        let host = FakeHost()
        try host.addPF("enp1s0", bus: 1, drivers: ["vfio-pci", nil, "igbvf", "igbvf"])
        let first = try host.claim(.auto, of: "enp1s0")
        #expect(first.user.vf == 2)
        #expect(first.user.vfAddress == "0000:01:10.4") // routing ID 0x80 + 2 * 2
        let second = try host.claim(.auto, of: "enp1s0", netdev: "n1")
        #expect(second.user.vf == 3)
        // Both reservations are listed for `switchyard host list`, with who holds them.
        #expect(VirtualFunctionRegistry.activeUsers(runDirectory: host.run).map { "\($0.pf) VF \($0.vf): \($0)" } == [
            "enp1s0 VF 2: switchyard pid \(getpid()) (netdev n0)",
            "enp1s0 VF 3: switchyard pid \(getpid()) (netdev n1)",
        ])
        let error = #expect(throws: HostNetworkError.self) { _ = try host.claim(.auto, of: "enp1s0", netdev: "n2") }
        #expect(error?.description == "PF enp1s0 has no free VF: sriov_numvfs is 4, all in use ("
            + "VF 0: bound to vfio-pci (assigned to a guest through VFIO); VF 1: bound to no driver (VF driver not loaded); "
            + "VF 2: in use by switchyard pid \(getpid()) (netdev n0); VF 3: in use by switchyard pid \(getpid()) (netdev n1)); "
            + "raise sriov_numvfs or stop a user")
        first.release()
        #expect(VirtualFunctionRegistry.activeUsers(runDirectory: host.run).map(\.vf) == [3])
        #expect(try host.claim(.auto, of: "enp1s0", netdev: "n2").user.vf == 2)
        second.release()
    }

    @Test func theIssuesWordingForAPFWithBothVFsInUse() throws {
        let host = FakeHost()
        try host.addPF("enp2s0", bus: 2, drivers: ["igbvf", "igbvf"])
        let a = try host.claim(.auto, of: "enp2s0")
        let b = try host.claim(.index(1), of: "enp2s0")
        let error = #expect(throws: HostNetworkError.self) { _ = try host.claim(.auto, of: "enp2s0") }
        #expect(error?.description.hasPrefix("PF enp2s0 has no free VF: sriov_numvfs is 2, both in use (") == true)
        a.release()
        b.release()
    }

    /// A holder that dies (its fd closed by the kernel, no release) leaves the VF free.
    @Test func aDeadHoldersReservationIsFree() throws {
        let host = FakeHost()
        try host.addPF("enp1s0", bus: 1, drivers: ["igbvf"])
        do {
            let crashed = try host.claim(.index(0), of: "enp1s0")
            #expect(VirtualFunctionRegistry.holder(of: "0000:01:10.0", runDirectory: host.run)?.pid == getpid())
            _ = consume crashed // dropped without release(): as at a crash, only the lock goes
        }
        #expect(FileManager.default.fileExists(atPath: host.run + "/vf/0000:01:10.0"))
        #expect(VirtualFunctionRegistry.holder(of: "0000:01:10.0", runDirectory: host.run) == nil)
        #expect(VirtualFunctionRegistry.activeUsers(runDirectory: host.run).isEmpty)
        try host.claim(.index(0), of: "enp1s0").release()
        #expect(!FileManager.default.fileExists(atPath: host.run + "/vf/0000:01:10.0"))
    }

    @Test func unusableChoicesNameTheFix() throws {
        let host = FakeHost()
        try host.addPF("enp1s0", bus: 1, drivers: ["igbvf", "vfio-pci", nil])
        try host.addPF("enp3s0", bus: 3, drivers: [])
        try host.addPF("enp4s0", bus: 4, drivers: [nil, nil])
        try host.addPF("eth9", bus: 9, totalVFs: nil, drivers: [])
        let held = try host.claim(.index(0), of: "enp1s0")
        let cases: [(VirtualFunctionChoice, String, String)] = [
            (.index(0), "enp1s0", "VF 0 of PF enp1s0 is in use by switchyard pid \(getpid()) (netdev n0): use vf=auto or another VF"),
            (.index(1), "enp1s0", "VF 1 of PF enp1s0 is bound to vfio-pci (assigned to a guest through VFIO): use vf=auto or another VF"),
            (.index(2), "enp1s0", "VF driver not loaded: VF 2 of PF enp1s0 (0000:01:10.4) is bound to no driver; load the VF driver of the NIC (for example `modprobe igbvf`, `modprobe iavf`)"),
            (.index(3), "enp1s0", "PF enp1s0 has no VF 3: sriov_numvfs is 3 (VFs 0-2); use vf=auto or a smaller index"),
            (.auto, "enp3s0", "PF enp3s0 has no VFs enabled: sriov_numvfs is 0; enable them with `echo N > /sys/class/net/enp3s0/device/sriov_numvfs` (N up to 8)"),
            (.auto, "enp4s0", "VF driver not loaded: VF 0 of PF enp4s0 (0000:04:10.0) is bound to no driver; load the VF driver of the NIC (for example `modprobe igbvf`, `modprobe iavf`)"),
            (.auto, "eth9", "'eth9' is not an SR-IOV physical function (its device has no sriov_totalvfs): name the PF's netdev in pf="),
            (.auto, "nosuch0", "network interface 'nosuch0' does not exist: pick one that `ip link show` lists"),
        ]
        for (choice, pf, message) in cases {
            let error = #expect(throws: HostNetworkError.self) { _ = try host.claim(choice, of: pf) }
            #expect(error?.description == message)
        }
        held.release()
    }

    @Test func theVFsInterfaceIsAwaitedWithATimeout() throws {
        let host = FakeHost()
        try host.addPF("enp1s0", bus: 1, drivers: ["igbvf", "igbvf"])
        let vfNet = host.sysfs + "/devices/pci0000:00/0000:00:02.0/0000:01:10.2/net"
        try FileManager.default.removeItem(atPath: vfNet)
        let error = #expect(throws: HostNetworkError.self) {
            _ = try VirtualFunctionLease.waitForNetdev(pf: "enp1s0", vf: 1, driver: "igbvf", sysfs: host.sysfs, timeout: 0.2)
        }
        #expect(error?.description == "VF 1 of PF enp1s0 has no network interface after 0.2 s although driver igbvf is bound: check `dmesg` for its probe error")
        // The interface appears while the wait is under way (as after a driver rebind).
        let appear = try HostThread {
            usleep(150_000)
            try? FileManager.default.createDirectory(atPath: vfNet + "/enp1s0v1", withIntermediateDirectories: true)
        }
        #expect(try VirtualFunctionLease.waitForNetdev(pf: "enp1s0", vf: 1, driver: "igbvf", sysfs: host.sysfs, timeout: 5) == "enp1s0v1")
        appear.join()
    }

    /// What is restored at exit: the previous value of each field the netdev changed, VLAN 0 when
    /// the VF had none.
    @Test func restoringCoversExactlyTheChangedFields() {
        let requested = VirtualFunctionSettings(mac: MACAddress("52:54:00:12:34:56"), vlan: 100)
        let previous = VirtualFunctionSettings(mac: MACAddress("52:54:00:aa:00:10"), vlan: nil, spoofCheck: true, trust: false)
        #expect(requested.restoring(from: previous) == VirtualFunctionSettings(mac: MACAddress("52:54:00:aa:00:10"), vlan: 0))
    }
}
