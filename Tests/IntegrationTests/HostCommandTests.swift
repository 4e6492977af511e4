import Foundation
import TestRequirements
import Testing

/// `switchyard host` on this host, through the real binary, checked against real lspci and
/// sysfs. Nothing here binds, unbinds or changes SR-IOV state: every command given is one the
/// binary must refuse before it writes anything.
@Suite struct HostCommandTests {
    static let lspci = "/usr/bin/lspci"
    static let hasLspci = FileManager.default.isExecutableFile(atPath: lspci)

    /// lspci -D -n -k -vmm: one record per device, "Tag:\tvalue" lines.
    static func lspciRecords(_ flags: [String]) throws -> [[String: String]] {
        let result = try run(lspci, flags)
        #expect(result.status == 0, "\(result.err)")
        return result.out.components(separatedBy: "\n\n").compactMap { block in
            var record: [String: String] = [:]
            for line in block.split(separator: "\n") {
                let parts = line.split(separator: "\t", maxSplits: 1).map(String.init)
                if parts.count == 2 { record[String(parts[0].dropLast())] = parts[1] }
            }
            return record.isEmpty ? nil : record
        }
    }

    static func hostListJSON() throws -> [String: Any] {
        let result = try run(switchyardBinary, ["host", "list", "--json"])
        #expect(result.status == 0, "\(result.err)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any])
    }

    @Test(.requires(hasLspci, "needs lspci (pciutils; make test installs it)"))
    func listAgreesWithLspci() throws {
        let devices = try #require(try Self.hostListJSON()["devices"] as? [[String: Any]])
        let numeric = try Self.lspciRecords(["-D", "-n", "-k", "-vmm"])
        let named = try Self.lspciRecords(["-D", "-k", "-vmm"])
        #expect(!numeric.isEmpty)
        #expect(devices.map { $0["address"] as? String } == numeric.map { $0["Slot"] })
        for (ours, (ids, names)) in zip(devices, zip(numeric, named)) {
            let slot = ids["Slot"] ?? "?"
            #expect(ours["vendor_id"] as? String == ids["Vendor"], "\(slot)")
            #expect(ours["device_id"] as? String == ids["Device"], "\(slot)")
            #expect(ours["class"] as? String == ids["Class"], "\(slot)")
            #expect(ours["prog_if"] as? String == (ids["ProgIf"] ?? "00"), "\(slot)")
            #expect(ours["revision"] as? String == (ids["Rev"] ?? "00"), "\(slot)")
            #expect(ours["subsystem_vendor_id"] as? String == (ids["SVendor"] ?? "0000"), "\(slot)")
            #expect(ours["subsystem_id"] as? String == (ids["SDevice"] ?? "0000"), "\(slot)")
            #expect(ours["driver"] as? String == ids["Driver"], "\(slot)")
            #expect(ours["vendor_name"] as? String == names["Vendor"], "\(slot)")
            #expect(ours["device_name"] as? String == names["Device"], "\(slot)")
            #expect(ours["class_name"] as? String == names["Class"], "\(slot)")
        }
    }

    /// The IOMMU units are /sys/class/iommu's; a host without any (this development host) has
    /// every device refused for that reason with the intel_iommu=on fix, and the text says so.
    @Test func iommuVerdictFollowsSysfs() throws {
        let json = try Self.hostListJSON()
        let units = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/iommu")) ?? []
        let iommu = try #require(json["iommu"] as? [String: Any])
        let listed = (iommu["units"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(listed.sorted() == units.sorted())
        let devices = try #require(json["devices"] as? [[String: Any]])
        let text = try run(switchyardBinary, ["host", "list"])
        #expect(text.status == 0, "\(text.err)")
        guard units.isEmpty else { return }
        #expect(iommu["enabled"] as? Bool == false)
        #expect(text.out.hasPrefix("IOMMU: none (no DMA-remapping unit in /sys/class/iommu): no device can be assigned\n"))
        // This host's kernel has no VFIO (no misc device "vfio" or "iommu").
        if !FileManager.default.fileExists(atPath: "/sys/class/misc/vfio") && !FileManager.default.fileExists(atPath: "/sys/class/misc/iommu") {
            #expect(iommu["vfio_interface"] as? String == "none")
            #expect(text.out.contains("\nVFIO: not loaded (modprobe vfio-pci)\n"))
        }
        for device in devices {
            #expect(device["assignable"] as? Bool == false)
            let obstacles = device["obstacles"] as? [[String: String]] ?? []
            if device["class"] as? String == "0600" {
                #expect(obstacles.first?["reason"] == "it is a host bridge (class 06 00), part of the host's root complex")
            } else {
                #expect(obstacles.first?["reason"] == "the host has no IOMMU (no DMA-remapping unit in /sys/class/iommu)")
                #expect(obstacles.first?["fix"]?.contains("intel_iommu=on") == true)
            }
        }
    }

    @Test func malformedAndMissingAddressesAreRefused() throws {
        for (arguments, message) in [
            (["host", "bind", "0000:zz:00.0"], "'0000:zz:00.0' is not a PCI address; write it as DDDD:BB:DD.F"),
            (["host", "bind", "00:20.0"], "'00:20.0' is not a PCI address"),  // device 32 does not exist
            (["host", "unbind", "3.0"], "'3.0' is not a PCI address"),
            (["host", "sriov", "0000:00:00.0"], "host sriov needs --vfs N"),
            (["host", "bind", "0000:00:00.0", "--force"], "unknown option '--force'"),
        ] {
            let result = try run(switchyardBinary, arguments)
            #expect(result.status == 2 && result.err.contains(message), "\(arguments): \(result.err)")
        }
        let present = Set((try? FileManager.default.contentsOfDirectory(atPath: "/sys/bus/pci/devices")) ?? [])
        let absent = try #require(["0000:7f:1f.7", "0000:fe:1f.6", "0000:fd:1e.5"].first { !present.contains($0) })
        for verb in ["bind", "unbind"] {
            let result = try run(switchyardBinary, ["host", verb, absent])
            #expect(result.status == 2 && result.err.contains("there is no PCI device \(absent) on this host"), "\(result.err)")
        }
        let sriov = try run(switchyardBinary, ["host", "sriov", absent, "--vfs", "1"])
        #expect(sriov.status == 2 && sriov.err.contains("there is no PCI device \(absent)"), "\(sriov.err)")
    }

    @Test(.requires(hasLspci, "needs lspci (pciutils; make test installs it)"))
    func theHostBridgeIsRefused() throws {
        // lspci says which device is the host bridge (class 0600); refusals must name it so.
        let bridge = try required(try Self.lspciRecords(["-D", "-n", "-vmm"]).first { $0["Class"] == "0600" }?["Slot"],
                                  "this host shows no host bridge (class 0600) in lspci")
        for arguments in [["host", "bind", bridge], ["host", "bind", bridge, "--group"], ["host", "unbind", bridge],
                          ["host", "sriov", bridge, "--vfs", "1"]] {
            let result = try run(switchyardBinary, arguments)
            #expect(result.status == 2, "\(arguments)")
            #expect(result.err.contains("\(bridge) is a host bridge (class 06 00)"), "\(arguments): \(result.err)")
        }
    }
}
